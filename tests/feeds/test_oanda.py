"""The OANDA feed against a local fake speaking OANDA's v20 wire format."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import fake_oanda
import httpx
import pytest
from conftest import wait_until
from fakes import FakeHttpServer, FakeRequest, FakeResponse, json_lines, minute_bars

from sptrader.bus import Bus
from sptrader.clock import datetime_to_us, now_us
from sptrader.config import OandaFeedConfig, SupervisorConfig
from sptrader.errors import SptraderError
from sptrader.feeds.base import FeedService, SymbolInfo
from sptrader.feeds.oanda import OandaFeed, format_rfc3339, rfc3339_us
from sptrader.models import US_PER_MINUTE, QuoteReceived, ServiceState
from sptrader.supervisor import ServiceContext, Supervisor

TOKEN = "test-token-do-not-log"
ACCOUNT = "101-004-1234567-001"
# Copied from OANDA's documented stream format.
PRICE = {"type": "PRICE", "time": "2019-01-31T18:16:38.818627106Z", "bids": [{"price": "0.72711", "liquidity": 10000000}], "asks": [{"price": "0.72725", "liquidity": 10000000}], "closeoutBid": "0.72696", "closeoutAsk": "0.72740", "status": "tradeable", "tradeable": True, "instrument": "USD_CAD"}  # fmt: skip
HEARTBEAT = {"type": "HEARTBEAT", "time": "2019-01-31T18:16:40.150345243Z"}
PRICE_US = datetime_to_us(datetime(2019, 1, 31, 18, 16, 38, 818627, tzinfo=UTC))


@pytest.fixture(autouse=True)
def token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OANDA_TOKEN", TOKEN)


def make_feed(
    url: str = "http://127.0.0.1:1",
    instruments: tuple[str, ...] = ("OANDA:EUR_USD", "OANDA:USD_CAD"),
    **options: Any,
) -> OandaFeed:
    """A feed whose clock is a second after PRICE (live times must be near it)."""
    transport = options.pop("rest_transport", None)
    sleep = options.pop("sleep", None)
    clock_us = options.pop("clock_us", PRICE_US + 1_000_000)
    options.setdefault("account_id", ACCOUNT)
    config = OandaFeedConfig(enabled=True, stream_url=url, rest_url=url, **options)
    extra = {"sleep": sleep} if sleep else {}
    feed = OandaFeed(list(instruments), config, rest_transport=transport, **extra)
    feed.clock_us = lambda: clock_us  # type: ignore[method-assign]
    return feed


def make_supervisor(bus: Bus | None = None, backoff_s: float = 0.05) -> Supervisor:
    config = SupervisorConfig(backoff_initial_s=backoff_s, backoff_jitter=0.0)
    return Supervisor(bus or Bus(), config)


# --- timestamps -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "micros"),
    [
        ("2019-01-31T18:16:38.818627106Z", 818627),
        ("2019-01-31T18:16:38.818627Z", 818627),
        ("2019-01-31T18:16:38.8Z", 800000),
        ("2019-01-31T18:16:38Z", 0),
    ],
)
def test_rfc3339_with_any_fraction_to_microseconds(text: str, micros: int) -> None:
    whole = datetime_to_us(datetime(2019, 1, 31, 18, 16, 38, tzinfo=UTC))
    assert rfc3339_us(text) == whole + micros


@pytest.mark.parametrize(
    "text", ["", "2019-01-31 18:16:38Z", "2019-01-31T18:16:38+01:00", "2019-01-31T18:16:38.abcZ"]
)
def test_bad_times_raise_value_error(text: str) -> None:
    with pytest.raises(ValueError):
        rfc3339_us(text)


def test_request_times_are_whole_second_rfc3339() -> None:
    assert format_rfc3339(PRICE_US) == "2019-01-31T18:16:38Z"
    assert rfc3339_us(format_rfc3339(PRICE_US)) == PRICE_US - 818627


# --- parsing --------------------------------------------------------------------------


def test_price_becomes_a_top_of_book_quote_and_heartbeats_are_counted() -> None:
    feed, context = make_feed(), ServiceContext("oanda", Bus())
    [quote] = feed.parse(json.dumps(PRICE), context)
    assert quote == QuoteReceived("OANDA:USD_CAD", PRICE_US, 0.72711, 0.72725, 1e7, 1e7)
    assert feed.parse(json.dumps(HEARTBEAT), context) == []
    assert context.counters == {"heartbeats": 1}


def test_non_tradeable_prices_are_counted_not_published() -> None:
    feed, context = make_feed(), ServiceContext("oanda", Bus())
    closed = {**PRICE, "tradeable": False, "status": "non-tradeable"}
    assert feed.parse(json.dumps(closed), context) == []
    assert context.counters == {"non_tradeable": 1}


@pytest.mark.parametrize("status", ["non-tradeable", "invalid"])
def test_older_streams_status_alone_says_non_tradeable(status: str) -> None:
    feed, context = make_feed(), ServiceContext("oanda", Bus())
    old = {key: value for key, value in PRICE.items() if key != "tradeable"}
    assert feed.parse(json.dumps({**old, "status": status}), context) == []
    assert context.counters == {"non_tradeable": 1}
    [quote] = feed.parse(json.dumps({**old, "status": "tradeable"}), context)
    assert quote.bid == 0.72711


MEGA_DIGITS = "1" * 1_000_000
IMPOSSIBLE_PRICES = ["x", "NaN", float("nan"), "Infinity", "1e400", MEGA_DIGITS, "-0.7", "0", True]
IMPOSSIBLE_TIMES = ["1970-01-01T00:00:00Z", "1969-12-31T23:59:59.5Z", "3000-01-01T00:00:00Z"]


def _price(side: str = "bids", **changes: Any) -> dict:
    level = {**PRICE[side][0], **changes}  # type: ignore[index]
    return {**PRICE, side: [level]}


@pytest.mark.parametrize(
    "message",
    [
        *(_price("bids", price=value) for value in IMPOSSIBLE_PRICES),
        *(_price("asks", price=value) for value in IMPOSSIBLE_PRICES),
        *(_price("bids", liquidity=value) for value in (float("nan"), -1, 1e300, True)),
        *({**PRICE, "time": value} for value in IMPOSSIBLE_TIMES),
    ],
)
def test_impossible_values_are_counted_invalid_and_publish_nothing(message: dict) -> None:
    feed, context = make_feed(), ServiceContext("oanda", Bus())
    assert feed.parse(json.dumps(message), context) == []
    assert context.counters == {"invalid": 1}
    # The impossible price was not "seen": the same time with good prices is published.
    if message["time"] == PRICE["time"]:
        assert len(feed.parse(json.dumps(PRICE), context)) == 1


def test_prices_far_from_the_feeds_clock_are_invalid() -> None:
    feed, context = make_feed(clock_us=now_us()), ServiceContext("oanda", Bus())
    assert feed.parse(json.dumps(PRICE), context) == []  # a price of 2019
    assert context.counters == {"invalid": 1}


@pytest.mark.parametrize(
    "raw",
    [
        "[" * 100_000,
        '{"type": "PRICE", "bids": ' + "[" * 100_000 + "]" * 100_000 + "}",
        b"\xff\xfe\x00\xc3garbage",
        b'{"type": "PRICE", "time": "\xff"}',
        '{"type": "PRICE", "bids": [{"price": "1", "liquidity": ' + MEGA_DIGITS + "}]}",
    ],
)
def test_unreadable_lines_are_counted_malformed_without_raising(raw: str | bytes) -> None:
    feed, context = make_feed(), ServiceContext("oanda", Bus())
    assert feed.parse(raw, context) == []
    assert context.counters == {"malformed": 1}


@pytest.mark.parametrize(
    "raw",
    [
        "{not json",
        json.dumps([1, 2, 3]),
        json.dumps("PRICE"),
        json.dumps({"time": "2019-01-31T18:16:38Z"}),  # no type
        json.dumps({**PRICE, "instrument": "GBP_USD"}),  # not subscribed
        json.dumps({**PRICE, "time": "yesterday"}),
        json.dumps({key: value for key, value in PRICE.items() if key != "asks"}),
    ],
)
def test_malformed_messages_are_counted_and_skipped(raw: str) -> None:
    feed, context = make_feed(), ServiceContext("oanda", Bus())
    assert feed.parse(raw, context) == []
    assert context.counters == {"malformed": 1}


def test_unknown_types_and_empty_books_are_counted_apart() -> None:
    feed, context = make_feed(), ServiceContext("oanda", Bus())
    assert feed.parse(json.dumps({"type": "HOME_CONVERSIONS", "time": "x"}), context) == []
    assert feed.parse(json.dumps({**PRICE, "bids": []}), context) == []
    assert context.counters == {"unexpected": 1, "empty_book": 1}


@pytest.mark.parametrize(("source", "expected"), [("bid", "bid"), ("auto", "bid"), ("mid", "mid"), ("trade", "mid")])  # fmt: skip
def test_price_source_is_bid_or_mid(source: str, expected: str) -> None:
    assert make_feed(price_source=source).price_source("OANDA:EUR_USD") == expected


# --- live -----------------------------------------------------------------------------


class StreamServer:
    """Scripted pricing-stream connections: each request takes the next script (a
    list of lines; ``HOLD`` keeps the connection open, silent, until the test ends)."""

    HOLD = object()

    def __init__(self, *scripts: list[Any]) -> None:
        self.scripts = list(scripts)
        self.release = threading.Event()
        self.server = FakeHttpServer(self.route)

    def route(self, request: FakeRequest) -> FakeResponse | None:
        script = self.scripts.pop(0) if self.scripts else [self.HOLD]
        return FakeResponse(200, stream=self._chunks(script))

    def _chunks(self, script: list[Any]) -> Iterator[bytes]:
        for item in script:
            if item is self.HOLD:
                self.release.wait(10)
                return
            yield from json_lines([item]) if not isinstance(item, bytes) else [item]

    def __enter__(self) -> StreamServer:
        self.server.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self.server.__exit__(*exc)


async def test_live_stream_through_the_supervisor_with_a_reconnect() -> None:
    second = {**PRICE, "instrument": "EUR_USD", "time": "2019-01-31T18:16:39.000000001Z"}
    with StreamServer(
        [PRICE, b"{garbage\n", HEARTBEAT],  # then OANDA ends the response
        [second, HEARTBEAT, StreamServer.HOLD],
    ) as fake:
        bus = Bus()
        supervisor = make_supervisor(bus)
        received = bus.subscribe("test", maxsize=1000, types=(QuoteReceived,))
        supervisor.add(FeedService(make_feed(fake.server.url)))
        supervisor.start("oanda")
        events: list[QuoteReceived] = []

        def got_both() -> bool:
            events.extend(received.get_nowait())
            return len(events) >= 2

        await wait_until(got_both, timeout=10)
        await wait_until(lambda: supervisor.status()[0].counters.get("heartbeats") == 2)
        [status] = supervisor.status()
        await supervisor.stop_all()
    requests = fake.server.requests
    assert len(requests) == 2
    assert requests[0].path == f"/v3/accounts/{ACCOUNT}/pricing/stream"
    assert requests[0].query == {"instruments": "EUR_USD,USD_CAD"}
    assert requests[0].headers["authorization"] == f"Bearer {TOKEN}"
    assert status.state is ServiceState.RUNNING
    assert status.restarts == 1
    assert "OANDA ended the price stream" in status.last_error
    assert status.counters["malformed"] == 1
    assert [(event.instrument, event.bid) for event in events] == [
        ("OANDA:USD_CAD", 0.72711),
        ("OANDA:EUR_USD", 0.72711),
    ]


async def test_fake_stream_route_serves_live_messages_as_quotes() -> None:
    start = now_us() - 10 * US_PER_MINUTE
    ticks = [
        (start + index * 250_000, 100.0 + index / 100, float(1 + index)) for index in range(20)
    ]
    section = fake_oanda.config_section("unused", "unused")
    with FakeHttpServer(fake_oanda.stream_route(fake_oanda.live_messages(ticks))) as server:
        section.update(stream_url=server.url, rest_url=server.url)
        feed = OandaFeed([fake_oanda.INSTRUMENT], OandaFeedConfig(**section))
        bus = Bus()
        supervisor = make_supervisor(bus, backoff_s=5.0)
        received = bus.subscribe("test", maxsize=1000, types=(QuoteReceived,))
        supervisor.add(FeedService(feed))
        supervisor.start("oanda")
        events: list[QuoteReceived] = []

        def got_all() -> bool:
            events.extend(received.get_nowait())
            return len(events) >= len(ticks)

        await wait_until(got_all, timeout=10)
        await supervisor.stop_all()
    assert [(event.ts_us, event.bid, event.bid_size) for event in events] == ticks
    assert all(event.instrument == fake_oanda.INSTRUMENT for event in events)


async def test_a_silent_stream_trips_the_watchdog() -> None:
    with StreamServer([StreamServer.HOLD]) as fake:
        supervisor = make_supervisor(backoff_s=5.0)
        supervisor.add(FeedService(make_feed(fake.server.url, watchdog_s=0.2)))
        supervisor.start("oanda")
        await wait_until(lambda: supervisor.status()[0].state is ServiceState.BACKOFF, timeout=5)
        [status] = supervisor.status()
        await supervisor.stop_all()
    assert "no message for" in status.last_error


async def test_a_missing_token_fails_the_service_with_one_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("OANDA_TOKEN")
    supervisor = make_supervisor()
    supervisor.add(FeedService(make_feed()))
    supervisor.start("oanda")
    await wait_until(lambda: supervisor.status()[0].state is ServiceState.FAILED)
    [status] = supervisor.status()
    await supervisor.stop_all()
    assert status.last_error == (
        "OANDA needs an API token: set the OANDA_TOKEN environment variable (feeds.oanda.token_env)"
    )


async def test_a_missing_account_id_fails_the_service() -> None:
    supervisor = make_supervisor()
    supervisor.add(FeedService(make_feed(account_id="")))
    supervisor.start("oanda")
    await wait_until(lambda: supervisor.status()[0].state is ServiceState.FAILED)
    [status] = supervisor.status()
    await supervisor.stop_all()
    assert "feeds.oanda.account_id" in status.last_error


@pytest.mark.parametrize(
    ("status_code", "message"),
    [(401, "OANDA refused the token (HTTP 401"), (400, "OANDA rejected the price stream")],
)
async def test_refused_requests_fail_the_service_without_logging_the_token(
    status_code: int, message: str, caplog: pytest.LogCaptureFixture
) -> None:
    def refuse(request: FakeRequest) -> FakeResponse:
        return FakeResponse(status_code, {"errorMessage": "Insufficient authorization"})

    caplog.set_level(logging.DEBUG)
    with FakeHttpServer(refuse) as server:
        supervisor = make_supervisor()
        supervisor.add(FeedService(make_feed(server.url)))
        supervisor.start("oanda")
        await wait_until(lambda: supervisor.status()[0].state is ServiceState.FAILED)
        [status] = supervisor.status()
        await supervisor.stop_all()
    assert status.last_error.startswith(message)
    assert "Insufficient authorization" in status.last_error
    assert "\n" not in status.last_error
    assert status.restarts == 0
    assert TOKEN not in caplog.text


async def test_server_trouble_is_retried() -> None:
    answers = [FakeResponse(503, {"errorMessage": "busy"})]

    def route(request: FakeRequest) -> FakeResponse:
        return answers.pop(0) if answers else FakeResponse(200, stream=json_lines([HEARTBEAT]))

    with FakeHttpServer(route) as server:
        supervisor = make_supervisor()
        supervisor.add(FeedService(make_feed(server.url)))
        supervisor.start("oanda")
        await wait_until(lambda: supervisor.status()[0].counters.get("heartbeats", 0) >= 1)
        [status] = supervisor.status()
        await supervisor.stop_all()
    assert status.restarts >= 1
    assert "HTTP 503" in status.last_error or "ended" in status.last_error


# --- history --------------------------------------------------------------------------


def fake_rest_feed(server: FakeHttpServer, **options: Any) -> OandaFeed:
    section = fake_oanda.config_section(server.url, server.url)
    section.update(options)
    return OandaFeed([fake_oanda.INSTRUMENT], OandaFeedConfig(**section))


def expected_rows(start_us: int, end_us: int) -> list[tuple]:
    return [
        (bar.ts_us, bar.open, bar.high, bar.low, bar.close, bar.volume, int(bar.volume))
        for bar in minute_bars("EUR_USD", start_us, end_us)
    ]


def bar_rows(bars: Any) -> list[tuple]:
    frame = bars.with_columns(bars["ts"].dt.epoch("us"))
    return [
        tuple(row)
        for row in frame.select("ts", "open", "high", "low", "close", "volume", "trades").rows()
    ]


def test_history_pages_over_more_than_5000_minutes_in_the_past() -> None:
    now = now_us()
    first = now - now % US_PER_MINUTE - 20_000 * US_PER_MINUTE
    start = first + 30_000_000  # not on a minute: bars open at or after it
    end = first + 12_345 * US_PER_MINUTE
    with FakeHttpServer(fake_oanda.history_route) as server:
        bars = fake_rest_feed(server).history(fake_oanda.INSTRUMENT, start, end)
        requests = list(server.requests)
    assert bars is not None
    assert bar_rows(bars) == expected_rows(start, end)
    assert len(requests) == 3
    assert all(request.path == "/v3/instruments/EUR_USD/candles" for request in requests)
    assert all(request.query["price"] == "B" and request.query["granularity"] == "M1" for request in requests)  # fmt: skip
    assert all(request.headers["authorization"] == f"Bearer {fake_oanda.TOKEN}" for request in requests)  # fmt: skip
    spans = [rfc3339_us(r.query["to"]) - rfc3339_us(r.query["from"]) for r in requests]
    assert max(spans) <= 5000 * US_PER_MINUTE


def test_history_up_to_now_asks_by_count_and_drops_the_forming_candle() -> None:
    now = now_us()
    start = now - now % US_PER_MINUTE - 90 * US_PER_MINUTE
    end = now + 5 * US_PER_MINUTE  # the fake rejects a ``to`` in the future
    with FakeHttpServer(fake_oanda.history_route) as server:
        bars = fake_rest_feed(server, price_source="mid").history(fake_oanda.INSTRUMENT, start, end)
        [request] = server.requests
        after = now_us()
    assert "to" not in request.query and request.query["price"] == "M"
    assert bars is not None
    rows = bar_rows(bars)
    last_ts = rows[-1][0]
    assert last_ts + US_PER_MINUTE <= after  # closed minutes only
    assert last_ts >= now - now % US_PER_MINUTE - US_PER_MINUTE
    assert rows == expected_rows(start, last_ts + 1)


def candles_payload(times: list[int], complete: list[bool] | None = None) -> dict:
    candles = []
    for index, ts in enumerate(times):
        text = datetime.fromtimestamp(ts / 1e6, UTC).strftime("%Y-%m-%dT%H:%M:%S.000000000Z")
        prices = {"o": "1.10000", "h": "1.10050", "l": "1.09950", "c": "1.10020"}
        candles.append(
            {
                "complete": True if complete is None else complete[index],
                "volume": 132,
                "time": text,
                "bid": prices,
            }
        )
    return {"instrument": "EUR_USD", "granularity": "M1", "candles": candles}


def test_history_keeps_complete_candles_in_range_once() -> None:
    start = datetime_to_us(datetime(2016, 10, 17, 19, 35, tzinfo=UTC))
    times = [start + index * US_PER_MINUTE for index in range(5)]

    def respond(request: httpx.Request) -> httpx.Response:
        # The candle at an inclusive ``to``, a forming candle and a duplicate.
        payload = candles_payload([*times, times[1]], [True, True, False, True, True, True])
        return httpx.Response(200, json=payload)

    feed = make_feed(rest_transport=httpx.MockTransport(respond))
    bars = feed.history("OANDA:EUR_USD", start, times[4])
    assert bars is not None
    assert bars["ts"].dt.epoch("us").to_list() == [times[0], times[1], times[3]]
    assert bars.row(0)[2:] == (1.1, 1.1005, 1.0995, 1.1002, 132.0, 132)


def test_impossible_candles_are_dropped_with_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    start = datetime_to_us(datetime(2016, 10, 17, 19, 35, tzinfo=UTC))
    times = [start + index * US_PER_MINUTE for index in range(12)]
    payload = candles_payload(times)
    bad = [
        ("o", "NaN"),
        ("h", "1e400"),
        ("l", "-1.1"),
        ("c", "0"),
        ("o", MEGA_DIGITS),
        ("h", True),
        ("c", "Infinity"),
    ]
    for candle, (key, value) in zip(payload["candles"][1:], bad, strict=False):
        candle["bid"] = {**candle["bid"], key: value}
    payload["candles"][8]["volume"] = -5
    payload["candles"][9]["volume"] = 1.5
    payload["candles"][10]["volume"] = 0  # a quiet minute: a real candle
    payload["candles"][11]["time"] = "3000-01-01T00:00:00.000000000Z"

    def respond(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=payload)

    feed = make_feed(rest_transport=httpx.MockTransport(respond))
    bars = feed.history("OANDA:EUR_USD", start, start + 12 * US_PER_MINUTE)
    assert bars is not None
    assert bars["ts"].dt.epoch("us").to_list() == [times[0], times[10]]
    warnings = [record for record in caplog.records if "dropped" in record.getMessage()]
    assert len(warnings) == 1 and "dropped 9 " in warnings[0].getMessage()


def test_history_honours_retry_after() -> None:
    start = datetime_to_us(datetime(2016, 10, 17, 19, 35, tzinfo=UTC))
    answers = [httpx.Response(429, headers={"Retry-After": "7"}, json={"errorMessage": "slow"})]
    slept: list[float] = []

    def respond(request: httpx.Request) -> httpx.Response:
        return answers.pop(0) if answers else httpx.Response(200, json=candles_payload([start]))

    feed = make_feed(rest_transport=httpx.MockTransport(respond), sleep=slept.append)
    bars = feed.history("OANDA:EUR_USD", start, start + US_PER_MINUTE)
    assert bars is not None and bars.height == 1
    assert slept == [7.0]


def test_history_of_a_weekend_is_none() -> None:
    def respond(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=candles_payload([]))

    feed = make_feed(rest_transport=httpx.MockTransport(respond))
    saturday = datetime_to_us(datetime(2016, 10, 15, tzinfo=UTC))
    assert feed.history("OANDA:EUR_USD", saturday, saturday + 1440 * US_PER_MINUTE) is None


def test_history_errors_are_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    def respond(request: httpx.Request) -> httpx.Response:
        return httpx.Response(400, json={"errorMessage": "Invalid value specified for 'instrument'"})  # fmt: skip

    feed = make_feed(rest_transport=httpx.MockTransport(respond))
    with pytest.raises(SptraderError, match="HTTP 400"):
        feed.history("OANDA:NOPE_USD", 0, US_PER_MINUTE)
    monkeypatch.delenv("OANDA_TOKEN")
    with pytest.raises(SptraderError, match="set the OANDA_TOKEN environment variable"):
        feed.history("OANDA:EUR_USD", 0, US_PER_MINUTE)


# --- symbols --------------------------------------------------------------------------


def test_symbols_from_the_account_instrument_list() -> None:
    with FakeHttpServer(fake_oanda.history_route) as server:
        symbols = fake_rest_feed(server).symbols()
        [request] = server.requests
    assert request.path == f"/v3/accounts/{fake_oanda.ACCOUNT_ID}/instruments"
    assert symbols == [
        SymbolInfo("OANDA:EUR_USD", "EUR/USD", "fx", "EUR", "USD", 5),
        SymbolInfo("OANDA:USD_JPY", "USD/JPY", "fx", "USD", "JPY", 3),
        SymbolInfo("OANDA:XAU_USD", "Gold", "metal", "XAU", "USD", 3),
        SymbolInfo("OANDA:SPX500_USD", "US SPX 500", "cfd", "SPX500", "USD", 1),
    ]


def test_symbols_need_an_account_id() -> None:
    with pytest.raises(SptraderError, match=r"feeds\.oanda\.account_id"):
        make_feed(account_id="").symbols()
