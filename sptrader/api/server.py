"""The daemon's API server: websockets on a unix socket (mode 0600), optionally on TCP
with a token. Each client gets its own drop-oldest subscription, so a slow client
loses events (and is told how many) but never slows the engine."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import os
from dataclasses import astuple
from http import HTTPStatus
from pathlib import Path
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve, unix_serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from sptrader import __version__
from sptrader.api import paths
from sptrader.api.protocol import (
    PROTOCOL_VERSION,
    ProtocolError,
    bar_fields,
    decode,
    encode,
    encode_event,
    encode_status,
)
from sptrader.client import LocalEngineClient
from sptrader.clock import now_us
from sptrader.engine import Engine
from sptrader.errors import SptraderError, UsageError
from sptrader.models import timeframe_minutes
from sptrader.store import queries
from sptrader.threads import run_in_thread

log = logging.getLogger(__name__)

BROKER_METHODS = frozenset(
    {
        "place_order",
        "cancel_order",
        "close_position",
        "account",
        "positions",
        "open_orders",
        "order_history",
        "fills",
        "journal",
        "equity_curve",
        "add_journal_note",
    }
)
_REQUIRED = object()


def _integer(params: dict[str, Any], name: str, default: Any = _REQUIRED) -> Any:
    """A whole-number parameter (a one-line UsageError when missing or not one)."""
    value = params.get(name)
    if value is None:
        if default is _REQUIRED:
            raise UsageError(f"missing parameter {name!r}")
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
        raise UsageError(f"{name} must be a whole number, not {value!r}")
    return int(value)


def _text(params: dict[str, Any], name: str) -> str:
    value = params.get(name)
    if not isinstance(value, str):
        raise UsageError(f"missing parameter {name!r}")
    return value


HELLO_TIMEOUT_S = 5.0
MAX_EVENTS_PER_FRAME = 5000


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
            server = await unix_serve(self._handle, path=str(path))
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
        header = request.headers.get("Authorization", "")
        given = header.removeprefix("Bearer ").strip()
        if self._token and hmac.compare_digest(given.encode(), self._token.encode()):
            return None
        log.warning("refused a TCP API client without a valid token")
        return connection.respond(HTTPStatus.UNAUTHORIZED, "a valid API token is required\n")

    # --- one client -------------------------------------------------------------------

    async def _handle(self, websocket: ServerConnection) -> None:
        try:
            hello = decode(await asyncio.wait_for(websocket.recv(), HELLO_TIMEOUT_S))
        except (TimeoutError, ProtocolError, ConnectionClosed):
            return
        version = hello.get("protocol")
        if hello.get("type") != "hello" or version != PROTOCOL_VERSION:
            await websocket.send(
                encode(
                    {
                        "type": "error",
                        "error": f"protocol version mismatch: this daemon speaks {PROTOCOL_VERSION}, "
                        f"the client {version}; use the same sptrader version for both",
                    }
                )
            )
            await websocket.close(1008, "protocol version mismatch")
            return
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
        self.clients += 1
        sender: asyncio.Task[None] | None = None
        try:
            async for raw in websocket:
                try:
                    request = decode(raw)
                except ProtocolError as error:
                    await websocket.send(
                        encode({"type": "response", "id": None, "error": str(error)})
                    )
                    continue
                request_id = request.get("id")
                method = request.get("method", "")
                params = request.get("params") or {}
                if method == "subscribe":
                    if sender is None:
                        maxsize = int(params.get("maxsize") or self.config.client_queue)
                        sender = asyncio.create_task(self._send_events(websocket, maxsize))
                    await websocket.send(
                        encode({"type": "response", "id": request_id, "result": True})
                    )
                    continue
                try:
                    result = await self._call(method, params)
                    reply: dict[str, Any] = {"type": "response", "id": request_id, "result": result}
                except SptraderError as error:
                    reply = {
                        "type": "response",
                        "id": request_id,
                        "error": str(error),
                        "exit_code": error.exit_code,
                    }
                except Exception as error:  # a bad request must not kill the connection
                    log.exception("API request %s failed", method)
                    reply = {
                        "type": "response",
                        "id": request_id,
                        "error": f"{type(error).__name__}: {error}",
                    }
                await websocket.send(encode(reply))
        except ConnectionClosed:
            pass
        finally:
            self.clients -= 1
            if sender is not None:
                sender.cancel()
                with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
                    await sender

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
        finally:
            subscription.close()

    async def _call(self, method: str, params: dict[str, Any]) -> Any:
        client = self.client
        if method == "status":
            return await self.status()
        if method == "services":
            return [encode_status(status) for status in await client.services()]
        if method in ("service_start", "service_stop", "service_restart"):
            name = str(params.get("name", ""))
            action = {
                "service_start": client.start_service,
                "service_stop": client.stop_service,
                "service_restart": client.restart_service,
            }[method]
            await action(name)
            return True
        if method == "candles":
            instrument = self.engine.check_instrument(str(params["instrument"]))
            timeframe = str(params.get("timeframe", "1m"))
            timeframe_minutes(timeframe)
            frame = await client.candles(
                instrument,
                timeframe,
                last=params.get("last"),
                start_us=params.get("start_us"),
                end_us=params.get("end_us"),
            )
            return frame.with_columns(frame["ts"].dt.epoch("us")).rows()
        if method == "summaries":
            summaries = await client.summaries(list(params["instruments"]), int(params["points"]))
            return {
                name: [summary.session_open, summary.last, summary.closes]
                for name, summary in summaries.items()
            }
        if method == "forming_bars":
            return {
                name: bar_fields(bar)
                for name in self.engine.watchlist
                if (bar := client.forming_bar(name)) is not None
            }
        if method == "data_gaps":
            instrument = self.engine.check_instrument(str(params["instrument"]))
            return await run_in_thread(
                self.engine.data.gaps, instrument, int(params["start_us"]), int(params["end_us"])
            )
        if method == "data_status":
            return await run_in_thread(
                self.engine.data.statuses,
                list(params.get("instruments") or []),
                int(params["start_us"]),
                int(params["end_us"]),
            )
        if method == "stale_instruments":
            return sorted(await client.stale_instruments())
        if method == "search_symbols":
            found = await client.search_symbols(
                str(params.get("query", "")), params.get("feed"), int(params.get("limit", 50))
            )
            return [list(astuple(item)) for item in found]
        if method == "add_instrument":
            return await client.add_instrument(str(params["instrument"]))
        if method == "remove_instrument":
            await client.remove_instrument(str(params["instrument"]))
            return True
        if method == "start_backfill":
            await client.start_backfill(
                list(params["instruments"]), int(params["start_us"]), int(params["end_us"])
            )
            return True
        if method == "scanners":
            return await client.scanners()
        if method == "run_scanner":
            return await client.run_scanner(str(params["name"]))
        if method == "pause_scanner":
            await client.pause_scanner(str(params["name"]))
            return True
        if method == "resume_scanner":
            await client.resume_scanner(str(params["name"]))
            return True
        if method == "recent_signals":
            return await client.recent_signals(int(params.get("limit", 50)))
        if method == "run_steps":
            return await client.run_steps(int(params["run_id"]))
        if method == "scan":
            return await self.scan(str(params["name"]))
        if method in BROKER_METHODS:
            return await self._broker_call(method, params)
        if method == "runs":
            from sptrader.scanners import lineage

            last = int(params.get("last") or 20)
            frame = await run_in_thread(lineage.recent_runs, self.engine.require_store(), last)
            return frame.to_dicts()
        if method == "run_detail":
            from sptrader.scanners import lineage

            run, steps, signals = await run_in_thread(
                lineage.run_detail, self.engine.require_store(), int(params["run_id"])
            )
            return {"run": run, "steps": steps.to_dicts(), "signals": signals.to_dicts()}
        raise SptraderError(f"unknown API method {method!r}")

    async def _broker_call(self, method: str, params: dict[str, Any]) -> Any:
        """The paper broker's and the journal's methods (see EngineClient)."""
        client = self.client
        if method == "place_order":
            return await client.place_order(params.get("request"))  # type: ignore[arg-type]
        if method == "cancel_order":
            return await client.cancel_order(_integer(params, "order_id"))
        if method == "close_position":
            return await client.close_position(_text(params, "instrument"))
        if method == "account":
            return await client.account()
        if method == "positions":
            return await client.positions()
        if method == "open_orders":
            return await client.open_orders()
        if method == "order_history":
            return await client.order_history(_integer(params, "limit", 100))
        if method == "fills":
            return await client.fills(
                _integer(params, "since_us", None), _integer(params, "limit", None)
            )
        if method == "journal":
            return await client.journal(params.get("day_from"), params.get("day_to"))
        if method == "equity_curve":
            timeframe = params.get("timeframe") or "1h"
            if not isinstance(timeframe, str):
                raise UsageError(f"timeframe must be text, not {timeframe!r}")
            return await client.equity_curve(
                _integer(params, "start_us", None), _integer(params, "end_us", None), timeframe
            )
        if method == "add_journal_note":
            return await client.add_journal_note(_text(params, "text"), params.get("day"))
        raise AssertionError(method)

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
