"""The Dukascopy history feed against a local HTTP server serving hour files built from
known ticks in both wire formats (tests/fake_dukascopy.py)."""

from __future__ import annotations

import json
import lzma
import math
import time
from datetime import UTC, datetime

import httpx
import polars as pl
import pytest
from fake_dukascopy import Tick, bi5_hour, bi5_records, json_hour, parse_hour, route
from fakes import FakeHttpServer, FakeRequest, FakeResponse
from hypothesis import given, settings
from hypothesis import strategies as st

from sptrader.config import DukascopyFeedConfig
from sptrader.errors import SptraderError
from sptrader.feeds import dukascopy
from sptrader.feeds.base import BAR_SCHEMA
from sptrader.feeds.dukascopy import (
    US_PER_HOUR,
    DukascopyFeed,
    decode_bi5,
    decode_json_hour,
    hour_path,
    weekend_closed,
)
from sptrader.feeds.dukascopy_instruments import INSTRUMENTS, lookup
from sptrader.schema import TICK_SCHEMA


def hour_us(year: int, month: int, day: int, hour: int) -> int:
    return int(datetime(year, month, day, hour, tzinfo=UTC).timestamp()) * 1_000_000


JAN_2_13H = hour_us(2024, 1, 2, 13)  # a Tuesday in January: bi5 month "00", JSON "1"
JAN_2_14H = JAN_2_13H + US_PER_HOUR

EURUSD_TICKS: list[Tick] = [
    (1_250, 1.10457, 1.10452, 1.25, 0.75),
    (1_250, 1.10458, 1.10452, 2.5, 1.0),  # same millisecond: order kept
    (30_000, 1.10461, 1.10455, 0.01, 3.37),
    (61_999, 1.10401, 1.10399, 1.12, 0.9),
    (3_599_999, 1.10999, 1.10990, 12.0, 0.19),
]
USDJPY_TICKS: list[Tick] = [(5, 141.873, 141.868, 1.0, 2.0), (70_000, 141.802, 141.799, 0.5, 4.25)]
XAUUSD_TICKS: list[Tick] = [
    (0, 2063.415, 2063.095, 0.0001, 0.00012),
    (1_000, 2063.5, 2063.2, 0.05, 0.06),
]


def make_feed(url: str, fmt: str = "bi5", **options) -> DukascopyFeed:
    feed = DukascopyFeed(
        ["DUKASCOPY:EURUSD"], DukascopyFeedConfig(enabled=True, url=url, format=fmt, **options)
    )
    feed.sleeps = []  # type: ignore[attr-defined]
    feed.sleep = feed.sleeps.append  # type: ignore[attr-defined]
    return feed


def as_ticks(arrays, hour_start_us: int) -> list[Tick]:
    return [
        ((ts - hour_start_us) // 1000, ask, bid, ask_size, bid_size)
        for ts, bid, ask, bid_size, ask_size in zip(
            *(column.tolist() for column in arrays), strict=True
        )
    ]


# --- decoding -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("symbol", "ticks"),
    [("EURUSD", EURUSD_TICKS), ("USDJPY", USDJPY_TICKS), ("XAUUSD", XAUUSD_TICKS)],
)
def test_bi5_and_json_hours_decode_to_the_exact_ticks(symbol: str, ticks: list[Tick]) -> None:
    divisor = lookup(symbol).divisor
    from_bi5 = decode_bi5(bi5_hour(ticks, divisor), JAN_2_13H, divisor)
    from_json = decode_json_hour(json.dumps(json_hour(ticks, JAN_2_13H, divisor)).encode(), divisor)
    assert as_ticks(from_bi5, JAN_2_13H) == ticks
    assert as_ticks(from_json, JAN_2_13H) == ticks


def test_divisors_match_dukascopys_decimal_factors() -> None:
    divisors = {symbol: entry.divisor for symbol, entry in INSTRUMENTS.items()}
    assert divisors["EURUSD"] == divisors["GBPUSD"] == divisors["EURGBP"] == 100_000
    assert divisors["USDJPY"] == divisors["EURJPY"] == divisors["GBPJPY"] == 1_000
    assert divisors["XAUUSD"] == divisors["XAGUSD"] == divisors["USA500IDXUSD"] == 1_000
    assert divisors["BTCUSD"] == divisors["ETHUSD"] == 10
    assert lookup("USA500IDXUSD").json_name == "USA500.IDX-USD"
    assert lookup("XAUUSD").decimals == 3
    assert sum(entry.kind == "fx" for entry in INSTRUMENTS.values()) >= 30


