"""The Alpaca feed against a local fake speaking Alpaca's market data v2 wire format:
the stream's handshake and messages, paged history, symbols, and stocks' NYSE hours."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import fake_alpaca_data as fake
import pytest
from conftest import make_settings, wait_until
from fakes import FakeHttpServer, free_port, minute_bars
from websockets.asyncio.server import ServerConnection, serve

from sptrader.bus import Bus
from sptrader.clock import datetime_to_us, now_us
from sptrader.config import AlpacaFeedConfig, SupervisorConfig
from sptrader.engine import Engine
from sptrader.errors import SptraderError
from sptrader.feeds.alpaca import AlpacaFeed
from sptrader.feeds.base import FeedService, SymbolInfo
from sptrader.intervals import total
from sptrader.models import (
    NO_TRADE_ID,
    SIDE_UNKNOWN,
    US_PER_DAY,
    US_PER_MINUTE,
    Bar,
    QuoteReceived,
    ServiceState,
    TradeReceived,
    VenueBarClosed,
)
from sptrader.supervisor import ServiceContext, Supervisor

KEY, SECRET = fake.KEY, fake.SECRET
#: A Friday, 15:00 New York time (EST): the stream's messages are stamped around it.
FRIDAY_3PM_US = datetime_to_us(datetime(2024, 3, 8, 20, 0, tzinfo=UTC))
INSTRUMENTS = ["ALPACA:AAPL", "ALPACA:SPY"]


@pytest.fixture(autouse=True)
def keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APCA_API_KEY_ID", KEY)
    monkeypatch.setenv("APCA_API_SECRET_KEY", SECRET)


def make_feed(
    url: str = "http://127.0.0.1:1", clock_us: int | None = FRIDAY_3PM_US, **options: Any
) -> AlpacaFeed:
    """A feed on ``url`` for every endpoint, its clock at ``clock_us`` (None: the wall
    clock) and its history's waits recorded in ``feed.waits``."""
    config = AlpacaFeedConfig(enabled=True, ws_url=url, rest_url=url, trading_url=url, **options)
    waits: list[float] = []
    feed = AlpacaFeed(list(INSTRUMENTS), config, sleep=waits.append)
    feed.waits = waits  # type: ignore[attr-defined]
    if clock_us is not None:
        feed.clock_us = lambda: clock_us  # type: ignore[method-assign]
    return feed


def context() -> ServiceContext:
    return ServiceContext("alpaca", Bus())


# --- parsing --------------------------------------------------------------------------


def test_trades_quotes_and_bars_of_one_message_become_events() -> None:
    feed, ctx = make_feed(), context()
    at = FRIDAY_3PM_US + 1_500_000
    minute = FRIDAY_3PM_US - US_PER_MINUTE
    message = fake.frame(
        fake.trade(at, 172.31, 100),
        fake.quote(at + 1, 172.30, 172.33, 2, 3, symbol="SPY"),
        fake.bar(minute),
    )
    trade, quote, venue_bar = feed.parse(message, ctx)
    assert trade == TradeReceived("ALPACA:AAPL", at, 172.31, 100.0, SIDE_UNKNOWN, NO_TRADE_ID)
    assert quote == QuoteReceived("ALPACA:SPY", at + 1, 172.30, 172.33, 2.0, 3.0)
    [expected] = minute_bars("AAPL", minute, minute + 1)
    assert venue_bar == VenueBarClosed(
        Bar(
            "ALPACA:AAPL",
            "1m",
            minute,
            expected.open,
            expected.high,
            expected.low,
            expected.close,
            expected.volume,
            expected.trades,
        )
    )
    assert ctx.counters == {"venue_bars": 1}


def test_control_messages_corrections_and_one_sided_quotes_are_counted() -> None:
    feed, ctx = make_feed(), context()
    at = FRIDAY_3PM_US
    subscribed = fake.subscription(feed.subscribe_message())
    assert subscribed["trades"] == subscribed["bars"] == ["AAPL", "SPY"]
    assert feed.parse(fake.frame(subscribed), ctx) == []
    assert ctx.running  # the subscription answer is the start of data
    correction = {"T": "c", "S": "AAPL", "x": "V", "oi": 1, "op": 1.0, "os": 1, "oc": ["@"], "ci": 2, "cp": 1.1, "cs": 1, "cc": ["@"], "z": "C", "t": fake.rfc3339(at)}  # fmt: skip
    cancel = {"T": "x", "S": "AAPL", "i": 1, "x": "V", "p": 1.0, "s": 1, "a": "C", "z": "C", "t": fake.rfc3339(at)}  # fmt: skip
    empty_bid = fake.quote(at, 0, 172.33, 0, 3)
    assert feed.parse(fake.frame(correction, cancel, empty_bid), ctx) == []
    assert ctx.counters == {
        "subscriptions": 1,
        "corrections": 1,
        "cancel_errors": 1,
        "one_sided_quotes": 1,
    }


