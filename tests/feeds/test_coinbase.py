"""The Coinbase feed against local fake servers speaking Coinbase's wire format."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import fake_coinbase as fake
import httpx
import pytest
from conftest import wait_until
from fakes import FakeHttpServer, FakeRequest, FakeResponse, free_port, minute_bars
from websockets.asyncio.server import ServerConnection, serve

from sptrader.bus import Bus
from sptrader.client.wire import encode_event
from sptrader.clock import now_us
from sptrader.config import CoinbaseFeedConfig, SupervisorConfig
from sptrader.errors import SptraderError
from sptrader.feeds.base import BAR_SCHEMA, FeedService
from sptrader.feeds.coinbase import CHANNELS, CoinbaseFeed, rfc3339_to_us, taker_side
from sptrader.models import (
    SIDE_BUY,
    SIDE_SELL,
    US_PER_MINUTE,
    LastPriceReceived,
    QuoteReceived,
    ServiceState,
    TradeReceived,
)
from sptrader.supervisor import ServiceContext, Supervisor

# Copied from Coinbase's documentation of the Advanced Trade channels.
TICKER = {
    "channel": "ticker",
    "client_id": "",
    "timestamp": "2023-02-09T20:30:37.167359596Z",
    "sequence_num": 0,
    "events": [
        {
            "type": "snapshot",
            "tickers": [
                {
                    "type": "ticker",
                    "product_id": "BTC-USD",
                    "price": "21932.98",
                    "volume_24_h": "16038.28",
                    "low_24_h": "21835.29",
                    "high_24_h": "23011.18",
                    "low_52_w": "15460",
                    "high_52_w": "48240",
                    "price_percent_chg_24_h": "-4.15775596190603",
                    "best_bid": "21931.98",
                    "best_bid_quantity": "8000.21",
                    "best_ask": "21933.98",
                    "best_ask_quantity": "8038.07",
                }
            ],
        }
    ],
}
MARKET_TRADES = {
    "channel": "market_trades",
    "client_id": "",
    "timestamp": "2023-02-09T20:19:35.39625135Z",
    "sequence_num": 0,
    "events": [
        {
            "type": "update",
            "trades": [
                {
                    "trade_id": "000000001",
                    "product_id": "ETH-USD",
                    "price": "1260.01",
                    "size": "0.3",
                    "side": "BUY",
                    "time": "2019-08-14T20:42:27.265Z",
                },
                {
                    "trade_id": "000000000",
                    "product_id": "ETH-USD",
                    "price": "1260.00",
                    "size": "0.1",
                    "side": "SELL",
                    "time": "2019-08-14T20:42:27.160Z",
                },
            ],
        }
    ],
}
HEARTBEATS = {
    "channel": "heartbeats",
    "client_id": "",
    "timestamp": "2023-06-23T20:31:26.122969572Z",
    "sequence_num": 0,
    "events": [
        {
            "current_time": "2023-06-23 20:31:56.121961769 +0000 UTC m=+91717.525857105",
            "heartbeat_counter": "3049",
        }
    ],
}
SUBSCRIPTIONS = {
    "channel": "subscriptions",
    "client_id": "",
    "timestamp": "2023-02-09T20:32:50.714964855Z",
    "sequence_num": 0,
    "events": [{"subscriptions": {"ticker": ["BTC-USD", "ETH-USD"]}}],
}
INSTRUMENTS = ["COINBASE:BTC-USD", "COINBASE:ETH-USD"]
#: Feed clocks for the documented messages: live times must be near the feed's clock.
TICKER_US = 1675974637_167359
TRADES_US = 1565815347_265000


def make_feed(
    live_url: str = "ws://127.0.0.1:1",
    rest_url: str = "http://127.0.0.1:1",
    *,
    transport: httpx.BaseTransport | None = None,
    clock_us: int | None = None,
    **options: Any,
) -> CoinbaseFeed:
    config = CoinbaseFeedConfig(**fake.config_section(live_url, rest_url), **options)
    feed = CoinbaseFeed(INSTRUMENTS, config, transport=transport)
    if clock_us is not None:
        feed.clock_us = lambda: clock_us  # type: ignore[method-assign]
    return feed


def expected_trade(
    instrument: str, ts_us: int, price: float, size: float, trade_id: int
) -> TradeReceived:
    """The trade ``fake.trade`` sends, as the feed must publish it: the fake's ``side``
    is the maker's, so the taker's is the opposite."""
    maker = "BUY" if trade_id % 2 else "SELL"
    return TradeReceived(instrument, ts_us, price, size, taker_side(maker), trade_id)


def parse(feed: CoinbaseFeed, message: Any, context: ServiceContext) -> list[object]:
    return feed.parse(message if isinstance(message, str) else json.dumps(message), context)


# --- timestamps -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2023-02-09T20:30:37.167359596Z", 1675974637_167359),
        ("2019-08-14T20:42:27.265Z", 1565815347_265000),
        ("2019-08-14T20:42:27Z", 1565815347_000000),
        ("1970-01-01T00:00:00.000001Z", 1),
        ("2019-08-14T22:42:27.5+02:00", 1565815347_500000),
        ("2019-08-14T18:42:27.5-02:00", 1565815347_500000),
    ],
)
def test_rfc3339_to_microseconds(text: str, expected: int) -> None:
    assert rfc3339_to_us(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "2019-08-14 20:42",
        "2019-08-14T20:42:27",
        "2019-08-14T20:42:27.Z",
        "2019-13-14T20:42:27Z",
        "",
    ],
)
def test_bad_timestamps_raise_value_error(text: str) -> None:
    with pytest.raises(ValueError):
        rfc3339_to_us(text)


# --- parsing --------------------------------------------------------------------------


def test_one_subscribe_message_per_channel() -> None:
    messages = [json.loads(raw) for raw in make_feed().subscribe_messages()]
    assert messages == [
        {"type": "subscribe", "product_ids": ["BTC-USD", "ETH-USD"], "channel": channel}
        for channel in ("ticker", "market_trades", "heartbeats")
    ]


def test_parse_ticker_into_a_quote_stamped_with_the_message_time() -> None:
    feed, context = make_feed(clock_us=TICKER_US), ServiceContext("coinbase", Bus())
    [quote] = parse(feed, TICKER, context)
    assert quote == QuoteReceived(
        "COINBASE:BTC-USD", 1675974637_167359, 21931.98, 21933.98, 8000.21, 8038.07
    )


def test_parse_market_trades_into_trades_oldest_first() -> None:
    feed, context = make_feed(clock_us=TRADES_US), ServiceContext("coinbase", Bus())
    # ``side`` is the maker's: a SELL maker means a buyer took it.
    assert parse(feed, MARKET_TRADES, context) == [
        TradeReceived("COINBASE:ETH-USD", 1565815347_160000, 1260.00, 0.1, SIDE_BUY, 0),
        TradeReceived("COINBASE:ETH-USD", 1565815347_265000, 1260.01, 0.3, SIDE_SELL, 1),
    ]


def test_the_taker_side_is_the_opposite_of_coinbases_maker_side() -> None:
    assert (taker_side("SELL"), taker_side("BUY")) == (SIDE_BUY, SIDE_SELL)
    assert taker_side("UNKNOWN_ORDER_SIDE") == taker_side(None) == 0


def test_trades_of_one_instant_are_in_trade_id_order() -> None:
    feed, context = make_feed(clock_us=TRADES_US), ServiceContext("coinbase", Bus())
    ts = TRADES_US - 1000
    trades = [fake.trade(ts, 10.0, 1.0, index) for index in (12, 10, 11)]
    events = parse(feed, fake.trades_message(trades, 0), context)
    assert [event.trade_id for event in events] == [10, 11, 12]


def test_a_ticker_without_best_bid_and_ask_gives_its_last_price() -> None:
    feed, context = make_feed(clock_us=TICKER_US), ServiceContext("coinbase", Bus())
    ticker = {"type": "ticker", "product_id": "BTC-USD", "price": "21932.98", "volume_24_h": "1"}
    message = {**TICKER, "events": [{"type": "update", "tickers": [ticker]}]}
    assert parse(feed, message, context) == [
        LastPriceReceived("COINBASE:BTC-USD", TICKER_US, 21932.98)
    ]
    assert context.counters == {}


def test_heartbeats_and_subscriptions_are_counted_only() -> None:
    feed, context = make_feed(), ServiceContext("coinbase", Bus())
    assert parse(feed, SUBSCRIPTIONS, context) == []
    assert parse(feed, {**HEARTBEATS, "sequence_num": 1}, context) == []
    assert context.counters == {"subscriptions": 1, "heartbeats": 1}


def test_error_messages_are_logged_and_counted(caplog: pytest.LogCaptureFixture) -> None:
    feed, context = make_feed(), ServiceContext("coinbase", Bus())
    assert parse(feed, fake.error_message("failure to subscribe"), context) == []
    assert context.counters == {"error_messages": 1}
    assert "failure to subscribe" in caplog.text


def test_unknown_channels_are_counted_unexpected() -> None:
    feed, context = make_feed(), ServiceContext("coinbase", Bus())
    status = {"channel": "status", "timestamp": TICKER["timestamp"], "sequence_num": 0}
    assert parse(feed, {**status, "events": [{"type": "snapshot", "products": []}]}, context) == []
    assert context.counters == {"unexpected": 1}


async def test_a_last_price_is_never_a_bar_a_tick_or_an_api_event() -> None:
    bus = Bus()
    ticks = bus.subscribe("builder", types=(QuoteReceived, TradeReceived))
    everything = bus.subscribe("ui")
    last = LastPriceReceived("COINBASE:BTC-USD", TICKER_US, 21932.98)
    await bus.publish([last])
    assert ticks.get_nowait() == [] and everything.get_nowait() == [last]
    assert encode_event(last) is None  # remote clients are not sent it (yet)


@pytest.mark.parametrize(
    "raw",
    [
        "{not json",
        json.dumps([1, 2, 3]),
        json.dumps({"type": "update"}),  # neither channel nor error
        json.dumps({**TICKER, "timestamp": "yesterday"}),
        json.dumps({**TICKER, "events": [{"type": "update", "tickers": [{"product_id": "BTC-USD"}]}]}),
        json.dumps({**MARKET_TRADES, "events": [{"type": "update", "trades": [{"product_id": "DOGE-USD"}]}]}),  # not subscribed
        json.dumps({**MARKET_TRADES, "sequence_num": "7"}),
        json.dumps({**MARKET_TRADES, "events": None}),
    ],
)  # fmt: skip
def test_malformed_messages_are_counted_and_skipped(raw: str) -> None:
    feed, context = make_feed(clock_us=TICKER_US), ServiceContext("coinbase", Bus())
    assert feed.parse(raw, context) == []
    assert context.counters["malformed"] == 1


MEGA_DIGITS = "1" * 1_000_000
IMPOSSIBLE_PRICES = ["NaN", float("nan"), "Infinity", "1e400", MEGA_DIGITS, "-1.5", "0", True]
IMPOSSIBLE_SIZES = ["NaN", "-0.3", "0", "1e300"]
IMPOSSIBLE_TIMES = ["1970-01-01T00:00:00Z", "1969-12-31T23:59:59.5Z", "3000-01-01T00:00:00Z"]


def _one_trade(**changes: Any) -> dict:
    trade = {**MARKET_TRADES["events"][0]["trades"][0], **changes}  # type: ignore[index]
    return {**MARKET_TRADES, "events": [{"type": "update", "trades": [trade]}]}


def _one_ticker(**changes: Any) -> dict:
    ticker = {**TICKER["events"][0]["tickers"][0], **changes}  # type: ignore[index]
    return {**TICKER, "events": [{"type": "update", "tickers": [ticker]}]}


@pytest.mark.parametrize(
    "message",
    [
        *(_one_trade(price=value) for value in IMPOSSIBLE_PRICES),
        *(_one_trade(size=value) for value in IMPOSSIBLE_SIZES),
        *(_one_trade(time=value) for value in IMPOSSIBLE_TIMES),
        *(_one_ticker(best_bid=value) for value in IMPOSSIBLE_PRICES),
        *(_one_ticker(best_ask=value) for value in IMPOSSIBLE_PRICES),
        _one_ticker(best_bid_quantity="-1"),
        _one_ticker(best_ask_quantity="NaN"),
        *(_one_ticker(best_bid=None, best_ask=None, price=value) for value in IMPOSSIBLE_PRICES),
        *({**TICKER, "timestamp": value} for value in IMPOSSIBLE_TIMES),
    ],
)
def test_impossible_values_are_counted_invalid_and_publish_nothing(message: dict) -> None:
    # Trades of 2019 against a clock of 2019, tickers of 2023 against one of 2023.
    clock = TRADES_US if message["channel"] == "market_trades" else TICKER_US
    feed, context = make_feed(clock_us=clock), ServiceContext("coinbase", Bus())
    assert parse(feed, message, context) == []
    assert context.counters == {"invalid": 1}


def test_one_impossible_trade_does_not_cost_its_neighbours() -> None:
    feed, context = make_feed(clock_us=TRADES_US), ServiceContext("coinbase", Bus())
    good = MARKET_TRADES["events"][0]["trades"]  # type: ignore[index]
    bad = {**good[0], "price": "NaN", "trade_id": "000000002"}
    message = {**MARKET_TRADES, "events": [{"type": "update", "trades": [bad, *good]}]}
    assert [event.trade_id for event in parse(feed, message, context)] == [0, 1]
    assert context.counters == {"invalid": 1}


def test_live_times_far_from_the_clock_are_invalid() -> None:
    feed, context = make_feed(), ServiceContext("coinbase", Bus())  # the wall clock
    assert parse(feed, MARKET_TRADES, context) == []  # trades of 2019
    assert context.counters == {"invalid": 2}


@pytest.mark.parametrize(
    "raw",
    [
        "[" * 100_000,
        '{"channel": "ticker", "events": ' + "[" * 100_000 + "]" * 100_000 + "}",
        b"\xff\xfe\x00\xc3garbage",
        b'{"channel": "market_trades", "events": "\xff"}',
        '{"channel": "market_trades", "sequence_num": ' + MEGA_DIGITS + "}",
    ],
)
def test_unreadable_messages_are_counted_malformed_without_raising(raw: str | bytes) -> None:
    feed, context = make_feed(clock_us=TRADES_US), ServiceContext("coinbase", Bus())
    assert feed.parse(raw, context) == []
    assert context.counters == {"malformed": 1}


def test_a_sequence_gap_is_counted() -> None:
    feed, context = make_feed(), ServiceContext("coinbase", Bus())
    for sequence in (0, 1, 2, 5, 6, 6):
        parse(feed, {**HEARTBEATS, "sequence_num": sequence}, context)
    assert context.counters["sequence_gaps"] == 1
    assert context.counters["out_of_order"] == 1
    assert context.counters["heartbeats"] == 6


def test_snapshot_trades_of_the_current_minute_not_seen_yet_are_published() -> None:
    feed, context = make_feed(), ServiceContext("coinbase", Bus())
    minute = 1_700_000_040_000_000 - 1_700_000_040_000_000 % US_PER_MINUTE
    feed.clock_us = lambda: minute + 30_000_000  # type: ignore[method-assign]
    snapshot = [  # newest first, as Coinbase lists them
        fake.trade(minute + 20_000_000, 101.0, 1.0, 4),
        fake.trade(minute + 10_000_000, 100.5, 2.0, 3),
        fake.trade(minute - 5_000_000, 100.0, 3.0, 2),  # an older minute: stored already
    ]
    first = parse(feed, fake.trades_message(snapshot, 0, kind="snapshot"), context)
    assert [(event.ts_us, event.price) for event in first] == [
        (minute + 10_000_000, 100.5),
        (minute + 20_000_000, 101.0),
    ]
    live = fake.trade(minute + 25_000_000, 102.0, 1.0, 5)
    parse(feed, fake.trades_message([live], 1), context)
    # A reconnect's snapshot repeats what was seen: only the newer trade is new.
    feed._next_sequence = None
    newer = fake.trade(minute + 28_000_000, 103.0, 1.0, 6)
    again = parse(feed, fake.trades_message([newer, live, *snapshot], 0, "snapshot"), context)
    assert [(event.ts_us, event.price) for event in again] == [(minute + 28_000_000, 103.0)]
    assert context.counters["snapshot_trades_skipped"] == 1 + 4


# --- live -----------------------------------------------------------------------------


async def test_live_session_with_a_disconnect_and_reconnect() -> None:
    sessions: list[fake.FakeSession] = []
    waits: list[float] = []
    base = 1_700_000_000_000_000

    async def handler(websocket: ServerConnection) -> None:
        session = fake.FakeSession(websocket)
        sessions.append(session)
        opened = time.monotonic()
        assert await session.accept_subscriptions(timeout=5.0)
        waits.append(time.monotonic() - opened)
        number = len(sessions)
        await session.send(fake.ticker_message(base, 100.0, 100.5, 2.0, 3.0, 0))
        await session.send("{garbage")
        await session.send(fake.trades_message([fake.trade(base + number, 100.25, 0.5, number)], 0))
        await session.send(fake.heartbeat_message(0, number))
        if number == 1:
            await websocket.close()  # a disconnect mid-stream
            return
        session.sequence += 3  # three messages lost on the way
        await session.send(fake.trades_message([fake.trade(base + 9, 99.0, 1.5, 9)], 0))
        await websocket.wait_closed()

    port = free_port()
    async with serve(handler, "127.0.0.1", port):
        bus = Bus()
        received = bus.subscribe("test", maxsize=1000, types=(QuoteReceived, TradeReceived))
        supervisor = Supervisor(bus, SupervisorConfig(backoff_initial_s=0.05, backoff_jitter=0.0))
        feed = make_feed(f"ws://127.0.0.1:{port}", clock_us=base + 1_000_000)
        supervisor.add(FeedService(feed))
        supervisor.start("coinbase")
        events: list[object] = []

        def got_both_sessions() -> bool:
            events.extend(received.get_nowait())
            return len(sessions) == 2 and len(events) >= 5

        await wait_until(got_both_sessions, timeout=10)
        [status] = supervisor.status()
        await supervisor.stop_all()

    for session in sessions:
        assert session.subscribes == [
            {"type": "subscribe", "product_ids": ["BTC-USD", "ETH-USD"], "channel": channel}
            for channel in CHANNELS
        ]
    assert all(wait < 5.0 for wait in waits)
    assert status.restarts >= 1
    assert events == [
        QuoteReceived("COINBASE:BTC-USD", base, 100.0, 100.5, 2.0, 3.0),
        expected_trade("COINBASE:BTC-USD", base + 1, 100.25, 0.5, 1),
        QuoteReceived("COINBASE:BTC-USD", base, 100.0, 100.5, 2.0, 3.0),
        expected_trade("COINBASE:BTC-USD", base + 2, 100.25, 0.5, 2),
        expected_trade("COINBASE:BTC-USD", base + 9, 99.0, 1.5, 9),
    ]
    counters = status.counters
    assert counters["malformed"] == 2
    assert counters["subscriptions"] == 6 and counters["heartbeats"] == 2
    # Numbering restarts with each connection: only the deliberate gap is counted.
    assert counters["sequence_gaps"] == 1


async def test_serve_session_plays_live_messages_as_trades() -> None:
    start = now_us()
    ticks = [(start + index * 1000, 100.0 + index / 100, 0.5 + index) for index in range(20)]

    messages = fake.live_messages(ticks)
    ids = fake.trade_ids(messages)
    assert ids == list(range(ids[0], ids[0] + len(ticks)))

    async def handler(websocket: ServerConnection) -> None:
        await fake.serve_session(websocket, messages)
        await websocket.wait_closed()

    port = free_port()
    async with serve(handler, "127.0.0.1", port):
        bus = Bus()
        received = bus.subscribe("test", maxsize=1000, types=(TradeReceived,))
        supervisor = Supervisor(bus, SupervisorConfig(backoff_initial_s=5.0))
        supervisor.add(FeedService(make_feed(f"ws://127.0.0.1:{port}")))
        supervisor.start("coinbase")
        events: list[object] = []

        def got_all() -> bool:
            events.extend(received.get_nowait())
            return len(events) >= len(ticks)

        await wait_until(got_all, timeout=10)
        [status] = supervisor.status()
        await supervisor.stop_all()
    assert events == [
        expected_trade(fake.INSTRUMENT, *tick, trade_id)
        for tick, trade_id in zip(ticks, ids, strict=True)
    ]
    assert "sequence_gaps" not in status.counters and "malformed" not in status.counters


async def test_a_silent_stream_trips_the_watchdog() -> None:
    async def handler(websocket: ServerConnection) -> None:
        await fake.FakeSession(websocket).accept_subscriptions()
        await websocket.wait_closed()

    port = free_port()
    async with serve(handler, "127.0.0.1", port):
        supervisor = Supervisor(Bus(), SupervisorConfig(backoff_initial_s=5.0))
        supervisor.add(FeedService(make_feed(f"ws://127.0.0.1:{port}", watchdog_s=0.2)))
        supervisor.start("coinbase")
        await wait_until(lambda: supervisor.status()[0].state is ServiceState.BACKOFF, timeout=5)
        [status] = supervisor.status()
        await supervisor.stop_all()
    assert "no message for" in status.last_error


async def test_the_fake_closes_a_client_that_does_not_subscribe() -> None:
    closed = asyncio.Event()

    async def handler(websocket: ServerConnection) -> None:
        assert not await fake.FakeSession(websocket).accept_subscriptions(timeout=0.1)
        closed.set()

    port = free_port()
    async with serve(handler, "127.0.0.1", port):
        from websockets.asyncio.client import connect

        async with connect(f"ws://127.0.0.1:{port}") as websocket:
            await asyncio.wait_for(closed.wait(), 5)
            await websocket.wait_closed()
            assert websocket.close_code == 1008


# --- history --------------------------------------------------------------------------


def test_history_pages_through_closed_bars_only() -> None:
    now = now_us()
    current_minute = now - now % US_PER_MINUTE
    start = current_minute - 1000 * US_PER_MINUTE + 17_000_000  # not on a minute
    end = current_minute + 5 * US_PER_MINUTE  # reaches past now
    with FakeHttpServer(fake.history_route) as server:
        feed = make_feed(rest_url=server.url)
        feed.clock_us = lambda: now  # type: ignore[method-assign]
        bars = feed.history(fake.INSTRUMENT, start, end)
        requests = list(server.requests)
    assert bars is not None
    expected = minute_bars(fake.PRODUCT_ID, start, end)
    expected = [bar for bar in expected if bar.ts_us + US_PER_MINUTE <= now]
    assert len(expected) == 999
    assert bars.schema == BAR_SCHEMA
    assert bars["instrument"].unique().to_list() == [fake.INSTRUMENT]
    assert bars["ts"].dt.epoch("us").to_list() == [bar.ts_us for bar in expected]
    assert bars.select("open", "high", "low", "close", "volume").rows() == [
        (bar.open, bar.high, bar.low, bar.close, bar.volume) for bar in expected
    ]
    assert bars["trades"].unique().to_list() == [0]
    assert bars["ts"].is_unique().all()
    assert len(requests) == 3  # 999 minutes in windows of 349
    for request in requests:
        assert request.path == "/api/v3/brokerage/market/products/BTC-USD/candles"
        assert request.query["granularity"] == "ONE_MINUTE" and request.query["limit"] == "350"
        assert int(request.query["end"]) - int(request.query["start"]) <= 349 * 60


def test_history_of_a_range_with_no_candles_is_empty() -> None:
    def respond(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"candles": []})

    feed = make_feed(transport=httpx.MockTransport(respond))
    bars = feed.history("COINBASE:BTC-USD", 0, 10 * US_PER_MINUTE)
    assert bars is not None and bars.is_empty() and bars.schema == BAR_SCHEMA


def test_impossible_candles_are_dropped_with_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    minute = 1_700_000_040_000_000 - 1_700_000_040_000_000 % US_PER_MINUTE
    good = {"low": "99", "high": "101", "open": "100", "close": "100.5", "volume": "2.5"}

    def candle(index: int, **changes: Any) -> dict:
        start = (minute + index * US_PER_MINUTE) // 1_000_000
        return {"start": str(start), **good, **changes}

    candles = [
        candle(0),
        candle(1, open="NaN"),
        candle(2, high="1e400"),
        candle(3, low="-1"),
        candle(4, close="0"),
        candle(5, volume="-2"),
        candle(6, volume="Infinity"),
        candle(7, open="1" * 1_000_000),
        {**candle(8), "start": "0"},  # 1970
        {**candle(9), "start": "-60"},
        {**candle(10), "start": str(32_503_680_000)},  # year 3000
        {"start": str((minute + 11 * US_PER_MINUTE) // 1_000_000)},  # no prices at all
        candle(12, volume="0"),  # a minute without trades: a real bar
    ]

    def respond(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"candles": candles})

    feed = make_feed(transport=httpx.MockTransport(respond), clock_us=minute + 20 * US_PER_MINUTE)
    bars = feed.history("COINBASE:BTC-USD", minute, minute + 20 * US_PER_MINUTE)
    assert bars is not None
    assert bars["ts"].dt.epoch("us").to_list() == [minute, minute + 12 * US_PER_MINUTE]
    assert bars["volume"].to_list() == [2.5, 0.0]
    warnings = [record for record in caplog.records if "dropped" in record.getMessage()]
    assert len(warnings) == 1 and "dropped 11 " in warnings[0].getMessage()


def test_history_honours_retry_after() -> None:
    answered: list[int] = []

    def route(request: FakeRequest) -> FakeResponse | None:
        answered.append(len(answered))
        if len(answered) == 1:
            return FakeResponse(429, {"message": "Too many requests"}, headers={"Retry-After": "7"})
        return fake.history_route(request)

    waits: list[float] = []
    now = now_us()
    end = now - now % US_PER_MINUTE - US_PER_MINUTE
    with FakeHttpServer(route) as server:
        feed = make_feed(rest_url=server.url)
        feed.sleep = waits.append
        bars = feed.history(fake.INSTRUMENT, end - 10 * US_PER_MINUTE, end)
    assert waits == [7.0]
    assert bars is not None and bars.height == 10


def test_history_errors_are_one_line() -> None:
    def respond(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            404, json={"error": "NOT_FOUND", "error_details": "product not found"}
        )

    feed = make_feed(transport=httpx.MockTransport(respond))
    with pytest.raises(SptraderError, match="HTTP 404"):
        feed.history("COINBASE:NOPE-USD", 0, 10 * US_PER_MINUTE)


def test_the_fake_refuses_more_than_350_candles() -> None:
    request = FakeRequest(
        "GET",
        "/api/v3/brokerage/market/products/BTC-USD/candles",
        {"start": "0", "end": str(350 * 60), "granularity": "ONE_MINUTE"},
        {},
    )
    response = fake.history_route(request)
    assert response is not None and response.status == 400


# --- symbols --------------------------------------------------------------------------


def test_symbols_are_the_online_spot_products() -> None:
    def respond(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/api/v3/brokerage/market/products"
        # Every product type, to check the feed's own filter too.
        return httpx.Response(200, json={"products": fake.PRODUCTS, "num_products": 5})

    symbols = make_feed(transport=httpx.MockTransport(respond)).symbols()
    assert [symbol.instrument for symbol in symbols] == ["COINBASE:BTC-USD", "COINBASE:ETH-EUR"]
    btc = symbols[0]
    assert (btc.description, btc.kind, btc.base, btc.quote) == (
        "Bitcoin / US Dollar",
        "crypto",
        "BTC",
        "USD",
    )


def test_symbols_from_the_fake_server() -> None:
    with FakeHttpServer(fake.history_route) as server:
        symbols = make_feed(rest_url=server.url).symbols()
        [request] = server.requests
    assert request.query == {"product_type": "SPOT"}
    assert [symbol.instrument for symbol in symbols] == ["COINBASE:BTC-USD", "COINBASE:ETH-EUR"]
