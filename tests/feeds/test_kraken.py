"""The Kraken feed against local fakes speaking Kraken's websocket v2 and REST formats."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import fake_kraken
import httpx
import polars as pl
import pytest
from conftest import wait_until
from fakes import FakeHttpServer, free_port, minute_bars
from websockets.asyncio.server import ServerConnection, serve

from sptrader.bus import Bus
from sptrader.config import KrakenFeedConfig, SupervisorConfig
from sptrader.errors import SptraderError
from sptrader.feeds.base import BAR_SCHEMA, FeedService
from sptrader.feeds.kraken import KrakenFeed, rfc3339_to_us
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

# Messages as Kraken's v2 documentation shows them.
TICKER = {
    "channel": "ticker",
    "type": "snapshot",
    "data": [{"symbol": "BTC/USD", "bid": 105944.2, "bid_qty": 2.5, "ask": 105944.3, "ask_qty": 3.2, "last": 105899.4, "volume": 163.28, "vwap": 105904.39, "low": 104711.0, "high": 106613.1, "change": 250.0, "change_pct": 0.24}],
}  # fmt: skip
TRADE = {
    "channel": "trade",
    "type": "update",
    "data": [
        {"symbol": "BTC/USD", "side": "buy", "price": 105944.3, "qty": 0.0123, "ord_type": "limit", "trade_id": 4665846, "timestamp": "2023-09-25T07:48:36.925533Z"},
        {"symbol": "ETH/USD", "side": "sell", "price": 2500, "qty": 1, "ord_type": "market", "trade_id": 4665847, "timestamp": "2023-09-25T07:48:37.000001Z"},
    ],
}  # fmt: skip
HEARTBEAT = {"channel": "heartbeat"}
STATUS = json.loads(fake_kraken.STATUS)
PONG = {"method": "pong", "req_id": 101, "time_in": "2023-09-25T07:48:36.925533Z", "time_out": "2023-09-25T07:48:36.925633Z"}  # fmt: skip
ACK = {
    "method": "subscribe",
    "result": {"channel": "ticker", "snapshot": True, "symbol": "BTC/USD", "event_trigger": "trades"},
    "success": True,
    "time_in": "2023-09-25T07:48:36.925533Z",
    "time_out": "2023-09-25T07:48:36.925633Z",
}  # fmt: skip
REJECTED = {"error": "Currency pair not supported FOO/BAR", "method": "subscribe", "success": False, "symbol": "FOO/BAR", "time_in": "2023-09-25T07:48:36.925533Z", "time_out": "2023-09-25T07:48:36.925633Z"}  # fmt: skip

INSTRUMENTS = ["KRAKEN:BTC/USD", "KRAKEN:ETH/USD"]
#: A feed clock a second after TRADE's trades: live times must be near the clock.
TRADE_CLOCK_US = 1695628118_000000


def make_feed(
    instruments: list[str] | None = None,
    *,
    ws_url: str = "ws://127.0.0.1:1",
    rest_url: str = "https://api.kraken.com",
    transport: httpx.BaseTransport | None = None,
    sleeps: list[float] | None = None,
    clock_us: int | None = None,
    **options: Any,
) -> KrakenFeed:
    config = KrakenFeedConfig(enabled=True, ws_url=ws_url, rest_url=rest_url, **options)
    record = sleeps if sleeps is not None else []
    feed = KrakenFeed(instruments or INSTRUMENTS, config, transport=transport, sleep=record.append)
    if clock_us is not None:
        feed.clock_us = lambda: clock_us  # type: ignore[method-assign]
    return feed


def context() -> ServiceContext:
    return ServiceContext("kraken", Bus())


# --- parsing --------------------------------------------------------------------------


def test_subscribes_to_ticker_and_trade_with_v2_symbols() -> None:
    messages = [json.loads(text) for text in make_feed().subscribe_messages()]
    assert messages == [
        {"method": "subscribe", "params": {"channel": "ticker", "symbol": ["BTC/USD", "ETH/USD"]}},
        {"method": "subscribe", "params": {"channel": "trade", "symbol": ["BTC/USD", "ETH/USD"]}},
    ]


def test_ticker_becomes_a_quote_stamped_on_arrival() -> None:
    before = time.time_ns() // 1000
    [quote] = make_feed().parse(json.dumps(TICKER), context())
    assert isinstance(quote, QuoteReceived)
    assert quote.instrument == "KRAKEN:BTC/USD"
    assert (quote.bid, quote.bid_size, quote.ask, quote.ask_size) == (105944.2, 2.5, 105944.3, 3.2)
    assert before <= quote.ts_us <= time.time_ns() // 1000


def test_ticker_with_a_timestamp_is_stamped_with_it() -> None:
    ticker = {**TICKER, "data": [{**TICKER["data"][0], "timestamp": "2023-09-25T09:04:31.742648Z"}]}  # type: ignore[dict-item]
    feed = make_feed(clock_us=1695632672_000000)
    [quote] = feed.parse(json.dumps(ticker), context())
    assert quote == QuoteReceived("KRAKEN:BTC/USD", 1695632671742648, 105944.2, 105944.3, 2.5, 3.2)


def test_ticker_without_bid_and_ask_gives_its_last_price() -> None:
    item = {"symbol": "BTC/USD", "last": 105899.4, "volume": 163.28}
    feed = make_feed(clock_us=TRADE_CLOCK_US)
    message = {"channel": "ticker", "type": "update", "data": [item]}
    assert feed.parse(json.dumps(message), context()) == [
        LastPriceReceived("KRAKEN:BTC/USD", TRADE_CLOCK_US, 105899.4)
    ]


def test_each_trade_of_a_message_becomes_an_event() -> None:
    events = make_feed(clock_us=TRADE_CLOCK_US).parse(json.dumps(TRADE), context())
    assert events == [
        TradeReceived("KRAKEN:BTC/USD", rfc3339_to_us("2023-09-25T07:48:36.925533Z"), 105944.3, 0.0123, SIDE_BUY, 4665846),
        TradeReceived("KRAKEN:ETH/USD", 1695628117000001, 2500.0, 1.0, SIDE_SELL, 4665847),
    ]  # fmt: skip
    assert events[0].ts_us == 1695628116925533


def test_snapshot_trades_of_past_minutes_are_skipped() -> None:
    now = time.time_ns() // 1000
    minute = now - now % US_PER_MINUTE
    old, current = minute - 30_000_000, max(minute, now - 1000)
    message = fake_kraken.trade_message([(old, 1.0, 1.0), (current, 2.0, 1.0)], kind="snapshot")
    feed, ctx = make_feed(), context()
    [trade] = feed.parse(message, ctx)
    assert (trade.ts_us, trade.price) == (current, 2.0)
    assert ctx.counters == {"snapshot_skipped": 1}


def test_heartbeat_status_pong_and_acks_publish_nothing() -> None:
    feed, ctx = make_feed(), context()
    for message in (HEARTBEAT, STATUS, PONG):
        assert feed.parse(json.dumps(message), ctx) == []
    assert ctx.counters == {"status": 1}
    assert not ctx.running
    assert feed.parse(json.dumps(ACK), ctx) == []
    assert ctx.running  # subscribed: the service is up


@pytest.mark.parametrize(
    "raw",
    [
        "{not json",
        json.dumps([1, 2, 3]),
        json.dumps({"channel": "ticker", "type": "update", "data": [{"symbol": "BTC/USD", "bid": 1.0}]}),
        json.dumps({"channel": "trade", "type": "update", "data": [dict(TRADE["data"][0], timestamp="yesterday")]}),
        json.dumps({"channel": "trade", "type": "update", "data": [dict(TRADE["data"][0], symbol="XRP/USD")]}),
        json.dumps({"channel": "ticker", "type": "update", "data": None}),
        "[" * 100_000,
        '{"channel": "trade", "data": ' + "[" * 100_000 + "]" * 100_000 + "}",
        b"\xff\xfe\x00\xc3garbage",
        b'{"channel": "trade", "data": "\xff"}',
        '{"channel": "trade", "type": "update", "data": [{"symbol": "BTC/USD", "price": ' + "1" * 1_000_000 + "}]}",
    ],
)  # fmt: skip
def test_malformed_messages_are_counted_and_skipped(raw: str | bytes) -> None:
    feed, ctx = make_feed(clock_us=TRADE_CLOCK_US), context()
    assert feed.parse(raw, ctx) == []
    assert ctx.counters == {"malformed": 1}


IMPOSSIBLE_PRICES = [
    None,
    "NaN",
    float("nan"),
    "Infinity",
    float("inf"),
    1e400,
    "1" * 1_000_000,
    -1.5,
    0,
    True,
]
IMPOSSIBLE_SIZES = [float("nan"), -0.3, 0, 1e300]
IMPOSSIBLE_TIMES = ["1970-01-01T00:00:00Z", "1969-12-31T23:59:59.5Z", "3000-01-01T00:00:00Z"]


def _trade(**changes: Any) -> dict:
    return {"channel": "trade", "type": "update", "data": [{**TRADE["data"][0], **changes}]}  # type: ignore[dict-item]


def _ticker(**changes: Any) -> dict:
    item = {**TICKER["data"][0], "timestamp": "2023-09-25T07:48:37.5Z", **changes}  # type: ignore[dict-item]
    return {"channel": "ticker", "type": "update", "data": [item]}


@pytest.mark.parametrize(
    "message",
    [
        *(_trade(price=value) for value in IMPOSSIBLE_PRICES),
        *(_trade(qty=value) for value in IMPOSSIBLE_SIZES),
        *(_trade(timestamp=value) for value in IMPOSSIBLE_TIMES),
        *(_ticker(bid=value) for value in IMPOSSIBLE_PRICES if value is not None),
        *(_ticker(ask=value) for value in IMPOSSIBLE_PRICES if value is not None),
        _ticker(bid_qty=-1.0),
        _ticker(ask_qty=float("nan")),
        *(_ticker(bid=None, ask=None, last=value) for value in IMPOSSIBLE_PRICES),
        *(_ticker(timestamp=value) for value in IMPOSSIBLE_TIMES),
    ],
)  # fmt: skip
def test_impossible_values_are_counted_invalid_and_publish_nothing(message: dict) -> None:
    # json.dumps writes NaN, Infinity and 1e400 (inf) as the bare words JSON parsers take.
    feed, ctx = make_feed(clock_us=TRADE_CLOCK_US), context()
    assert feed.parse(json.dumps(message), ctx) == []
    assert ctx.counters == {"invalid": 1}


def test_one_impossible_trade_does_not_cost_the_others() -> None:
    bad = {**TRADE["data"][0], "price": float("nan"), "trade_id": 4665845}  # type: ignore[dict-item]
    message = {**TRADE, "data": [bad, *TRADE["data"]]}  # type: ignore[list-item]
    feed, ctx = make_feed(clock_us=TRADE_CLOCK_US), context()
    assert [event.trade_id for event in feed.parse(json.dumps(message), ctx)] == [4665846, 4665847]
    assert ctx.counters == {"invalid": 1}


def test_trades_far_from_the_feeds_clock_are_invalid() -> None:
    feed, ctx = make_feed(), context()  # the wall clock; TRADE's trades are of 2023
    assert feed.parse(json.dumps(TRADE), ctx) == []
    assert ctx.counters == {"invalid": 2}


@pytest.mark.parametrize(
    "message",
    [
        {"channel": "book", "type": "snapshot", "data": []},
        {"method": "unsubscribe", "success": True},
        {"hello": "world"},
    ],
)
def test_unknown_messages_are_counted_as_unexpected(message: dict) -> None:
    feed, ctx = make_feed(), context()
    assert feed.parse(json.dumps(message), ctx) == []
    assert ctx.counters == {"unexpected": 1}


def test_a_rejected_symbol_is_counted_while_others_stream() -> None:
    feed, ctx = make_feed(["KRAKEN:BTC/USD", "KRAKEN:FOO/BAR"]), context()
    assert feed.parse(json.dumps(REJECTED), ctx) == []
    assert ctx.counters == {"rejected": 1}
    assert ctx.problem == "Kraken rejected KRAKEN:FOO/BAR: Currency pair not supported FOO/BAR"


def test_all_symbols_rejected_is_the_users_error() -> None:
    feed, ctx = make_feed(["KRAKEN:FOO/BAR"]), context()
    with pytest.raises(SptraderError) as raised:
        feed.parse(json.dumps(REJECTED), ctx)
    assert (
        str(raised.value) == "Kraken rejected KRAKEN:FOO/BAR: Currency pair not supported FOO/BAR"
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2023-09-25T07:48:36.925533Z", 1695628116925533),
        ("2023-09-25T07:48:36.925533123Z", 1695628116925533),  # nanoseconds truncated
        ("2023-09-25T07:48:36Z", 1695628116000000),
        ("2023-09-25T07:48:36.9Z", 1695628116900000),
        ("2023-09-25T09:48:36.925533+02:00", 1695628116925533),
        ("2023-09-25T05:18:36.925533-02:30", 1695628116925533),
        ("1970-01-01T00:00:00.000001Z", 1),
    ],
)
def test_rfc3339_to_microseconds(text: str, expected: int) -> None:
    assert rfc3339_to_us(text) == expected


@pytest.mark.parametrize(
    "text", ["2023-09-25 07:48", "2023-09-25T07:48:36.x5Z", "2023-09-25T07:48:36"]
)
def test_rfc3339_rejects_garbage(text: str) -> None:
    with pytest.raises((ValueError, IndexError)):
        rfc3339_to_us(text)


# --- live, through the supervisor -----------------------------------------------------


async def test_live_session_subscribes_streams_and_reconnects() -> None:
    requests: list[dict] = []
    connections: list[int] = []
    trade_ts = rfc3339_to_us(TRADE["data"][0]["timestamp"])

    async def handler(websocket: ServerConnection) -> None:
        connections.append(len(connections))
        messages = [json.dumps(TICKER), "{garbage", json.dumps(HEARTBEAT), json.dumps(TRADE)]
        await fake_kraken.serve_session(websocket, messages, requests)
        if len(connections) > 1:
            await websocket.wait_closed()
        # The first session returns here: a disconnect mid-stream.

    port = free_port()
    async with serve(handler, "127.0.0.1", port):
        bus = Bus()
        received = bus.subscribe("test", maxsize=1000, types=(QuoteReceived, TradeReceived))
        supervisor = Supervisor(bus, SupervisorConfig(backoff_initial_s=0.05, backoff_jitter=0.0))
        feed = make_feed(ws_url=f"ws://127.0.0.1:{port}", clock_us=TRADE_CLOCK_US)
        supervisor.add(FeedService(feed))
        supervisor.start("kraken")
        events: list[object] = []

        def got_both_sessions() -> bool:
            events.extend(received.get_nowait())
            # The second session repeats the trades (same ids: dropped as repeats).
            quotes = sum(isinstance(event, QuoteReceived) for event in events)
            return len(connections) == 2 and quotes >= 2

        await wait_until(got_both_sessions, timeout=10)
        [status] = supervisor.status()
        await supervisor.stop_all()
    assert requests[:2] == [
        {"method": "subscribe", "params": {"channel": "ticker", "symbol": ["BTC/USD", "ETH/USD"]}},
        {"method": "subscribe", "params": {"channel": "trade", "symbol": ["BTC/USD", "ETH/USD"]}},
    ]
    assert len(requests) == 4  # both subscribes again after the reconnect
    assert status.restarts >= 1
    assert status.counters["malformed"] >= 2
    assert status.counters["status"] >= 2
    quotes = [event for event in events if isinstance(event, QuoteReceived)]
    trades = [event for event in events if isinstance(event, TradeReceived)]
    assert quotes[0].bid == 105944.2 and quotes[0].instrument == "KRAKEN:BTC/USD"
    assert trades[:2] == [
        TradeReceived("KRAKEN:BTC/USD", trade_ts, 105944.3, 0.0123, SIDE_BUY, 4665846),
        TradeReceived("KRAKEN:ETH/USD", 1695628117000001, 2500.0, 1.0, SIDE_SELL, 4665847),
    ]


async def test_a_silent_stream_trips_the_watchdog() -> None:
    async def handler(websocket: ServerConnection) -> None:
        await fake_kraken.serve_session(websocket, [])
        await websocket.wait_closed()

    port = free_port()
    async with serve(handler, "127.0.0.1", port):
        supervisor = Supervisor(Bus(), SupervisorConfig(backoff_initial_s=5.0))
        supervisor.add(FeedService(make_feed(ws_url=f"ws://127.0.0.1:{port}", watchdog_s=0.2)))
        supervisor.start("kraken")
        await wait_until(lambda: supervisor.status()[0].state is ServiceState.BACKOFF, timeout=5)
        [status] = supervisor.status()
        await supervisor.stop_all()
    assert "no message for" in status.last_error


async def test_an_unknown_symbol_fails_the_service_with_krakens_reason() -> None:
    async def handler(websocket: ServerConnection) -> None:
        await fake_kraken.serve_session(websocket, [])
        await websocket.wait_closed()

    port = free_port()
    async with serve(handler, "127.0.0.1", port):
        supervisor = Supervisor(Bus(), SupervisorConfig(backoff_initial_s=0.05))
        feed = make_feed(["KRAKEN:FOO/BAR"], ws_url=f"ws://127.0.0.1:{port}")
        supervisor.add(FeedService(feed))
        supervisor.start("kraken")
        await wait_until(lambda: supervisor.status()[0].state is ServiceState.FAILED, timeout=5)
        [status] = supervisor.status()
        await supervisor.stop_all()
    assert (
        status.last_error == "Kraken rejected KRAKEN:FOO/BAR: Currency pair not supported FOO/BAR"
    )
    assert status.restarts == 0


async def test_a_partly_rejected_subscription_keeps_streaming() -> None:
    trade = fake_kraken.trade_message([(1695628116925533, 105944.3, 0.5)])
    trade_id = json.loads(trade)["data"][0]["trade_id"]

    async def handler(websocket: ServerConnection) -> None:
        await fake_kraken.serve_session(websocket, [trade])
        await websocket.wait_closed()

    port = free_port()
    async with serve(handler, "127.0.0.1", port):
        bus = Bus()
        received = bus.subscribe("test", maxsize=100, types=(TradeReceived,))
        supervisor = Supervisor(bus, SupervisorConfig(backoff_initial_s=5.0))
        feed = make_feed(
            ["KRAKEN:BTC/USD", "KRAKEN:FOO/BAR"],
            ws_url=f"ws://127.0.0.1:{port}",
            clock_us=TRADE_CLOCK_US,
        )
        supervisor.add(FeedService(feed))
        supervisor.start("kraken")
        events: list[object] = []

        def got_trade() -> bool:
            events.extend(received.get_nowait())
            return bool(events)

        await wait_until(got_trade, timeout=5)
        [status] = supervisor.status()
        await supervisor.stop_all()
    assert status.state is ServiceState.RUNNING
    assert status.counters["rejected"] == 2  # ticker and trade
    assert (
        status.last_error == "Kraken rejected KRAKEN:FOO/BAR: Currency pair not supported FOO/BAR"
    )
    assert events == [
        TradeReceived("KRAKEN:BTC/USD", 1695628116925533, 105944.3, 0.5, SIDE_BUY, trade_id)
    ]


# --- history --------------------------------------------------------------------------


def _minute_now() -> int:
    now = time.time_ns() // 1000
    return now - now % US_PER_MINUTE


def _expected(symbol: str, start: int, end: int, *, min_trades: int = 1) -> pl.DataFrame:
    bars = minute_bars(symbol, start, end)
    return pl.DataFrame(
        {
            "instrument": [f"KRAKEN:{symbol}"] * len(bars),
            "ts": [bar.ts_us for bar in bars],
            "open": [bar.open for bar in bars],
            "high": [bar.high for bar in bars],
            "low": [bar.low for bar in bars],
            "close": [bar.close for bar in bars],
            "volume": [bar.volume for bar in bars],
            "trades": [max(min_trades, bar.trades) for bar in bars],
        },
        schema=BAR_SCHEMA,
    )


def _paths(server: FakeHttpServer) -> list[str]:
    return [request.path.rsplit("/", 1)[1] for request in server.requests]


def test_recent_history_comes_from_ohlc() -> None:
    end = _minute_now() - 10 * US_PER_MINUTE
    start = end - 90 * US_PER_MINUTE
    with FakeHttpServer(fake_kraken.history_route) as server:
        feed = make_feed(rest_url=server.url)
        bars = feed.history("KRAKEN:BTC/USD", start, end)
    assert bars is not None
    assert bars.schema == pl.Schema(BAR_SCHEMA)
    assert bars.equals(_expected("BTC/USD", start, end))
    assert _paths(server) == ["AssetPairs", "OHLC"]
    ohlc = server.requests[1].query
    assert ohlc == {"pair": "XBTUSD", "interval": "1", "since": str(start // 1_000_000 - 60)}


def test_older_history_is_rebuilt_from_trades_over_several_pages() -> None:
    start = _minute_now() - 2 * 1440 * US_PER_MINUTE
    end = start + 6 * 60 * US_PER_MINUTE
    with FakeHttpServer(fake_kraken.history_route) as server:
        feed = make_feed(rest_url=server.url)
        bars = feed.history("KRAKEN:BTC/USD", start, end)
    assert bars is not None
    # OHLCV exactly; the fake trades every minute at least 4 times.
    assert bars.select(list(BAR_SCHEMA)).equals(_expected("BTC/USD", start, end, min_trades=4))
    paths = _paths(server)
    assert paths[0] == "AssetPairs" and "OHLC" not in paths
    assert paths.count("Trades") >= 2  # about 1500 trades: paged
    first = server.requests[1].query
    assert first["pair"] == "XBTUSD" and first["since"] == str(start * 1000 - 1)


def test_history_across_the_ohlc_window_joins_trades_and_ohlc_without_duplicates() -> None:
    now_minute = _minute_now()
    start = now_minute - 13 * 60 * US_PER_MINUTE
    end = now_minute + 5 * US_PER_MINUTE  # beyond now: only closed bars come back
    with FakeHttpServer(fake_kraken.history_route) as server:
        bars = make_feed(rest_url=server.url).history("KRAKEN:BTC/USD", start, end)
    assert bars is not None
    ts = bars["ts"].dt.epoch("us")
    assert ts.is_sorted() and ts.n_unique() == bars.height
    assert ts.min() == start
    assert ts.max() + US_PER_MINUTE <= time.time_ns() // 1000
    assert ts.diff().drop_nulls().unique().to_list() == [US_PER_MINUTE]
    # OHLCV of every bar matches the fake market, whichever endpoint it came from.
    last = int(ts.max()) + US_PER_MINUTE
    expected = _expected("BTC/USD", start, last)
    assert bars.select(list(BAR_SCHEMA)).drop("trades").equals(expected.drop("trades"))
    assert {"OHLC", "Trades"} <= set(_paths(server))


def _kraken(result: dict | None = None, errors: list[str] | None = None) -> httpx.Response:
    body: dict[str, Any] = {"error": errors or []}
    if result is not None:
        body["result"] = result
    return httpx.Response(200, json=body)


def _mock(respond: Callable[[httpx.Request], httpx.Response]) -> httpx.MockTransport:
    def route(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/0/public/AssetPairs":
            return _kraken(fake_kraken.ASSET_PAIRS)
        return respond(request)

    return httpx.MockTransport(route)


def _ohlc_rows(start_s: int, count: int) -> list[list[Any]]:
    return [[start_s + 60 * index, "1.0", "2.0", "0.5", "1.5", "1.2", "10.00000000", 7] for index in range(count)]  # fmt: skip


def test_bars_rebuilt_from_trades_carry_the_takers_buy_and_sell_volume() -> None:
    start = _minute_now() - 2 * 1440 * US_PER_MINUTE
    end = start + 30 * US_PER_MINUTE
    with FakeHttpServer(fake_kraken.history_route) as server:
        bars = make_feed(rest_url=server.url).history("KRAKEN:BTC/USD", start, end)
    assert bars is not None
    if "buy_volume" not in bars.columns:
        pytest.skip("aggregate_ticks sums no order flow yet")
    # The fake's trades: odd ids bought ("b"), even ids sold ("s"), every side known.
    for bar in bars.with_columns(pl.col("ts").dt.epoch("us")).iter_rows(named=True):
        trades = fake_kraken.minute_trades("BTC/USD", bar["ts"])
        bought = sum(size for _, _, size, trade_id in trades if trade_id % 2)
        sold = sum(size for _, _, size, trade_id in trades if not trade_id % 2)
        assert bar["buy_volume"] == pytest.approx(bought) and bar["sell_volume"] == pytest.approx(
            sold
        )


def test_history_leaves_out_the_forming_bar() -> None:
    current_s = _minute_now() // 1_000_000
    start_s = current_s - 2 * 60

    def respond(request: httpx.Request) -> httpx.Response:
        # As Kraken answers: under its own pair key, the forming bar last.
        return _kraken({"XXBTZUSD": _ohlc_rows(start_s, 3), "last": current_s - 60})

    feed = make_feed(transport=_mock(respond))
    bars = feed.history("KRAKEN:BTC/USD", start_s * 1_000_000, (current_s + 60) * 1_000_000)
    assert bars is not None
    assert bars["ts"].dt.epoch("s").to_list() == [start_s, start_s + 60]


def test_impossible_ohlc_rows_are_dropped_with_one_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    current_s = _minute_now() // 1_000_000
    start_s = current_s - 20 * 60
    rows = _ohlc_rows(start_s, 14)
    changes = [
        (1, 1, "NaN"),
        (2, 2, "1e400"),
        (3, 3, "-1"),
        (4, 4, "0"),
        (5, 6, "-2"),
        (6, 1, "1" * 1_000_000),
        (7, 0, 0),  # 1970
        (8, 0, -60),
        (9, 0, 32_503_680_000),  # year 3000
        (10, 7, -1),  # a negative trade count
        (11, 1, True),
    ]
    for index, column, value in changes:
        rows[index][column] = value
    rows[12] = rows[12][:3]  # cut short
    rows[13][6] = "0.00000000"  # a minute without trades: a real bar

    def respond(request: httpx.Request) -> httpx.Response:
        return _kraken({"XXBTZUSD": rows, "last": current_s - 60})

    feed = make_feed(transport=_mock(respond))
    bars = feed.history("KRAKEN:BTC/USD", start_s * 1_000_000, current_s * 1_000_000)
    assert bars is not None
    assert bars["ts"].dt.epoch("s").to_list() == [start_s, start_s + 13 * 60]
    assert bars["volume"].to_list() == [10.0, 0.0]
    warnings = [record for record in caplog.records if "dropped" in record.getMessage()]
    assert len(warnings) == 1 and "dropped 12 " in warnings[0].getMessage()


def test_impossible_rest_trades_are_dropped_with_one_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    start_s = (_minute_now() - 3 * 1440 * US_PER_MINUTE) // 1_000_000
    good = [["100.0", "1.0", start_s + 1.5, "b", "m", "", 500], ["101.0", "2.0", start_s + 2.5, "s", "l", "", 501]]  # fmt: skip
    bad = [
        ["NaN", "1.0", start_s + 3.5, "b", "m", "", 502],
        ["1e400", "1.0", start_s + 4.5, "b", "m", "", 503],
        ["-1", "1.0", start_s + 5.5, "b", "m", "", 504],
        ["0", "1.0", start_s + 6.5, "b", "m", "", 505],
        ["1" * 1_000_000, "1.0", start_s + 7.5, "b", "m", "", 506],
        ["100.0", "NaN", start_s + 8.5, "b", "m", "", 507],
        ["100.0", "-1", start_s + 9.5, "b", "m", "", 508],
        ["100.0", "0", start_s + 10.5, "b", "m", "", 509],
        ["100.0", "1e300", start_s + 11.5, "b", "m", "", 510],
        ["100.0", "1.0", 0, "b", "m", "", 511],
        ["100.0", "1.0", -1.5, "b", "m", "", 512],
        ["100.0", "1.0", 32_503_680_000.5, "b", "m", "", 513],
        [True, "1.0", start_s + 12.5, "b", "m", "", 514],
    ]
    pages = [[*good, *bad]]

    def respond(request: httpx.Request) -> httpx.Response:
        page = pages.pop(0) if pages else []
        return _kraken({"XXBTZUSD": page, "last": str((start_s + 13) * 1_000_000_000)})

    feed = make_feed(transport=_mock(respond))
    bars = feed.history("KRAKEN:BTC/USD", start_s * 1_000_000, (start_s + 60) * 1_000_000)
    assert bars is not None
    assert bars.select("open", "high", "low", "close", "volume", "trades").rows() == [
        (100.0, 101.0, 100.0, 101.0, 3.0, 2)
    ]
    warnings = [record for record in caplog.records if "dropped" in record.getMessage()]
    assert len(warnings) == 1 and "dropped 13 " in warnings[0].getMessage()


def test_a_rate_limit_error_body_is_retried_with_backoff() -> None:
    current_s = _minute_now() // 1_000_000
    answers = [
        _kraken(errors=["EAPI:Rate limit exceeded"]),
        _kraken(errors=["EGeneral:Too many requests"]),
        _kraken({"XXBTZUSD": _ohlc_rows(current_s - 600, 10), "last": current_s - 60}),
    ]
    sleeps: list[float] = []
    feed = make_feed(transport=_mock(lambda request: answers.pop(0)), sleeps=sleeps)
    bars = feed.history("KRAKEN:BTC/USD", (current_s - 600) * 1_000_000, current_s * 1_000_000)
    assert bars is not None and bars.height == 10
    assert sleeps == [2.0, 4.0]


def test_http_429_honours_retry_after() -> None:
    current_s = _minute_now() // 1_000_000
    answers = [
        httpx.Response(429, headers={"Retry-After": "3"}, text="Too Many Requests"),
        _kraken({"XXBTZUSD": _ohlc_rows(current_s - 300, 5), "last": current_s - 60}),
    ]
    sleeps: list[float] = []
    feed = make_feed(transport=_mock(lambda request: answers.pop(0)), sleeps=sleeps)
    bars = feed.history("KRAKEN:BTC/USD", (current_s - 300) * 1_000_000, current_s * 1_000_000)
    assert bars is not None and bars.height == 5
    assert sleeps == [3.0]


def test_a_lasting_rate_limit_gives_up_in_one_line() -> None:
    sleeps: list[float] = []
    feed = make_feed(
        transport=_mock(lambda request: _kraken(errors=["EAPI:Rate limit exceeded"])), sleeps=sleeps
    )
    end = _minute_now()
    with pytest.raises(SptraderError, match=r"Rate limit exceeded.*gave up"):
        feed.history("KRAKEN:BTC/USD", end - 10 * US_PER_MINUTE, end)
    assert len(sleeps) == 5


def test_other_kraken_errors_are_one_line() -> None:
    feed = make_feed(transport=_mock(lambda request: _kraken(errors=["EQuery:Unknown asset pair"])))
    end = _minute_now()
    with pytest.raises(SptraderError, match="Kraken OHLC for XBTUSD: EQuery:Unknown asset pair"):
        feed.history("KRAKEN:BTC/USD", end - 10 * US_PER_MINUTE, end)


def test_history_of_an_unlisted_symbol_says_so() -> None:
    feed = make_feed(transport=_mock(lambda request: _kraken(errors=["unused"])))
    end = _minute_now()
    with pytest.raises(SptraderError, match="Kraken lists no pair FOO/BAR"):
        feed.history("KRAKEN:FOO/BAR", end - 10 * US_PER_MINUTE, end)


def test_dogecoin_history_asks_for_the_rest_name() -> None:
    end = _minute_now() - 5 * US_PER_MINUTE
    start = end - 5 * US_PER_MINUTE
    with FakeHttpServer(fake_kraken.history_route) as server:
        bars = make_feed(["KRAKEN:DOGE/USD"], rest_url=server.url).history(
            "KRAKEN:DOGE/USD", start, end
        )
    assert bars is not None and bars.equals(_expected("DOGE/USD", start, end))
    assert server.requests[1].query["pair"] == "XDGUSD"


# --- symbols --------------------------------------------------------------------------


def test_symbols_use_v2_names_with_the_xbt_and_xdg_aliases() -> None:
    with FakeHttpServer(fake_kraken.history_route) as server:
        symbols = make_feed(rest_url=server.url).symbols()
    by_name = {info.instrument: info for info in symbols}
    assert set(by_name) == {
        "KRAKEN:BTC/USD",
        "KRAKEN:ETH/USD",
        "KRAKEN:ETH/BTC",
        "KRAKEN:DOGE/USD",
        "KRAKEN:EUR/USD",
    }
    btc = by_name["KRAKEN:BTC/USD"]
    assert (btc.description, btc.kind, btc.base, btc.quote) == ("BTC / USD", "crypto", "BTC", "USD")
    assert by_name["KRAKEN:EUR/USD"].kind == "fx"
    assert by_name["KRAKEN:DOGE/USD"].description == "DOGE / USD"


def test_trade_pages_that_repeat_a_trade_do_not_duplicate_it() -> None:
    start_s = (_minute_now() - 3 * 1440 * US_PER_MINUTE) // 1_000_000
    rows = [
        [f"{100 + index}.0", "1.0", start_s + index * 20 + 0.5, "b", "m", "", 500 + index]
        for index in range(7)
    ]  # three per minute, the 7th in the third minute (the range's end)
    pages = [rows[:3], rows[2:5], rows[4:]]  # each page repeats the previous one's last
    cursors: list[str] = []

    def respond(request: httpx.Request) -> httpx.Response:
        cursors.append(request.url.params["since"])
        page = pages.pop(0)
        return _kraken({"XXBTZUSD": page, "last": str(round(page[-1][2] * 1e9))})

    feed = make_feed(transport=_mock(respond))
    bars = feed.history("KRAKEN:BTC/USD", start_s * 1_000_000, (start_s + 120) * 1_000_000)
    assert bars is not None
    assert bars["trades"].to_list() == [3, 3]
    assert bars["volume"].to_list() == [3.0, 3.0]
    assert bars["open"].to_list() == [100.0, 103.0]
    assert bars["close"].to_list() == [102.0, 105.0]
    assert cursors[0] == str(start_s * 1_000_000_000 - 1) and len(cursors) == 3


def test_the_fake_config_section_is_a_valid_kraken_config() -> None:
    import msgspec

    section = fake_kraken.config_section("ws://127.0.0.1:9", "http://127.0.0.1:8")
    config = msgspec.convert(section, KrakenFeedConfig)
    assert config.enabled
    assert (config.ws_url, config.rest_url) == ("ws://127.0.0.1:9", "http://127.0.0.1:8")
