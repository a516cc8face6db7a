"""One client connection to a daemon's API: the hello, requests matched to responses
by id, and event batches handed to a callback."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Callable
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection, connect, unix_connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from sptrader.client import paths
from sptrader.client.wire import PROTOCOL_VERSION, ProtocolError, decode, decode_event, encode
from sptrader.errors import SptraderError, UsageError

EventsCallback = Callable[[list[object], int], None]


class DaemonUnavailable(SptraderError):
    """No daemon answers on this home's socket."""

    exit_code = 3


class ApiConnection:
    def __init__(
        self,
        home: Path,
        *,
        on_events: EventsCallback | None = None,
        tcp: tuple[str, int, str] | None = None,
        protocol: int = PROTOCOL_VERSION,
    ) -> None:
        self.home = home
        self.on_events = on_events
        self.tcp = tcp
        self.protocol = protocol
        self.welcome: dict[str, Any] = {}
        self._websocket: ClientConnection | None = None
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._ids = itertools.count(1)
        self._reader: asyncio.Task[None] | None = None
        self.closed = asyncio.Event()

    async def open(self, timeout: float = 5.0) -> dict[str, Any]:
        try:
            if self.tcp is not None:
                host, port, token = self.tcp
                opener = connect(
                    f"ws://{host}:{port}/",
                    additional_headers={"Authorization": f"Bearer {token}"},
                    open_timeout=timeout,
                    max_size=None,
                )
            else:
                opener = unix_connect(
                    str(paths.socket_path(self.home)),
                    "ws://localhost/",
                    open_timeout=timeout,
                    max_size=None,
                )
            self._websocket = await opener
        except InvalidStatus as error:
            raise SptraderError(
                f"the daemon refused the connection: HTTP {error.response.status_code}"
            ) from None
        except (OSError, TimeoutError) as error:
            raise DaemonUnavailable(f"no daemon answers for {self.home} ({error})") from None
        except InvalidHandshake as error:
            raise DaemonUnavailable(
                f"the daemon for {self.home} did not complete the connection ({error})"
            ) from None
        try:
            await self._websocket.send(encode({"type": "hello", "protocol": self.protocol}))
            welcome = decode(await asyncio.wait_for(self._websocket.recv(), timeout))
        except (ConnectionClosed, TimeoutError, ProtocolError) as error:
            raise DaemonUnavailable(f"the daemon did not greet us ({error})") from None
        if welcome.get("type") != "welcome":
            await self._websocket.close()
            raise SptraderError(str(welcome.get("error") or f"unexpected {welcome['type']!r}"))
        self.welcome = welcome
        self._reader = asyncio.create_task(self._read())
        return welcome

    async def _read(self) -> None:
        assert self._websocket is not None
        try:
            async for raw in self._websocket:
                message = decode(raw)
                kind = message["type"]
                if kind == "response":
                    future = self._pending.pop(message.get("id"), None)
                    if future is not None and not future.done():
                        if "error" in message:
                            future.set_exception(_remote_error(message))
                        else:
                            future.set_result(message.get("result"))
                elif kind == "events" and self.on_events is not None:
                    events = [decode_event(fields) for fields in message["events"]]
                    self.on_events(events, int(message.get("dropped", 0)))
        except (ConnectionClosed, ProtocolError):
            pass
        finally:
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(DaemonUnavailable("lost the connection to the daemon"))
            self._pending.clear()
            self.closed.set()

    async def call(self, method: str, **params: Any) -> Any:
        if self._websocket is None or self.closed.is_set():
            raise DaemonUnavailable("not connected to the daemon")
        request_id = next(self._ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        try:
            await self._websocket.send(
                encode({"type": "request", "id": request_id, "method": method, "params": params})
            )
        except ConnectionClosed:
            self._pending.pop(request_id, None)
            raise DaemonUnavailable("lost the connection to the daemon") from None
        return await future

    async def close(self) -> None:
        if self._websocket is not None:
            await self._websocket.close()
        if self._reader is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader


def _remote_error(message: dict[str, Any]) -> SptraderError:
    """The daemon's one-line error as the exception the local path raises: a usage
    error (exit 2) is a UsageError, anything else keeps the daemon's exit code."""
    text = str(message["error"])
    code = message.get("exit_code", 1)
    if code == UsageError.exit_code:
        return UsageError(text)
    error = SptraderError(text)
    if isinstance(code, int) and not isinstance(code, bool) and 0 < code < 256:
        error.exit_code = code
    return error


async def call_daemon(home: Path, method: str, **params: Any) -> Any:
    """Open, call one method, close: for CLI commands."""
    connection = ApiConnection(home)
    await connection.open()
    try:
        return await connection.call(method, **params)
    finally:
        await connection.close()
