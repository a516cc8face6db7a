"""The daemon's API server: websockets on a unix socket (mode 0600), optionally on TCP
with a token. Each client gets its own drop-oldest subscription, so a slow client
loses events (and is told how many) but never slows the engine."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import os
from dataclasses import astuple, dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve, unix_serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from sptrader import __version__
from sptrader.client import paths
from sptrader.client.local import LocalEngineClient
from sptrader.client.wire import (
    PROTOCOL_VERSION,
    ProtocolError,
    bar_fields,
    decode,
    encode,
    encode_event,
    encode_status,
)
from sptrader.clock import now_us
from sptrader.commands.arguments import MAX_COUNT, MAX_ID
from sptrader.engine import Engine
from sptrader.errors import SptraderError, UsageError
from sptrader.models import timeframe_minutes
from sptrader.store import queries
from sptrader.threads import run_in_thread

log = logging.getLogger(__name__)

# --- the method table ----------------------------------------------------------------------
#
# Every method a client may call, with its parameters' JSON types and bounds: a request is
# checked against its row before anything runs (one line naming the method and the
# parameter, a usage error), so a handler only ever sees values of the types it declares.

#: Microseconds since 1970 that a datetime can show: years 1 to 9999.
MIN_US = -62_135_596_800_000_000
MAX_US = 253_402_300_799_999_999
#: A subscriber's event queue (events, not bytes).
MAX_QUEUE = 1_000_000


@dataclass(frozen=True, slots=True)
class Param:
    """One request parameter. Left out, or null, it is ``default`` (unless required)."""

    kind: type  # int, str, list (of str) or dict
    required: bool = False
    default: Any = None
    low: int = 0
    high: int = 0
    what: str = ""  # how a bad value is described: "a time in microseconds since 1970"

    def check(self, method: str, name: str, value: Any) -> Any:
        if self.kind is int:
            if isinstance(value, float) and value.is_integer():
                value = int(value)  # 5.0 from a client whose JSON has one number type
            if (
                not isinstance(value, int)
                or isinstance(value, bool)
                or not self.low <= value <= self.high
            ):
                what = self.what or f"a whole number from {self.low:,} to {self.high:,}"
                raise UsageError(f"{method}: {name} must be {what}, not {_shown(value)}")
        elif self.kind is str:
            if not isinstance(value, str):
                raise UsageError(f"{method}: {name} must be text, not {_shown(value)}")
        elif self.kind is list:
            if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
                raise UsageError(f"{method}: {name} must be a list of text, not {_shown(value)}")
        elif not isinstance(value, self.kind):
            raise UsageError(f"{method}: {name} must be a JSON object, not {_shown(value)}")
        return value


def _count(default: int | None = None, high: int = MAX_COUNT, required: bool = False) -> Param:
    return Param(int, required, default, 1, high)


_TEXT = Param(str, required=True)
_MAYBE_TEXT = Param(str)
_NAMES = Param(list, required=True)
_TIME_WHAT = "a time in microseconds since 1970 (years 1 to 9999)"
_TIME = Param(int, True, None, MIN_US, MAX_US, _TIME_WHAT)
_MAYBE_TIME = Param(int, False, None, MIN_US, MAX_US, _TIME_WHAT)
_ID = Param(int, True, None, 1, MAX_ID, "a positive whole number")

METHODS: dict[str, dict[str, Param]] = {
    "status": {},
    "subscribe": {"maxsize": _count(high=MAX_QUEUE)},
    "services": {},
    "service_start": {"name": _TEXT},
    "service_stop": {"name": _TEXT},
    "service_restart": {"name": _TEXT},
    "candles": {
        "instrument": _TEXT,
        "timeframe": Param(str, default="1m"),
        "last": _count(),
        "start_us": _MAYBE_TIME,
        "end_us": _MAYBE_TIME,
    },
    "summaries": {"instruments": _NAMES, "points": _count(required=True)},
    "forming_bars": {},
    "data_gaps": {"instrument": _TEXT, "start_us": _TIME, "end_us": _TIME},
    "data_status": {"instruments": Param(list), "start_us": _TIME, "end_us": _TIME},
    "stale_instruments": {},
    "search_symbols": {
        "query": Param(str, default=""),
        "feed": _MAYBE_TEXT,
        "limit": _count(default=50),
    },
    "add_instrument": {"instrument": _TEXT},
    "remove_instrument": {"instrument": _TEXT},
    "start_backfill": {"instruments": _NAMES, "start_us": _TIME, "end_us": _TIME},
    "scanners": {},
    "run_scanner": {"name": _TEXT},
    "pause_scanner": {"name": _TEXT},
    "resume_scanner": {"name": _TEXT},
    "recent_signals": {"limit": _count(default=50)},
    "run_steps": {"run_id": _ID},
    "scan": {"name": _TEXT},
    "runs": {"last": _count(default=20)},
    "run_detail": {"run_id": _ID},
    # The paper broker and the journal (see EngineClient); an order request's fields are
    # checked by the broker, as for a local client.
    "place_order": {"request": Param(dict, required=True)},
    "cancel_order": {"order_id": _ID},
    "close_position": {"instrument": _TEXT},
    "account": {},
    "positions": {},
    "open_orders": {},
    "order_history": {"limit": _count(default=100)},
    "fills": {"since_us": _MAYBE_TIME, "limit": _count()},
    "journal": {"day_from": _MAYBE_TEXT, "day_to": _MAYBE_TEXT},
    "equity_curve": {
        "start_us": _MAYBE_TIME,
        "end_us": _MAYBE_TIME,
        "timeframe": Param(str, default="1h"),
    },
    "add_journal_note": {"text": _TEXT, "day": _MAYBE_TEXT},
}


def check_params(method: str, params: dict[str, Any]) -> dict[str, Any]:
    """The parameters of a call to ``method`` (a METHODS key), checked and completed with
    their defaults; a UsageError naming the method and the parameter otherwise."""
    spec = METHODS[method]
    unknown = [name for name in params if name not in spec]
    if unknown:
        takes = ", ".join(spec) or "no parameters"
        raise UsageError(f"{method}: unknown parameter {_shown(unknown[0])} (it takes {takes})")
    values: dict[str, Any] = {}
    for name, param in spec.items():
        value = params.get(name)
        if value is None:
            if param.required:
                raise UsageError(f"{method}: missing parameter {name!r}")
            values[name] = param.default
        else:
            values[name] = param.check(method, name, value)
    return values


def _shown(value: Any) -> str:
    """A client's value in a message: its repr, cut short."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


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
            f"the first message must be a hello, {expected}, not a {_shown(hello['type'])} message"
        )
    version = hello.get("protocol")
    if version is None:
        return f"the hello has no protocol version; send {expected}"
    if isinstance(version, bool) or not isinstance(version, int):
        return (
            f"the hello's protocol must be a whole number (this daemon speaks"
            f" {PROTOCOL_VERSION}), not {_shown(version)}"
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
    def __init__(self, engine: Engine, started_us: int | None = None) -> None:
        self.engine = engine
        self.client = LocalEngineClient(engine)
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
                    "started_us": self.started_us,
                    "watchlist": self.engine.watchlist,
                    "timeframes": list(self.engine.config.chart.timeframes),
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
                    None, f"a request's id must be a number or text, not {_shown(request_id)}"
                )
            )
        method = request.get("method")
        params = request.get("params")
        if request.get("type") != "request":
            reply = _usage_response(
                request_id, f"expected a request, not a {_shown(request['type'])} message"
            )
        elif not isinstance(method, str):
            reply = _usage_response(
                request_id, f"a request's method must be text, not {_shown(method)}"
            )
        elif params is not None and not isinstance(params, dict):
            reply = _usage_response(
                request_id, f"{method}: params must be a JSON object, not {_shown(params)}"
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
                raise SptraderError(f"unknown API method {_shown(method)}")
            values = check_params(method, params)
            if method == "subscribe":
                if not sender:
                    maxsize = values["maxsize"] or self.config.client_queue
                    sender.append(asyncio.create_task(self._send_events(websocket, maxsize)))
                return _response(request_id, result=True)
            result = await getattr(self, f"_api_{method}")(**values)
            return _response(request_id, result=result)
        except SptraderError as error:
            return _response(request_id, error=str(error), exit_code=error.exit_code)
        except Exception as error:  # a bad request must not kill the connection
            log.exception("API request %s failed", method)
            return _response(request_id, error=f"{type(error).__name__}: {error}")

    async def _send_events(self, websocket: ServerConnection, maxsize: int) -> None:
        subscription = self.engine.subscribe(f"api-client-{id(websocket)}", maxsize)
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

    # --- the methods (one per METHODS row; parameters already checked) ----------------

    async def _api_status(self) -> dict[str, Any]:
        return await self.status()

    async def _api_services(self) -> list[dict[str, Any]]:
        return [encode_status(status) for status in await self.client.services()]

    async def _api_service_start(self, name: str) -> bool:
        await self.client.start_service(name)
        return True

    async def _api_service_stop(self, name: str) -> bool:
        await self.client.stop_service(name)
        return True

    async def _api_service_restart(self, name: str) -> bool:
        await self.client.restart_service(name)
        return True

    async def _api_candles(
        self,
        instrument: str,
        timeframe: str,
        last: int | None,
        start_us: int | None,
        end_us: int | None,
    ) -> list[Any]:
        instrument = self.engine.check_instrument(instrument)
        timeframe_minutes(timeframe)
        frame = await self.client.candles(
            instrument, timeframe, last=last, start_us=start_us, end_us=end_us
        )
        return frame.with_columns(frame["ts"].dt.epoch("us")).rows()

    async def _api_summaries(self, instruments: list[str], points: int) -> dict[str, Any]:
        summaries = await self.client.summaries(instruments, points)
        return {
            name: [summary.session_open, summary.last, summary.closes]
            for name, summary in summaries.items()
        }

    async def _api_forming_bars(self) -> dict[str, Any]:
        return {
            name: bar_fields(bar)
            for name in self.engine.watchlist
            if (bar := self.client.forming_bar(name)) is not None
        }

    async def _api_data_gaps(self, instrument: str, start_us: int, end_us: int) -> Any:
        instrument = self.engine.check_instrument(instrument)
        return await run_in_thread(self.engine.data.gaps, instrument, start_us, end_us)

    async def _api_data_status(
        self, instruments: list[str] | None, start_us: int, end_us: int
    ) -> Any:
        return await run_in_thread(
            self.engine.data.statuses, list(instruments or []), start_us, end_us
        )

    async def _api_stale_instruments(self) -> list[str]:
        return sorted(await self.client.stale_instruments())

    async def _api_search_symbols(self, query: str, feed: str | None, limit: int) -> list[Any]:
        from sptrader.commands.symbols import check_feed

        check_feed(self.engine, feed)  # the same line as without a daemon
        found = await self.client.search_symbols(query, feed, limit)
        return [list(astuple(item)) for item in found]

    async def _api_add_instrument(self, instrument: str) -> str:
        return await self.client.add_instrument(instrument)

    async def _api_remove_instrument(self, instrument: str) -> bool:
        await self.client.remove_instrument(instrument)
        return True

    async def _api_start_backfill(self, instruments: list[str], start_us: int, end_us: int) -> bool:
        await self.client.start_backfill(instruments, start_us, end_us)
        return True

    async def _api_scanners(self) -> list[dict]:
        return await self.client.scanners()

    async def _api_run_scanner(self, name: str) -> dict:
        return await self.client.run_scanner(name)

    async def _api_pause_scanner(self, name: str) -> bool:
        await self.client.pause_scanner(name)
        return True

    async def _api_resume_scanner(self, name: str) -> bool:
        await self.client.resume_scanner(name)
        return True

    async def _api_recent_signals(self, limit: int) -> list[dict]:
        return await self.client.recent_signals(limit)

    async def _api_run_steps(self, run_id: int) -> list[dict]:
        return await self.client.run_steps(run_id)

    async def _api_scan(self, name: str) -> dict[str, Any]:
        return await self.scan(name)

    async def _api_runs(self, last: int) -> list[dict]:
        from sptrader.scanners import lineage

        frame = await run_in_thread(lineage.recent_runs, self.engine.require_store(), last)
        return frame.to_dicts()

    async def _api_run_detail(self, run_id: int) -> dict[str, Any]:
        from sptrader.scanners import lineage

        run, steps, signals = await run_in_thread(
            lineage.run_detail, self.engine.require_store(), run_id
        )
        return {"run": run, "steps": steps.to_dicts(), "signals": signals.to_dicts()}

    async def _api_place_order(self, request: dict) -> dict:
        return await self.client.place_order(request)

    async def _api_cancel_order(self, order_id: int) -> dict:
        return await self.client.cancel_order(order_id)

    async def _api_close_position(self, instrument: str) -> dict:
        return await self.client.close_position(instrument)

    async def _api_account(self) -> dict:
        return await self.client.account()

    async def _api_positions(self) -> list[dict]:
        return await self.client.positions()

    async def _api_open_orders(self) -> list[dict]:
        return await self.client.open_orders()

    async def _api_order_history(self, limit: int) -> list[dict]:
        return await self.client.order_history(limit)

    async def _api_fills(self, since_us: int | None, limit: int | None) -> list[dict]:
        return await self.client.fills(since_us, limit)

    async def _api_journal(self, day_from: str | None, day_to: str | None) -> dict:
        return await self.client.journal(day_from, day_to)

    async def _api_equity_curve(
        self, start_us: int | None, end_us: int | None, timeframe: str
    ) -> list[dict]:
        return await self.client.equity_curve(start_us, end_us, timeframe)

    async def _api_add_journal_note(self, text: str, day: str | None) -> dict:
        return await self.client.add_journal_note(text, day)

    async def scan(self, name: str) -> dict[str, Any]:
        """Run scanner ``name`` now (the scan itself runs in a thread: ScannerService.run_now)
        and return its ScanResult as a JSON-able dict; the service publishes and alerts its
        signals as a scheduled run's."""
        from sptrader.commands.scans import scan_result_dict

        if name not in self.engine.scanners:
            known = ", ".join(self.engine.scanners) or "none configured"
            raise UsageError(f"unknown scanner {name!r} (scanners: {known})")
        from sptrader.strategies.registry import StrategyLoadError

        try:
            result = await self.engine.run_scanner(name)
        except StrategyLoadError as error:
            raise SptraderError(f"cannot load its strategy: {error}") from None
        return scan_result_dict(result)

    async def status(self) -> dict[str, Any]:
        store = self.engine.require_store()
        counts = await run_in_thread(queries.table_counts, store)
        path = Path(self.settings.store_path)
        size = path.stat().st_size if path.exists() else 0
        wal = path.with_name(path.name + ".wal")
        size += wal.stat().st_size if wal.exists() else 0
        return {
            "pid": os.getpid(),
            "version": __version__,
            "uptime_s": (now_us() - self.started_us) / 1e6,
            "home": str(self.settings.home),
            "store": {"path": str(path), "size_bytes": size, "rows": counts},
            "clients": self.clients,
            "services": [encode_status(status) for status in self.engine.supervisor.status()],
        }
