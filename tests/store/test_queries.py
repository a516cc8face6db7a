"""Timeframes of any width and the reads that roll 1m bars up to them (store/queries.py):
SQL rollups equal a polars aggregation, buckets sit on epoch multiples, last_bars gives
exactly the newest N whole bars."""

from __future__ import annotations

import csv
import io
import itertools
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from conftest import assert_same_bars, make_config, rollup_by_hand
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sptrader.cli import main
from sptrader.clock import datetime_to_us
from sptrader.errors import ConfigError, UsageError
from sptrader.models import TIMEFRAMES, US_PER_DAY, US_PER_MINUTE, timeframe_minutes
from sptrader.schema import CANDLE_COLUMNS, STORED_BAR_SCHEMA
from sptrader.store import Store, queries

DAY0_US = datetime_to_us(datetime(2026, 3, 2, tzinfo=UTC))  # a Monday
_names = itertools.count()


# --- parsing ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("timeframe", "minutes"),
    [
        *TIMEFRAMES.items(),
        ("3m", 3),
        ("7m", 7),
        ("90m", 90),
        ("60m", 60),
        ("2h", 120),
        ("12h", 720),
        ("24h", 1440),
        ("2d", 2880),
        ("7d", 10080),
        ("366d", 366 * 1440),
    ],
)
def test_timeframes_of_any_whole_number_of_minutes_hours_or_days(
    timeframe: str, minutes: int
) -> None:
    assert timeframe_minutes(timeframe) == minutes


@pytest.mark.parametrize(
    "timeframe",
    ["1x", "0m", "m", "h", "", "01m", "-1m", "1.5h", "1 m", "1m ", "1m\n", "1w", "1s", "367d",
     "9000h", "99999999m", "1M", "1H", "1D"],
)  # fmt: skip
def test_anything_else_is_a_usage_error(timeframe: str) -> None:
    with pytest.raises(UsageError) as caught:
        timeframe_minutes(timeframe)
    message = str(caught.value)
    assert message.startswith(f"unknown timeframe {timeframe!r}")
    assert "<N>m, <N>h or <N>d" in message
    assert "\n" not in message


def test_upper_case_timeframes_get_a_hint() -> None:
    with pytest.raises(UsageError, match="write '1h'"):
        timeframe_minutes("1H")


def test_the_config_accepts_custom_chart_timeframes() -> None:
    chart = {"timeframes": ["1m", "3m", "15m", "2h", "1d", "7d", "30d"], "default_timeframe": "3m"}
    config = make_config(chart=chart)
    assert config.chart.timeframes == chart["timeframes"]
    assert config.chart.default_timeframe == "3m"


