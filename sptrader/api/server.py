"""The daemon's API server: websockets on a unix socket (mode 0600), optionally on TCP
with a token. Each client gets its own drop-oldest subscription, so a slow client
loses events (and is told how many) but never slows the engine. The server keeps the
sockets, the hello and the subscriptions; every method is a row of ``api.methods``."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import os
from http import HTTPStatus
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve, unix_serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from sptrader import __version__
from sptrader.api.methods import METHODS, check_params, shown
from sptrader.client import paths
from sptrader.client.local import LocalEngineClient
from sptrader.client.wire import PROTOCOL_VERSION, ProtocolError, decode, encode, encode_event
from sptrader.clock import now_us
from sptrader.engine import Engine
from sptrader.errors import SptraderError, UsageError
from sptrader.models import MARKET_DATA_EVENTS

log = logging.getLogger(__name__)


def _response(request_id: Any, **fields: Any) -> dict[str, Any]:
    return {"type": "response", "id": request_id, **fields}


def _usage_response(request_id: Any, message: str) -> dict[str, Any]:
    return _response(request_id, error=message, exit_code=UsageError.exit_code)


def hello_problem(raw: str | bytes) -> str | None:
    """What is wrong with a client's first message, or None for a good hello."""
    expected = f'{{"type": "hello", "protocol": {PROTOCOL_VERSION}}}'
    try:
        hello = decode(raw)
    except ProtocolError as error:
        return f"a bad hello ({error}); send {expected} first"
    if hello.get("type") != "hello":
        return (
            f"the first message must be a hello, {expected}, not a {shown(hello['type'])} message"
        )
    version = hello.get("protocol")
    if version is None:
        return f"the hello has no protocol version; send {expected}"
    if isinstance(version, bool) or not isinstance(version, int):
        return (
            f"the hello's protocol must be a whole number (this daemon speaks"
            f" {PROTOCOL_VERSION}), not {shown(version)}"
        )
    if version != PROTOCOL_VERSION:
        return (
            f"protocol version mismatch: this daemon speaks {PROTOCOL_VERSION}, the client"
            f" {version}; use the same sptrader version for both"
        )
    return None


HELLO_TIMEOUT_S = 5.0
MAX_EVENTS_PER_FRAME = 5000
#: Connections the kernel queues before the server accepts them: asyncio's default of
#: 100 made a burst of clients beyond it fail their handshake (the kernel caps this at
#: net.core.somaxconn).
BACKLOG = 1024