def test_bad_elements_are_counted_and_the_good_ones_of_the_message_kept() -> None:
    feed, ctx = make_feed(), context()
    at = FRIDAY_3PM_US
    good = fake.trade(at, 172.31, 100)
    for message in fake.bad_messages(at):
        assert feed.parse(message, ctx) == []
    assert ctx.counters == {"malformed": 2, "unexpected": 1, "invalid": 3}
    mixed = fake.frame(
        {**good, "p": 0},  # impossible
        {"T": "t", "S": "AAPL"},  # malformed: no price
        {**good, "S": "MSFT"},  # not subscribed
        {**fake.bar(at - US_PER_MINUTE), "h": 1.0},  # high below low
        {**fake.bar(at - US_PER_MINUTE), "t": fake.rfc3339(at + 1_000_000)},  # mid-minute
        good,
    )
    [trade] = feed.parse(mixed, ctx)
    assert (trade.ts_us, trade.price) == (at, 172.31)
    assert ctx.counters == {"malformed": 3, "unexpected": 2, "invalid": 6}
    # Not an array, or not JSON at all: one malformed message each.
    assert feed.parse(json.dumps(good), ctx) == feed.parse(b"\x00", ctx) == []
    assert ctx.counters["malformed"] == 5


# --- the stream -----------------------------------------------------------------------


@asynccontextmanager
async def stream_server(handler: Any) -> AsyncIterator[str]:
    port = free_port()
    async with serve(handler, "127.0.0.1", port):
        yield f"ws://127.0.0.1:{port}"


async def test_the_stream_authenticates_subscribes_and_publishes() -> None:
    received: list[dict] = []
    at = now_us()
    messages = [
        fake.frame(fake.quote(at, 172.30, 172.33, 2, 3), fake.trade(at + 5, 172.31, 100)),
        fake.frame(fake.trade(at + 9, 172.32, 50, symbol="SPY")),
    ]

    async def handler(websocket: ServerConnection) -> None:
        await fake.serve_session(websocket, messages, received, key=KEY, secret=SECRET)
        await websocket.wait_closed()

    async with stream_server(handler) as url:
        bus = Bus()
        data = bus.subscribe("test", maxsize=100, types=(QuoteReceived, TradeReceived))
        feed = make_feed(url, clock_us=None)
        ctx = ServiceContext("alpaca", bus)
        task = asyncio.create_task(feed.stream(ctx))
        events: list[object] = []

        def three() -> bool:
            events.extend(data.get_nowait())
            return len(events) == 3

        await wait_until(three)
        task.cancel()
    assert received == [
        {"action": "auth", "key": KEY, "secret": SECRET},
        {"action": "subscribe", "trades": ["AAPL", "SPY"], "quotes": ["AAPL", "SPY"], "bars": ["AAPL", "SPY"]},
    ]  # fmt: skip
    assert events == [
        QuoteReceived("ALPACA:AAPL", at, 172.30, 172.33, 2.0, 3.0),
        TradeReceived("ALPACA:AAPL", at + 5, 172.31, 100.0),
        TradeReceived("ALPACA:SPY", at + 9, 172.32, 50.0),
    ]
    assert ctx.running and ctx.counters == {"subscriptions": 1}


async def test_a_refused_key_fails_the_service_with_one_clear_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("APCA_API_SECRET_KEY", "a-wrong-secret")
    connections: list[int] = []

    async def handler(websocket: ServerConnection) -> None:
        connections.append(1)
        await fake.serve_session(websocket, [], key=KEY, secret=SECRET)

    async with stream_server(handler) as url:
        supervisor = Supervisor(Bus(), SupervisorConfig(backoff_initial_s=0.05))
        supervisor.add(FeedService(make_feed(url, clock_us=None)))
        supervisor.start("alpaca")
        await wait_until(lambda: supervisor.status()[0].state is ServiceState.FAILED)
        [status] = supervisor.status()
        await supervisor.stop_all()
    assert status.last_error == (
        "Alpaca refused the API key (402 auth failed): set APCA_API_KEY_ID and "
        "APCA_API_SECRET_KEY to the key id and secret of your Alpaca account "
        "(feeds.alpaca.key_env, feeds.alpaca.secret_env)"
    )
    assert connections == [1] and status.restarts == 0  # not retried: the user must act