@pytest.mark.parametrize(
    ("timeframes", "expected"),
    [
        (["1m", "1x"], "chart.timeframes[1]: unknown timeframe '1x'"),
        (["1m", "0m"], "chart.timeframes[1]: unknown timeframe '0m'"),
        (["1m", "2h", "1m"], "chart.timeframes[2]: '1m' is listed twice"),
    ],
)
def test_the_config_rejects_bad_chart_timeframes(timeframes: list[str], expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        make_config(chart={"timeframes": timeframes})
    assert expected in str(caught.value)


# --- the store ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shared_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    """One store for the property tests; every example writes its own instrument."""
    store = Store(tmp_path_factory.mktemp("queries") / "sptrader.duckdb")
    store.migrate()
    yield store
    store.close()


@pytest.fixture
def store(home: Path) -> Iterator[Store]:
    opened = Store(home / "sptrader.duckdb")
    opened.migrate()
    yield opened
    opened.close()


def fresh_instrument() -> str:
    return f"SIM:T{next(_names)}"


def make_bars(
    instrument: str, minute_ts: list[int], seed: int = 0, flow_share: float = 0.7
) -> pl.DataFrame:
    """Plausible 1m bars opening at each of the given epoch minutes (µs); about
    ``flow_share`` of them have buy/sell volume (the others NULL: a source that does not
    say, or bars stored before migration 006)."""
    rng = np.random.default_rng(seed)
    count = len(minute_ts)
    opens = 100 + rng.normal(0, 1, count).cumsum()
    closes = opens + rng.normal(0, 0.2, count)
    volume = rng.uniform(0, 1000, count)
    bought = rng.uniform(0, 1, count)
    known = rng.uniform(0, 1, count) < flow_share
    return pl.DataFrame(
        {
            "instrument": [instrument] * count,
            "ts": pl.Series(minute_ts, dtype=pl.Int64).cast(pl.Datetime("us")),
            "open": opens,
            "high": np.maximum(opens, closes) + rng.exponential(0.1, count),
            "low": np.minimum(opens, closes) - rng.exponential(0.1, count),
            "close": closes,
            "volume": volume,
            "trades": rng.integers(1, 50, count),
            "buy_volume": np.where(known, volume * bought, np.nan),
            "sell_volume": np.where(known, volume * (1 - bought) * 0.9, np.nan),
        },
        schema=STORED_BAR_SCHEMA,
        nan_to_null=True,
    )


def flow_by_hand(bars: pl.DataFrame, minutes: int) -> pl.DataFrame:
    """The reference for rolled-up order flow: per bucket the sum of the minutes that
    have it, NULL when none has."""
    width = minutes * US_PER_MINUTE
    epoch = pl.col("ts").dt.epoch("us")
    return (
        bars.sort("ts")
        .group_by((epoch - epoch % width).cast(pl.Datetime("us")).alias("ts"), maintain_order=True)
        .agg(
            pl.when(pl.col(name).is_not_null().any()).then(pl.col(name).sum()).alias(name)
            for name in ("buy_volume", "sell_volume")
        )
    )


def assert_same_flow(actual: pl.DataFrame, expected: pl.DataFrame) -> None:
    assert actual["ts"].to_list() == expected["ts"].to_list()
    for name in ("buy_volume", "sell_volume"):
        assert actual[name].is_null().to_list() == expected[name].is_null().to_list(), name
        assert actual[name].drop_nulls().to_list() == pytest.approx(
            expected[name].drop_nulls().to_list()
        )


def assert_aligned(frame: pl.DataFrame, minutes: int) -> None:
    width = minutes * US_PER_MINUTE
    assert all(ts % width == 0 for ts in frame["ts"].dt.epoch("us").to_list())


# Widths from one minute to ten days, written every way (3m, 2h, 90m, 2d ...).
timeframes = st.one_of(
    st.sampled_from(list(TIMEFRAMES)),
    st.integers(1, 600).map(lambda n: f"{n}m"),
    st.integers(1, 72).map(lambda n: f"{n}h"),
    st.integers(1, 10).map(lambda n: f"{n}d"),
)


@st.composite
def minute_sets(draw: st.DrawFn) -> list[int]:
    """Epoch minutes (µs) in a few runs with gaps of any size between them (closed
    markets, outages, a history that starts late), starting anywhere in 2020-2030."""
    base = (
        draw(st.integers(0, 10 * 365 * 1440))
        + datetime_to_us(datetime(2020, 1, 1)) // US_PER_MINUTE
    )
    minutes: set[int] = set()
    cursor = base
    for _ in range(draw(st.integers(1, 4))):
        cursor += draw(st.integers(0, 20 * 1440))
        length = draw(st.integers(1, 600))
        keep = draw(st.floats(0.3, 1.0))
        step = draw(st.sampled_from([1, 1, 1, 7, 61]))
        run = range(cursor, cursor + length * step, step)
        minutes.update(m for i, m in enumerate(run) if (i * 7919 % 100) < keep * 100 or i == 0)
        cursor += length * step
    return [m * US_PER_MINUTE for m in sorted(minutes)]


@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    minute_ts=minute_sets(),
    timeframe=timeframes,
    seed=st.integers(0, 1000),
    flow_share=st.sampled_from([0.0, 0.05, 0.7, 1.0]),
)
def test_sql_rollups_equal_a_polars_group_by(
    shared_store: Store, minute_ts: list[int], timeframe: str, seed: int, flow_share: float
) -> None:
    instrument = fresh_instrument()
    bars = make_bars(instrument, minute_ts, seed, flow_share)
    shared_store.upsert_bars(bars)
    minutes = timeframe_minutes(timeframe)
    expected = rollup_by_hand(bars, minutes)

    actual = queries.bars_between(shared_store, instrument, timeframe, None, None)
    assert_same_bars(actual, expected)
    assert_same_flow(actual, flow_by_hand(bars, minutes))
    assert_aligned(actual, minutes)


