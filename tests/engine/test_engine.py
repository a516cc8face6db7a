"""The Engine end to end on a temporary home, and the replay feed."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from pathlib import Path

import polars as pl
import pytest
from conftest import make_settings, wait_until

from sptrader.bars import BarBuilder, bars_to_frame
from sptrader.bus import Bus
from sptrader.client.local import LocalEngineClient
from sptrader.clock import now_us
from sptrader.config import StoreConfig, SupervisorConfig
from sptrader.engine import Engine
from sptrader.errors import SptraderError
from sptrader.feeds.replay import CHUNK_US, ReplayFeed
from sptrader.models import (
    US_PER_MINUTE,
    Bar,
    BarClosed,
    BarUpdated,
    QuoteReceived,
    ServiceState,
    TradeReceived,
)
from sptrader.store import Store, queries
from sptrader.store.writer import StoreWriter
from sptrader.supervisor import ServiceContext, Supervisor

WATCHLIST = ["SIM:EURUSD", "SIM:BTCUSD"]
SEED_MINUTES = 144  # store.seed_days = 0.1


def engine_settings(home: Path, **overrides):
    return make_settings(
        home,
        watchlist=WATCHLIST,
        store={"seed_days": 0.1, "flush_interval_ms": 20},
        feeds={"sim": {"publish_interval_ms": 10, "tick_rate": 5.0}},
        **overrides,
    )


def stored_counts(path: Path) -> dict[str, tuple[int, int]]:
    """instrument -> (rows, distinct ts) in bars_1m."""
    store = Store(path)
    try:
        rows = (
            store.cursor()
            .execute(
                "SELECT instrument, count(*), count(DISTINCT ts) FROM bars_1m GROUP BY 1 ORDER BY 1"
            )
            .fetchall()
        )
    finally:
        store.close()
    return {instrument: (count, distinct) for instrument, count, distinct in rows}


async def run_engine_once(home: Path) -> dict[str, object]:
    """Start an engine, wait until live bars reach the store, stop it; report what was seen."""
    engine = Engine(engine_settings(home))
    events = engine.subscribe("test", 200_000)
    seen: list[object] = []
    await engine.start()
    try:
        store = engine.store
        assert store is not None

        # The feed backfills before it streams: the history reaches the store first.
        def history_stored() -> bool:
            seen.extend(events.get_nowait())
            return all(queries.last_bar_ts(store, name) is not None for name in WATCHLIST)

        await wait_until(history_stored)
        seeded_last = {name: queries.last_bar_ts(store, name) for name in WATCHLIST}

        def live_bars_stored() -> bool:
            seen.extend(events.get_nowait())
            for name in WATCHLIST:
                forming = engine.forming_bar(name)
                if forming is None or queries.last_bar_ts(store, name) != forming.ts_us:
                    return False
            return True

        await wait_until(live_bars_stored)
        statuses = {status.name: status.state for status in engine.supervisor.status()}
        client = LocalEngineClient(engine)
        candles = await client.candles("SIM:EURUSD", "1m", last=10)
        summaries = await client.summaries(WATCHLIST, 5)
    finally:
        await engine.stop()
    seen.extend(events.get_nowait())
    return {
        "engine": engine,
        "seeded_last": seeded_last,
        "seen": seen,
        "statuses": statuses,
        "candles": candles,
        "summaries": summaries,
    }


async def test_engine_seeds_streams_stores_and_restarts_without_duplicates(home: Path) -> None:
    started_minute = now_us() // US_PER_MINUTE * US_PER_MINUTE
    first = await run_engine_once(home)
    engine: Engine = first["engine"]
    settings = engine.settings

    # Seeded about store.seed_days of 1m bars, up to (not including) the current minute.
    for name in WATCHLIST:
        assert first["seeded_last"][name] >= started_minute - US_PER_MINUTE

    # Quotes streamed through the bus, and the bar service turned them into bars.
    seen = first["seen"]
    quotes = {event.instrument for event in seen if isinstance(event, QuoteReceived)}
    assert quotes == set(WATCHLIST)
    assert {event.instrument for event in seen if isinstance(event, TradeReceived)} == {
        "SIM:BTCUSD"
    }
    assert {event.bar.instrument for event in seen if isinstance(event, BarUpdated)} == set(
        WATCHLIST
    )
    assert first["statuses"] == {
        "store": ServiceState.RUNNING,
        "bars": ServiceState.RUNNING,
        "broker": ServiceState.RUNNING,
        "sim": ServiceState.RUNNING,
    }
    assert [status.state for status in engine.supervisor.status()] == [ServiceState.STOPPED] * 4
    assert first["candles"].height == 10
    assert first["summaries"]["SIM:EURUSD"].last is not None
    assert len(first["summaries"]["SIM:BTCUSD"].closes) == 5

    # stop() flushed the newest version of each forming bar and closed the store.
    assert engine.store is None
    store = Store(settings.store_path)
    try:
        for name in WATCHLIST:
            forming = engine.forming_bar(name)
            assert forming is not None
            stored = queries.bars_between(
                store, name, "1m", forming.ts_us, forming.ts_us + US_PER_MINUTE
            )
            assert stored.height == 1
            row = stored.row(0, named=True)
            assert (row["open"], row["high"], row["low"], row["close"], row["trades"]) == (
                forming.open,
                forming.high,
                forming.low,
                forming.close,
                forming.trades,
            )
            assert row["volume"] == pytest.approx(forming.volume)
            # Live prices continue the stored history.
            history = queries.bars_between(
                store, name, "1m", forming.ts_us - US_PER_MINUTE, forming.ts_us
            )
            if history.height:
                assert forming.open == pytest.approx(history["close"][0], rel=5e-3)
        bars = store.cursor().sql("SELECT * FROM bars_1m").pl()
        assert bars.filter(
            (pl.col("low") > pl.min_horizontal("open", "close"))
            | (pl.col("high") < pl.max_horizontal("open", "close"))
        ).is_empty()
        logged = store.cursor().execute("SELECT message FROM service_events").fetchall()
        assert any("engine started" in message for (message,) in logged)
    finally:
        store.close()

    counts = stored_counts(settings.store_path)
    for name in WATCHLIST:
        rows, distinct = counts[name]
        assert rows == distinct
        assert SEED_MINUTES <= rows <= SEED_MINUTES + 3

    # A second start on the same home: history is topped up, nothing is duplicated.
    await run_engine_once(home)
    counts = stored_counts(settings.store_path)
    for name in WATCHLIST:
        rows, distinct = counts[name]
        assert rows == distinct
        assert SEED_MINUTES <= rows <= SEED_MINUTES + 4


async def test_stop_without_start_closes_an_open_store(home: Path) -> None:
    engine = Engine(engine_settings(home))
    engine.open_store()
    assert engine.store is not None
    await engine.stop()
    assert engine.store is None
    # The file is free again.
    Store(engine.settings.store_path).close()


# --- replay --------------------------------------------------------------------------------


@pytest.fixture
def replay_engine(home: Path):
    """An engine (not started) with SIM:EURUSD history stored and a replay feed of it."""
    settings = make_settings(
        home,
        watchlist=["SIM:EURUSD", "REPLAY:SIM:EURUSD"],
        store={"seed_days": 0.1},
        feeds={"replay": {"enabled": True, "speed": 1_000_000.0}},
    )
    engine = Engine(settings)
    engine.open_store()
    engine.seed_history(["SIM:EURUSD"])
    yield engine
    engine.store.close()
    engine.store = None


def test_replay_rebuilds_identical_bars(replay_engine: Engine) -> None:
    store = replay_engine.store
    stored = queries.bars_between(store, "SIM:EURUSD", "1m", None, None)
    assert stored.height == SEED_MINUTES
    replay = replay_engine.feeds["replay"]
    assert isinstance(replay, ReplayFeed)
    assert replay.realtime is False
    assert ReplayFeed.source_of("REPLAY:SIM:EURUSD") == "SIM:EURUSD"

    start = replay._start_us()
    assert start == queries.first_bar_ts(store, "SIM:EURUSD")
    builder = BarBuilder(replay.price_source)
    rebuilt = []
    events_seen = 0
    position = start
    while position <= queries.last_bar_ts(store, "SIM:EURUSD"):
        events = replay._events_between(position, position + CHUNK_US)
        assert all(event.instrument == "REPLAY:SIM:EURUSD" for event in events)
        assert [event.ts_us for event in events] == sorted(event.ts_us for event in events)
        events_seen += len(events)
        rebuilt.extend(
            event.bar for event in builder.process(events) if isinstance(event, BarClosed)
        )
        position += CHUNK_US
    rebuilt.extend(event.bar for event in builder.close_all())
    assert events_seen == 4 * SEED_MINUTES  # four quotes per bar

    frame = bars_to_frame(rebuilt)
    assert frame["instrument"].unique().to_list() == ["REPLAY:SIM:EURUSD"]
    exact = ["ts", "open", "high", "low", "close"]
    assert frame.select(exact).equals(stored.select(exact))
    assert frame["volume"].to_list() == pytest.approx(stored["volume"].to_list())


class TrackedLoader:
    """Wraps a replay feed's stored-data loader to know when none of its calls (run in
    worker threads) is still in flight: the store must not be closed under one."""

    def __init__(self, load: Callable[..., pl.DataFrame]) -> None:
        self.load = load
        self.in_flight = 0
        self.lock = threading.Lock()

    def __call__(self, *args: object) -> pl.DataFrame:
        with self.lock:
            self.in_flight += 1
        try:
            return self.load(*args)
        finally:
            with self.lock:
                self.in_flight -= 1


async def test_replay_stream_publishes_in_time_order_and_advances_its_clock(
    replay_engine: Engine,
) -> None:
    replay = replay_engine.feeds["replay"]
    loader = TrackedLoader(replay._load_stored)
    replay._load_stored = loader
    bus = Bus()
    received = bus.subscribe("test", maxsize=100_000)
    context = ServiceContext("replay", bus)
    streaming = asyncio.create_task(replay.stream(context))
    events: list[object] = []

    def all_replayed() -> bool:
        events.extend(received.get_nowait())
        return len(events) >= 4 * SEED_MINUTES

    try:
        await wait_until(all_replayed)
    finally:
        streaming.cancel()
        with pytest.raises(asyncio.CancelledError):
            await streaming
        # A cancelled asyncio.to_thread call keeps running: let it finish before the
        # fixture closes the store.
        await wait_until(lambda: loader.in_flight == 0)
    assert context.running
    times = [event.ts_us for event in events]
    assert times == sorted(times)
    last = queries.last_bar_ts(replay_engine.store, "SIM:EURUSD")
    assert times[-1] == last + 45_000_000
    assert len(events) == 4 * SEED_MINUTES
    assert replay.clock_us() >= times[-1]


async def test_stop_waits_for_store_reads_in_flight(home: Path) -> None:
    settings = make_settings(
        home,
        watchlist=["SIM:EURUSD", "REPLAY:SIM:EURUSD"],
        store={"seed_days": 0.1},
        feeds={"replay": {"enabled": True, "speed": 1_000_000.0}},
    )
    engine = Engine(settings)
    replay = engine.feeds["replay"]
    real_load = replay._load_stored
    entered, release = threading.Event(), threading.Event()
    outcome: list[str] = []

    def slow_load(*args: object) -> pl.DataFrame:
        if entered.is_set():
            return real_load(*args)
        entered.set()
        release.wait(5)
        try:
            frame = real_load(*args)
        except Exception as error:
            outcome.append(type(error).__name__)
            raise
        outcome.append("ok")
        return frame

    replay._load_stored = slow_load
    engine.open_store()
    engine.seed_history(["SIM:EURUSD"])  # something to replay from the start
    await engine.start()
    try:
        assert await asyncio.to_thread(entered.wait, 5)
        stopping = asyncio.create_task(engine.stop())
        await asyncio.sleep(0.2)  # a correct stop() is still waiting for the read
    finally:
        release.set()
    await stopping
    await wait_until(lambda: bool(outcome))
    assert outcome == ["ok"]


async def test_writer_cancelled_mid_flush_loses_nothing(home: Path) -> None:
    """Shutdown cancels the writer while a flush runs in its thread: the final drain
    waits for that write, so nothing is lost and the store is not closed under it."""
    path = home / "sptrader.duckdb"
    store = Store(path)
    store.migrate()
    bus = Bus()
    writer = StoreWriter(store, bus, StoreConfig(flush_interval_ms=10))
    real_upsert = store.upsert_bars
    entered, release = threading.Event(), threading.Event()

    def slow_upsert(frame: pl.DataFrame) -> int:
        if not entered.is_set():  # only the first write is slow
            entered.set()
            release.wait(5)
        return real_upsert(frame)

    store.upsert_bars = slow_upsert
    supervisor = Supervisor(bus, SupervisorConfig())
    supervisor.add(writer)
    supervisor.start("store")
    minute = now_us() // US_PER_MINUTE * US_PER_MINUTE
    closed = Bar("SIM:SPY", "1m", minute - US_PER_MINUTE, 1.0, 2.0, 0.5, 1.5, 10.0, 3)
    await bus.publish([BarClosed(closed)])
    try:
        assert await asyncio.to_thread(entered.wait, 5)
        # What Engine.stop does once the feeds are stopped:
        await supervisor.stop_all()
        forming = Bar("SIM:SPY", "1m", minute, 1.5, 1.6, 1.4, 1.45, 2.0, 1)
        bus.publish_nowait([BarUpdated(forming)])
        draining = asyncio.create_task(writer.drain())
        await asyncio.sleep(0.05)
        assert not draining.done(), "drain must wait for the cancelled flush's write"
    finally:
        release.set()
    assert await asyncio.wait_for(draining, 5) == 1
    store.close()

    reopened = Store(path)
    try:
        stored = queries.bars_between(reopened, "SIM:SPY", "1m", None, None)
    finally:
        reopened.close()
    assert stored["ts"].dt.epoch("us").to_list() == [closed.ts_us, forming.ts_us]
    assert stored["close"].to_list() == [1.5, 1.45]


async def test_replay_with_nothing_stored_fails(home: Path) -> None:
    settings = make_settings(
        home,
        watchlist=["SIM:EURUSD", "REPLAY:SIM:EURUSD"],
        feeds={"replay": {"enabled": True}},
    )
    engine = Engine(settings)
    engine.open_store()
    try:
        with pytest.raises(SptraderError, match="nothing stored to replay"):
            await engine.feeds["replay"].stream(ServiceContext("replay", Bus()))
    finally:
        engine.store.close()
        engine.store = None


async def test_settle_bars_records_live_coverage_to_the_last_closed_minute(home: Path) -> None:
    """A scan fired on the minute must not see the minute that just closed as a gap."""
    engine = Engine(engine_settings(home))
    await engine.start()
    try:
        store = engine.store
        assert store is not None
        await wait_until(
            lambda: (
                {s.name: s.state for s in engine.supervisor.status()}["sim"] == ServiceState.RUNNING
            )
        )
        await wait_until(lambda: all(store.coverage(name) for name in WATCHLIST))
        await engine.settle_bars()
        now = now_us()
        minute = now - now % US_PER_MINUTE
        for name in WATCHLIST:
            covered = store.coverage(name)
            assert covered and covered[-1][1] >= minute, (name, covered, minute)
            assert engine.data.gaps(name, minute - 5 * US_PER_MINUTE, minute) == []
    finally:
        await engine.stop()