async def test_no_key_in_the_environment_fails_before_connecting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("APCA_API_KEY_ID")
    with pytest.raises(SptraderError, match="set the APCA_API_KEY_ID and APCA_API_SECRET_KEY"):
        await make_feed("ws://127.0.0.1:1").stream(context())


@pytest.mark.parametrize(
    ("code", "text", "raised", "says"),
    [
        (406, "connection limit exceeded", ConnectionResetError, "another program streams"),
        (500, "internal error", ConnectionResetError, "500 internal error"),
        (409, "insufficient subscription", SptraderError, "ending in /v2/iex"),
        (405, "symbol limit exceeded", SptraderError, "at most 30 symbols"),
    ],
)
async def test_stream_errors_reconnect_or_fail_as_a_retry_can_fix_them(
    code: int, text: str, raised: type[Exception], says: str
) -> None:
    async def handler(websocket: ServerConnection) -> None:
        await fake.serve_session(websocket, [fake.error(code, text)], key=KEY, secret=SECRET)
        await websocket.wait_closed()

    async with stream_server(handler) as url:
        with pytest.raises(raised, match=says) as caught:
            await make_feed(url, clock_us=None).stream(context())
    assert SECRET not in str(caught.value)


async def test_a_silent_stream_that_answers_pings_is_not_reconnected() -> None:
    connections: list[int] = []

    async def handler(websocket: ServerConnection) -> None:
        connections.append(1)
        await fake.serve_session(websocket, [], key=KEY, secret=SECRET)
        await websocket.wait_closed()  # silent, as at night; websockets answers pings

    async with stream_server(handler) as url:
        feed = make_feed(url, clock_us=None, watchdog_s=0.6)
        ctx = context()
        task = asyncio.create_task(feed.stream(ctx))
        await wait_until(lambda: ctx.running)
        await asyncio.sleep(1.5)  # over twice the watchdog's limit without a message
        assert not task.done()
        task.cancel()
    assert connections == [1]


# --- history --------------------------------------------------------------------------


@pytest.fixture
def api() -> Iterator[FakeHttpServer]:
    with FakeHttpServer(fake.make_history_route(page_size=100)) as server:
        yield server


def test_history_follows_every_page_and_keeps_closed_minutes_only(api: FakeHttpServer) -> None:
    feed = make_feed(api.url, clock_us=None)
    now = now_us()
    current = now - now % US_PER_MINUTE
    start = current - 250 * US_PER_MINUTE
    frame = feed.history("ALPACA:AAPL", start, current + 5 * US_PER_MINUTE)
    assert frame is not None
    # 250 closed minutes: three pages of at most 100, the forming minute left out.
    expected = minute_bars("AAPL", start, current)
    assert frame["ts"].dt.epoch("us").to_list() == [bar.ts_us for bar in expected]
    rows = frame.select("open", "high", "low", "close", "volume", "trades").rows()
    assert rows == [(b.open, b.high, b.low, b.close, b.volume, b.trades) for b in expected]
    requests = [request for request in api.requests if request.path == "/v2/stocks/AAPL/bars"]
    assert len(requests) == 3
    assert ["page_token" in request.query for request in requests] == [False, True, True]
    first = requests[0].query
    assert (first["timeframe"], first["limit"], first["feed"], first["adjustment"]) == (
        "1Min",
        "10000",
        "iex",
        "raw",
    )
    assert all(request.headers["apca-api-key-id"] == KEY for request in requests)