tick_lists = st.lists(
    st.tuples(
        st.integers(0, 3_599_999),
        st.integers(1, 4_000_000),  # ask in points
        st.integers(0, 5_000),  # spread in points
        st.integers(0, 100_000),  # volumes in hundredths of a million
        st.integers(0, 100_000),
    ),
    max_size=60,
)


@settings(max_examples=60, deadline=None)
@given(rows=tick_lists, divisor=st.sampled_from([10, 1_000, 10_000, 100_000]))
def test_encode_then_decode_round_trips(
    rows: list[tuple[int, int, int, int, int]], divisor: int
) -> None:
    rows = sorted(rows, key=lambda row: row[0])
    ticks = [
        (ms, ask / divisor, (ask - spread) / divisor, ask_volume / 100, bid_volume / 100)
        for ms, ask, spread, ask_volume, bid_volume in rows
        if ask - spread >= 0
    ]
    from_bi5 = decode_bi5(bi5_hour(ticks, divisor), JAN_2_13H, divisor)
    from_json = decode_json_hour(json.dumps(json_hour(ticks, JAN_2_13H, divisor)).encode(), divisor)
    assert as_ticks(from_bi5, JAN_2_13H) == ticks
    assert as_ticks(from_json, JAN_2_13H) == ticks


def test_the_fake_bi5_file_has_dukascopys_lzma_alone_header() -> None:
    payload = bi5_hour(EURUSD_TICKS, 100_000)
    assert payload[:5] == bytes.fromhex("5d00004000")
    assert int.from_bytes(payload[5:13], "little") == 20 * len(EURUSD_TICKS)
    assert lzma.decompress(payload, format=lzma.FORMAT_ALONE) == bi5_records(EURUSD_TICKS, 100_000)


def test_a_truncated_or_foreign_file_is_malformed() -> None:
    payload = bi5_hour(EURUSD_TICKS, 100_000)
    with pytest.raises(ValueError, match="truncated"):
        decode_bi5(payload[:-4], JAN_2_13H, 100_000)
    with pytest.raises(ValueError, match="not an LZMA tick file"):
        decode_bi5(b"<html>", JAN_2_13H, 100_000)
    with pytest.raises(ValueError, match="whole number"):
        decode_bi5(lzma.compress(b"x" * 21, format=lzma.FORMAT_ALONE), JAN_2_13H, 100_000)


def test_closed_hours_decode_to_no_ticks() -> None:
    assert len(decode_bi5(b"", JAN_2_13H, 100_000).ts_us) == 0
    closed = json_hour([], JAN_2_13H, 100_000)
    assert closed["ask"] is None and closed["times"] == []
    assert len(decode_json_hour(json.dumps(closed).encode(), 100_000).ts_us) == 0


def test_month_is_zero_based_in_bi5_paths_and_one_based_in_json_paths() -> None:
    entry = lookup("EURUSD")
    assert hour_path(entry, JAN_2_13H, "bi5") == "/EURUSD/2024/00/02/13h_ticks.bi5"
    assert hour_path(entry, JAN_2_13H, "json") == "/ticks/EUR-USD/2024/1/2/13"
    december = hour_us(2023, 12, 31, 5)
    assert hour_path(lookup("USA500IDXUSD"), december, "bi5") == (
        "/USA500IDXUSD/2023/11/31/05h_ticks.bi5"
    )
    assert hour_path(lookup("USA500IDXUSD"), december, "json") == (
        "/ticks/USA500.IDX-USD/2023/12/31/5"
    )


def test_weekend_hours_are_closed_friday_22_to_sunday_21() -> None:
    friday = hour_us(2024, 1, 5, 0)
    closed = [weekend_closed(friday + hour * US_PER_HOUR) for hour in range(72)]
    assert closed.index(True) == 22  # Friday 22:00
    assert closed.index(False, 22) == 24 + 24 + 21  # Sunday 21:00
    assert not any(closed[69:])


# --- the feed against a local server --------------------------------------------------