@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    minute_ts=minute_sets(),
    timeframe=timeframes,
    count=st.integers(1, 400),
    neighbour=st.booleans(),
)
def test_last_bars_are_exactly_the_newest_n(
    shared_store: Store, minute_ts: list[int], timeframe: str, count: int, neighbour: bool
) -> None:
    instrument = fresh_instrument()
    bars = make_bars(instrument, minute_ts, seed=count)
    if neighbour:
        # Another instrument with bars before, among and after this one's.
        first, last = minute_ts[0], minute_ts[-1]
        around = range(first - 30 * US_PER_DAY, last + 30 * US_PER_DAY, 97 * US_PER_MINUTE)
        shared_store.upsert_bars(make_bars(fresh_instrument(), list(around)))
    shared_store.upsert_bars(bars)
    minutes = timeframe_minutes(timeframe)
    expected = rollup_by_hand(bars, minutes).tail(count)

    actual = queries.last_bars(shared_store, instrument, timeframe, count)
    assert_same_bars(actual, expected)
    assert_aligned(actual, minutes)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    minute_ts=minute_sets(),
    timeframe=timeframes,
    cuts=st.tuples(st.floats(0, 1), st.floats(0, 1)),
)
def test_bars_between_gives_whole_bars_opening_in_the_range(
    shared_store: Store, minute_ts: list[int], timeframe: str, cuts: tuple[float, float]
) -> None:
    instrument = fresh_instrument()
    bars = make_bars(instrument, minute_ts)
    shared_store.upsert_bars(bars)
    minutes = timeframe_minutes(timeframe)
    width = minutes * US_PER_MINUTE
    first, last = minute_ts[0], minute_ts[-1] + US_PER_MINUTE
    start_us, end_us = sorted(int(first + (last - first) * cut) for cut in cuts)
    end_us += 1
    bucket_start = start_us - start_us % width
    epoch = pl.col("ts").dt.epoch("us")
    # Every bar opening in [start's bucket, end), made of all of its minutes.
    expected = rollup_by_hand(bars, minutes).filter((epoch >= bucket_start) & (epoch < end_us))

    actual = queries.bars_between(shared_store, instrument, timeframe, start_us, end_us)
    assert_same_bars(actual, expected)


@pytest.mark.parametrize(
    ("timeframe", "opens"),
    [
        ("2h", ["2026-03-04T00:00", "2026-03-04T02:00", "2026-03-04T04:00"]),
        ("5h", ["2026-03-03T20:00", "2026-03-04T01:00"]),  # epoch multiples, not per day
        ("1d", ["2026-03-04T00:00"]),
        ("2d", ["2026-03-04T00:00"]),  # epoch day 20516 is even (DuckDB's default: 03-03)
        ("4d", ["2026-03-04T00:00"]),  # DuckDB's default origin (2000-01-03) gives 03-03
        ("7d", ["2026-02-26T00:00"]),  # a Thursday, like 1970-01-01 (default: a Monday)
    ],
)
def test_buckets_open_on_utc_epoch_multiples(
    store: Store, timeframe: str, opens: list[str]
) -> None:
    start = datetime_to_us(datetime(2026, 3, 4, tzinfo=UTC))  # a Wednesday
    store.upsert_bars(make_bars("SIM:SPY", [start + m * US_PER_MINUTE for m in range(0, 300, 5)]))
    frame = queries.bars_between(store, "SIM:SPY", timeframe, None, None)
    assert frame["ts"].dt.strftime("%Y-%m-%dT%H:%M").to_list() == opens
    assert (
        frame["trades"].sum()
        == store.cursor().execute("SELECT sum(trades) FROM bars_1m").fetchall()[0][0]
    )