class ApiServer:
    def __init__(
        self, engine: Engine, started_us: int | None = None, *, host: str = paths.DAEMON
    ) -> None:
        # Every method is answered through the client, as for a TUI in the same process.
        self.client = LocalEngineClient(engine)
        # Who hosts the engine (the daemon, or a TUI): said in the welcome and status.
        self.host = host
        self.settings = engine.settings
        self.config = engine.config.api
        self.started_us = started_us or now_us()
        self.socket_path = paths.socket_path(self.settings.home)
        self._servers: list[Server] = []
        self._token: str | None = None
        self.clients = 0

    # --- lifecycle --------------------------------------------------------------------

    async def start(self) -> None:
        path = self.socket_path
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # a stale socket of a dead daemon (the pid file said so)
        # The socket is created with the process umask; make it 0600 before anyone else
        # could connect by creating it under a tight umask.
        previous = os.umask(0o177)
        try:
            server = await unix_serve(self._handle, path=str(path), backlog=BACKLOG)
        finally:
            os.umask(previous)
        os.chmod(path, 0o600)
        self._servers.append(server)
        if self.config.tcp_port:
            self._token = paths.read_or_create_token(self.settings.home)
            tcp = await serve(
                self._handle,
                self.config.tcp_host,
                self.config.tcp_port,
                process_request=self._check_token,
                backlog=BACKLOG,
            )
            self._servers.append(tcp)
            log.info(
                "API on tcp://%s:%d (token required)", self.config.tcp_host, self.config.tcp_port
            )
        log.info("API on unix socket %s", path)

    async def close(self) -> None:
        for server in self._servers:
            server.close()
            with contextlib.suppress(Exception):
                await server.wait_closed()
        self._servers.clear()
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()

    def _check_token(self, connection: ServerConnection, request: Request) -> Response | None:
        """``Authorization: Bearer <token>``, as documented (the scheme is case-blind)."""
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if (
            self._token
            and scheme.lower() == "bearer"
            and hmac.compare_digest(given.strip().encode(), self._token.encode())
        ):
            return None
        log.warning("refused a TCP API client without a valid token")
        return connection.respond(HTTPStatus.UNAUTHORIZED, "a valid API token is required\n")

    # --- one client -------------------------------------------------------------------

    async def _handle(self, websocket: ServerConnection) -> None:
        try:
            if await self._greet(websocket):
                await self._serve_client(websocket)
        except ConnectionClosed:
            pass
        except Exception:  # a bug: said in the log, and the client told why it is dropped
            log.exception("API client connection failed")
            with contextlib.suppress(Exception):
                await websocket.close(1011, "internal error (see the daemon's log)")

    async def _greet(self, websocket: ServerConnection) -> bool:
        """Read the hello and answer welcome; or say what was wrong and close (policy)."""
        try:
            raw = await asyncio.wait_for(websocket.recv(), HELLO_TIMEOUT_S)
        except TimeoutError:
            problem: str | None = f"no hello within {HELLO_TIMEOUT_S:g} s"
        else:
            problem = hello_problem(raw)
        if problem is not None:
            log.warning("refused an API client: %s", problem)
            await websocket.send(encode({"type": "error", "error": problem}))
            mismatch = problem.startswith("protocol version mismatch")
            await websocket.close(1008, "protocol version mismatch" if mismatch else "bad hello")
            return False
        await websocket.send(
            encode(
                {
                    "type": "welcome",
                    "protocol": PROTOCOL_VERSION,
                    "version": __version__,
                    "pid": os.getpid(),
                    "host": self.host,
                    "started_us": self.started_us,
                    "watchlist": self.client.watchlist,
                    "timeframes": list(self.settings.config.chart.timeframes),
                }
            )
        )
        return True

    async def _serve_client(self, websocket: ServerConnection) -> None:
        self.clients += 1
        sender: list[asyncio.Task[None]] = []  # the event stream, once subscribed
        try:
            async for raw in websocket:
                await websocket.send(await self._answer(websocket, raw, sender))
        finally:
            self.clients -= 1
            for task in sender:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
                    await task

    async def _answer(
        self, websocket: ServerConnection, raw: str | bytes, sender: list[asyncio.Task[None]]
    ) -> str:
        """One request's response, encoded. A request that is not one, or that its method's
        row in METHODS refuses, gets a one-line error; the connection stays."""
        try:
            request = decode(raw)
        except ProtocolError as error:
            return encode(_usage_response(None, f"a bad request: {error}"))
        request_id = request.get("id")
        if request_id is not None and (
            isinstance(request_id, bool) or not isinstance(request_id, int | str)
        ):
            return encode(
                _usage_response(
                    None, f"a request's id must be a number or text, not {shown(request_id)}"
                )
            )
        method = request.get("method")
        params = request.get("params")
        if request.get("type") != "request":
            reply = _usage_response(
                request_id, f"expected a request, not a {shown(request['type'])} message"
            )
        elif not isinstance(method, str):
            reply = _usage_response(
                request_id, f"a request's method must be text, not {shown(method)}"
            )
        elif params is not None and not isinstance(params, dict):
            reply = _usage_response(
                request_id, f"{method}: params must be a JSON object, not {shown(params)}"
            )
        else:
            reply = await self._reply(websocket, request_id, method, params or {}, sender)
        try:
            return encode(reply)
        except (TypeError, ValueError) as error:  # a result JSON cannot carry: a bug
            log.exception("API method %s returned what JSON cannot carry", method)
            return encode(_response(request_id, error=f"{type(error).__name__}: {error}"))

    async def _reply(
        self,
        websocket: ServerConnection,
        request_id: Any,
        method: str,
        params: dict[str, Any],
        sender: list[asyncio.Task[None]],
    ) -> dict[str, Any]:
        try:
            if method not in METHODS:
                raise SptraderError(f"unknown API method {shown(method)}")
            values = check_params(method, params)
            call = METHODS[method].call
            if call is not None:
                return _response(request_id, result=await call(self.client, **values))
            if method == "subscribe":
                if not sender:
                    maxsize = values["maxsize"] or self.config.client_queue
                    sender.append(
                        asyncio.create_task(
                            self._send_events(websocket, maxsize, values["market_data"])
                        )
                    )
                return _response(request_id, result=True)
            return _response(request_id, result=await self.status())
        except SptraderError as error:
            return _response(request_id, error=str(error), exit_code=error.exit_code)
        except Exception as error:  # a bad request must not kill the connection
            log.exception("API request %s failed", method)
            return _response(request_id, error=f"{type(error).__name__}: {error}")

    async def _send_events(
        self, websocket: ServerConnection, maxsize: int, market_data: bool = True
    ) -> None:
        subscription = self.client.subscribe(f"api-client-{id(websocket)}", maxsize)
        if not market_data:
            # Quotes, trades and bars reach this client over NATS (sptrader.cluster.live).
            subscription.accepts = _not_market_data
        reported = 0
        try:
            while True:
                events = await subscription.get(MAX_EVENTS_PER_FRAME)
                dropped = subscription.dropped - reported
                reported = subscription.dropped
                encoded = [fields for fields in map(encode_event, events) if fields is not None]
                await websocket.send(
                    encode({"type": "events", "events": encoded, "dropped": dropped})
                )
        except ConnectionClosed:
            pass
        except Exception:
            log.exception("API event stream to a client failed")
            with contextlib.suppress(Exception):
                await websocket.close(1011, "internal error (see the daemon's log)")
        finally:
            subscription.close()

    # --- the server's own methods --------------------------------------------------

    async def status(self) -> dict[str, Any]:
        """The engine's status (its store and services) and this server's."""
        return {
            "pid": os.getpid(),
            "host": self.host,
            "version": __version__,
            "uptime_s": (now_us() - self.started_us) / 1e6,
            **await self.client.status(),
            "clients": self.clients,
        }


def _not_market_data(event: object) -> bool:
    return type(event) not in MARKET_DATA_EVENTS