@pytest.mark.parametrize("fmt", ["bi5", "json"])
def test_history_ticks_fetches_hours_in_the_store_layout(fmt: str) -> None:
    second_hour: list[Tick] = [(10_000, 1.1102, 1.1101, 1.5, 2.5)]
    ticks_by_hour = {JAN_2_13H: EURUSD_TICKS, JAN_2_14H: second_hour}
    with FakeHttpServer(route(ticks_by_hour, fmt)) as server:
        feed = make_feed(server.url + ("/datafeed" if fmt == "bi5" else "/v1"), fmt)
        ticks = feed.history_ticks("DUKASCOPY:EURUSD", JAN_2_13H, JAN_2_14H + US_PER_HOUR)
    assert ticks is not None
    assert ticks.schema == pl.Schema(TICK_SCHEMA)
    assert ticks["instrument"].unique().to_list() == ["DUKASCOPY:EURUSD"]
    assert ticks["price"].null_count() == ticks["size"].null_count() == ticks.height == 6
    assert ticks["ts"].is_sorted()
    assert ticks["bid"].to_list() == [tick[2] for tick in EURUSD_TICKS] + [1.1101]
    assert ticks["bid_size"].to_list() == [tick[4] for tick in EURUSD_TICKS] + [2.5]
    first = ticks["ts"][0]
    assert first == datetime(2024, 1, 2, 13, 0, 1, 250_000)
    paths = sorted(request.path for request in server.requests)
    if fmt == "bi5":
        assert paths == [
            "/datafeed/EURUSD/2024/00/02/13h_ticks.bi5",
            "/datafeed/EURUSD/2024/00/02/14h_ticks.bi5",
        ]
    else:
        assert paths == ["/v1/ticks/EUR-USD/2024/1/2/13", "/v1/ticks/EUR-USD/2024/1/2/14"]


def test_ticks_are_kept_within_the_range() -> None:
    with FakeHttpServer(route({JAN_2_13H: EURUSD_TICKS})) as server:
        feed = make_feed(server.url)
        ticks = feed.history_ticks(
            "DUKASCOPY:EURUSD", JAN_2_13H + 1_250_000, JAN_2_13H + 61_999_000
        )
    assert ticks is not None
    assert ticks["ask"].to_list() == [1.10457, 1.10458, 1.10461]


@pytest.mark.parametrize("fmt", ["bi5", "json"])
def test_empty_and_missing_hours_give_no_ticks_and_no_error(fmt: str) -> None:
    # 13h is served empty (0-byte bi5 / null-price JSON), 14h is a 404.
    with FakeHttpServer(route({JAN_2_13H: []}, fmt)) as server:
        feed = make_feed(server.url, fmt)
        bars, ticks = feed.history_with_ticks(
            "DUKASCOPY:EURUSD", JAN_2_13H, JAN_2_14H + US_PER_HOUR
        )
    assert ticks.is_empty() and ticks.schema == pl.Schema(TICK_SCHEMA)
    assert bars.is_empty() and bars.schema == pl.Schema(BAR_SCHEMA)
    assert len(server.requests) == 2


def test_weekend_hours_are_not_requested() -> None:
    friday_20h = hour_us(2024, 1, 5, 20)
    monday_1h = hour_us(2024, 1, 8, 1)
    with FakeHttpServer(route({})) as server:
        make_feed(server.url).history_ticks("DUKASCOPY:EURUSD", friday_20h, monday_1h)
    hours = sorted(parse_hour(request.path, "bi5")[1] for request in server.requests)
    assert hours == [
        friday_20h,
        friday_20h + US_PER_HOUR,
        hour_us(2024, 1, 7, 21),
        hour_us(2024, 1, 7, 22),
        hour_us(2024, 1, 7, 23),
        hour_us(2024, 1, 8, 0),
    ]


def test_crypto_hours_are_requested_on_weekends_too() -> None:
    saturday = hour_us(2024, 1, 6, 10)
    with FakeHttpServer(route({}, symbol="BTCUSD")) as server:
        make_feed(server.url).history_ticks(
            "DUKASCOPY:BTCUSD", saturday, saturday + 2 * US_PER_HOUR
        )
    assert len(server.requests) == 2


def test_future_hours_are_not_requested(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dukascopy, "now_us", lambda: JAN_2_13H + 30 * 60_000_000)
    with FakeHttpServer(route({JAN_2_13H: EURUSD_TICKS})) as server:
        make_feed(server.url).history_ticks(
            "DUKASCOPY:EURUSD", JAN_2_13H, JAN_2_13H + 5 * US_PER_HOUR
        )
    assert len(server.requests) == 1


@pytest.mark.parametrize("fmt", ["bi5", "json"])
def test_503_is_retried_with_backoff(fmt: str) -> None:
    with FakeHttpServer(route({JAN_2_13H: EURUSD_TICKS}, fmt, fail_first=2)) as server:
        feed = make_feed(server.url, fmt)
        ticks = feed.history_ticks("DUKASCOPY:EURUSD", JAN_2_13H, JAN_2_14H)
    assert ticks is not None and ticks.height == len(EURUSD_TICKS)
    assert feed.sleeps == [0.5, 1.0]  # type: ignore[attr-defined]
    assert len(server.requests) == 3