def test_the_last_bar_of_a_custom_timeframe_is_whole(store: Store) -> None:
    """The newest 3h bar has every stored minute of its bucket, including the ones
    before the window a naive ``count * width`` bound would start at."""
    width = 180 * US_PER_MINUTE
    bucket = DAY0_US + 5 * width
    minutes = [bucket + m * US_PER_MINUTE for m in (0, 1, 59, 120, 179)]
    earlier = [DAY0_US + m * US_PER_MINUTE for m in range(0, 5 * 180, 11)]
    bars = make_bars("SIM:SPY", earlier + minutes)
    store.upsert_bars(bars)

    last = queries.last_bars(store, "SIM:SPY", "3h", 1)
    assert last.height == 1
    assert last["ts"].dt.epoch("us").item() == bucket
    tail = bars.tail(len(minutes))
    assert last["open"].item() == tail["open"][0]
    assert last["close"].item() == tail["close"][-1]
    assert last["trades"].item() == tail["trades"].sum()
    assert last["volume"].item() == pytest.approx(tail["volume"].sum())


def test_last_bars_of_a_short_history_are_all_of_it(store: Store) -> None:
    bars = make_bars("SIM:SPY", [DAY0_US + m * 7 * US_PER_MINUTE for m in range(500)])
    store.upsert_bars(bars)
    assert_same_bars(queries.last_bars(store, "SIM:SPY", "1d", 1000), rollup_by_hand(bars, 1440))
    assert_same_bars(queries.last_bars(store, "SIM:SPY", "1m", 1000), bars.drop("instrument"))


def test_last_bars_jump_a_gap_longer_than_the_window(store: Store) -> None:
    old = [DAY0_US + m * US_PER_MINUTE for m in range(100)]
    new = [DAY0_US + 40 * US_PER_DAY + m * US_PER_MINUTE for m in range(3)]
    bars = make_bars("SIM:SPY", old + new)
    store.upsert_bars(bars)
    store.upsert_bars(
        make_bars("SIM:AAPL", [DAY0_US - US_PER_DAY + m * US_PER_MINUTE for m in range(50)])
    )
    for timeframe in ("1m", "7m", "1h"):
        expected = rollup_by_hand(bars, timeframe_minutes(timeframe)).tail(20)
        assert_same_bars(queries.last_bars(store, "SIM:SPY", timeframe, 20), expected)


def test_last_bar_ts_is_exact_after_the_newest_bars_are_deleted_or_added(store: Store) -> None:
    minutes = [DAY0_US + m * US_PER_MINUTE for m in range(100)]
    store.upsert_bars(make_bars("SIM:SPY", minutes))
    assert queries.last_bar_ts(store, "SIM:SPY") == minutes[-1]
    # The remembered newest bar goes (a retention job, a repair): still exact.
    store.cursor().execute("DELETE FROM bars_1m WHERE ts >= make_timestamp(?)", [minutes[-10]])
    assert queries.last_bar_ts(store, "SIM:SPY") == minutes[-11]
    later = DAY0_US + 3 * US_PER_DAY
    store.upsert_bars(make_bars("SIM:SPY", [later]))
    assert queries.last_bar_ts(store, "SIM:SPY") == later
    store.cursor().execute("DELETE FROM bars_1m")
    assert queries.last_bar_ts(store, "SIM:SPY") is None
    assert queries.last_bars(store, "SIM:SPY", "3m", 10).is_empty()


def test_rolled_up_order_flow_sums_the_minutes_that_have_it(store: Store) -> None:
    """A 5m bar's buy/sell volume is the sum over its minutes that know it; NULL only
    when none does (and the 1m reads keep each minute's NULL)."""
    minutes = [DAY0_US + m * US_PER_MINUTE for m in range(10)]
    bars = make_bars("SIM:SPY", minutes, flow_share=0.0).with_columns(
        buy_volume=pl.Series([None, 2.0, None, 0.5, None] + [None] * 5, dtype=pl.Float64),
        sell_volume=pl.Series([None, 1.0, None, 0.0, None] + [None] * 5, dtype=pl.Float64),
    )
    store.upsert_bars(bars)
    five = queries.bars_between(store, "SIM:SPY", "5m", None, None)
    assert five.select("buy_volume", "sell_volume").rows() == [(2.5, 1.0), (None, None)]
    assert five["volume"].to_list() == pytest.approx(rollup_by_hand(bars, 5)["volume"].to_list())
    one = queries.bars_between(store, "SIM:SPY", "1m", None, None)
    assert one["buy_volume"].to_list() == bars["buy_volume"].to_list()
    assert queries.last_bars(store, "SIM:SPY", "5m", 1)["buy_volume"].to_list() == [None]


