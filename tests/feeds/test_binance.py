"""The Binance feed against local fake servers speaking Binance's wire format."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest
from conftest import wait_until
from fakes import free_port
from websockets.asyncio.server import ServerConnection, serve

from sptrader.bus import Bus
from sptrader.config import BinanceFeedConfig, SupervisorConfig
from sptrader.feeds.base import FeedService
from sptrader.feeds.binance import BinanceFeed
from sptrader.models import SIDE_SELL, QuoteReceived, ServiceState, TradeReceived
from sptrader.supervisor import ServiceContext, Supervisor

# Live messages must be stamped near the feed's clock: these are stamped at import.
NOW_MS = int(time.time() * 1000)
TRADE = {
    "stream": "btcusdt@trade",
    "data": {
        "e": "trade",
        "E": NOW_MS,
        "s": "BTCUSDT",
        "t": 12345,
        "p": "16500.10",
        "q": "0.25",
        "T": NOW_MS,
        "m": True,
        "M": True,
    },
}
BOOK = {
    "stream": "btcusdt@bookTicker",
    "data": {
        "u": 400900217,
        "s": "BTCUSDT",
        "b": "16500.00",
        "B": "31.21",
        "a": "16500.20",
        "A": "40.66",
    },
}
KLINE = {
    "stream": "btcusdt@kline_1m",
    "data": {"e": "kline", "E": 1672515782136, "s": "BTCUSDT", "k": {"t": 1672515780000, "T": 1672515839999, "s": "BTCUSDT", "i": "1m", "o": "1", "c": "2", "h": "3", "l": "0.5", "v": "10", "n": 5, "x": False}},
}  # fmt: skip


def make_feed(port: int = 1, **options: Any) -> BinanceFeed:
    config = BinanceFeedConfig(enabled=True, ws_url=f"ws://127.0.0.1:{port}", **options)
    return BinanceFeed(["BINANCE:BTCUSDT", "BINANCE:ETHUSDT"], config)


def test_stream_url_names_every_channel_in_lower_case() -> None:
    url = make_feed(9).stream_url()
    assert url.startswith("ws://127.0.0.1:9/stream?streams=")
    streams = url.split("=", 1)[1].split("/")
    assert set(streams) == {
        f"{symbol}@{channel}"
        for symbol in ("btcusdt", "ethusdt")
        for channel in ("trade", "bookTicker", "kline_1m")
    }


def test_parse_routes_by_stream_name() -> None:
    feed, context = make_feed(), ServiceContext("binance", Bus())
    [trade] = feed.parse(json.dumps(TRADE), context)
    # m = true: the buyer was the maker, so the taker sold.
    assert trade == TradeReceived(
        "BINANCE:BTCUSDT", NOW_MS * 1000, 16500.10, 0.25, SIDE_SELL, 12345
    )
    [quote] = feed.parse(json.dumps(BOOK), context)
    assert isinstance(quote, QuoteReceived)
    assert (quote.bid, quote.ask, quote.bid_size, quote.ask_size) == (
        16500.0,
        16500.2,
        31.21,
        40.66,
    )
    assert feed.parse(json.dumps(KLINE), context) == []
    assert context.counters == {"klines": 1}


@pytest.mark.parametrize(
    "raw",
    [
        "{not json",
        json.dumps({"stream": "dogeusdt@trade", "data": TRADE["data"]}),  # not subscribed
        json.dumps({"stream": "btcusdt@depth", "data": {}}),  # unknown channel
        json.dumps({"stream": "btcusdt@trade", "data": {"p": "x"}}),  # missing fields
        json.dumps([1, 2, 3]),
    ],
    # Named, not by their text: the trade's times are now's, and test ids must not change
    # between collections (pytest-xdist's workers each collect).
    ids=["not-json", "not-subscribed", "unknown-channel", "missing-fields", "a-list"],
)
def test_malformed_messages_are_counted_and_skipped(raw: str) -> None:
    feed, context = make_feed(), ServiceContext("binance", Bus())
    assert feed.parse(raw, context) == []
    assert context.counters["malformed"] == 1


def test_server_shutdown_means_reconnect() -> None:
    feed, context = make_feed(), ServiceContext("binance", Bus())
    with pytest.raises(ConnectionResetError):
        feed.parse(json.dumps({"e": "serverShutdown"}), context)


async def test_live_stream_through_the_supervisor_with_a_reconnect() -> None:
    connections: list[str] = []

    async def handler(websocket: ServerConnection) -> None:
        connections.append(websocket.request.path)
        await websocket.send(json.dumps(BOOK))
        await websocket.send("{garbage")
        await websocket.send(json.dumps(TRADE))
        if len(connections) == 1:
            await websocket.close()  # a disconnect mid-stream
            return
        await websocket.wait_closed()

    port = free_port()
    async with serve(handler, "127.0.0.1", port):
        bus = Bus()
        received = bus.subscribe("test", maxsize=1000, types=(QuoteReceived, TradeReceived))
        supervisor = Supervisor(bus, SupervisorConfig(backoff_initial_s=0.05, backoff_jitter=0.0))
        supervisor.add(FeedService(make_feed(port)))
        supervisor.start("binance")
        events: list[object] = []

        def got_both_connections() -> bool:
            events.extend(received.get_nowait())
            # Both connections send the same trade: the second copy is a repeat.
            return len(connections) == 2 and len(events) >= 3

        await wait_until(got_both_connections, timeout=10)
        [status] = supervisor.status()
        await supervisor.stop_all()
    assert connections[0].startswith("/stream?streams=")
    assert status.restarts >= 1
    assert status.counters["malformed"] >= 2
    assert status.counters["duplicate_trades"] == 1
    assert [type(event) for event in events] == [QuoteReceived, TradeReceived, QuoteReceived]


async def test_a_silent_stream_trips_the_watchdog() -> None:
    async def handler(websocket: ServerConnection) -> None:
        await websocket.wait_closed()

    port = free_port()
    async with serve(handler, "127.0.0.1", port):
        bus = Bus()
        supervisor = Supervisor(bus, SupervisorConfig(backoff_initial_s=5.0))
        supervisor.add(FeedService(make_feed(port, watchdog_s=0.2)))
        supervisor.start("binance")
        await wait_until(lambda: supervisor.status()[0].state is ServiceState.BACKOFF, timeout=5)
        [status] = supervisor.status()
        await supervisor.stop_all()
    assert "no message for" in status.last_error


def _klines(start_ms: int, count: int, closed_before_ms: int) -> list[list[Any]]:
    rows = []
    for index in range(count):
        open_ms = start_ms + index * 60_000
        rows.append(
            [
                open_ms,
                "1.0",
                "2.0",
                "0.5",
                "1.5",
                "10.0",
                open_ms + 59_999 if open_ms + 59_999 < closed_before_ms else closed_before_ms + 1,
                "15.0",
                7,
                "5",
                "7.5",
                "0",
            ]
        )
    return rows  # fmt: skip


def test_history_pages_by_time_and_honours_retry_after() -> None:
    start_ms = 1_700_000_040_000 - 1_700_000_040_000 % 60_000
    total = 1500
    calls: list[dict[str, str]] = []
    limited = {"done": False}

    def respond(request: httpx.Request) -> httpx.Response:
        params = dict(request.url.params)
        calls.append(params)
        if not limited["done"]:
            limited["done"] = True
            return httpx.Response(
                429, headers={"Retry-After": "0"}, json={"code": -1003, "msg": "slow down"}
            )
        first = (int(params["startTime"]) - start_ms) // 60_000
        count = min(int(params["limit"]), total - first)
        return httpx.Response(200, json=_klines(int(params["startTime"]), max(0, count), 10**15))

    feed = BinanceFeed(
        ["BINANCE:BTCUSDT"], BinanceFeedConfig(enabled=True), transport=httpx.MockTransport(respond)
    )
    bars = feed.history("BINANCE:BTCUSDT", start_ms * 1000, (start_ms + total * 60_000) * 1000)
    assert bars is not None
    assert bars.height == total
    assert bars["ts"].dt.epoch("us").diff().drop_nulls().unique().to_list() == [60_000_000]
    assert bars["trades"].unique().to_list() == [7]
    assert calls[0]["symbol"] == "BTCUSDT" and calls[0]["interval"] == "1m"
    assert len(calls) == 3  # one 429, then two pages


def test_history_leaves_out_the_bar_still_forming(monkeypatch: pytest.MonkeyPatch) -> None:
    import sptrader.feeds.binance as binance_module

    now_ms = int(time.time() * 1000)
    # The clock stands still: a minute closing during the test would change the answer.
    monkeypatch.setattr(binance_module, "now_us", lambda: now_ms * 1000)
    start_ms = now_ms - now_ms % 60_000 - 2 * 60_000

    def respond(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=_klines(start_ms, 3, now_ms))

    feed = BinanceFeed(
        ["BINANCE:BTCUSDT"], BinanceFeedConfig(enabled=True), transport=httpx.MockTransport(respond)
    )
    bars = feed.history("BINANCE:BTCUSDT", start_ms * 1000, (start_ms + 3 * 60_000) * 1000)
    assert bars is not None
    assert bars.height == 2


def test_history_errors_are_one_line() -> None:
    def respond(request: httpx.Request) -> httpx.Response:
        return httpx.Response(400, json={"code": -1121, "msg": "Invalid symbol."})

    feed = BinanceFeed(
        ["BINANCE:NOPE"], BinanceFeedConfig(enabled=True), transport=httpx.MockTransport(respond)
    )
    from sptrader.errors import SptraderError

    with pytest.raises(SptraderError, match="HTTP 400"):
        feed.history("BINANCE:NOPE", 0, 60_000_000)