def test_a_malformed_hour_is_an_error_naming_it() -> None:
    def garbage(request: FakeRequest) -> FakeResponse:
        return FakeResponse(200, b"<html>maintenance</html>")

    with (
        FakeHttpServer(garbage) as server,
        pytest.raises(SptraderError, match=r"EURUSD 2024-01-02 13:00Z"),
    ):
        make_feed(server.url).history_ticks("DUKASCOPY:EURUSD", JAN_2_13H, JAN_2_14H)


IMPOSSIBLE_TICKS: list[Tick] = [
    (2_000, 1.10461, 0.0, 1.0, 1.0),  # a zero bid
    (3_000, 0.0, 1.10455, 1.0, 1.0),  # a zero ask
    (4_000, 1.10461, 1.10455, -1.0, 1.0),  # a negative size
    (5_000, 1.10461, 1.10455, 1.0, float("nan")),
    (6_000, 1.10461, 1.10455, float("inf"), 1.0),
    (7_000, 1.10461, 1.10455, 1.0, 3e38),  # float32's largest: above MAX_SIZE
]


@pytest.mark.parametrize("fmt", ["bi5", "json"])
def test_impossible_ticks_are_dropped_with_one_warning(
    fmt: str, caplog: pytest.LogCaptureFixture
) -> None:
    good: list[Tick] = [(1_000, 1.10461, 1.10455, 1.0, 2.0), (9_000, 1.10462, 1.10456, 0.0, 0.0)]
    # JSON has no NaN or Infinity: Dukascopy cannot send those there.
    bad = [tick for tick in IMPOSSIBLE_TICKS if fmt == "bi5" or all(map(math.isfinite, tick))]
    first_hour = route({JAN_2_13H: sorted([*good, *bad])}, fmt)
    if fmt == "bi5":
        # Milliseconds past the hour's end (the record's field would allow 49 days).
        late = bi5_hour([(3_600_000, 1.1, 1.0, 1.0, 1.0), (9_999_999, 1.1, 1.0, 1.0, 1.0)], 100_000)
    else:
        late = json.dumps(json_hour(good, JAN_2_13H, 100_000)).encode()  # stamped an hour early

    def serve(request: FakeRequest) -> FakeResponse | None:
        named = parse_hour(request.path, fmt)
        if named is not None and named[1] == JAN_2_14H:
            return FakeResponse(200, late)
        return first_hour(request)

    with FakeHttpServer(serve) as server:
        feed = make_feed(server.url, fmt)
        bars, ticks = feed.history_with_ticks(
            "DUKASCOPY:EURUSD", JAN_2_13H, JAN_2_14H + US_PER_HOUR
        )
    assert ticks["ts"].to_list() == [
        datetime(2024, 1, 2, 13, 0, 1),
        datetime(2024, 1, 2, 13, 0, 9),
    ]
    assert ticks["bid"].to_list() == [1.10455, 1.10456]
    assert bars["trades"].to_list() == [2]
    warnings = [record for record in caplog.records if "dropped" in record.getMessage()]
    assert len(warnings) == 1
    assert f"dropped {len(bad) + 2} impossible" in warnings[0].getMessage()


def test_drop_impossible_keeps_good_ticks_untouched() -> None:
    ticks = decode_bi5(bi5_hour(EURUSD_TICKS, 100_000), JAN_2_13H, 100_000)
    kept, dropped = dukascopy.drop_impossible(ticks, JAN_2_13H)
    assert dropped == 0 and kept is ticks
    kept, dropped = dukascopy.drop_impossible(ticks, JAN_2_14H)  # all in the wrong hour
    assert dropped == len(EURUSD_TICKS) and len(kept.ts_us) == 0


def test_hour_requests_in_flight_stay_within_max_concurrency() -> None:
    in_flight = peak = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        time.sleep(0.01)
        in_flight -= 1
        return httpx.Response(404)

    config = DukascopyFeedConfig(enabled=True, url="http://dukascopy.test", max_concurrency=2)
    feed = DukascopyFeed(["DUKASCOPY:EURUSD"], config, transport=httpx.MockTransport(handler))
    feed.history_ticks("DUKASCOPY:EURUSD", JAN_2_13H, JAN_2_13H + 12 * US_PER_HOUR)
    assert 1 <= peak <= 2


# --- bars -----------------------------------------------------------------------------


