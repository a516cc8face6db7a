"""The Engine owns the Bus, the Supervisor, the Store, the feed registry and the services
around them, each built from what it uses (not from the Engine).

One Engine, two hosts: the TUI runs it on the app's loop, the daemon runs the same one
headless; callers reach it only through an EngineClient (sptrader.client). Nothing here
imports textual.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Coroutine, Iterable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from sptrader.alerting.channels import DesktopChannel, Dispatcher, TuiChannel, WebhookChannel
from sptrader.alerting.notice import Notice
from sptrader.alerting.service import AlertService
from sptrader.alerting.webhooks import Alerter
from sptrader.backfill import LIVE_EDGE_US, Backfill
from sptrader.bars import BarBuilder
from sptrader.broker import records as broker_records
from sptrader.broker.halts import Halts
from sptrader.broker.ids import Ids
from sptrader.broker.live import LiveBroker
from sptrader.broker.service import PaperBroker
from sptrader.bus import Bus, Subscription
from sptrader.clock import format_us, now_us
from sptrader.config import LIVE_FEEDS, Settings
from sptrader.data.manager import DataManager
from sptrader.data.owed import OwedRefetches, remove_coverage
from sptrader.errors import SptraderError, UsageError
from sptrader.feeds import Feed, FeedService
from sptrader.feeds.base import ExchangeFeed
from sptrader.feeds.registry import FeedRegistry, serves_history
from sptrader.intervals import subtract
from sptrader.logs import BusLogHandler
from sptrader.models import (
    US_PER_MINUTE,
    BackfillProgressed,
    Bar,
    BarClosed,
    EventsDropped,
    HistoryBarsReady,
    HistoryFetched,
    HistoryStored,
    LiveCoverageRecorded,
    QuoteReceived,
    ServiceState,
    ServiceStatus,
    TradeReceived,
    VenueBarClosed,
    WatchlistChanged,
    normalize_instrument,
    parse_instrument,
)
from sptrader.store import Store, queries
from sptrader.store.writer import StoreWriter
from sptrader.supervisor import Service, ServiceContext, Supervisor
from sptrader.symbols import SymbolDirectory
from sptrader.threads import run_in_thread
from sptrader.watchlist import load_watchlist, save_watchlist
from sptrader.wording import live_venues_line

if TYPE_CHECKING:
    from sptrader.backtest.jobs import BacktestJobs
    from sptrader.scanners.service import ScannerDeps

log = logging.getLogger(__name__)


class BarService(Service):
    """Runs the BarBuilder on the bus: ticks in, forming and closed bars out."""

    kind = "bars"
    stoppable = False

    def __init__(self, bus: Bus, builder: BarBuilder, feeds: dict[str, Feed], queue: int) -> None:
        super().__init__("bars")
        self.bus = bus
        self.builder = builder
        self.feeds = feeds  # the engine's live dict: feeds added later are closed too
        self.subscription = bus.subscribe(
            "bars",
            maxsize=queue,
            policy="block",
            types=(QuoteReceived, TradeReceived, HistoryFetched, VenueBarClosed),
        )
        # The venue's closed bars that equalled the one built from trades, and those
        # that did not (the venue's was taken).
        self.venue_bars_matched = 0
        self.venue_bars_replaced = 0

    def process(self, events: list[object]) -> list[object]:
        if not any(type(event) in (HistoryFetched, VenueBarClosed) for event in events):
            return self.builder.process(events)
        # Fetched history and the venue's bars take their place in the stream: ticks
        # before them are built (and written) first, then the venue's bars replace them.
        out: list[object] = []
        run: list[object] = []
        for event in events:
            kind = type(event)
            if kind is HistoryFetched:
                out.extend(self.builder.process(run))
                run = []
                self.builder.accept_history(event.instrument, event.start_us, event.end_us)
                out.append(HistoryBarsReady(event))
            elif kind is VenueBarClosed:
                out.extend(self.builder.process(run))
                run = []
                out.extend(self._take_venue_bar(event.bar))
            else:
                run.append(event)
        out.extend(self.builder.process(run))
        return out

    def _take_venue_bar(self, bar: Bar) -> list[object]:
        """The venue's closed bar is the record: compare it with the one built from its
        trades and publish the venue's unless the built one was closed and equal. Its
        minute is final from here on (later trades for it are only counted late)."""
        built = self.builder.bar_at(bar.instrument, bar.ts_us)
        forming = self.builder.forming(bar.instrument)
        still_forming = forming is not None and forming.ts_us == bar.ts_us
        self.builder.accept_history(bar.instrument, bar.ts_us, bar.ts_us + US_PER_MINUTE)
        if built is not None and same_bar(built, bar):
            self.venue_bars_matched += 1
            return [BarClosed(bar)] if still_forming else []
        self.venue_bars_replaced += 1
        if built is not None:
            log.info(
                "%s %s: the venue's bar differs from the one built from its trades"
                " (built %s, venue %s); the venue's is stored",
                bar.instrument,
                format_us(bar.ts_us),
                _bar_text(built),
                _bar_text(bar),
                extra={"source": "bars"},
            )
        return [BarClosed(bar)]

    def close_due(self) -> list[object]:
        closed: list[object] = []
        for feed in list(self.feeds.values()):
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
            context.counters["late_applied"] = self.builder.late_applied
            if self.venue_bars_matched or self.venue_bars_replaced:
                context.counters["venue_bars_matched"] = self.venue_bars_matched
                context.counters["venue_bars_replaced"] = self.venue_bars_replaced

    async def drain(self) -> None:
        events = self.subscription.get_nowait()
        if events:
            self.bus.publish_nowait(self.process(events))


def same_bar(built: Bar, venue: Bar) -> bool:
    """Equal prices and trade count, and volume equal but for float summation noise."""
    return (
        built.open == venue.open
        and built.high == venue.high
        and built.low == venue.low
        and built.close == venue.close
        and built.trades == venue.trades
        and _close(built.volume, venue.volume)
        and (built.buy_volume is None or _close(built.buy_volume, venue.buy_volume))
    )


def _close(built: float, venue: float | None) -> bool:
    return venue is not None and abs(built - venue) <= 1e-9 * max(abs(venue), 1e-12)


def _bar_text(bar: Bar) -> str:
    return (
        f"O {bar.open!r} H {bar.high!r} L {bar.low!r} C {bar.close!r}"
        f" V {bar.volume!r} n {bar.trades}"
    )


# How long a (re)connecting stream waits for its gap fill before streaming anyway.
GAP_FILL_WAIT_S = 3.0
# A wall-clock jump this much larger than the monotonic clock's means the machine slept:
# streams are reconnected, and reconnecting backfills the gap.
WAKE_JUMP_S = 30.0


# How often the time streaming feeds were up is recorded as covered.
LIVE_COVERAGE_EVERY_S = 10
# How often a collector forgets what it heard long ago (the writers keep history), and
# the least it remembers (its seed window, if longer).
COLLECTOR_FORGETS_EVERY_S = 3600
COLLECTOR_REMEMBERS_DAYS = 2.0


#: What an engine does (`sptrader start --role`): everything, or one side of NATS.
ROLES = ("all", "collector", "writer")
#: How the services of a writer's companion collector are named (`--role all`).
COMPANION_PREFIX = "collector/"


class Engine:
    def __init__(
        self,
        settings: Settings,
        *,
        instruments: list[str] | None = None,
        role: str = "all",
    ) -> None:
        self.settings = settings
        config = settings.config
        self.config = config
        if role not in ROLES:
            raise UsageError(f"unknown role {role!r} (known: {', '.join(ROLES)})")
        if role != "all" and not config.nats.enabled:
            raise UsageError(f"--role {role} needs [nats] enabled = true in the config")
        # "collector": feeds and bars, out to NATS; "writer": NATS in, the store, the
        # scanners, the broker and the API. "all": one process does everything; with
        # NATS enabled that is a writer with a collector beside it, events crossing NATS.
        self.companion: Engine | None = None
        if role == "all" and config.nats.enabled:
            role = "writer"
            self.companion = Engine(settings, instruments=instruments, role="collector")
        self.role = role
        # ``instruments``: stream just these (a one-shot command such as `sptrader
        # order`), leaving the saved watchlist as it is.
        self.watchlist = (
            load_watchlist(settings)
            if instruments is None
            else list(dict.fromkeys(map(normalize_instrument, instruments)))
        )
        # A one-shot engine streams what it was given, not the cluster's list.
        follows_cluster = instruments is None
        self.bus = Bus()
        self.supervisor = Supervisor(self.bus, config.supervisor)
        self.store: Store | None = None
        # Every feed: those streaming the watchlist and those made for history and
        # symbol lists.
        self.feed_registry = FeedRegistry(
            config,
            service_status=self.supervisor.status,
            prepare=self._hook_refetches,
            load_stored=self._load_stored,
            first_stored=self._first_stored,
        )
        # The streaming feeds by service name (the registry's: kept current by it).
        self.feeds: dict[str, Feed] = self.feed_registry.streaming
        self.symbols = SymbolDirectory(
            config.symbols, store=self.require_store, feeds=self.feed_registry
        )
        self.data = DataManager(
            config.data,
            store=self.require_store,
            store_if_open=lambda: self.store,
            watchlist=lambda: self.watchlist,
        )
        # Feed name -> the minute since which it has streamed (covered while running).
        self._streaming_since: dict[str, int] = {}
        if role != "writer":  # a writer's market data comes from the collectors
            for prefix, names in _by_prefix(self.watchlist).items():
                self.feed_registry.stream(self.feed_registry.make(prefix, names))
        self.builder = BarBuilder(self.price_source)
        self.bar_service = BarService(self.bus, self.builder, self.feeds, config.store.writer_queue)
        # NATS (sptrader.cluster): a collector's publisher taps the bus from here on, so
        # no bar is missed; a writer's consumer feeds it (and builds no bars itself).
        self.publisher: Any = None
        self.consumer: Any = None
        # The Delta Lake sink ([lake] uri), made on start.
        self.lake: Any = None
        if role == "collector":
            from sptrader.cluster.publisher import NatsPublisher

            self.publisher = NatsPublisher(
                self.bus,
                config.nats,
                config.store.writer_queue,
                describe=self._describe_collector,
                follow_watchlist=self._adopt_watchlist if follows_cluster else None,
            )
        elif role == "writer":
            from sptrader.cluster.consumer import NatsConsumer

            self.bar_service.subscription.close()
            self.consumer = NatsConsumer(
                self.bus,
                config.nats,
                store_queued=self._store_queued,
                apply_coverage=self._apply_live_coverage,
                home=settings.home,
                watched=lambda: list(self.watchlist),
                adopt_watchlist=self._adopt_watchlist,
            )
        self.writer: StoreWriter | None = None
        self._log_handler: BusLogHandler | None = None
        self._watch_task: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[object]] = set()
        self._backfills: set[Backfill] = set()
        # Ranges known to be short (trades lost, a minute seen only in part): fetched
        # again until that succeeds, persisted, and not covered meanwhile.
        self.owed = OwedRefetches(clock=lambda: now_us())
        # Gap fills still running (a slow history API lets the stream go ahead).
        self._gap_fills: set[asyncio.Future[Any]] = set()
        self._wall_clock = time.time
        self._monotonic = time.monotonic
        self.started = False
        # Scanner services by scanner name (sptrader.scanners), added on start.
        self.scanners: dict[str, Any] = {}
        # The paper broker (sptrader.broker), loaded from the store on start; None when
        # [broker] enabled = false. It taps the bus from here on, so no quote is missed.
        self.broker: PaperBroker | None = None
        if config.broker.enabled and role != "collector":
            self.broker = PaperBroker(
                self.bus, config.broker, config.risk, feeds=self.feed_registry
            )
        # The kill switch of every venue (sptrader.broker.halts), loaded on start.
        self.halts = Halts()
        # Alerts (sptrader.alerting): the channels every notice can go out on, and the
        # rules' service when [[alerts.rules]] has any.
        self.alert_channels = Dispatcher([TuiChannel(self.bus), DesktopChannel()])
        if config.alerts.webhooks:
            self.alert_channels.add(WebhookChannel(Alerter(config.alerts)))
        # The rules' service: made on start when the config or the store has a rule (or
        # when the first one is added), so an engine without rules runs no such service.
        self.alerts: AlertService | None = None
        # A live broker per [brokers.NAME] with trading = "live" (sptrader.broker.live).
        self.live_brokers: dict[str, LiveBroker] = {}
        for name in type(config.brokers).__struct_fields__:
            section = getattr(config.brokers, name)
            if section.live and role != "collector":
                from sptrader.venues.registry import make_venue

                self.live_brokers[name] = LiveBroker(
                    self.bus,
                    make_venue(name, section),
                    config.risk,
                    halts=self.halts,
                    feeds=self.feed_registry,
                    instruments=lambda: list(self.watchlist),
                )
        # Backtests clients start (sptrader.backtest.jobs), made on first use (the
        # backtester's imports cost a command that never runs one a quarter second).
        self._backtests: BacktestJobs | None = None

    # --- services (sptrader.supervisor) -----------------------------------------------

    def service_statuses(self) -> list[ServiceStatus]:
        """Every service this process runs: a companion collector's are named
        ``collector/NAME`` (it has a ``store`` and ``bars`` of its own)."""
        statuses = self.supervisor.status()
        if self.companion is not None:
            statuses += [
                replace(status, name=COMPANION_PREFIX + status.name)
                for status in self.companion.supervisor.status()
            ]
        return statuses

    def supervisor_of(self, name: str) -> tuple[Supervisor, str]:
        """The supervisor that runs service ``name``, and its name there."""
        if self.companion is not None and name.startswith(COMPANION_PREFIX):
            return self.companion.supervisor, name.removeprefix(COMPANION_PREFIX)
        return self.supervisor, name

    @property
    def backtests(self) -> BacktestJobs:
        if self._backtests is None:
            from sptrader.backtest.jobs import BacktestJobs

            self._backtests = BacktestJobs()
        return self._backtests

    # --- feeds (sptrader.feeds.registry) ----------------------------------------------

    def _hook_refetches(self, feed: Feed) -> None:
        """An exchange feed reports the trades it lost and the minute its stream joined
        in: the engine owes those minutes a re-fetch."""
        if isinstance(feed, ExchangeFeed):
            feed.on_lost_trades = self._trades_lost
            if feed.refetch_partial_minute:
                feed.on_stream_joined = lambda minute: self._stream_joined(feed, minute)

    def price_source(self, instrument: str) -> str:
        return self.feed_registry.price_source(instrument)

    def history_feed(self, instrument: str) -> Feed | None:
        """The feed that can serve history for ``instrument`` (even if not watched):
        any enabled feed, made on first use."""
        return self.feed_registry.history_feed(instrument)

    def enabled_feeds(self) -> list[Feed]:
        """One feed object per enabled source (for symbol search and backfills)."""
        return self.feed_registry.enabled_feeds()

    # --- store (blocking: call from a thread, or before the loop runs) ---------------

    @property
    def store_path(self) -> Path:
        """A collector's store is its memory only (what it heard, what it owes), kept
        apart from a writer's in the same home."""
        path = self.settings.store_path
        return path.with_name("collector.duckdb") if self.role == "collector" else path

    def open_store(self) -> Store:
        if self.store is None:
            store = Store(self.store_path)
            store.migrate()
            self.store = store
        return self.store

    def require_store(self) -> Store:
        if self.store is None:
            raise SptraderError("the engine's store is not open")
        return self.store

    def _gap_start(self, instrument: str, end_us: int) -> int:
        """Where an instrument's stored bars stop: its newest bar (inclusive, it may be
        partial), or ``store.seed_days`` back on a fresh store."""
        earliest = end_us - int(self.config.store.seed_days * 1440) * US_PER_MINUTE
        store = self.require_store()
        newest = queries.last_bar_ts(store, instrument)
        if newest is None:
            return earliest
        # Live coverage is recorded every few seconds: refetch from where it ends if
        # that is older than the newest bar, so coverage has no hole either.
        covered = store.coverage(instrument)
        if covered and earliest < covered[-1][1] < newest:
            newest = covered[-1][1]
        return max(earliest, newest)

    def seed_history(self, instruments: Iterable[str] | None = None) -> int:
        """Fill stored 1m bars up to the current minute, writing directly: for
        instruments that are not streaming (the CLI, a chart of an unwatched one).
        Streaming ones are filled by their feed service, in order with live bars."""
        store = self.require_store()
        now = now_us()
        end = now - now % US_PER_MINUTE
        written = 0
        for instrument in instruments if instruments is not None else self.watchlist:
            feed = self.history_feed(instrument)
            if feed is None:
                continue
            start = self._gap_start(instrument, end)
            if start >= end:
                continue
            bars = feed.history(instrument, start, end)
            if bars is not None and not bars.is_empty():
                written += store.upsert_bars(bars)
                log.info("stored %d history bars of %s", bars.height, instrument)
            store.add_coverage(instrument, "1m", feed.name, start, end)
        return written

    def _fetch_gaps(
        self, feed: Feed, instruments: list[str], end_us: int
    ) -> tuple[list[HistoryFetched], list[tuple[str, int, int, str]]]:
        """History since each instrument's newest stored bar (blocking); the ranges that
        could not be fetched, with why."""
        fetched: list[HistoryFetched] = []
        problems: list[tuple[str, int, int, str]] = []
        for instrument in instruments:
            start = self._gap_start(instrument, end_us)
            if start >= end_us:
                continue
            try:
                bars = feed.history(instrument, start, end_us)
            except Exception as error:  # the stream may still work: report, go on
                problems.append((instrument, start, end_us, str(error).splitlines()[0]))
                continue
            if bars is not None and not bars.is_empty():
                fetched.append(HistoryFetched(instrument, start, end_us, bars))
        return fetched, problems

    async def _before_stream(self, feed: Feed, context: ServiceContext) -> None:
        """On every start and reconnect of a feed: check its symbols, then backfill the
        gap since the last stored bars before live bars continue."""
        await self._check_feed_symbols(feed, context)
        if not feed.realtime or not feed.instruments:
            return
        now = now_us()
        end = now - now % US_PER_MINUTE
        # Normally the gap is filled before live bars continue. When the history API is
        # slow (retrying 503s, 429s) the stream must not wait for it, losing live data
        # meanwhile: it streams, and the fill lands when it is done (fetched bars still
        # win over any built ones of those minutes).
        filling = asyncio.ensure_future(
            run_in_thread(self._fetch_gaps, feed, list(feed.instruments), end)
        )
        self._gap_fills.add(filling)
        filling.add_done_callback(self._gap_fills.discard)
        done, _ = await asyncio.wait([filling], timeout=GAP_FILL_WAIT_S)
        if done:
            await self._gap_filled(feed, context, *filling.result())
        else:
            log.info(
                "the backfill is slow (history API trouble?): streaming while it goes on",
                extra={"source": feed.name},
            )
            self._spawn(self._gap_filled_later(feed, context, filling))
        if feed.refetch_partial_minute:
            await self._owe_many(
                [(instrument, end, end + US_PER_MINUTE) for instrument in feed.instruments],
                "a stream joined mid-minute",
            )
        self._streaming_since[feed.name] = end

    async def _gap_filled_later(
        self, feed: Feed, context: ServiceContext, filling: asyncio.Future[Any]
    ) -> None:
        fetched, problems = await filling
        await self._gap_filled(feed, context, fetched, problems)

    async def _gap_filled(
        self,
        feed: Feed,
        context: ServiceContext,
        fetched: list[HistoryFetched],
        problems: list[tuple[str, int, int, str]],
    ) -> None:
        for instrument, start, stop, problem in problems:
            context.count("gap_fill_errors")
            if self.alerts is not None:
                self.alerts.gap(instrument, start, stop, f"the backfill failed: {problem}")
            log.warning(
                "could not backfill %s (%s); streaming anyway, the gap is owed a re-fetch",
                instrument,
                problem,
                extra={"source": feed.name},
            )
        # The next start would backfill from the newest stored bar, past this gap: keep
        # it as owed work instead.
        await self._owe_many(
            [(instrument, start, stop) for instrument, start, stop, _ in problems],
            "the backfill before streaming failed",
        )
        if fetched:
            context.count("gap_fills", len(fetched))
            log.info(
                "backfilled %d bars of %d instruments before streaming",
                sum(item.bars.height for item in fetched),
                len(fetched),
                extra={"source": feed.name},
            )
            await self.bus.publish(fetched)

    def catching_up(self) -> bool:
        """True while gap fills or owed re-fetches are outstanding."""
        return bool(self._gap_fills) or self.owed.count() > 0

    async def _check_feed_symbols(self, feed: Feed, context: ServiceContext) -> None:
        """Unknown symbols are an error in the services pane; all unknown fails the feed."""
        unknown = await run_in_thread(self.symbols.unknown, feed.instruments)
        context.problem = ""
        if not unknown:
            return
        text = f"unknown symbol{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} (see `sptrader symbols --feed {feed.name}`)"
        if len(unknown) == len(feed.instruments):
            raise SptraderError(text)
        context.problem = text
        log.error("%s", text, extra={"source": feed.name})

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
        """Open the store and start every service; each feed backfills its gap first."""
        if self.companion is not None:
            await self.companion.start()
        loop = asyncio.get_running_loop()
        self._log_handler = BusLogHandler(self.bus, loop)
        package_logger = logging.getLogger("sptrader")
        if package_logger.level == logging.NOTSET:
            package_logger.setLevel(logging.INFO)
        package_logger.addHandler(self._log_handler)
        await run_in_thread(self.open_store)
        owed = await run_in_thread(self.owed.load, self.require_store())
        if owed:
            log.info("%d ranges are still owed a re-fetch from the last run", owed)
        self.writer = StoreWriter(self.require_store(), self.bus, self.config.store)
        self.supervisor.add(self.writer)
        if self.role != "collector" and self.config.lake.uri:
            # [lake] uri: closed bars (and kept ticks) appended to Delta tables too; it
            # subscribes before the feeds start, so the lake misses nothing the store gets.
            # (Imported here: deltalake costs every other start 80 ms.)
            from sptrader.lake.sink import lake_service

            self.lake = lake_service(self.bus, self.config, home=self.settings.home)
            if self.lake is not None:
                self.supervisor.add(self.lake)
                self.supervisor.start(self.lake.name)
        if self.role != "writer":
            self.supervisor.add(self.bar_service)
        self._loop = loop
        for link in (self.publisher, self.consumer):
            if link is not None:
                self.supervisor.add(link)
        store = self.require_store()
        await run_in_thread(self.halts.load, store)
        ids = Ids(*await run_in_thread(broker_records.next_ids, store))
        if self.broker is not None:
            # Before the scanners (their signals go to it) and the feeds.
            self.broker.halts = self.halts
            await self.broker.open(store, ids)
            self.supervisor.add(self.broker)
        for live in self.live_brokers.values():
            await live.open(store, ids)
            self.supervisor.add(live)
        if self.live_brokers:
            log.warning("%s; tickets default to paper", live_venues_line(self.config))
        for feed in self.feeds.values():
            self.supervisor.add(FeedService(feed, self._before_stream))
        self.supervisor.start("store")
        if self.role != "writer":
            self.supervisor.start("bars")
        for link in (self.publisher, self.consumer):
            if link is not None:
                self.supervisor.start(link.name)
        if self.broker is not None:
            self.supervisor.start(self.broker.name)
        for live in self.live_brokers.values():
            self.supervisor.start(live.name)
        if self.role != "collector":
            alerts = self.make_alerts()
            await run_in_thread(alerts.load, store)
            if alerts.rules:
                self._start_alerts(alerts)
                self._spawn(self._say_started(alerts))
        for name in self.feeds:
            self.supervisor.start(name)
        if self.role != "collector":
            self._start_scanners()
        self._watch_task = loop.create_task(self._watch())
        self._spawn(self.symbols.refresh_stale())
        self.started = True
        log.info(
            "engine started%s: %d instruments, store %s",
            "" if self.role == "all" else f" as {self.role}",
            len(self.watchlist),
            self.store_path,
        )

    # --- scanners (sptrader.scanners) -------------------------------------------------

    @functools.cached_property
    def scanner_deps(self) -> ScannerDeps:
        """What scanners use of the engine (made on first use: scanners load lazily)."""
        from sptrader.scanners.service import ScannerDeps

        return ScannerDeps(
            store=self.require_store,
            data=self.data,
            watchlist=lambda: self.watchlist,
            history_feed=self.history_feed,
            make_backfill=self.make_backfill,
            is_stale=self.is_stale,
            settle_bars=self.settle_bars,
            bus=self.bus,
            strategy_modules=self.config.strategies.modules,
            home=self.settings.home,
            llm=self.config.llm,
        )

    async def _say_started(self, alerts: AlertService) -> None:
        """The daemon rules hear "started", or "restarted" when the last run's own
        notice was a start with no stop after it (it was killed or crashed)."""
        from sptrader.alerting import history

        last = await run_in_thread(history.last_of_kind, self.require_store(), "daemon")
        if last is not None and last["title"] == "SPtrader started":
            await alerts.system(
                "daemon", "SPtrader restarted", "the engine started again after an unclean stop"
            )
        else:
            await alerts.system("daemon", "SPtrader started", "the engine started")

    def make_alerts(self) -> AlertService:
        """The alert rules' service on this engine (not started)."""
        return AlertService(
            self.bus,
            self.config.alerts.rules,
            self.alert_channels,
            store=self.require_store,
            pnl=self._pnl_figures,
            halts=lambda: self.halts.halted,
            feeds=lambda: set(self.feeds),
        )

    def _start_alerts(self, alerts: AlertService) -> None:
        self.alerts = alerts
        self.supervisor.add(alerts)
        self.supervisor.start(alerts.name)

    async def ensure_alerts(self) -> AlertService:
        """The running rules' service, started now if it was not (the first rule added)."""
        if self.alerts is None:
            alerts = self.make_alerts()
            await run_in_thread(alerts.load, self.require_store())
            if self.started:
                self._start_alerts(alerts)
            else:
                return alerts  # a store-only engine: changes the store, runs nothing
        return self.alerts

    async def deliver_notice(self, notice: Notice, channels: list[str]) -> None:
        """A notice that is not an alert rule's (a scheduled report) to its channels,
        kept in the alert history like the rules' own."""
        from sptrader.alerting import history

        sent = self.alert_channels.deliver(notice, channels)
        await run_in_thread(history.record, self.require_store(), [(notice, sent)])

    def _pnl_figures(self) -> list[tuple[str, str, str, float]]:
        """(scope, key, what, value) for the P&L alert rules: each venue's day P&L and
        each open position's unrealized P&L, at the newest quotes."""
        figures: list[tuple[str, str, str, float]] = []
        brokers: list[tuple[str, Any]] = []
        if self.broker is not None and self.broker.book is not None:
            brokers.append(("paper", self.broker))
        brokers.extend((name, live) for name, live in self.live_brokers.items() if live.store)
        for venue, broker in brokers:
            label = venue if venue == "paper" else venue.upper()
            account = broker.account()
            figures.append(("day", venue, f"{label} day P&L", float(account["day_pnl"])))
            for position in broker.positions():
                instrument = position["instrument"]
                figures.append(
                    (
                        "position",
                        f"{venue} {instrument}",
                        f"{label} {instrument} P&L",
                        float(position["unrealized"] or 0.0),
                    )
                )
        return figures

    def _start_scanners(self) -> None:
        """A service per configured scanner; the enabled ones start (the rest can be
        started from the services pane)."""
        from sptrader.scanners.service import add_scanners

        self.scanners = add_scanners(
            self.supervisor, self.scanner_deps, self.config.scanners, self.config.alerts
        )
        for service in self.scanners.values():
            if service.config.enabled:
                self.supervisor.start(service.name)
        if any(entry.enabled for entry in self.config.ml.retrain):
            from sptrader.scanners.retrain import RetrainScheduler

            retraining = RetrainScheduler(
                self.config.ml.retrain,
                {config.name: config for config in self.config.scanners},
                self.require_store,
                self.settings.home,
                self.config.strategies.modules,
            )
            self.supervisor.add(retraining)
            self.supervisor.start(retraining.name)

    async def run_scanner(self, name: str) -> Any:
        """Run scanner ``name`` now (after any run in progress); its ScanResult."""
        from sptrader.scanners.service import find_scanner

        return await find_scanner(self.scanners, name).run_now()

    def _spawn(self, coroutine: Coroutine[object, object, object]) -> None:
        """A background job the engine keeps a reference to (and cancels on stop)."""
        task = asyncio.get_running_loop().create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def stop(self) -> None:
        """Stop feeds, let bars and the writer finish, flush, close the store."""
        if self.companion is not None:
            # The collector first: what it sends last is stored now or on the next start.
            await self.companion.stop()
        if self._backtests is not None:
            await self._backtests.close()  # their processes go; loading ones read no more
        if not self.started:
            if self.store is not None:
                await run_in_thread(self.store.close)
                self.store = None
            return
        self.started = False
        if self.alerts is not None:
            with contextlib.suppress(Exception):
                await self.alerts.system("daemon", "SPtrader stopping", "the engine is stopping")
        await run_in_thread(self.record_live_coverage)
        for name in self.feeds:
            with contextlib.suppress(SptraderError):
                await self.supervisor.stop(name)
        # Backfill threads write to the store: they must finish before it closes.
        for backfill in list(self._backfills):
            backfill.cancel()
        for task in list(self._background):
            task.cancel()
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        await self.bar_service.drain()
        if self.publisher is not None:
            with contextlib.suppress(Exception):
                await self.publisher.drain()
        log.info("engine stopping: store flushed")
        if self._watch_task is not None:
            self._watch_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch_task
        await self.supervisor.stop_all()
        if self.broker is not None:
            # Its last quotes and signals handled, every change stored.
            await self.broker.drain()
        for live in self.live_brokers.values():
            await live.drain()
        if self.writer is not None:
            await self.writer.drain()
        if self.lake is not None:
            await self.lake.drain()
        await run_in_thread(self.owed.sync, self.require_store())
        if self._log_handler is not None:
            logging.getLogger("sptrader").removeHandler(self._log_handler)
            self._log_handler = None
        if self.store is not None:
            await run_in_thread(self.store.close)
            self.store = None

    async def _watch(self) -> None:
        """Once a second: report subscribers that dropped events, re-fetch partly seen
        minutes once closed, notice the machine waking from sleep, and (every few
        seconds) record what live feeds covered."""
        reported: dict[str, int] = {}
        last_wall, last_mono = self._wall_clock(), self._monotonic()
        coverage_due = last_mono + LIVE_COVERAGE_EVERY_S
        forget_due = last_mono if self.role == "collector" else float("inf")
        while True:
            self._report_drops(reported)
            self._refetch_due()
            self._show_owed()
            wall, mono = self._wall_clock(), self._monotonic()
            jump = (wall - last_wall) - (mono - last_mono)
            last_wall, last_mono = wall, mono
            if jump > WAKE_JUMP_S:
                self._reconnect_after_sleep(jump)
            # A deadline, not `int(mono) % 10`: a late tick could skip or repeat it.
            if mono >= coverage_due:
                coverage_due = mono + LIVE_COVERAGE_EVERY_S
                self._spawn(run_in_thread(self.record_live_coverage))
            if mono >= forget_due:
                forget_due = mono + COLLECTOR_FORGETS_EVERY_S
                self._spawn(run_in_thread(self.forget_old_heard))
            await asyncio.sleep(1.0)

    def forget_old_heard(self) -> None:
        """A collector keeps only what it needs to heal its gaps (blocking)."""
        from sptrader.store.retention import forget_before

        store = self.store
        if store is None:
            return
        days = max(self.config.store.seed_days, COLLECTOR_REMEMBERS_DAYS)
        try:
            deleted = forget_before(store, now_us() - int(days * 1440) * US_PER_MINUTE)
        except Exception as error:  # a write conflict with the store's writer: next time
            log.warning("could not forget old bars: %s", error)
            return
        if any(deleted.values()):
            log.info(
                "forgot what was heard over %g days ago: %s",
                days,
                ", ".join(f"{count:,} {table}" for table, count in deleted.items() if count),
            )

    def _report_drops(self, reported: dict[str, int]) -> None:
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

    def record_live_coverage(self) -> None:
        """Streaming feeds cover their instruments from when they (re)started to the
        last closed minute they demonstrably delivered: up to the minute in which they
        last heard anything (a silent connection proves nothing), less the ranges owed
        a re-fetch. Blocking."""
        store = self.store
        if store is None:
            return
        states = {status.name: status.state for status in self.supervisor.status()}
        now = now_us()
        minute = now - now % US_PER_MINUTE
        ranges: list[tuple[str, str, str, int, int]] = []
        for name, since in self._streaming_since.items():
            if states.get(name) != ServiceState.RUNNING or name not in self.feeds:
                continue
            end = min(minute, self._heard_until(name))
            for instrument in self.feeds[name].instruments:
                owed = self.owed.ranges(instrument)
                ranges.extend(
                    (instrument, "1m", name, start, stop)
                    for start, stop in subtract([(since, end)], owed)
                )
        store.add_coverage_many(ranges)
        self._uncover_owed({entry[0] for entry in ranges})
        if self.publisher is not None and ranges:
            # Behind the bars it covers on the bus, so the writer stores those first.
            owed = {name: self.owed.ranges(name) for name in {entry[0] for entry in ranges}}
            event = LiveCoverageRecorded(now, ranges, {k: v for k, v in owed.items() if v})
            self._loop.call_soon_threadsafe(self.bus.publish_nowait, [event])

    # --- NATS (sptrader.cluster) ------------------------------------------------------

    def _describe_collector(self) -> dict[str, Any]:
        """What a collector's heartbeat says: its instruments and which are stale."""
        instruments = sorted({name for feed in self.feeds.values() for name in feed.instruments})
        return {
            "instruments": instruments,
            "stale": sorted(self.stale_instruments()),
            # The live feeds it can stream: a writer asks before adding an instrument.
            "feeds": [prefix for prefix in LIVE_FEEDS if self.feed_registry.is_enabled(prefix)],
        }

    async def _store_queued(self) -> None:
        """Everything the consumer put on the bus so far is stored (it acks after)."""
        if self.writer is not None:
            await self.writer.store_queued()

    async def _apply_live_coverage(self, event: LiveCoverageRecorded) -> None:
        """A collector's live coverage, recorded in this writer's store as it was there."""

        def apply() -> None:
            store = self.require_store()
            store.add_coverage_many(event.ranges)
            with store.transaction() as cursor:
                for instrument, owed in event.owed.items():
                    for start, end in owed:
                        remove_coverage(cursor, instrument, start, end)

        await run_in_thread(apply)

    def cluster_hosts(self) -> list[dict[str, Any]]:
        """Every collector and writer NATS knows about (the last heartbeats read)."""
        link = self.consumer or self.publisher
        return [] if link is None else list(link.hosts)

    def _heard_until(self, feed_name: str) -> int:
        """The start of the minute in which the feed last received a message: minutes
        before it were delivered (a message after them proves the connection was up)."""
        if feed_name not in self.supervisor.names():
            return 0
        service = self.supervisor.service(feed_name)
        context = getattr(service, "context", None)
        seen = context.last_seen_us if context is not None else None
        if seen is None:
            return 0
        return seen - seen % US_PER_MINUTE

    def _uncover_owed(self, instruments: set[str]) -> None:
        """A range that became owed while coverage was being recorded is taken out
        again (blocking)."""
        store = self.require_store()
        for instrument in instruments:
            owed = self.owed.ranges(instrument)
            if not owed:
                continue
            with store.transaction() as cursor:
                for start, end in owed:
                    remove_coverage(cursor, instrument, start, end)

    async def settle_bars(self, *, wait: bool = True) -> None:
        """Let the minute that just closed reach the store and its coverage, so a scan
        fired at the minute boundary sees that bar instead of a one-minute "gap": bars
        close within a second of their minute (BarService's clock check) and the writer
        stores them within its flush interval. ``wait=False`` only records coverage."""
        if not self.started:
            return
        if wait:
            await asyncio.sleep(1.0 + self.config.store.flush_interval_ms / 1000 + 0.25)
            if self.writer is not None:
                await self.writer.drain()
        await run_in_thread(self.record_live_coverage)

    def _reconnect_after_sleep(self, jump_s: float) -> None:
        """Connections rarely survive a sleep, and the gap must be filled: restart
        every streaming feed (each backfills before it streams again)."""
        log.warning("the clock jumped %.0fs (the machine slept?): reconnecting feeds", jump_s)
        states = {status.name: status.state for status in self.supervisor.status()}
        for name, feed in self.feeds.items():
            if feed.realtime and states.get(name) not in (
                ServiceState.STOPPED,
                ServiceState.FAILED,
            ):
                self._spawn(self.supervisor.restart(name))

    # --- owed re-fetches (sptrader.data.owed) ----------------------------------------

    def _trades_lost(self, instrument: str, start_us: int, end_us: int, missing: int) -> None:
        """A feed proved trades lost (a hole in the venue's trade ids): those minutes are
        owed a re-fetch. Called on the loop, from the feed's receive loop."""
        owed = self.owed.owe(instrument, start_us, end_us, f"{missing} trades lost")
        if owed is None:
            return
        if self.alerts is not None:
            self.alerts.gap(instrument, owed.start_us, owed.end_us, f"{missing} trades lost")
        log.warning(
            "%s: %d trades lost in the stream; re-fetching %d minutes from history",
            instrument,
            missing,
            (owed.end_us - owed.start_us) // US_PER_MINUTE,
            extra={"source": instrument.split(":", 1)[0].lower()},
        )
        self._spawn(run_in_thread(self.owed.save, self.require_store(), owed))

    def _stream_joined(self, feed: Feed, minute_us: int) -> None:
        """A connection opened in ``minute_us``: that minute was seen only in part, and
        so were any between the gap fill's end and it (a slow fill or connect)."""
        since = min(self._streaming_since.get(feed.name, minute_us), minute_us)
        for instrument in feed.instruments:
            owed = self.owed.owe(
                instrument, since, minute_us + US_PER_MINUTE, "a stream joined mid-minute"
            )
            if owed is not None:
                self._spawn(run_in_thread(self.owed.save, self.require_store(), owed))

    async def _owe_many(self, ranges: list[tuple[str, int, int]], reason: str) -> None:
        store = self.require_store()
        for instrument, start, end in ranges:
            owed = self.owed.owe(instrument, start, end, reason)
            if owed is not None:
                await run_in_thread(self.owed.save, store, owed)

    def _show_owed(self) -> None:
        """Each feed's ranges still owed a re-fetch, in its status counters."""
        for name, feed in self.feeds.items():
            if name not in self.supervisor.names():
                continue
            context = getattr(self.supervisor.service(name), "context", None)
            if context is None:
                continue
            owed = self.owed.count(feed.instruments)
            if owed or "refetch_owed" in context.counters:
                context.counters["refetch_owed"] = owed

    def _refetch_due(self) -> None:
        for owed in self.owed.due():
            self._spawn(self._refetch(owed))

    async def _refetch(self, owed: Any) -> None:
        feed = self.history_feed(owed.instrument)
        if feed is None:
            # The feed was disabled since: the range stays owed (and uncovered).
            self.owed.fetch(owed, _no_history)
            return
        fetched = await run_in_thread(self.owed.fetch, owed, feed.history)
        if fetched is not None:
            await self.bus.publish([fetched])
        await run_in_thread(self.owed.sync, self.require_store())

    # --- the watchlist ----------------------------------------------------------------

    async def add_instrument(self, instrument: str) -> str:
        """Watch one more instrument: checked against its feed's symbol list, streamed
        (its feed restarts with it, backfilling first) and kept in the home's watchlist.
        A writer's change goes to the collectors over NATS (sptrader.cluster.watchlist)."""
        name = normalize_instrument(instrument)
        if name in self.watchlist:
            return name
        prefix = parse_instrument(name)[0]
        if prefix not in LIVE_FEEDS:
            known = ", ".join(feed for feed in LIVE_FEEDS)
            raise UsageError(f"{name}: {prefix} has no live stream (live feeds: {known})")
        if self.consumer is not None:
            self._check_collected(name, prefix)
        elif not self.feed_registry.is_enabled(prefix):
            raise UsageError(f"{name} needs feeds.{prefix.lower()}.enabled = true in the config")
        unknown = await run_in_thread(self.symbols.unknown, [name])
        if unknown:
            raise UsageError(
                f"unknown symbol {name} (see `sptrader symbols --feed {prefix.lower()}`)"
            )
        self.watchlist.append(name)
        await self._watchlist_changed([prefix])
        log.info("added %s to the watchlist", name)
        return name

    async def remove_instrument(self, instrument: str) -> None:
        name = normalize_instrument(instrument)
        if name not in self.watchlist:
            raise UsageError(f"{name} is not in the watchlist")
        if len(self.watchlist) == 1:
            raise UsageError("the watchlist must keep at least one instrument")
        self.watchlist.remove(name)
        await self._watchlist_changed([parse_instrument(name)[0]])
        log.info("removed %s from the watchlist", name)

    def _check_collected(self, name: str, prefix: str) -> None:
        """A writer streams nothing itself: some running collector must have the feed."""
        assert self.consumer is not None
        feeds = {
            feed
            for beat in self.consumer.hosts
            if beat.get("role") == "collector" and beat.get("state") != "gone"
            for feed in beat.get("feeds", [])
        }
        if prefix not in feeds:
            have = f" (running collectors stream {', '.join(sorted(feeds))})" if feeds else ""
            raise UsageError(
                f"{name}: no running collector has feeds.{prefix.lower()}.enabled{have}"
            )

    async def _watchlist_changed(self, prefixes: Iterable[str], *, share: bool = True) -> None:
        """Keep the new watchlist, then stream it (a writer: tell the collectors, unless
        the change came from them: ``share`` False)."""
        await run_in_thread(save_watchlist, self.settings, self.watchlist)
        if self.consumer is not None:
            if share:
                await self.consumer.share_watchlist(list(self.watchlist))
        else:
            for prefix in prefixes:
                await self._restream(prefix)
        self.bus.publish_nowait([WatchlistChanged(now_us(), list(self.watchlist))])

    async def _adopt_watchlist(self, shared: list[str]) -> None:
        """The cluster's watchlist changed (a writer's add or remove): a writer takes it
        whole; a collector streams those of its instruments whose feed it has enabled
        and whose symbol its feed knows."""
        try:
            wanted = list(shared)
            if self.role == "collector":
                wanted = [
                    name
                    for name in wanted
                    if parse_instrument(name)[0] in LIVE_FEEDS
                    and self.feed_registry.is_enabled(parse_instrument(name)[0])
                ]
                unknown = await run_in_thread(self.symbols.unknown, wanted)
                for name in unknown:
                    log.warning("not streaming %s: its feed does not know the symbol", name)
                wanted = [name for name in wanted if name not in unknown]
            if wanted == self.watchlist or (not wanted and self.role != "collector"):
                return
            before = set(self.watchlist)
            changed = {parse_instrument(name)[0] for name in before.symmetric_difference(wanted)}
            self.watchlist = wanted
            await self._watchlist_changed(sorted(changed), share=False)
            added = sorted(set(wanted) - before)
            removed = sorted(before - set(wanted))
            log.info(
                "watchlist from NATS: %s",
                ", ".join([*(f"+{name}" for name in added), *(f"-{name}" for name in removed)])
                or "reordered",
            )
        except Exception:
            log.exception("could not take the cluster's watchlist")

    async def _restream(self, prefix: str) -> None:
        """Rebuild the feed of ``prefix`` for the watchlist's instruments and restart it."""
        instruments = [name for name in self.watchlist if parse_instrument(name)[0] == prefix]
        if not instruments:
            old = self.feed_registry.feed_of(prefix)
            if old is not None and old.name in self.supervisor.names():
                await self.supervisor.stop(old.name)
            self.feed_registry.forget(prefix)  # made again on demand for history
            return
        feed = self.feed_registry.make(prefix, instruments)
        self.feed_registry.stream(feed)
        if not self.started:
            return
        if feed.name in self.supervisor.names():
            service = self.supervisor.service(feed.name)
            assert isinstance(service, FeedService)
            service.feed = feed
            await self.supervisor.restart(feed.name)
        else:
            self.supervisor.add(FeedService(feed, self._before_stream))
            self.supervisor.start(feed.name)

    # --- backfill ---------------------------------------------------------------------

    def keeps_ticks(self, instrument: str) -> bool:
        keep = self.config.store.keep_ticks
        return "*" in keep or instrument in keep

    def make_backfill(self, **options: Any) -> Backfill:
        """A Backfill that fetches only open market hours the store lacks, sharing the
        in-flight registry (one fetch for concurrent requests of a range)."""
        return Backfill(
            self.require_store(),
            self.history_feed,
            keep_ticks=self.keeps_ticks,
            gaps=self.data.gaps,
            in_flight=self.data.in_flight,
            live_edge_us=self._live_edge_us,
            **options,
        )

    def _live_edge_us(self, instrument: str) -> int:
        streaming = self.started and instrument in self.watchlist
        return LIVE_EDGE_US if streaming else 0

    def start_backfill(self, instruments: list[str], start_us: int, end_us: int) -> None:
        """Download history in the background; progress goes out as BackfillProgressed
        events (the TUI and an attached `sptrader backfill` show them)."""
        loop = asyncio.get_running_loop()
        names = [self.check_instrument(name) for name in instruments]

        def report(event: BackfillProgressed) -> None:
            loop.call_soon_threadsafe(self.bus.publish_nowait, [event])

        backfill = self.make_backfill(on_progress=report)
        jobs = backfill.plan(names, start_us, end_us)
        self._backfills.add(backfill)

        async def run() -> None:
            try:
                await run_in_thread(backfill.run, jobs)
            finally:
                self._backfills.discard(backfill)
            for job in jobs:
                if job.rows:
                    self.bus.publish_nowait(
                        [HistoryStored(now_us(), job.instrument, start_us, end_us, job.rows)]
                    )

        self._spawn(run())
        log.info("backfill of %s started", ", ".join(names))

    def stale_instruments(self) -> set[str]:
        """Instruments whose feed is not delivering (stale, reconnecting, stopped): the
        rest of the engine must not trust their prices. A writer asks the collectors'
        heartbeats: an instrument no live collector delivers is stale."""
        if self.consumer is not None:
            from sptrader.cluster.hosts import stale_from_hosts

            return stale_from_hosts(self.consumer.hosts, self.watchlist)
        return self.feed_registry.stale_instruments()

    def is_stale(self, instrument: str) -> bool:
        if self.consumer is not None:
            return instrument in self.stale_instruments()
        return self.feed_registry.is_stale(instrument)

    # --- reads ------------------------------------------------------------------------

    def subscribe(self, name: str, maxsize: int) -> Subscription:
        return self.bus.subscribe(name, maxsize=maxsize, policy="drop_oldest")

    def check_instrument(self, instrument: str) -> str:
        name = normalize_instrument(instrument)
        if name in self.watchlist or self.history_feed(name) is not None:
            return name
        store = self.require_store()
        if queries.last_bar_ts(store, name) is None:
            prefix = parse_instrument(name)[0]
            if serves_history(prefix):
                raise UsageError(
                    f"{name}: nothing stored, and feeds.{prefix.lower()}.enabled is false in the config"
                )
            raise UsageError(
                f"unknown instrument {name}: nothing stored and no configured feed serves it"
            )
        return name

    def forming_bar(self, instrument: str) -> Bar | None:
        if self.consumer is not None:
            return self.consumer.forming.get(instrument)
        return self.builder.forming(instrument)


def _no_history(instrument: str, start_us: int, end_us: int) -> pl.DataFrame | None:
    raise SptraderError(f"no enabled feed serves {instrument}'s history")


def _by_prefix(instruments: Iterable[str]) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = {}
    for name in instruments:
        grouped.setdefault(parse_instrument(name)[0], []).append(name)
    return grouped
