"""Real recorded messages (``../shared/wire``, see its SOURCES.md) driven through our own
parsers, every field compared with the exact decimal text and microsecond it carries.

Prices are compared as decimals: ``Decimal(repr(x)) == Decimal("88355.59")`` holds when
the float is the one nearest the venue's text, so nothing was lost on the way in.
Times are compared as integer microseconds computed here from the text with integer
arithmetic (no datetime or float on the expected side).
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import httpx
import numpy as np
import polars as pl
import pytest
from conftest import wire_bytes, wire_path

from sptrader.bus import Bus
from sptrader.config import (
    CoinbaseFeedConfig,
    DukascopyFeedConfig,
    KrakenFeedConfig,
    OandaFeedConfig,
    SimFeedConfig,
)
from sptrader.feeds import kraken as kraken_module
from sptrader.feeds.coinbase import CoinbaseFeed
from sptrader.feeds.dukascopy import US_PER_HOUR, DukascopyFeed, decode_bi5, hour_path
from sptrader.feeds.dukascopy_instruments import INSTRUMENTS, lookup
from sptrader.feeds.kraken import KrakenFeed
from sptrader.feeds.oanda import OandaFeed
from sptrader.feeds.sim import SimFeed
from sptrader.models import (
    SIDE_BUY,
    SIDE_SELL,
    US_PER_MINUTE,
    US_PER_SECOND,
    LastPriceReceived,
    QuoteReceived,
    TradeReceived,
)
from sptrader.supervisor import ServiceContext

# --- exact comparisons ----------------------------------------------------------------


def exact(value: float, text: object) -> bool:
    """The float is the one nearest the decimal ``text``."""
    return Decimal(repr(float(value))) == Decimal(str(text))


_DAYS_BEFORE_MONTH = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334]


def _days_from_civil(year: int, month: int, day: int) -> int:
    """Days since 1970-01-01 (proleptic Gregorian), by counting."""
    leap_days = (year - 1) // 4 - (year - 1) // 100 + (year - 1) // 400
    days = 365 * (year - 1) + leap_days + _DAYS_BEFORE_MONTH[month - 1] + day - 1
    if month > 2 and year % 4 == 0 and (year % 100 != 0 or year % 400 == 0):
        days += 1
    return days - 719_162  # 1970-01-01 is day 719162 of the Gregorian count


def rfc3339_us(text: str) -> int:
    """``2025-12-31T06:00:12.44524Z`` to µs by integer arithmetic (digits past the
    microsecond dropped, as the feeds do)."""
    assert text.endswith("Z")
    date, clock = text[:-1].split("T")
    year, month, day = (int(part) for part in date.split("-"))
    whole, _, fraction = clock.partition(".")
    hours, minutes, seconds = (int(part) for part in whole.split(":"))
    micros = int((fraction + "000000")[:6])
    seconds_of_day = hours * 3600 + minutes * 60 + seconds
    return (_days_from_civil(year, month, day) * 86_400 + seconds_of_day) * US_PER_SECOND + micros


def decimal_seconds_us(text: str) -> int:
    """Decimal seconds (``1762795433.9717445``) to µs, the exact decimal rounded half to
    even, by integer arithmetic on the digits."""
    whole, _, fraction = text.partition(".")
    digits = (fraction + "0" * 7)[:7] if len(fraction) <= 7 else None
    assert digits is not None, f"{text}: more than 7 decimals"
    micros, tenth = divmod(int(digits), 10)
    if tenth > 5 or (tenth == 5 and micros % 2 == 1):
        micros += 1
    return int(whole) * US_PER_SECOND + micros


def context(name: str) -> ServiceContext:
    return ServiceContext(name, Bus())


def test_the_reference_arithmetic() -> None:
    assert rfc3339_us("1970-01-01T00:00:00.000001Z") == 1
    assert rfc3339_us("2000-03-01T00:00:00Z") == 951_868_800 * US_PER_SECOND
    assert rfc3339_us("2025-12-31T06:00:12.44524Z") == 1_767_160_812_445_240
    assert decimal_seconds_us("1.0000005") == 1_000_000  # half to even: down
    assert decimal_seconds_us("1.0000015") == 1_000_002  # half to even: up
    assert decimal_seconds_us("1.12345") == 1_123_450


# --- Coinbase -------------------------------------------------------------------------


def coinbase_feed(clock_us: int, transport: httpx.BaseTransport | None = None) -> CoinbaseFeed:
    config = CoinbaseFeedConfig(enabled=True, ws_url="ws://127.0.0.1:1", rest_url="http://cb")
    feed = CoinbaseFeed(["COINBASE:BTC-USD", "COINBASE:BTC-USDT"], config, transport=transport)
    feed.clock_us = lambda: clock_us  # type: ignore[method-assign]
    return feed


def test_coinbase_market_trades_recorded_live() -> None:
    lines = wire_path("ccxt-issue-27606", "market_trades.jsonl").read_text().splitlines()
    messages = [json.loads(line) for line in lines]
    clock = rfc3339_us(messages[-1]["timestamp"]) + US_PER_SECOND
    feed, ctx = coinbase_feed(clock), context("coinbase")
    events = [event for line in lines for event in feed.parse(line, ctx)]
    raw = [trade for message in messages for trade in message["events"][0]["trades"]]
    assert len(events) == len(raw) == 3
    for event, trade in zip(events, raw, strict=True):
        assert type(event) is TradeReceived
        assert event.instrument == "COINBASE:" + trade["product_id"]
        assert event.ts_us == rfc3339_us(trade["time"])
        assert exact(event.price, trade["price"]) and exact(event.size, trade["size"])
        assert event.trade_id == int(trade["trade_id"])
        # Coinbase's side is the maker's (see coinbase.taker_side): SELL means a buyer took.
        assert event.side == {"SELL": SIDE_BUY, "BUY": SIDE_SELL}[trade["side"]]
    assert [event.trade_id for event in events] == [929248657, 929248658, 929248659]
    assert ctx.counters == {}  # sequence 1851-1853: no gap


def test_coinbase_ticker_elements_recorded_live() -> None:
    elements = json.loads(wire_bytes("ccxt-prs", "coinbase_ticker_elements.json"))
    stamp = "2024-04-23T10:00:00.123456789Z"  # the envelope is ours (SOURCES.md)
    clock = rfc3339_us(stamp) + US_PER_SECOND
    feed, ctx = coinbase_feed(clock), context("coinbase")

    def parse(element: dict) -> list[object]:
        message = {
            "channel": "ticker",
            "client_id": "",
            "timestamp": stamp,
            "sequence_num": 0,
            "events": [{"type": "update", "tickers": [element]}],
        }
        return feed.parse(json.dumps(message), ctx)

    with_book = elements["pr22247_2024_04_23"]
    [quote] = parse(with_book)
    assert type(quote) is QuoteReceived
    assert (quote.instrument, quote.ts_us) == ("COINBASE:BTC-USDT", rfc3339_us(stamp))
    assert exact(quote.bid, with_book["best_bid"]) and exact(quote.ask, with_book["best_ask"])
    assert exact(quote.bid_size, with_book["best_bid_quantity"])
    assert exact(quote.ask_size, with_book["best_ask_quantity"])

    # 2023: no best bid/ask at all. Its trade price is kept, as a last price only.
    without_book = elements["pr18518_2023_07_13"]
    feed._next_sequence = None
    [last] = parse(without_book)
    assert type(last) is LastPriceReceived
    assert (last.instrument, last.ts_us) == ("COINBASE:BTC-USDT", rfc3339_us(stamp))
    assert exact(last.price, without_book["price"])
    assert ctx.counters == {}


def test_coinbase_heartbeats_from_the_docs() -> None:
    feed, ctx = coinbase_feed(0), context("coinbase")
    assert feed.parse(wire_bytes("coinbase-docs", "heartbeats.json"), ctx) == []
    assert ctx.counters == {"heartbeats": 1}


def test_coinbase_candles_through_history() -> None:
    payload = wire_bytes("nautilus_trader", "coinbase_http_candles.json")
    candles = json.loads(payload)["candles"]
    starts = sorted(int(candle["start"]) for candle in candles)

    def respond(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/api/v3/brokerage/market/products/BTC-USD/candles"
        return httpx.Response(200, content=payload)

    clock = (starts[-1] + 3600) * US_PER_SECOND
    feed = coinbase_feed(clock, httpx.MockTransport(respond))
    start_us, end_us = starts[0] * US_PER_SECOND, (starts[-1] + 60) * US_PER_SECOND
    bars = feed.history("COINBASE:BTC-USD", start_us, end_us)
    assert bars is not None and bars.height == len(candles) == 2
    by_start = {int(candle["start"]) * US_PER_SECOND: candle for candle in candles}
    for row in bars.with_columns(pl.col("ts").dt.epoch("us")).iter_rows(named=True):
        candle = by_start[row["ts"]]
        assert row["instrument"] == "COINBASE:BTC-USD"
        for field in ("open", "high", "low", "close", "volume"):
            assert exact(row[field], candle[field]), field
        assert row["trades"] == 0  # Coinbase gives no trade count
    assert bars["ts"].dt.epoch("us").to_list() == [start_us, starts[1] * US_PER_SECOND]


# --- Kraken ---------------------------------------------------------------------------


def kraken_feed(
    instruments: list[str], clock_us: int, transport: httpx.BaseTransport | None = None
) -> KrakenFeed:
    config = KrakenFeedConfig(enabled=True, ws_url="ws://127.0.0.1:1", rest_url="http://kraken")
    feed = KrakenFeed(instruments, config, transport=transport, sleep=lambda seconds: None)
    feed.clock_us = lambda: clock_us  # type: ignore[method-assign]
    return feed


def test_kraken_ticker_snapshot_from_the_docs_is_stamped_with_its_timestamp() -> None:
    raw = wire_bytes("kraken-docs", "ws_v2_ticker_snapshot.json")
    [item] = json.loads(raw, parse_float=Decimal)["data"]
    ts = rfc3339_us(item["timestamp"])
    feed, ctx = kraken_feed(["KRAKEN:ALGO/USD"], ts + 3 * US_PER_SECOND), context("kraken")
    [quote] = feed.parse(raw, ctx)
    assert type(quote) is QuoteReceived
    assert (quote.instrument, quote.ts_us) == ("KRAKEN:ALGO/USD", ts)  # not the arrival
    assert exact(quote.bid, item["bid"]) and exact(quote.ask, item["ask"])
    assert exact(quote.bid_size, item["bid_qty"]) and exact(quote.ask_size, item["ask_qty"])
    assert ctx.counters == {}


def test_kraken_trade_snapshot_from_the_docs() -> None:
    raw = wire_bytes("kraken-docs", "ws_v2_trade_snapshot.json")
    message = json.loads(raw, parse_float=Decimal)
    items = message["data"]
    times = [rfc3339_us(item["timestamp"]) for item in items]

    def check(event: object, item: dict, ts: int) -> None:
        assert type(event) is TradeReceived
        assert (event.instrument, event.ts_us) == ("KRAKEN:" + item["symbol"], ts)
        assert exact(event.price, item["price"]) and exact(event.size, item["qty"])
        assert event.side == {"buy": SIDE_BUY, "sell": SIDE_SELL}[item["side"]]
        assert event.trade_id == item["trade_id"]

    # As a snapshot, a few seconds after the second trade: the earlier minute's trade is
    # the backfill's, only the current minute's is published.
    feed, ctx = kraken_feed(["KRAKEN:MATIC/USD"], times[1] + 5 * US_PER_SECOND), context("k")
    [event] = feed.parse(raw, ctx)
    check(event, items[1], times[1])
    assert ctx.counters == {"snapshot_skipped": 1}
    # The same trades as an update: both, every field.
    update = raw.replace(b'"snapshot"', b'"update"')
    feed, ctx = kraken_feed(["KRAKEN:MATIC/USD"], times[1] + 5 * US_PER_SECOND), context("k")
    events = feed.parse(update, ctx)
    assert len(events) == 2
    for event, item, ts in zip(events, items, times, strict=True):
        check(event, item, ts)


def _kraken_rest(
    ohlc: bytes | None = None, trades: list[bytes] | None = None
) -> httpx.MockTransport:
    pairs = wire_bytes("nautilus_trader", "kraken_http_asset_pairs.json")
    pages = list(trades or [])

    def respond(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/0/public/AssetPairs":
            return httpx.Response(200, content=pairs)
        if path == "/0/public/OHLC" and ohlc is not None:
            assert request.url.params["pair"] == "XBTUSDT"
            return httpx.Response(200, content=ohlc)
        if path == "/0/public/Trades" and trades is not None:
            assert request.url.params["pair"] == "XBTUSDT"
            body = (
                pages.pop(0) if pages else b'{"error": [], "result": {"XBTUSDT": [], "last": "0"}}'
            )
            return httpx.Response(200, content=body)
        return httpx.Response(404)

    return httpx.MockTransport(respond)


def test_kraken_ohlc_through_history() -> None:
    raw = wire_bytes("nautilus_trader", "kraken_http_ohlc.json.gz")
    rows = json.loads(raw, parse_float=Decimal)["result"]["XBTUSDT"]
    assert len(rows) == 721
    forming = rows[-1][0] * US_PER_SECOND  # the newest entry is still forming
    clock = forming + 30 * US_PER_SECOND
    feed = kraken_feed(["KRAKEN:BTC/USDT"], clock, _kraken_rest(ohlc=raw))
    start = rows[0][0] * US_PER_SECOND
    bars = feed.history("KRAKEN:BTC/USDT", start, forming + US_PER_MINUTE)
    assert bars is not None
    closed = rows[:-1]
    assert bars.height == len(closed) == 720
    for row, entry in zip(
        bars.with_columns(pl.col("ts").dt.epoch("us")).iter_rows(named=True), closed, strict=True
    ):
        assert row["ts"] == entry[0] * US_PER_SECOND
        assert row["instrument"] == "KRAKEN:BTC/USDT"
        for field, index in (("open", 1), ("high", 2), ("low", 3), ("close", 4), ("volume", 6)):
            assert exact(row[field], entry[index]), (field, entry)
        assert row["trades"] == entry[7]


def test_kraken_rest_trade_times_are_exact_to_the_microsecond(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    raw = wire_bytes("nautilus_trader", "kraken_http_trades.json.gz")
    result = json.loads(raw, parse_float=str)["result"]
    rows = result["XBTUSDT"]
    assert len(rows) == 1000
    expected_us = [decimal_seconds_us(row[2]) for row in rows]
    # What float gave: the bug this guards against.
    through_float = [round(float(row[2]) * 1_000_000) for row in rows]
    assert sum(a != b for a, b in zip(through_float, expected_us, strict=True)) == 60

    seen: list[pl.DataFrame] = []
    aggregate = kraken_module.aggregate_ticks

    def spy(ticks: pl.DataFrame) -> pl.DataFrame:
        seen.append(ticks)
        return aggregate(ticks)

    monkeypatch.setattr(kraken_module, "aggregate_ticks", spy)
    first, last = expected_us[0], expected_us[-1]
    start = first - first % US_PER_MINUTE
    end = last - last % US_PER_MINUTE + US_PER_MINUTE
    clock = end + 2 * 1440 * US_PER_MINUTE  # older than OHLC's window: rebuilt from trades
    feed = kraken_feed(["KRAKEN:BTC/USDT"], clock, _kraken_rest(trades=[raw]))
    bars = feed.history("KRAKEN:BTC/USDT", start, end)
    [ticks] = seen
    assert ticks["ts_us"].to_list() == expected_us  # all 1000 exact
    assert all(exact(price, row[0]) for price, row in zip(ticks["price"], rows, strict=True))
    assert all(exact(size, row[1]) for size, row in zip(ticks["size"], rows, strict=True))
    assert ticks["side"].to_list() == [{"b": 1, "s": -1}[row[3]] for row in rows]
    assert bars is not None
    assert bars["trades"].sum() == 1000
    # Each bar's open and close are its first and last trade, to the decimal.
    minute_of = [ts - ts % US_PER_MINUTE for ts in expected_us]
    for bar in bars.with_columns(pl.col("ts").dt.epoch("us")).iter_rows(named=True):
        prices = [
            row[0] for row, minute in zip(rows, minute_of, strict=True) if minute == bar["ts"]
        ]
        assert exact(bar["open"], prices[0]) and exact(bar["close"], prices[-1])
        assert exact(bar["high"], max(prices, key=Decimal))
        assert exact(bar["low"], min(prices, key=Decimal))
    if "buy_volume" in bars.columns:  # order flow, once aggregate_ticks sums it
        bought = sum(Decimal(row[1]) for row in rows if row[3] == "b")
        sold = sum(Decimal(row[1]) for row in rows if row[3] == "s")
        assert bars["buy_volume"].sum() == pytest.approx(float(bought), rel=1e-12)
        assert bars["sell_volume"].sum() == pytest.approx(float(sold), rel=1e-12)


# --- OANDA ----------------------------------------------------------------------------


@pytest.fixture
def oanda_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OANDA_TOKEN", "wire-sample-token")


def oanda_feed(
    instruments: list[str], clock_us: int, transport: httpx.BaseTransport | None = None
) -> OandaFeed:
    config = OandaFeedConfig(
        enabled=True, stream_url="http://oanda", rest_url="http://oanda", account_id="1-2-3-4"
    )
    feed = OandaFeed(instruments, config, rest_transport=transport)
    feed.clock_us = lambda: clock_us  # type: ignore[method-assign]
    return feed


def test_oanda_stream_of_2016() -> None:
    lines = wire_path("go-oanda-streaming-api", "stream_2016.jsonl").read_text().splitlines()
    heartbeat, price = (json.loads(line) for line in lines)
    clock = rfc3339_us(heartbeat["time"])
    feed, ctx = oanda_feed(["OANDA:USD_JPY"], clock), context("oanda")
    events = [event for line in lines for event in feed.parse(line, ctx)]
    assert "tradeable" not in price and price["status"] == "tradeable"  # the old format
    [quote] = events
    assert type(quote) is QuoteReceived
    assert (quote.instrument, quote.ts_us) == ("OANDA:USD_JPY", rfc3339_us(price["time"]))
    assert exact(quote.bid, price["bids"][0]["price"])
    assert exact(quote.ask, price["asks"][0]["price"])
    assert exact(quote.bid_size, price["bids"][0]["liquidity"])
    assert exact(quote.ask_size, price["asks"][0]["liquidity"])
    assert ctx.counters == {"heartbeats": 1}


def test_oanda_old_format_status_non_tradeable_is_not_a_tick() -> None:
    line = wire_path("go-oanda-streaming-api", "stream_2016.jsonl").read_text().splitlines()[1]
    closed = line.replace('"status":"tradeable"', '"status":"non-tradeable"')
    assert closed != line and '"tradeable":' not in closed
    feed, ctx = oanda_feed(["OANDA:USD_JPY"], rfc3339_us(json.loads(line)["time"])), context("o")
    assert feed.parse(closed, ctx) == []
    assert ctx.counters == {"non_tradeable": 1}


def test_oanda_weekend_price_recorded_live_is_not_a_tick() -> None:
    line = wire_path("pyfx_dispatch_oanda", "stream_weekend_non_tradeable.jsonl").read_text()
    clock = rfc3339_us(json.loads(line)["time"])
    feed, ctx = oanda_feed(["OANDA:EUR_GBP"], clock), context("oanda")
    assert feed.parse(line.strip(), ctx) == []
    assert ctx.counters == {"non_tradeable": 1}


def _serve(payload: bytes, symbol: str) -> httpx.MockTransport:
    def respond(request: httpx.Request) -> httpx.Response:
        assert request.url.path == f"/v3/instruments/{symbol}/candles"
        assert request.url.params["price"] == "B"
        return httpx.Response(200, content=payload)

    return httpx.MockTransport(respond)


def _oanda_rows(bars: pl.DataFrame) -> list[dict[str, Any]]:
    return list(bars.with_columns(pl.col("ts").dt.epoch("us")).iter_rows(named=True))


def test_oanda_instrument_candles_through_history(oanda_token: None) -> None:
    payload = wire_bytes("pyfx_dispatch_oanda", "GetInstrumentCandles200Response.json")
    candles = json.loads(payload)["candles"]
    first = rfc3339_us(candles[0]["time"])
    last = rfc3339_us(candles[-1]["time"])
    feed = oanda_feed(["OANDA:AUD_JPY"], last + 10 * US_PER_MINUTE, _serve(payload, "AUD_JPY"))
    bars = feed.history("OANDA:AUD_JPY", first, last + US_PER_MINUTE)
    assert bars is not None
    rows = _oanda_rows(bars)
    assert len(rows) == len(candles) == 3
    for row, candle in zip(rows, candles, strict=True):
        assert row["ts"] == rfc3339_us(candle["time"])
        for field, key in (("open", "o"), ("high", "h"), ("low", "l"), ("close", "c")):
            assert exact(row[field], candle["bid"][key]), field
        assert row["volume"] == float(candle["volume"]) and row["trades"] == candle["volume"]


def test_oanda_latest_candles_leave_out_the_forming_one(oanda_token: None) -> None:
    answer = json.loads(
        wire_bytes("pyfx_dispatch_oanda", "GetAccountCandlesLatest200Response.json")
    )
    [block] = [
        entry
        for entry in answer["latestCandles"]
        if entry["instrument"] == "USD_JPY"
        and entry["granularity"] == "M1"
        and "bid" in entry["candles"][0]
    ]
    complete, forming = block["candles"]
    assert complete["complete"] and not forming["complete"]
    opened = rfc3339_us(forming["time"])
    payload = json.dumps(block).encode()
    feed = oanda_feed(["OANDA:USD_JPY"], opened + 30 * US_PER_SECOND, _serve(payload, "USD_JPY"))
    bars = feed.history("OANDA:USD_JPY", rfc3339_us(complete["time"]), opened + US_PER_MINUTE)
    assert bars is not None
    [row] = _oanda_rows(bars)
    assert row["ts"] == rfc3339_us(complete["time"])
    for field, key in (("open", "o"), ("high", "h"), ("low", "l"), ("close", "c")):
        assert exact(row[field], complete["bid"][key]), field
    assert row["trades"] == complete["volume"] == 178


# --- Dukascopy ------------------------------------------------------------------------


def test_every_dukascopy_divisor_matches_dukascopys_decimal_factor() -> None:
    meta = json.loads(wire_bytes("dukascopy-node", "instrument-meta-data.subset.json"))
    assert {key.upper() for key in meta} == set(INSTRUMENTS)
    for key, entry in meta.items():
        ours = INSTRUMENTS[key.upper()]
        # bi5_decimalFactor is what dukascopy-node's .bi5 engine divided by. The newer
        # table says 1 for USDCZK and USDILS (Dukascopy lists no price scale for them):
        # the bi5-era factor is the one that holds (SOURCES.md).
        assert ours.divisor == entry["bi5_decimalFactor"], key
        assert ours.json_name == entry["json_code"], key
        if entry["json_decimalFactor"] != 1:
            assert ours.divisor == entry["json_decimalFactor"], key
    assert lookup("USDRON").divisor == 100_000


def _hour_start(year: int, month: int, day: int, hour: int) -> int:
    return (_days_from_civil(year, month, day) * 24 + hour) * US_PER_HOUR


def _wire_files(fmt: str) -> httpx.MockTransport:
    """Dukascopy's two services, answering from the recorded files by path."""
    jetta = {
        "/v1/ticks/EUR-USD/2026/7/13/12": "ticks-EUR-USD-2026-7-13-12.json.gz",
        "/v1/ticks/BTC-USD/2023/2/20/12": "ticks-BTC-USD-2023-2-20-12.json.gz",
    }

    def respond(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if fmt == "bi5" and path.startswith("/datafeed/"):
            file = wire_path("dukascopy-node", "datafeed").joinpath(*path.split("/")[2:])
            if file.is_file():
                return httpx.Response(200, content=file.read_bytes())
        if fmt == "json" and path in jetta:
            return httpx.Response(200, content=wire_bytes("dukascopy-node", "jetta", jetta[path]))
        return httpx.Response(404)

    return httpx.MockTransport(respond)


def dukascopy_ticks(symbol: str, hour_start_us: int, fmt: str) -> pl.DataFrame:
    url = "http://dukascopy.test/datafeed" if fmt == "bi5" else "http://dukascopy.test/v1"
    config = DukascopyFeedConfig(enabled=True, url=url, format=fmt)
    feed = DukascopyFeed([f"DUKASCOPY:{symbol}"], config, transport=_wire_files(fmt))
    return feed.history_ticks(f"DUKASCOPY:{symbol}", hour_start_us, hour_start_us + US_PER_HOUR)


def test_dukascopy_eurusd_bi5_hour_recorded_live() -> None:
    # The file's folder says month 01: zero-based, so February 4th, 2019.
    hour = _hour_start(2019, 2, 4, 0)
    assert hour_path(lookup("EURUSD"), hour, "bi5") == "/EURUSD/2019/01/04/00h_ticks.bi5"
    expected = json.loads(
        wire_bytes("dukascopy-node", "expected", "decompressor_tick_EURUSD_2019_01_04_00h.json.gz")
    )
    ticks = dukascopy_ticks("EURUSD", hour, "bi5")
    assert ticks.height == len(expected) == 3733
    ts = ticks["ts"].dt.epoch("us").to_list()
    assert ts == [hour + ms * 1000 for ms, *_ in expected]
    for ask, bid, (_, ask_points, bid_points, _, _) in zip(
        ticks["ask"], ticks["bid"], expected, strict=True
    ):
        assert exact(ask, Decimal(ask_points).scaleb(-5)) and exact(
            bid, Decimal(bid_points).scaleb(-5)
        )
    # Volumes are float32 in the file: ours read back as the same float32, written as the
    # 7-digit decimals they stand for.
    ask_volume = np.array([row[3] for row in expected], dtype=np.float32)
    bid_volume = np.array([row[4] for row in expected], dtype=np.float32)
    assert (ticks["ask_size"].to_numpy().astype(np.float32) == ask_volume).all()
    assert (ticks["bid_size"].to_numpy().astype(np.float32) == bid_volume).all()
    assert exact(ticks["bid_size"][0], "2.06")  # 2.059999942779541 as float32


def _btcusd_expected() -> list[dict[str, Any]]:
    return json.loads(
        wire_bytes("dukascopy-node", "expected", "btcusd-tick-2023-02-20T12-2023-02-20T13.json.gz")
    )


@pytest.mark.parametrize("fmt", ["bi5", "json"])
def test_dukascopy_btcusd_hour_in_both_formats(fmt: str) -> None:
    hour = _hour_start(2023, 2, 20, 12)
    expected = _btcusd_expected()
    ticks = dukascopy_ticks("BTCUSD", hour, fmt)
    assert ticks.height == len(expected)
    assert ticks["ts"].dt.epoch("us").to_list() == [row["timestamp"] * 1000 for row in expected]
    for ask, bid, row in zip(ticks["ask"], ticks["bid"], expected, strict=True):
        assert exact(ask, repr(row["askPrice"])) and exact(bid, repr(row["bidPrice"]))


def test_dukascopy_eurusd_json_hour_recorded_live() -> None:
    hour = _hour_start(2026, 7, 13, 12)
    assert hour_path(lookup("EURUSD"), hour, "json") == "/ticks/EUR-USD/2026/7/13/12"
    expected = json.loads(
        wire_bytes("dukascopy-node", "expected", "data-normaliser_ticks-EUR-USD-2026-7-13-12.json"),
        parse_float=Decimal,
    )
    ticks = dukascopy_ticks("EURUSD", hour, "json")
    rows = (
        ticks.with_columns(pl.col("ts").dt.epoch("us"))
        .select("ts", "ask", "bid", "ask_size", "bid_size")
        .rows()
    )
    for row, want in zip(
        [*rows[:3], rows[-1]], [*expected["first3"], expected["last"]], strict=True
    ):
        ts, ask, bid, ask_size, bid_size = row
        assert ts == want[0] * 1000
        assert exact(ask, want[1]) and exact(bid, want[2])
        assert exact(ask_size, want[3]) and exact(bid_size, want[4])  # millions, as bi5


def test_dukascopy_empty_hour_file() -> None:
    empty = wire_bytes("dukascopy-node", "datafeed", "empty.bi5")
    assert empty == b"" and len(decode_bi5(empty, 0, 100_000).ts_us) == 0


# --- trades without a wire: the simulator numbers and sides its trades like a venue ------


def test_sim_trades_carry_a_taker_side_and_sequential_ids() -> None:
    feed = SimFeed(["SIM:BTCUSD", "SIM:ETHUSD", "SIM:EURUSD"], SimFeedConfig(seed=7))
    start = 1_767_160_800 * US_PER_SECOND
    events = feed.generate(start, start + 20 * US_PER_SECOND)
    events += feed.generate(start + 20 * US_PER_SECOND, start + 40 * US_PER_SECOND)
    quotes: dict[tuple[str, int], QuoteReceived] = {
        (event.instrument, event.ts_us): event for event in events if type(event) is QuoteReceived
    }
    by_instrument: dict[str, list[TradeReceived]] = {}
    for event in events:
        if type(event) is TradeReceived:
            by_instrument.setdefault(event.instrument, []).append(event)
    assert set(by_instrument) == {"SIM:BTCUSD", "SIM:ETHUSD"}  # FX quotes only
    for trades in by_instrument.values():
        ids = [trade.trade_id for trade in trades]
        assert ids == list(range(ids[0], ids[0] + len(ids)))  # no holes, across calls
        assert ids[0] > start // 1000
        for trade in trades:
            quote = quotes[trade.instrument, trade.ts_us]
            # A buyer lifts the ask, a seller hits the bid.
            assert (trade.side, trade.price) in ((SIDE_BUY, quote.ask), (SIDE_SELL, quote.bid))
        assert {trade.side for trade in trades} == {SIDE_BUY, SIDE_SELL}
    # A feed started later continues above every id the first one gave.
    later = SimFeed(["SIM:BTCUSD"], SimFeedConfig(seed=7))
    restarted = [
        event
        for event in later.generate(start + 60 * US_PER_SECOND, start + 80 * US_PER_SECOND)
        if type(event) is TradeReceived
    ]
    assert restarted[0].trade_id > by_instrument["SIM:BTCUSD"][-1].trade_id