def test_history_waits_out_a_429_and_gives_up_on_a_refused_key(
    api: FakeHttpServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    route = api.route
    limited = [fake.rate_limited()]
    api.route = lambda request: limited.pop() if limited else route(request)
    feed = make_feed(api.url, clock_us=None)
    end = now_us() - 10 * US_PER_MINUTE
    frame = feed.history("ALPACA:AAPL", end - 30 * US_PER_MINUTE, end)
    assert frame is not None and frame.height == 30
    assert feed.waits == [0.5]  # type: ignore[attr-defined]

    monkeypatch.setenv("APCA_API_SECRET_KEY", "a-wrong-secret")
    caplog.set_level(logging.DEBUG)
    with pytest.raises(SptraderError) as caught:
        feed.history("ALPACA:AAPL", end - 30 * US_PER_MINUTE, end)
    assert str(caught.value) == (
        f"Alpaca refused the API key (HTTP 401 from {api.url}): set APCA_API_KEY_ID and "
        "APCA_API_SECRET_KEY to the key id and secret of your Alpaca account "
        "(feeds.alpaca.key_env, feeds.alpaca.secret_env)"
    )
    assert feed.waits == [0.5]  # type: ignore[attr-defined]  # not retried
    assert SECRET not in caplog.text and "a-wrong-secret" not in caplog.text


def test_history_of_a_closed_market_is_empty_not_an_error(api: FakeHttpServer) -> None:
    api.route = fake.make_history_route(session_only=True)
    feed = make_feed(api.url, clock_us=None)
    saturday = FRIDAY_3PM_US + US_PER_DAY
    frame = feed.history("ALPACA:AAPL", saturday, saturday + 6 * 3600 * 1_000_000)
    assert frame is not None and frame.is_empty()


def test_symbols_are_the_tradable_us_equities_in_cents(api: FakeHttpServer) -> None:
    symbols = make_feed(api.url).symbols()
    assert symbols == [
        SymbolInfo("ALPACA:AAPL", "Apple Inc. Common Stock (NASDAQ)", "equity", "AAPL", "USD", 2),
        SymbolInfo("ALPACA:BRK.B", "Berkshire Hathaway Inc. Class B (NYSE)", "equity", "BRK.B", "USD", 2),
        SymbolInfo("ALPACA:SPY", "SPDR S&P 500 ETF Trust (ARCA)", "equity", "SPY", "USD", 2),
        SymbolInfo("ALPACA:PENY", "A Penny Stock Inc. (OTC)", "equity", "PENY", "USD", 4),
    ]  # fmt: skip
    [request] = [request for request in api.requests if request.path == "/v2/assets"]
    assert request.query == {"status": "active", "asset_class": "us_equity"}


# --- NYSE hours -----------------------------------------------------------------------

HOUR_US = 3600 * 1_000_000
#: Thursday 2024-03-07 00:00 UTC to Tuesday 2024-03-12 00:00 UTC; New York moved to
#: summer time on Sunday the 10th, so the session is 14:30-21:00 UTC before and
#: 13:30-20:00 UTC after.
THU = datetime_to_us(datetime(2024, 3, 7, tzinfo=UTC))
TUE = THU + 5 * US_PER_DAY
SESSIONS = [
    (THU + 14 * HOUR_US + 30 * US_PER_MINUTE, THU + 21 * HOUR_US),
    (THU + US_PER_DAY + 14 * HOUR_US + 30 * US_PER_MINUTE, THU + US_PER_DAY + 21 * HOUR_US),
    (THU + 4 * US_PER_DAY + 13 * HOUR_US + 30 * US_PER_MINUTE, THU + 4 * US_PER_DAY + 20 * HOUR_US),
]


def test_stocks_keep_nyse_hours_no_gap_at_night_or_over_the_weekend(home: Path) -> None:
    with FakeHttpServer(fake.make_history_route(session_only=True)) as server:
        section = fake.config_section("ws://127.0.0.1:1", server.url)
        engine = Engine(make_settings(home, watchlist=["SIM:EURUSD"], feeds={"alpaca": section}))
        store = engine.open_store()
        try:
            data = engine.data
            assert (data.kind_of("ALPACA:AAPL"), data.session_of("ALPACA:AAPL")) == (
                "equity",
                "nyse",
            )
            # Nothing stored: only the three sessions are missing, not nights or the weekend.
            assert data.gaps("ALPACA:AAPL", THU, TUE) == SESSIONS
            backfill = engine.make_backfill()
            [job] = backfill.plan(["ALPACA:AAPL"], THU, TUE)
            assert job.pieces == SESSIONS
            [job] = backfill.run([job])
            assert job.failed == "" and job.rows == total(SESSIONS) // US_PER_MINUTE
            status = data.status("ALPACA:AAPL", THU, TUE)
            assert (status.coverage_pct, status.gaps) == (100.0, [])
            assert status.days == [1.0, 1.0, -1.0, -1.0, 1.0]  # Saturday and Sunday closed
            assert status.bars == total(SESSIONS) // US_PER_MINUTE
        finally:
            store.close()