def test_last_bars_rejects_a_bad_timeframe(store: Store) -> None:
    with pytest.raises(UsageError, match="unknown timeframe '1x'"):
        queries.last_bars(store, "SIM:SPY", "1x", 10)


# --- the command line -------------------------------------------------------------------


def test_candles_accept_a_custom_timeframe(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["--home", str(home), "candles", "SIM:EURUSD", "--tf", "3m", "--last", "5",
                 "--format", "csv"])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert len(rows) == 5
    opens = [datetime.strptime(row["ts"], "%Y-%m-%dT%H:%M:%SZ") for row in rows]
    assert all(moment.minute % 3 == 0 and moment.second == 0 for moment in opens)
    assert [b - a for a, b in itertools.pairwise(opens)] == [opens[1] - opens[0]] * 4
    assert (opens[1] - opens[0]).total_seconds() == 180


def test_candles_reject_a_bad_timeframe_in_one_line(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["--home", str(home), "candles", "SIM:EURUSD", "--tf", "1x"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.strip().splitlines() == [err.strip()]
    assert "unknown timeframe '1x'" in err


# --- several instruments at once ----------------------------------------------------------


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    minute_sets=st.lists(minute_sets(), min_size=1, max_size=4),
    timeframe=timeframes,
    cuts=st.one_of(st.none(), st.tuples(st.floats(0, 1), st.floats(0, 1))),
)
def test_bars_between_many_is_bars_between_of_each_instrument(
    shared_store: Store,
    minute_sets: list[list[int]],
    timeframe: str,
    cuts: tuple[float, float] | None,
) -> None:
    instruments = [fresh_instrument() for _ in minute_sets]
    for seed, (instrument, minute_ts) in enumerate(zip(instruments, minute_sets, strict=True)):
        shared_store.upsert_bars(make_bars(instrument, minute_ts, seed))
    first = min(ts[0] for ts in minute_sets)
    last = max(ts[-1] for ts in minute_sets) + US_PER_MINUTE
    if cuts is None:
        start_us, end_us = None, None
    else:
        start_us, end_us = sorted(int(first + (last - first) * cut) for cut in cuts)
        end_us += 1
    # One name asked for that has no bars, and the order asked in is not sorted.
    asked = [*reversed(instruments), fresh_instrument()]

    stacked = queries.bars_between_many(shared_store, asked, timeframe, start_us, end_us)
    assert stacked.columns == ["instrument", *CANDLE_COLUMNS]
    assert stacked.equals(stacked.sort("instrument", "ts"))
    for instrument in asked:
        alone = queries.bars_between(shared_store, instrument, timeframe, start_us, end_us)
        mine = stacked.filter(pl.col("instrument") == instrument).drop("instrument")
        assert mine.schema == alone.schema
        differ = [name for name in alone.columns if not alone[name].equals(mine[name])]
        assert not differ, (instrument, differ)


def test_bars_between_many_of_nothing(store: Store) -> None:
    assert queries.bars_between_many(store, [], "1m", None, None).columns[0] == "instrument"
    empty = queries.bars_between_many(store, ["SIM:NONE"], "5m", 0, DAY0_US)
    assert empty.is_empty() and dict(empty.schema) == dict(STORED_BAR_SCHEMA)


def test_rollups_of_many_row_groups_are_the_same_every_time(store: Store) -> None:
    """Volumes are summed in time order: with rows in several row groups (read by
    several threads) a plain sum could differ in its last bits from read to read, and
    between one instrument's query and the many-instrument one."""
    minutes = [DAY0_US + m * US_PER_MINUTE for m in range(300_000)]
    store.upsert_bars(pl.concat([make_bars("SIM:A", minutes, 1), make_bars("SIM:B", minutes, 2)]))
    alone = queries.bars_between(store, "SIM:A", "30d", None, None)
    for _ in range(5):
        assert queries.bars_between(store, "SIM:A", "30d", None, None).equals(alone)
        stacked = queries.bars_between_many(store, ["SIM:A", "SIM:B"], "30d", None, None)
        assert stacked.filter(pl.col("instrument") == "SIM:A").drop("instrument").equals(alone)
