"""RemoteEngineClient: the EngineClient of a TUI attached to a daemon.

Events from the daemon are republished on a local Bus, so screens subscribe exactly as
they do to a local engine. If the daemon goes away, the last data stays on screen, the
header says so, and the client reconnects (with backoff) when the daemon is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl

from sptrader.bus import Bus, Subscription
from sptrader.client.connection import ApiConnection, DaemonUnavailable
from sptrader.client.paths import DAEMON, host_name
from sptrader.client.protocol import InstrumentSummary
from sptrader.client.wire import candles_frame, decode_status
from sptrader.clock import now_us
from sptrader.config import NatsConfig
from sptrader.errors import SptraderError, StoreLockedError
from sptrader.feeds.base import SymbolInfo
from sptrader.models import (
    BackfillProgressed,
    Bar,
    BarUpdated,
    EngineLogged,
    ServiceStatus,
    WatchlistChanged,
    normalize_instrument,
)

log = logging.getLogger(__name__)

RECONNECT_INITIAL_S = 0.5
RECONNECT_MAX_S = 5.0


def fetch_welcome(
    home: Path,
    host_starting: Callable[[], bool] | None = None,
    start_timeout_s: float = 30.0,
    tcp: tuple[str, int, str] | None = None,
) -> dict[str, Any]:
    """Greet the daemon once, before the app's loop runs (the screens need the
    watchlist to lay themselves out); a host still starting is waited for."""

    async def greet() -> dict[str, Any]:
        client = RemoteEngineClient(
            home,
            {},
            reconnect=False,
            host_starting=host_starting,
            start_timeout_s=start_timeout_s,
            tcp=tcp,
        )
        connection, welcome = await client._open_when_served()
        await connection.close()
        return welcome

    return asyncio.run(greet())


class RemoteEngineClient:
    """EngineClient of a daemon serving this home, over its API."""

    attached = True

    def __init__(
        self,
        home: Path,
        welcome: dict[str, Any] | None = None,
        *,
        reconnect: bool = True,
        host_starting: Callable[[], bool] | None = None,
        start_timeout_s: float = 30.0,
        tcp: tuple[str, int, str] | None = None,
        nats: NatsConfig | None = None,
    ) -> None:
        """``nats``: take quotes, trades and bars from NATS (sptrader.cluster.live), the
        rest from the daemon's API. ``reconnect`` (the TUI): stay attached, reconnecting with backoff while the
        daemon is away, and greet it now (the screens need its watchlist to lay
        themselves out before the loop runs). Without (a command): one connection,
        opened by ``start()``, whose failure is the command's error, unless
        ``host_starting()`` says the host is still starting its engine (it claimed the
        home, its socket does not answer yet): then it is waited for, up to
        ``start_timeout_s``."""
        self.home = home
        self._market: Any = None
        if nats is not None and reconnect:
            from sptrader.cluster.live import NatsMarketData

            self._market = NatsMarketData(nats, lambda events: self._on_events(events, 0))
        # (host, port, token) of a writer on another host ([api] url), else this home's socket.
        self.tcp = tcp
        self.reconnect = reconnect
        self._host_starting = host_starting
        self._start_timeout_s = start_timeout_s
        if welcome is None:
            welcome = fetch_welcome(home, host_starting, start_timeout_s, tcp) if reconnect else {}
        self.welcome = welcome
        self.bus = Bus()
        self.connection: ApiConnection | None = None
        self.connected = False
        self.dropped_by_daemon = 0
        self._forming: dict[str, Bar] = {}
        # Services keep their last known state while the daemon is away.
        self._services: list[ServiceStatus] = []
        self._keeper: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self._attached_once = False
        self._closing = False
        # One-shot: the daemon streams events only once something subscribes.
        self._subscribing: asyncio.Task[Any] | None = None

    # --- EngineClient -----------------------------------------------------------------

    @property
    def host(self) -> str:
        """Who serves this home: "daemon" or "TUI" (a TUI hosting the engine)."""
        return host_name(self.welcome.get("host", DAEMON))

    @property
    def mode(self) -> str:
        pid = self.welcome.get("pid")
        if self.connected:
            return f"attached to {self.host} pid {pid}"
        if not self._attached_once:
            # Greeted, not yet subscribed: nothing went away.
            return f"attaching to {self.host} pid {pid}…"
        return f"{self.host} pid {pid} gone: reconnecting…"

    @property
    def watchlist(self) -> list[str]:
        return list(self.welcome.get("watchlist", []))

    def subscribe(self, name: str, maxsize: int) -> Subscription:
        subscription = self.bus.subscribe(name, maxsize=maxsize, policy="drop_oldest")
        if not self.reconnect and self._subscribing is None and self.connection is not None:
            # Asked before the next call is sent (``_call`` waits for it), so nothing the
            # next call causes is missed.
            self._subscribing = asyncio.ensure_future(self.connection.call("subscribe"))
        return subscription

    async def start(self) -> None:
        if not self.reconnect:
            connection, self.welcome = await self._open_when_served()
            self.connection = connection
            self.connected = True
            return
        if self._market is not None:
            try:
                await self._market.start()
            except (OSError, SptraderError) as error:
                # The daemon's API still carries everything: slower, never blank.
                log.warning(
                    "live data from NATS unavailable (%s): taking it from the daemon", error
                )
                self._market = None
        self._keeper = asyncio.create_task(self._keep_connected())
        await asyncio.wait_for(self._ready.wait(), 10.0)

    async def close(self) -> None:
        """Disconnect; the daemon keeps running."""
        self._closing = True
        if self._keeper is not None:
            self._keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._keeper
        if self.connection is not None:
            await self.connection.close()
        if self._market is not None:
            await self._market.close()

    async def services(self) -> list[ServiceStatus]:
        if self.connected and self.connection is not None:
            with contextlib.suppress(DaemonUnavailable):
                self._services = [
                    decode_status(data) for data in await self.connection.call("services")
                ]
        return self._services

    async def start_service(self, name: str) -> None:
        await self._call("service_start", name=name)

    async def stop_service(self, name: str) -> None:
        await self._call("service_stop", name=name)

    async def restart_service(self, name: str) -> None:
        await self._call("service_restart", name=name)

    async def candles(
        self,
        instrument: str,
        timeframe: str,
        *,
        last: int | None = None,
        start_us: int | None = None,
        end_us: int | None = None,
    ) -> pl.DataFrame:
        rows = await self._call(
            "candles",
            instrument=instrument,
            timeframe=timeframe,
            last=last,
            start_us=start_us,
            end_us=end_us,
        )
        return candles_frame(rows)

    def forming_bar(self, instrument: str) -> Bar | None:
        return self._forming.get(instrument)

    async def summaries(self, instruments: list[str], points: int) -> dict[str, InstrumentSummary]:
        result = await self._call("summaries", instruments=instruments, points=points)
        return {
            name: InstrumentSummary(name, session_open, last, closes)
            for name, (session_open, last, closes) in result.items()
        }

    async def price_decimals(self, instruments: list[str]) -> dict[str, int]:
        try:
            return await self._call("price_decimals", instruments=instruments)
        except SptraderError as error:
            # A daemon started before an upgrade lacks the method: prices are then
            # formatted as their own digits say, not refused.
            if "unknown API method" not in str(error):
                raise
            return {}

    async def stale_instruments(self) -> set[str]:
        if not self.connected:
            return set(self.watchlist)
        return set(await self._call("stale_instruments"))

    async def search_symbols(
        self, query: str, feed: str | None = None, limit: int = 50
    ) -> list[SymbolInfo]:
        rows = await self._call("search_symbols", query=query, feed=feed, limit=limit)
        return [SymbolInfo(*row) for row in rows]

    async def add_instrument(self, instrument: str) -> str:
        return await self._call("add_instrument", instrument=instrument)

    async def remove_instrument(self, instrument: str) -> None:
        await self._call("remove_instrument", instrument=instrument)

    async def start_backfill(self, instruments: list[str], start_us: int, end_us: int) -> None:
        await self._call(
            "start_backfill", instruments=instruments, start_us=start_us, end_us=end_us
        )

    async def data_gaps(self, instrument: str, start_us: int, end_us: int) -> list[tuple[int, int]]:
        rows = await self._call(
            "data_gaps", instrument=instrument, start_us=start_us, end_us=end_us
        )
        return [(start, end) for start, end in rows]

    async def data_status(
        self, instruments: list[str] | None, start_us: int, end_us: int
    ) -> list[dict]:
        return await self._call(
            "data_status", instruments=instruments or [], start_us=start_us, end_us=end_us
        )

    async def scanners(self) -> list[dict]:
        return await self._call("scanners")

    async def run_scanner(self, name: str) -> dict:
        return await self._call("run_scanner", name=name)

    async def pause_scanner(self, name: str) -> None:
        await self._call("pause_scanner", name=name)

    async def resume_scanner(self, name: str) -> None:
        await self._call("resume_scanner", name=name)

    async def recent_signals(self, limit: int = 50) -> list[dict]:
        return await self._call("recent_signals", limit=limit)

    async def run_steps(self, run_id: int) -> list[dict]:
        return await self._call("run_steps", run_id=run_id)

    async def scan(self, name: str) -> dict:
        return await self._call("scan", name=name)

    async def runs(self, last: int = 20) -> list[dict]:
        return await self._call("runs", last=last)

    async def scanner_activity(self, name: str, start_us: int, end_us: int) -> dict:
        return await self._call("scanner_activity", name=name, start_us=start_us, end_us=end_us)

    async def run_detail(self, run_id: int) -> dict:
        return await self._call("run_detail", run_id=run_id)

    async def shadow_report(self, scanner: str | None = None, days: int = 30) -> list[dict]:
        return await self._call("shadow_report", scanner=scanner, days=days)

    async def signal_labels(
        self,
        scanner: str | None = None,
        start_us: int | None = None,
        end_us: int | None = None,
        source: str = "live",
    ) -> list[dict]:
        return await self._call(
            "signal_labels", scanner=scanner, start_us=start_us, end_us=end_us, source=source
        )

    async def status(self) -> dict:
        return await self._call("status")

    # --- the paper broker -------------------------------------------------------------

    async def place_order(self, request: dict) -> dict:
        return await self._call("place_order", request=request)

    async def cancel_order(self, order_id: int) -> dict:
        return await self._call("cancel_order", order_id=int(order_id))

    async def close_position(self, instrument: str, venue: str = "paper") -> dict:
        return await self._call("close_position", instrument=instrument, venue=venue)

    async def account(self, venue: str = "paper") -> dict:
        return await self._call("account", venue=venue)

    async def positions(self, venue: str | None = None) -> list[dict]:
        return await self._call("positions", venue=venue)

    async def open_orders(self, venue: str | None = None) -> list[dict]:
        return await self._call("open_orders", venue=venue)

    async def order_history(self, limit: int = 100, venue: str | None = None) -> list[dict]:
        return await self._call("order_history", limit=limit, venue=venue)

    async def trading_venues(self) -> list[dict]:
        return await self._call("trading_venues")

    async def halt(self, venue: str | None = None, reason: str = "") -> list[dict]:
        return await self._call("halt", venue=venue, reason=reason)

    async def resume(self, venue: str | None = None) -> list[str]:
        return await self._call("resume", venue=venue)

    async def alert_rules(self) -> list[dict]:
        return await self._call("alert_rules")

    async def alert_history(self, limit: int = 50, rule: str | None = None) -> list[dict]:
        return await self._call("alert_history", limit=limit, rule=rule)

    async def add_alert_rule(self, rule: dict) -> dict:
        return await self._call("add_alert_rule", rule=rule)

    async def remove_alert_rule(self, name: str) -> None:
        await self._call("remove_alert_rule", name=name)

    async def pause_alert_rule(self, name: str, paused: bool = True) -> dict:
        return await self._call("pause_alert_rule", name=name, paused=paused)

    async def test_alert(self, name: str) -> list[str]:
        return await self._call("test_alert", name=name)

    async def wait_venue_ready(self, venue: str, timeout_s: float) -> None:
        await self._call("wait_venue_ready", venue=venue, timeout_s=timeout_s)

    async def reconcile(self, venue: str | None = None) -> list[dict]:
        return await self._call("reconcile", venue=venue)

    async def fills(self, since_us: int | None = None, limit: int | None = None) -> list[dict]:
        return await self._call("fills", since_us=since_us, limit=limit)

    async def journal(
        self, day_from: str | None = None, day_to: str | None = None, venue: str | None = None
    ) -> dict:
        return await self._call("journal", day_from=day_from, day_to=day_to, venue=venue)

    async def equity_curve(
        self,
        start_us: int | None = None,
        end_us: int | None = None,
        timeframe: str = "1h",
        venue: str = "paper",
    ) -> list[dict]:
        return await self._call(
            "equity_curve", start_us=start_us, end_us=end_us, timeframe=timeframe, venue=venue
        )

    async def add_journal_note(self, text: str, day: str | None = None) -> dict:
        return await self._call("add_journal_note", text=text, day=day)

    # --- connection -------------------------------------------------------------------

    async def _call(self, method: str, **params: Any) -> Any:
        """The daemon's answer; its errors arrive as the local client raises them (a
        usage error as UsageError: ApiConnection)."""
        if self.connection is not None and not self.reconnect:
            if self._subscribing is not None:
                await self._subscribing
            return await self.connection.call(method, **params)
        if not self.connected or self.connection is None:
            raise SptraderError("the daemon is not reachable right now; reconnecting")
        return await self.connection.call(method, **params)

    def _on_events(self, events: list[object], dropped: int) -> None:
        for event in events:
            kind = type(event)
            if kind is BarUpdated:
                self._forming[event.bar.instrument] = event.bar
            elif kind is WatchlistChanged:
                self.welcome["watchlist"] = list(event.instruments)
        if dropped:
            self.dropped_by_daemon += dropped
            events = [
                *events,
                EngineLogged(
                    now_us(),
                    "WARNING",
                    "api",
                    f"this client read too slowly: the daemon dropped {dropped} events",
                ),
            ]
        self.bus.publish_nowait(events)

    async def _open_when_served(self) -> tuple[ApiConnection, dict[str, Any]]:
        """A command's one connection, once the host answers (a daemon or a TUI claims
        the home before its engine has started and its socket listens)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._start_timeout_s
        while True:
            connection = ApiConnection(self.home, on_events=self._on_events, tcp=self.tcp)
            try:
                return connection, await connection.open()
            except DaemonUnavailable:
                starting = self._host_starting is not None and self._host_starting()
                if not starting or loop.time() > deadline:
                    raise
            await asyncio.sleep(0.1)

    async def _keep_connected(self) -> None:
        delay = RECONNECT_INITIAL_S
        while not self._closing:
            connection = ApiConnection(self.home, on_events=self._on_events, tcp=self.tcp)
            try:
                self.welcome = await connection.open()
                forming = await connection.call("forming_bars")
                self._forming.update(
                    {name: Bar(fields[0], "1m", *fields[1:]) for name, fields in forming.items()}
                )
                await connection.call("subscribe", market_data=self._market is None)
            except SptraderError as error:
                log.debug("daemon not reachable: %s", error)
                self._ready.set()  # the app shows the state; do not block its start
                await asyncio.sleep(delay)
                delay = min(RECONNECT_MAX_S, delay * 2)
                continue
            self.connection = connection
            self.connected = self._attached_once = True
            delay = RECONNECT_INITIAL_S
            self._ready.set()
            self._announce(f"attached to {self.host} pid {self.welcome.get('pid')}", "INFO")
            await connection.closed.wait()
            self.connected = False
            if self._closing:
                return
            self._announce(
                f"lost the {self.host} (pid {self.welcome.get('pid')}); reconnecting", "ERROR"
            )

    def _announce(self, message: str, level: str) -> None:
        log.log(logging.getLevelName(level), "%s", message)
        self.bus.publish_nowait([EngineLogged(now_us(), level, "api", message)])

    # --- trading commands (order, journal, scan, backtest) ---

    async def wait_for_quote(self, instrument: str, timeout_s: float) -> None:
        """At once, without asking: the daemon's engine was running before this order,
        and its broker rejects one on quotes it cannot trust."""

    async def history_source(self, instrument: str) -> str | None:
        return await self._call("history_source", instrument=instrument)

    async def start_backtest(self, request: dict) -> dict:
        return await self._call("start_backtest", request=request)

    async def backtest_job(self, job_id: int) -> dict:
        return await self._call("backtest_job", job_id=job_id)

    async def cancel_backtest(self, job_id: int) -> dict:
        return await self._call("cancel_backtest", job_id=job_id)

    # --- data commands (candles, backfill, data, symbols, export) ---

    async def backfill(
        self,
        instruments: list[str],
        start_us: int,
        end_us: int,
        on_progress: Callable[[BackfillProgressed], None] | None = None,
    ) -> dict[str, BackfillProgressed]:
        """``start_backfill``, then the daemon's reports from its event stream until
        each instrument's is final (one call waiting for the whole fetch would hold
        this connection, and the daemon's shutdown, that long)."""
        names = [normalize_instrument(name) for name in instruments]
        outcome: dict[str, BackfillProgressed] = {}
        # Roomy: the daemon streams every event (ticks too), this keeps only reports.
        subscription = self.subscribe("backfill", maxsize=100_000)
        try:
            await self._call("start_backfill", instruments=names, start_us=start_us, end_us=end_us)
            assert self.connection is not None
            closed = asyncio.ensure_future(self.connection.closed.wait())
            try:
                while len(outcome) < len(names) or any(
                    event.state == "running" for event in outcome.values()
                ):
                    batch = asyncio.ensure_future(subscription.get())
                    await asyncio.wait([batch, closed], return_when=asyncio.FIRST_COMPLETED)
                    if not batch.done():
                        batch.cancel()
                        raise SptraderError(
                            "the daemon went away during the backfill; run it again to resume"
                        )
                    for event in batch.result():
                        if type(event) is BackfillProgressed and event.instrument in names:
                            outcome[event.instrument] = event
                            if on_progress is not None:
                                on_progress(event)
            finally:
                closed.cancel()
        finally:
            subscription.close()
        return outcome

    async def recent_window(self, instrument: str, timeframe: str, bars: int) -> tuple[int, int]:
        start, end = await self._call(
            "recent_window", instrument=instrument, timeframe=timeframe, bars=bars
        )
        return start, end

    async def fetch_missing(
        self, instrument: str, start_us: int, end_us: int, wait_s: float
    ) -> list[tuple[int, int]]:
        rows = await self._call(
            "fetch_missing",
            instrument=instrument,
            start_us=start_us,
            end_us=end_us,
            wait_ms=round(wait_s * 1000),
        )
        return [(start, end) for start, end in rows]

    async def bars_before(
        self, instrument: str, timeframe: str, before_us: int, count: int
    ) -> pl.DataFrame:
        rows = await self._call(
            "bars_before",
            instrument=instrument,
            timeframe=timeframe,
            before_us=before_us,
            count=count,
        )
        return candles_frame(rows)

    async def refresh_symbols(self, feed: str | None = None) -> None:
        await self._call("refresh_symbols", feed=feed)

    async def unknown_symbols(self, instruments: list[str]) -> tuple[list[str], list[str]]:
        unknown, unchecked = await self._call("unknown_symbols", instruments=list(instruments))
        return list(unknown), list(unchecked)

    async def import_bars(self, bars: pl.DataFrame) -> dict:
        """Refused: the daemon's engine holds the database, and the API carries no bars."""
        pid = self.welcome.get("pid")
        if self.host == "TUI":
            raise StoreLockedError(
                f"the TUI (pid {pid}) holds the database: quit it (q), import, then start it again"
            )
        raise StoreLockedError(
            f"the daemon (pid {pid}) holds the database: stop it"
            " (`sptrader stop`), import, then start it again"
        )
