"""Issue 12's numbered defects, each reproduced: impossible values, a trade from the year
3000, messages that crashed the parser or the writer, repeated trades, trades lost in a
silence shorter than the watchdog, a re-fetch given up when REST was down. The other
feeds' boundary checks are in their own test files; the long run is test_fault_binance."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from conftest import make_settings, wait_until
from fault_binance import BAD_MESSAGES, FastClock, FaultyBinance, compare_bars, stored_minutes
from websockets.asyncio.server import ServerConnection, serve

from sptrader.bars import BarBuilder
from sptrader.bus import Bus
from sptrader.clock import now_us
from sptrader.config import BinanceFeedConfig, SupervisorConfig
from sptrader.data.owed import OwedRefetches, remove_coverage
from sptrader.engine import BarService
from sptrader.feeds.base import FeedService, empty_bars
from sptrader.feeds.binance import BinanceFeed
from sptrader.feeds.sequence import TradeSequence
from sptrader.models import (
    SIDE_BUY,
    SIDE_SELL,
    US_PER_MINUTE,
    Bar,
    BarClosed,
    QuoteReceived,
    TradeReceived,
    VenueBarClosed,
)
from sptrader.store import Store
from sptrader.supervisor import ServiceContext, Supervisor

INSTRUMENT = "BINANCE:BTCUSDT"


def make_feed(port: int = 1) -> BinanceFeed:
    return BinanceFeed(
        [INSTRUMENT], BinanceFeedConfig(enabled=True, ws_url=f"ws://127.0.0.1:{port}")
    )


def trade(trade_id: int, ts_ms: int | None = None, **fields: Any) -> str:
    data = {
        "e": "trade",
        "s": "BTCUSDT",
        "t": trade_id,
        "p": "100.5",
        "q": "0.25",
        "T": ts_ms if ts_ms is not None else now_us() // 1000,
        "m": False,
        **fields,
    }
    return json.dumps({"stream": "btcusdt@trade", "data": data})


def bad(kind: str) -> str | bytes:
    template = BAD_MESSAGES[kind]
    if isinstance(template, bytes):
        return template
    now_ms = now_us() // 1000
    return template.format(s="btcusdt", id=5, T=now_ms, M=now_ms - now_ms % 60_000 - 60_000)


# --- 1 and 3: impossible values and unreadable messages are counted, never data -------


@pytest.mark.parametrize("kind", list(BAD_MESSAGES))
def test_impossible_or_unreadable_messages_are_counted_and_skipped(kind: str) -> None:
    feed, context = make_feed(), ServiceContext("binance", Bus())
    assert feed.parse_safely(bad(kind), context) == []
    counted = context.counters.get("invalid", 0) + context.counters.get("malformed", 0)
    assert counted == 1, context.counters


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("p", "NaN"),
        ("p", "Infinity"),
        ("p", "1e400"),
        ("p", "1" * 1_000_000),
        ("p", "-1"),
        ("p", "0"),
        ("p", True),
        ("q", "NaN"),
        ("q", "-2"),
        ("q", "0"),
        ("q", "1e300"),
        ("T", 0),
        ("T", -1),
        ("T", 32503680000000),  # the year 3000
        ("T", 150000000000000000000),  # crashed the store writer (polars TypeError)
        ("t", 1.5),  # a trade id is an integer
        ("m", "yes"),
    ],
)
def test_an_impossible_trade_field_is_invalid(field: str, value: object) -> None:
    feed, context = make_feed(), ServiceContext("binance", Bus())
    assert feed.parse(trade(1, **{field: value}), context) == []
    assert context.counters == {"invalid": 1}


def test_a_valid_trade_keeps_the_takers_side_and_its_id() -> None:
    feed, context = make_feed(), ServiceContext("binance", Bus())
    [bought] = feed.parse(trade(7, m=False), context)
    [sold] = feed.parse(trade(8, m=True), context)
    assert (bought.side, bought.trade_id) == (SIDE_BUY, 7)
    assert (sold.side, sold.trade_id) == (SIDE_SELL, 8)


# --- 2: a trade from the year 3000 never wedges the symbol's forming bar ---------------


def test_a_trade_from_the_future_does_not_stop_bars_closing() -> None:
    feed, context = make_feed(), ServiceContext("binance", Bus())
    builder = BarBuilder(lambda instrument: "trade")
    now_ms = now_us() // 1000
    minute_ms = now_ms - now_ms % 60_000
    events = feed.parse(trade(1, ts_ms=32503680000000), context)
    events += feed.parse(trade(2, ts_ms=minute_ms - 60_000 + 10), context)
    events += feed.parse(trade(3, ts_ms=minute_ms + 5), context)
    out = builder.process(events)
    closed = [event.bar for event in out if type(event) is BarClosed]
    assert [bar.ts_us for bar in closed] == [(minute_ms - 60_000) * 1000]
    assert builder.late_ticks == 0
    assert builder.forming(INSTRUMENT).ts_us == minute_ms * 1000
    assert context.counters["invalid"] == 1


async def test_bad_messages_never_cost_the_connection() -> None:
    """Each used to drop the connection (RecursionError, OverflowError, bad UTF-8) or
    crash the writer; now the next good trade arrives on the same connection."""
    connections = 0

    async def handler(websocket: ServerConnection) -> None:
        nonlocal connections
        connections += 1
        for kind in BAD_MESSAGES:
            message = bad(kind)
            await websocket.send(message, text=True)
        await websocket.send(trade(100))
        await websocket.wait_closed()

    async with serve(handler, "127.0.0.1", 0, max_size=None) as server:
        port = server.sockets[0].getsockname()[1]
        bus = Bus()
        received = bus.subscribe("test", maxsize=1000, types=(TradeReceived, QuoteReceived))
        supervisor = Supervisor(bus, SupervisorConfig(backoff_initial_s=0.05))
        supervisor.add(FeedService(make_feed(port)))
        supervisor.start("binance")
        got: list[object] = []
        await wait_until(lambda: bool(got.extend(received.get_nowait()) or got), timeout=10)
        [status] = supervisor.status()
        await supervisor.stop_all()
    assert [event.trade_id for event in got] == [100]
    assert connections == 1 and status.restarts == 0
    assert status.counters["invalid"] + status.counters["malformed"] == len(BAD_MESSAGES)


# --- 4: the same trade twice is counted once -----------------------------------------


def test_a_repeated_trade_id_is_dropped_and_a_hole_is_reported() -> None:
    sequence = TradeSequence()
    lost: list[tuple[str, int, int, int]] = []
    minute = 1_700_000_040_000_000
    trades = [TradeReceived(INSTRUMENT, minute + i, 1.0, 1.0, SIDE_BUY, i) for i in (1, 2, 3)]
    assert sequence.check(trades, lambda *hole: lost.append(hole)) == trades
    again = [TradeReceived(INSTRUMENT, minute + 3, 1.0, 1.0, SIDE_BUY, 3)] * 10
    assert sequence.check(again, lambda *hole: lost.append(hole)) == []
    assert sequence.duplicates == 10
    # Ids 4-9 never came: the minutes from the last trade seen to this one are owed.
    later = TradeReceived(INSTRUMENT, minute + 2 * US_PER_MINUTE + 5, 1.0, 1.0, SIDE_SELL, 10)
    assert sequence.check([later], lambda *hole: lost.append(hole)) == [later]
    assert lost == [(INSTRUMENT, minute, minute + 3 * US_PER_MINUTE, 6)]
    # Quotes and id-less trades pass untouched.
    quote = QuoteReceived(INSTRUMENT, minute, 1.0, 1.1, 1.0, 1.0)
    assert sequence.check([quote, trades[0]], None) == [quote]


def test_a_hole_across_a_reconnect_is_reported_whole() -> None:
    """Whichever minute the stream came back in, the ids say what was lost: the hole
    repeats part of the reconnect backfill (one more fetch), but leaves nothing out."""
    sequence = TradeSequence()
    lost: list[tuple] = []
    minute = 1_700_000_040_000_000
    sequence.check([TradeReceived(INSTRUMENT, minute + 7, 1.0, 1.0, 0, 1)], None)
    sequence.check(
        [TradeReceived(INSTRUMENT, minute + 3 * US_PER_MINUTE + 9, 1.0, 1.0, 0, 50)],
        lambda *hole: lost.append(hole),
    )
    assert lost == [(INSTRUMENT, minute, minute + 4 * US_PER_MINUTE, 48)]


# --- 5: a venue's closed kline is compared and wins when it differs -------------------


def venue_bar(minute: int, volume: float, trades: int) -> Bar:
    return Bar(INSTRUMENT, "1m", minute, 100.0, 101.0, 99.0, 100.5, volume, trades)


def test_the_venues_kline_replaces_a_short_built_bar() -> None:
    bus = Bus()
    service = BarService(bus, BarBuilder(lambda instrument: "trade"), {}, 100)
    minute = 1_700_000_040_000_000
    ticks = [
        TradeReceived(INSTRUMENT, minute + 1, 100.0, 1.0),
        TradeReceived(INSTRUMENT, minute + 2, 101.0, 1.0),
        TradeReceived(INSTRUMENT, minute + 3, 99.0, 1.0),
        TradeReceived(INSTRUMENT, minute + 4, 100.5, 1.0),
    ]
    service.process(ticks)
    # The stream lost two trades of this minute: the venue's bar has six.
    out = service.process([VenueBarClosed(venue_bar(minute, 6.0, 6))])
    assert [event.bar for event in out if type(event) is BarClosed] == [venue_bar(minute, 6.0, 6)]
    assert (service.venue_bars_matched, service.venue_bars_replaced) == (0, 1)
    # The minute is final: a straggler for it is only counted.
    service.process([TradeReceived(INSTRUMENT, minute + 5, 500.0, 1.0)])
    assert service.builder.late_ticks == 1


def test_a_matching_kline_closes_the_forming_bar_and_is_counted() -> None:
    service = BarService(Bus(), BarBuilder(lambda instrument: "trade"), {}, 100)
    minute = 1_700_000_040_000_000
    prices = [100.0, 101.0, 99.0, 100.5]
    service.process([TradeReceived(INSTRUMENT, minute + i, p, 1.0) for i, p in enumerate(prices)])
    out = service.process([VenueBarClosed(venue_bar(minute, 4.0, 4))])
    assert [type(event) for event in out] == [BarClosed]
    assert (service.venue_bars_matched, service.venue_bars_replaced) == (1, 0)
    assert service.builder.forming(INSTRUMENT) is None


def test_a_kline_with_impossible_values_is_invalid() -> None:
    feed, context = make_feed(), ServiceContext("binance", Bus())
    now_ms = now_us() // 1000
    minute_ms = now_ms - now_ms % 60_000 - 60_000
    kline = {
        "t": minute_ms,
        "i": "1m",
        "o": "1",
        "h": "0.5",
        "l": "1",
        "c": "1",
        "v": "1",
        "n": 1,
        "x": True,
    }
    raw = json.dumps({"stream": "btcusdt@kline_1m", "data": {"e": "kline", "k": kline}})
    assert feed.parse(raw, context) == []
    assert context.counters["invalid"] == 1  # high below the open


# --- 5 and 6: owed re-fetches ----------------------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> Any:
    opened = Store(tmp_path / "store.duckdb")
    opened.migrate()
    yield opened
    opened.close()


def bars_of(minute: int, count: int) -> pl.DataFrame:
    times = [minute + index * US_PER_MINUTE for index in range(count)]
    return pl.DataFrame(
        {
            "instrument": [INSTRUMENT] * count,
            "ts": times,
            "open": [1.0] * count,
            "high": [2.0] * count,
            "low": [0.5] * count,
            "close": [1.5] * count,
            "volume": [3.0] * count,
            "trades": [4] * count,
        }
    ).with_columns(pl.col("ts").cast(pl.Datetime("us")))


def test_owed_ranges_are_not_covered_and_survive_a_restart(store: Store) -> None:
    minute = 1_700_000_040_000_000
    store.add_coverage(
        INSTRUMENT, "1m", "binance", minute - 10 * US_PER_MINUTE, minute + 10 * US_PER_MINUTE
    )
    owed = OwedRefetches(clock=lambda: minute + 20 * US_PER_MINUTE)
    entry = owed.owe(INSTRUMENT, minute + 5, minute + 2 * US_PER_MINUTE - 1, "6 trades lost")
    assert entry is not None and (entry.start_us, entry.end_us) == (
        minute,
        minute + 2 * US_PER_MINUTE,
    )
    assert owed.owe(INSTRUMENT, minute, minute + US_PER_MINUTE, "again") is None  # held already
    owed.save(store, entry)
    assert store.coverage(INSTRUMENT) == [
        (minute - 10 * US_PER_MINUTE, minute),
        (minute + 2 * US_PER_MINUTE, minute + 10 * US_PER_MINUTE),
    ]
    # A restart (or kill -9) later, the work is still owed.
    again = OwedRefetches(clock=lambda: minute + 20 * US_PER_MINUTE)
    assert again.load(store) == 1
    assert again.ranges(INSTRUMENT) == [(minute, minute + 2 * US_PER_MINUTE)]


def test_a_failing_refetch_is_retried_until_it_succeeds(store: Store) -> None:
    """It was tried once: with REST down for 22 s, four bars stayed short for good."""
    minute = 1_700_000_040_000_000
    clock = [minute + US_PER_MINUTE + 1_000_000]
    owed = OwedRefetches(clock=lambda: clock[0])
    owed.save(store, owed.owe(INSTRUMENT, minute, minute + US_PER_MINUTE, "trades lost"))
    assert owed.due() == []  # not settled at the venue yet
    clock[0] += 10_000_000
    calls: list[int] = []

    def history(instrument: str, start: int, end: int) -> pl.DataFrame:
        calls.append(start)
        if len(calls) <= 7:
            raise RuntimeError("Binance klines for BTCUSDT: HTTP 503, gave up after 6 attempts")
        return bars_of(start, 1)

    delays = []
    for _ in range(7):
        [entry] = owed.due()
        assert owed.fetch(entry, history) is None
        owed.sync(store)
        delays.append(entry.next_try_us - clock[0])
        assert owed.due() == []
        clock[0] = entry.next_try_us
    assert delays == sorted(delays) and delays[-1] <= 300_000_000
    # Still owed after a restart, with its attempts.
    [(attempts,)] = store.cursor().execute("SELECT attempts FROM owed_refetch").fetchall()
    assert attempts == 7
    [entry] = owed.due()
    fetched = owed.fetch(entry, history)
    assert fetched is not None and fetched.bars.height == 1
    owed.sync(store)
    assert owed.count() == 0
    assert store.cursor().execute("SELECT count(*) FROM owed_refetch").fetchall() == [(0,)]


def test_an_empty_answer_is_believed_only_after_asking_again(store: Store) -> None:
    minute = 1_700_000_040_000_000
    clock = [minute + 10 * US_PER_MINUTE]
    owed = OwedRefetches(clock=lambda: clock[0])
    owed.owe(INSTRUMENT, minute, minute + US_PER_MINUTE, "trades lost")
    results = []
    for _ in range(3):
        [entry] = owed.due()
        results.append(owed.fetch(entry, lambda *args: None))
        clock[0] = entry.next_try_us
    assert results[:2] == [None, None]
    assert results[2] is not None and results[2].bars.is_empty()
    assert results[2].bars.schema == empty_bars().schema


def test_removing_coverage_cuts_every_overlapping_range(store: Store) -> None:
    m = US_PER_MINUTE
    for start, end in [(0, 10 * m), (12 * m, 14 * m), (15 * m, 30 * m)]:
        store.add_coverage(INSTRUMENT, "1m", "binance", start, end)
    with store._write_lock:
        remove_coverage(store.cursor(), INSTRUMENT, 5 * m, 20 * m)
    assert store.coverage(INSTRUMENT) == [(0, 5 * m), (20 * m, 30 * m)]
    with store._write_lock:
        remove_coverage(store.cursor(), INSTRUMENT, 22 * m, 23 * m)
    assert store.coverage(INSTRUMENT) == [(0, 5 * m), (20 * m, 22 * m), (23 * m, 30 * m)]


async def test_lost_trades_are_refetched_and_stored_bars_equal_the_venues(home: Path) -> None:
    """A silence shorter than the watchdog whose trades were never sent left wrong bars
    that the API served and `data check` called complete. Now the hole in the trade ids
    makes those minutes owed (not covered), the venue's bars replace the short ones, and
    the minutes are covered again. Time runs 10x faster."""
    from sptrader.engine import Engine

    clock = FastClock(10.0).install()
    try:
        venue = FaultyBinance(["BTCUSDT"], clock)
        async with venue.running():
            settings = make_settings(
                home,
                watchlist=[INSTRUMENT],
                feeds={"binance": venue.config_section()},
                store={"seed_days": 0.01, "flush_interval_ms": 20},
            )
            engine = Engine(settings)
            await engine.start()
            try:
                store = engine.require_store()
                await asyncio.sleep(clock.seconds(10))
                silent_from = clock.now_us()
                venue.silence(clock.seconds(15))  # trades go on, none is sent
                await wait_until(lambda: engine.feeds["binance"].sequence.lost > 0, timeout=10)
                owed = engine.owed.ranges(INSTRUMENT)
                assert any(start <= silent_from < end for start, end in owed), (silent_from, owed)
                await asyncio.sleep(0.2)  # saved in a thread
                assert not any(
                    start <= silent_from < end and end > silent_from
                    for start, end in store.coverage(INSTRUMENT)
                    if start <= silent_from - silent_from % US_PER_MINUTE
                ), store.coverage(INSTRUMENT)
                minute = silent_from - silent_from % US_PER_MINUTE
                # Until the minute after the silence has closed and been settled.
                await wait_until(
                    lambda: clock.now_us() > minute + 2 * US_PER_MINUTE + 10_000_000, timeout=30
                )
                await wait_until(lambda: not engine.catching_up(), timeout=30)
                await engine.settle_bars()
                last = minute + 2 * US_PER_MINUTE
                stored, duplicates = stored_minutes(store, 0, last)
                comparison = compare_bars(venue, stored, 0, last)
                covered = store.coverage(INSTRUMENT)
            finally:
                await engine.stop()
    finally:
        clock.restore()
    assert comparison["compared"] >= 2 and duplicates == 0
    assert (comparison["missing"], comparison["differing"]) == (0, 0), comparison
    assert any(start <= minute < end for start, end in covered), (minute, covered)


def test_api_clients_get_the_side_id_and_order_flow() -> None:
    """Remote clients (an attached TUI) see what the engine sees."""
    from sptrader.client.wire import decode_event, encode_event

    trade = TradeReceived(INSTRUMENT, 1_700_000_040_000_001, 100.5, 0.25, SIDE_SELL, 42)
    bar = Bar(INSTRUMENT, "1m", 1_700_000_040_000_000, 1.0, 2.0, 0.5, 1.5, 3.0, 4, 1.0, 2.0)
    for event in (trade, BarClosed(bar), BarClosed(venue_bar(1_700_000_040_000_000, 1.0, 1))):
        assert decode_event(json.loads(json.dumps(encode_event(event)))) == event
    # A list from before order flow still decodes (as unknown flow).
    old = ["bc", INSTRUMENT, 1_700_000_040_000_000, 1.0, 2.0, 0.5, 1.5, 3.0, 4]
    assert decode_event(old).bar.buy_volume is None