TWO_HOURS: dict[int, list[Tick]] = {
    JAN_2_13H: [
        (59_000, 1.10010, 1.10000, 1.0, 1.5),  # 13:00
        (61_000, 1.10030, 1.10020, 1.0, 2.0),  # 13:01 open
        (62_000, 1.10060, 1.10050, 1.0, 0.5),  # high
        (63_000, 1.09990, 1.09980, 1.0, 0.25),  # low
        (119_999, 1.10020, 1.10010, 1.0, 1.25),  # 13:01 close
        (3_599_999, 1.10100, 1.10090, 1.0, 4.0),  # 13:59
    ],
    JAN_2_14H: [(0, 1.10200, 1.10190, 1.0, 3.0), (59_999, 1.10190, 1.10180, 1.0, 1.0)],  # 14:00
}


@pytest.mark.parametrize("fmt", ["bi5", "json"])
def test_bars_aggregate_ticks_per_minute_across_hours(fmt: str) -> None:
    with FakeHttpServer(route(TWO_HOURS, fmt)) as server:
        bars = make_feed(server.url, fmt).history(
            "DUKASCOPY:EURUSD", JAN_2_13H, JAN_2_14H + US_PER_HOUR
        )
    assert bars is not None and bars.schema == pl.Schema(BAR_SCHEMA)
    rows = bars.select(pl.exclude("instrument")).rows()
    assert rows == [
        (datetime(2024, 1, 2, 13, 0), 1.1, 1.1, 1.1, 1.1, 1.5, 1),
        (datetime(2024, 1, 2, 13, 1), 1.1002, 1.1005, 1.0998, 1.1001, 4.0, 4),
        (datetime(2024, 1, 2, 13, 59), 1.1009, 1.1009, 1.1009, 1.1009, 4.0, 1),
        (datetime(2024, 1, 2, 14, 0), 1.1019, 1.1019, 1.1018, 1.1018, 4.0, 2),
    ]


def test_mid_bars_use_the_mid_price_and_bid_volume() -> None:
    with FakeHttpServer(route(TWO_HOURS)) as server:
        feed = make_feed(server.url, price_source="mid")
        bars = feed.history("DUKASCOPY:EURUSD", JAN_2_14H, JAN_2_14H + US_PER_HOUR)
    assert feed.price_source("DUKASCOPY:EURUSD") == "mid"
    assert bars is not None
    [bar] = bars.rows(named=True)
    assert bar["open"] == pytest.approx(1.10195) and bar["close"] == pytest.approx(1.10185)
    assert (bar["volume"], bar["trades"]) == (4.0, 2)


def test_only_closed_minutes_become_bars(monkeypatch: pytest.MonkeyPatch) -> None:
    # "Now" is 13:01:30: the 13:01 minute is still forming.
    monkeypatch.setattr(dukascopy, "now_us", lambda: JAN_2_13H + 90_000_000)
    with FakeHttpServer(route(TWO_HOURS)) as server:
        bars, ticks = make_feed(server.url).history_with_ticks(
            "DUKASCOPY:EURUSD", JAN_2_13H, JAN_2_14H
        )
    assert bars["ts"].to_list() == [datetime(2024, 1, 2, 13, 0)]
    assert ticks.height == 6


# --- the rest of the contract ---------------------------------------------------------


def test_unknown_symbol_names_it_and_the_command_that_lists_them() -> None:
    feed = make_feed("http://127.0.0.1:9")
    with pytest.raises(SptraderError, match=r"'NOPEUSD'.*sptrader symbols --feed dukascopy"):
        feed.history("DUKASCOPY:NOPEUSD", JAN_2_13H, JAN_2_14H)


def test_symbols_list_the_built_in_table() -> None:
    symbols = {info.instrument: info for info in make_feed("http://127.0.0.1:9").symbols()}
    assert len(symbols) == len(INSTRUMENTS)
    eurusd = symbols["DUKASCOPY:EURUSD"]
    assert (eurusd.kind, eurusd.base, eurusd.quote) == ("fx", "EUR", "USD")
    assert "Euro" in eurusd.description
    assert symbols["DUKASCOPY:XAUUSD"].kind == "metal"
    assert symbols["DUKASCOPY:USA500IDXUSD"].kind == "index"
    assert symbols["DUKASCOPY:BTCUSD"].kind == "crypto"


async def test_stream_raises_history_only() -> None:
    feed = make_feed("http://127.0.0.1:9")
    assert feed.live is False and feed.prefix == "DUKASCOPY" and feed.name == "dukascopy"
    assert feed.history_chunk_us == 24 * US_PER_HOUR
    assert feed.history_delay_us == 2 * US_PER_HOUR  # bi5 hour files appear after the hour
    with pytest.raises(SptraderError, match="Dukascopy serves history only"):
        await feed.stream(None)  # type: ignore[arg-type]
