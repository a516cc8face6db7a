"""The Engine owns the Bus, the Supervisor, the Store and the services around them.

One Engine, two hosts: the TUI runs it on the app's loop; the daemon (later) runs the
same one headless. Nothing here imports textual.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable

import polars as pl

from sptrader.bars import BarBuilder
from sptrader.bus import Bus, Subscription
from sptrader.clock import now_us
from sptrader.config import Settings
from sptrader.errors import SptraderError, UsageError
from sptrader.feeds.base import Feed, FeedService
from sptrader.logs import BusLogHandler
from sptrader.models import (
    US_PER_MINUTE,
    Bar,
    EventsDropped,
    QuoteReceived,
    TradeReceived,
    normalize_instrument,
    parse_instrument,
)
from sptrader.store import Store, queries
from sptrader.store.writer import StoreWriter
from sptrader.supervisor import Service, ServiceContext, Supervisor
from sptrader.threads import run_in_thread

log = logging.getLogger(__name__)


class BarService(Service):
    """Runs the BarBuilder on the bus: ticks in, forming and closed bars out."""

    kind = "bars"
    stoppable = False

    def __init__(self, bus: Bus, builder: BarBuilder, feeds: list[Feed], queue: int) -> None:
        super().__init__("bars")
        self.bus = bus
        self.builder = builder
        self.feeds = feeds
        self.subscription = bus.subscribe(
            "bars", maxsize=queue, policy="block", types=(QuoteReceived, TradeReceived)
        )

    def process(self, events: list[object]) -> list[object]:
        return self.builder.process(events)

    def close_due(self) -> list[object]:
        closed: list[object] = []
        for feed in self.feeds:
            closed.extend(self.builder.close_due(feed.clock_us(), feed.instruments))
        return closed

    async def run(self, context: ServiceContext) -> None:
        context.mark_running()
        loop = asyncio.get_running_loop()
        next_clock_check = loop.time() + 1.0
        while True:
            events = await self.subscription.get_within(1.0)
            out = self.process(events) if events else []
            if loop.time() >= next_clock_check:
                out.extend(self.close_due())
                next_clock_check = loop.time() + 1.0
            if events:
                context.events += len(events)
                context.last_event_us = events[-1].ts_us
            if out:
                await self.bus.publish(out)
            context.counters["late_ticks"] = self.builder.late_ticks

    async def drain(self) -> None:
        events = self.subscription.get_nowait()
        if events:
            self.bus.publish_nowait(self.process(events))


class Engine:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        config = settings.config
        self.config = config
        self.watchlist = list(config.watchlist)
        self.bus = Bus()
        self.supervisor = Supervisor(self.bus, config.supervisor)
        self.store: Store | None = None
        self.feeds: dict[str, Feed] = self._make_feeds(self.watchlist)
        self._feed_by_prefix = {feed.prefix: feed for feed in self.feeds.values()}
        self.builder = BarBuilder(self.price_source)
        self.bar_service = BarService(
            self.bus, self.builder, list(self.feeds.values()), config.store.writer_queue
        )
        self.writer: StoreWriter | None = None
        self._log_handler: BusLogHandler | None = None
        self._watch_task: asyncio.Task[None] | None = None
        self.started = False

    # --- construction -----------------------------------------------------------------

    def _make_feeds(self, instruments: list[str]) -> dict[str, Feed]:
        by_prefix: dict[str, list[str]] = {}
        for name in instruments:
            by_prefix.setdefault(parse_instrument(name)[0], []).append(name)
        feeds: dict[str, Feed] = {}
        if "SIM" in by_prefix:
            from sptrader.feeds.sim import SimFeed

            feeds["sim"] = SimFeed(by_prefix["SIM"], self.config.feeds.sim)
        if "BINANCE" in by_prefix:
            from sptrader.feeds.binance import BinanceFeed

            feeds["binance"] = BinanceFeed(by_prefix["BINANCE"], self.config.feeds.binance)
        if "REPLAY" in by_prefix:
            from sptrader.feeds.replay import ReplayFeed

            feeds["replay"] = ReplayFeed(
                by_prefix["REPLAY"], self.config.feeds.replay, self._load_stored, self._first_stored
            )
        return feeds

    def price_source(self, instrument: str) -> str:
        feed = self._feed_by_prefix.get(instrument.split(":", 1)[0])
        return feed.price_source(instrument) if feed else "trade"

    def history_feed(self, instrument: str) -> Feed | None:
        """The feed that can serve history for ``instrument`` (even if not watched)."""
        prefix = parse_instrument(instrument)[0]
        feed = self._feed_by_prefix.get(prefix)
        if feed is not None:
            return feed
        if prefix == "SIM" and self.config.feeds.sim.enabled:
            from sptrader.feeds.sim import SimFeed

            feed = SimFeed([], self.config.feeds.sim)
            self._feed_by_prefix["SIM"] = feed
            return feed
        return None

    # --- store (blocking: call from a thread, or before the loop runs) ---------------

    def open_store(self) -> Store:
        if self.store is None:
            store = Store(self.settings.store_path)
            store.migrate()
            self.store = store
        return self.store

    def require_store(self) -> Store:
        if self.store is None:
            raise SptraderError("the engine's store is not open")
        return self.store

    def seed_history(self, instruments: Iterable[str] | None = None) -> int:
        """Fill each instrument's stored 1m bars up to the current minute from its feed's
        history: the last ``store.seed_days`` days on a fresh store, else from the newest
        stored bar (inclusive: a partial bar stored at shutdown is replaced)."""
        store = self.require_store()
        now = now_us()
        end = now - now % US_PER_MINUTE
        earliest = end - int(self.config.store.seed_days * 1440) * US_PER_MINUTE
        written = 0
        for instrument in instruments if instruments is not None else self.watchlist:
            feed = self.history_feed(instrument)
            if feed is None:
                continue
            newest = queries.last_bar_ts(store, instrument)
            start = earliest if newest is None else max(earliest, newest)
            if start >= end:
                continue
            bars = feed.history(instrument, start, end)
            if bars is not None and not bars.is_empty():
                written += store.upsert_bars(bars)
                log.info("stored %d history bars of %s", bars.height, instrument)
        return written

    def _load_stored(
        self, instrument: str, start_us: int, end_us: int, source: str
    ) -> pl.DataFrame:
        store = self.require_store()
        if source == "ticks":
            return (
                store.cursor()
                .sql(
                    "SELECT * FROM ticks WHERE instrument = $instrument"
                    " AND ts >= make_timestamp($start) AND ts < make_timestamp($end) ORDER BY ts",
                    params={"instrument": instrument, "start": start_us, "end": end_us},
                )
                .pl()
            )
        return queries.bars_between(store, instrument, "1m", start_us, end_us)

    def _first_stored(self, instrument: str) -> int | None:
        store = self.require_store()
        first = queries.first_bar_ts(store, instrument)
        return first or None

    # --- lifecycle --------------------------------------------------------------------

    async def start(self) -> None:
        """Open the store, bring history up to date, and start every service."""
        loop = asyncio.get_running_loop()
        self._log_handler = BusLogHandler(self.bus, loop)
        package_logger = logging.getLogger("sptrader")
        if package_logger.level == logging.NOTSET:
            package_logger.setLevel(logging.INFO)
        package_logger.addHandler(self._log_handler)
        await run_in_thread(self.open_store)
        self.writer = StoreWriter(self.require_store(), self.bus, self.config.store)
        self.supervisor.add(self.writer)
        self.supervisor.add(self.bar_service)
        for feed in self.feeds.values():
            self.supervisor.add(FeedService(feed))
        self.supervisor.start("store")
        self.supervisor.start("bars")
        # History first, so live bars continue the stored ones.
        await run_in_thread(self.seed_history)
        for name in self.feeds:
            self.supervisor.start(name)
        self._watch_task = loop.create_task(self._watch())
        self.started = True
        log.info(
            "engine started: %d instruments, store %s",
            len(self.watchlist),
            self.settings.store_path,
        )

    async def stop(self) -> None:
        """Stop feeds, let bars and the writer finish, flush, close the store."""
        if not self.started:
            if self.store is not None:
                await run_in_thread(self.store.close)
                self.store = None
            return
        self.started = False
        for name in self.feeds:
            with contextlib.suppress(SptraderError):
                await self.supervisor.stop(name)
        await self.bar_service.drain()
        log.info("engine stopping: store flushed")
        if self._watch_task is not None:
            self._watch_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch_task
        await self.supervisor.stop_all()
        if self.writer is not None:
            await self.writer.drain()
        if self._log_handler is not None:
            logging.getLogger("sptrader").removeHandler(self._log_handler)
            self._log_handler = None
        if self.store is not None:
            await run_in_thread(self.store.close)
            self.store = None

    async def _watch(self) -> None:
        """Once a second: report subscribers that dropped events."""
        reported: dict[str, int] = {}
        while True:
            events: list[object] = []
            for subscription in self.bus.subscriptions:
                before = reported.get(subscription.name, 0)
                if subscription.dropped > before:
                    reported[subscription.name] = subscription.dropped
                    count = subscription.dropped - before
                    events.append(
                        EventsDropped(now_us(), subscription.name, count, subscription.dropped)
                    )
                    log.warning(
                        "%s fell behind: dropped %d events (%d in all)",
                        subscription.name,
                        count,
                        subscription.dropped,
                    )
            if events:
                self.bus.publish_nowait(events)
            await asyncio.sleep(1.0)

    # --- reads ------------------------------------------------------------------------

    def subscribe(self, name: str, maxsize: int) -> Subscription:
        return self.bus.subscribe(name, maxsize=maxsize, policy="drop_oldest")

    def check_instrument(self, instrument: str) -> str:
        name = normalize_instrument(instrument)
        if name in self.watchlist or self.history_feed(name) is not None:
            return name
        store = self.require_store()
        if queries.last_bar_ts(store, name) is None:
            raise UsageError(
                f"unknown instrument {name}: nothing stored and no configured feed serves it"
            )
        return name

    def forming_bar(self, instrument: str) -> Bar | None:
        return self.builder.forming(instrument)
