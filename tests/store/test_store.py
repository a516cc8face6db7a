"""The DuckDB store: migrations, idempotent upserts, SQL rollups, the file lock."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from conftest import assert_same_bars, holding_database, rollup_by_hand
from hypothesis import given, settings
from hypothesis import strategies as st

from sptrader.clock import datetime_to_us
from sptrader.errors import SptraderError, StoreLockedError
from sptrader.models import TIMEFRAMES, US_PER_DAY, US_PER_MINUTE
from sptrader.schema import BAR_SCHEMA, CANDLE_COLUMNS, STORED_TICK_COLUMNS, stored_bars
from sptrader.store import Store, database, queries

DAY0_US = datetime_to_us(datetime(2026, 3, 2, tzinfo=UTC))  # a Monday


@pytest.fixture
def store(home: Path) -> Iterator[Store]:
    opened = Store(home / "sptrader.duckdb")
    opened.migrate()
    yield opened
    opened.close()


def make_bars(
    instrument: str, minutes: list[int], seed: int = 0, start_us: int = DAY0_US
) -> pl.DataFrame:
    """Plausible 1m bars at ``start_us + minute`` for each minute offset given."""
    rng = np.random.default_rng(seed)
    count = len(minutes)
    opens = 100 + rng.normal(0, 1, count).cumsum()
    closes = opens + rng.normal(0, 0.2, count)
    highs = np.maximum(opens, closes) + rng.exponential(0.1, count)
    lows = np.minimum(opens, closes) - rng.exponential(0.1, count)
    return pl.DataFrame(
        {
            "instrument": [instrument] * count,
            "ts": pl.Series(
                [start_us + minute * US_PER_MINUTE for minute in minutes], dtype=pl.Int64
            ).cast(pl.Datetime("us")),
            "open": opens,
            "high": highs,
            "low": lows,
            "close": closes,
            "volume": rng.uniform(0, 1000, count),
            "trades": rng.integers(1, 50, count),
        },
        schema=BAR_SCHEMA,
    )


def all_bars(store: Store) -> pl.DataFrame:
    return store.cursor().sql("SELECT * FROM bars_1m ORDER BY instrument, ts").pl()


def as_stored(bars: pl.DataFrame) -> pl.DataFrame:
    """Bars without order flow as the store keeps them (buy/sell volume NULL)."""
    return stored_bars(bars)


def count_rows(store: Store) -> tuple[int, int]:
    """(rows, distinct (instrument, ts) keys) in bars_1m."""
    return (
        store.cursor()
        .execute("SELECT count(*), count(DISTINCT (instrument, ts)) FROM bars_1m")
        .fetchall()[0]
    )


# --- migrations --------------------------------------------------------------------------


def test_migrations_apply_once(home: Path) -> None:
    path = home / "sptrader.duckdb"
    fresh = Store(path)
    assert fresh.schema_version() == 0
    names = [name for _, name, _ in database.available_migrations()]
    latest = database.available_migrations()[-1][0]
    assert names[:6] == [
        "001_initial.sql",
        "002_symbols_and_backfills.sql",
        "003_coverage.sql",
        "004_scans.sql",
        "005_broker.sql",
        "006_trade_side.sql",
    ]
    assert fresh.migrate() == names
    assert fresh.schema_version() == latest
    tables = {
        row[0]
        for row in fresh.cursor()
        .execute("SELECT table_name FROM information_schema.tables")
        .fetchall()
    }
    assert {
        "schema_version",
        "bars_1m",
        "ticks",
        "service_events",
        "symbols",
        "symbol_lists",
        "coverage",
        "orders",
        "fills",
        "journal_notes",
    } <= tables
    assert "backfill_ranges" not in tables  # replaced by coverage
    assert fresh.coverage("SIM:EURUSD") == []  # nothing stored, nothing seeded
    assert fresh.migrate() == []
    fresh.close()

    reopened = Store(path)
    assert reopened.migrate() == []
    assert reopened.schema_version() == latest
    rows = reopened.cursor().execute("SELECT version, name FROM schema_version").fetchall()
    assert rows == [(version, name) for version, name, _ in database.available_migrations()]
    reopened.close()


def test_available_migrations_are_numbered_in_order() -> None:
    migrations = database.available_migrations()
    versions = [version for version, _, _ in migrations]
    assert versions == sorted(versions)
    assert versions[0] == 1
    assert migrations[0][1] == "001_initial.sql"
    assert "CREATE TABLE bars_1m" in migrations[0][2]


def test_failed_migration_rolls_back(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = Store(home / "sptrader.duckdb")
    store.migrate()
    real = database.available_migrations()
    next_version = real[-1][0] + 1
    broken = (
        next_version,
        f"{next_version:03d}_broken.sql",
        "CREATE TABLE half_done (a INTEGER); SELECT * FROM no_such_table;",
    )
    monkeypatch.setattr(database, "available_migrations", lambda: [*real, broken])
    with pytest.raises(SptraderError, match=rf"migration {next_version:03d}_broken\.sql failed"):
        store.migrate()
    assert store.schema_version() == real[-1][0]
    tables = {
        row[0]
        for row in store.cursor()
        .execute("SELECT table_name FROM information_schema.tables")
        .fetchall()
    }
    assert "half_done" not in tables
    store.close()


def test_migration_006_adds_order_flow_to_a_store_with_data(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bars and ticks stored before 006 stay as they were, with NULL order flow and side;
    bars written after it keep theirs."""
    path = home / "sptrader.duckdb"
    real = database.available_migrations()
    monkeypatch.setattr(database, "available_migrations", lambda: [m for m in real if m[0] <= 5])
    old = Store(path)
    old.migrate()
    before = make_bars("SIM:SPY", list(range(5)))
    cursor = old.cursor()
    cursor.register("before", before)
    cursor.execute("INSERT INTO bars_1m SELECT * FROM before")  # the 005 layout
    cursor.execute(
        "INSERT INTO ticks VALUES ('SIM:SPY', TIMESTAMP '2026-03-02 00:00:01',"
        " NULL, NULL, NULL, NULL, 100.0, 2.0)"
    )
    old.close()

    monkeypatch.setattr(database, "available_migrations", lambda: real)
    store = Store(path)
    assert "006_trade_side.sql" in store.migrate()
    stored = all_bars(store)
    assert stored.columns == [*BAR_SCHEMA, "buy_volume", "sell_volume"]
    assert stored.equals(as_stored(before))  # the old rows as they were, flow NULL
    ticks = store.cursor().sql("SELECT * FROM ticks").pl()
    assert ticks.columns == STORED_TICK_COLUMNS
    assert ticks["side"].to_list() == [None] and ticks.schema["side"] == pl.Int8

    newer = before.head(2).with_columns(buy_volume=pl.lit(1.5), sell_volume=pl.lit(0.0))
    store.upsert_bars(newer)
    flow = all_bars(store).select("buy_volume", "sell_volume").rows()
    assert flow == [(1.5, 0.0), (1.5, 0.0), (None, None), (None, None), (None, None)]
    store.close()


# --- idempotent upserts ------------------------------------------------------------------


def test_same_bars_twice_are_stored_once(store: Store) -> None:
    bars = pl.concat(
        [make_bars("SIM:SPY", list(range(100))), make_bars("SIM:AAPL", list(range(50)), seed=1)]
    )
    assert store.upsert_bars(bars) == 150
    assert store.upsert_bars(bars) == 150
    assert count_rows(store) == (150, 150)
    assert all_bars(store).equals(as_stored(bars.sort("instrument", "ts")))


def test_newer_version_replaces_older(store: Store) -> None:
    older = make_bars("SIM:SPY", list(range(10)))
    store.upsert_bars(older)
    newer = older.slice(3, 4).with_columns(
        pl.col("close") + 1.0, pl.col("volume") * 2, pl.col("trades") + 7
    )
    store.upsert_bars(newer)
    stored = all_bars(store)
    assert count_rows(store) == (10, 10)
    assert stored.slice(3, 4).equals(as_stored(newer))
    assert stored.slice(0, 3).equals(as_stored(older.slice(0, 3)))
    assert stored.slice(7).equals(as_stored(older.slice(7)))


def test_within_a_batch_the_last_version_wins(store: Store) -> None:
    first = make_bars("SIM:SPY", [0, 1])
    second = first.with_columns(pl.col("close") * 2)
    store.upsert_bars(pl.concat([first, second]))
    assert all_bars(store).equals(as_stored(second))


def test_upsert_of_nothing_writes_nothing(store: Store) -> None:
    assert store.upsert_bars(make_bars("SIM:SPY", [])) == 0
    assert count_rows(store) == (0, 0)


def test_upserts_name_columns_and_fill_missing_order_flow(store: Store) -> None:
    """Frames with or without buy/sell volume, with columns in any order (and extra
    ones), land in the right columns: the insert names them rather than SELECT *."""
    bars = make_bars("SIM:SPY", [0, 1, 2])
    with_flow = bars.with_columns(
        sell_volume=pl.Series([1.0, None, 3.0]), buy_volume=pl.Series([0.5, None, 0.0])
    )
    shuffled = with_flow.select(
        "sell_volume", "trades", "ts", "volume", "close", "buy_volume", "low",
        "instrument", "high", "open", pl.lit("x").alias("extra"),
    )  # fmt: skip
    store.upsert_bars(shuffled)
    assert all_bars(store).equals(as_stored(with_flow))
    # History without order flow (Coinbase, OANDA candles) replaces a bar as a whole.
    store.upsert_bars(bars.slice(0, 1))
    assert all_bars(store)["buy_volume"].to_list() == [None, None, 0.0]


def test_ticks_keep_the_trade_side(store: Store) -> None:
    from sptrader.models import SIDE_BUY, SIDE_SELL, QuoteReceived, TradeReceived
    from sptrader.store.writer import ticks_to_frame

    events = [
        QuoteReceived("SIM:SPY", DAY0_US, 99.0, 101.0, 1.0, 2.0),
        TradeReceived("SIM:SPY", DAY0_US + 1, 101.0, 3.0, SIDE_BUY),
        TradeReceived("SIM:SPY", DAY0_US + 2, 99.0, 4.0, SIDE_SELL),
        TradeReceived("SIM:SPY", DAY0_US + 3, 100.0, 5.0),  # side unknown
    ]
    frame = ticks_to_frame(events)
    assert frame.columns == STORED_TICK_COLUMNS
    assert frame["side"].to_list() == [None, 1, -1, None]
    assert store.append_ticks(frame) == 4
    # A frame without a side (Dukascopy's quotes), or saying 0 for unknown.
    store.replace_ticks(
        "SIM:EURUSD",
        DAY0_US,
        DAY0_US + US_PER_MINUTE,
        frame.drop("side").with_columns(instrument=pl.lit("SIM:EURUSD")),
    )
    store.append_ticks(frame.tail(1).with_columns(side=pl.lit(0, dtype=pl.Int8)))
    rows = (
        store.cursor()
        .execute("SELECT instrument, price, size, side FROM ticks ORDER BY instrument, ts, side")
        .fetchall()
    )
    assert rows == [
        ("SIM:EURUSD", None, None, None),
        ("SIM:EURUSD", 101.0, 3.0, None),
        ("SIM:EURUSD", 99.0, 4.0, None),
        ("SIM:EURUSD", 100.0, 5.0, None),
        ("SIM:SPY", None, None, None),
        ("SIM:SPY", 101.0, 3.0, 1),
        ("SIM:SPY", 99.0, 4.0, -1),
        ("SIM:SPY", 100.0, 5.0, None),
        ("SIM:SPY", 100.0, 5.0, None),
    ]


upsert_batches = st.lists(
    st.lists(
        st.tuples(
            st.sampled_from(["SIM:SPY", "SIM:EURUSD"]),
            st.integers(0, 30),  # minute
            st.integers(0, 1_000_000),  # a version marker carried in every column
        ),
        max_size=15,
    ),
    min_size=1,
    max_size=6,
)


@settings(max_examples=50, deadline=None)
@given(batches=upsert_batches)
def test_upserts_equal_last_write_wins_dict(batches) -> None:
    store = Store(Path(":memory:"))
    store.migrate()
    expected: dict[tuple[str, int], int] = {}
    for batch in batches:
        frame = pl.DataFrame(
            {
                "instrument": [instrument for instrument, _, _ in batch],
                "ts": pl.Series(
                    [DAY0_US + minute * US_PER_MINUTE for _, minute, _ in batch], dtype=pl.Int64
                ).cast(pl.Datetime("us")),
                "open": [float(value) for _, _, value in batch],
                "high": [float(value) + 1 for _, _, value in batch],
                "low": [float(value) - 1 for _, _, value in batch],
                "close": [float(value) for _, _, value in batch],
                "volume": [float(value) for _, _, value in batch],
                "trades": [value for _, _, value in batch],
            },
            schema=BAR_SCHEMA,
        )
        store.upsert_bars(frame)
        for instrument, minute, value in batch:
            expected[(instrument, DAY0_US + minute * US_PER_MINUTE)] = value
    rows = (
        store.cursor()
        .execute("SELECT instrument, epoch_us(ts), open, trades FROM bars_1m")
        .fetchall()
    )
    stored = {(instrument, ts): trades for instrument, ts, _, trades in rows}
    assert len(rows) == len(stored)  # no duplicates
    assert stored == expected
    assert all(open_ == float(trades) for _, _, open_, trades in rows)  # rows are not mixed
    store.close()


# --- rollups and reads -------------------------------------------------------------------


@pytest.fixture
def gappy_store(store: Store) -> tuple[Store, pl.DataFrame]:
    """Three days of SIM:SPY 1m bars with random missing minutes, plus another instrument."""
    rng = np.random.default_rng(7)
    minutes = sorted(int(m) for m in rng.choice(3 * 1440, size=3000, replace=False))
    minutes = [m for m in minutes if not 1500 <= m < 1900]  # a whole missing stretch
    spy = make_bars("SIM:SPY", minutes, seed=3)
    store.upsert_bars(spy)
    store.upsert_bars(make_bars("SIM:AAPL", list(range(0, 3 * 1440, 7)), seed=4))
    return store, spy


@pytest.mark.parametrize("timeframe", list(TIMEFRAMES))
def test_rollups_equal_aggregation_by_hand(
    gappy_store: tuple[Store, pl.DataFrame], timeframe: str
) -> None:
    store, spy = gappy_store
    minutes = TIMEFRAMES[timeframe]
    expected = rollup_by_hand(spy, minutes)

    assert_same_bars(queries.bars_between(store, "SIM:SPY", timeframe, None, None), expected)

    count = 37
    assert_same_bars(queries.last_bars(store, "SIM:SPY", timeframe, count), expected.tail(count))


@pytest.mark.parametrize("timeframe", ["1m", "15m", "4h"])
def test_bars_between_returns_whole_bars_opening_in_range(
    gappy_store: tuple[Store, pl.DataFrame], timeframe: str
) -> None:
    store, spy = gappy_store
    minutes = TIMEFRAMES[timeframe]
    width = minutes * US_PER_MINUTE
    start_us = DAY0_US + 1007 * US_PER_MINUTE
    end_us = DAY0_US + 2600 * US_PER_MINUTE  # inside a 15m and a 4h bucket
    # Bars opening in [start's bucket, end), each made of all of its 1m bars.
    bucket_start = start_us - start_us % width
    bucket_end = -(-end_us // width) * width
    epoch = pl.col("ts").dt.epoch("us")
    inside = spy.filter((epoch >= bucket_start) & (epoch < bucket_end))
    expected = rollup_by_hand(inside, minutes).filter(epoch < end_us)
    actual = queries.bars_between(store, "SIM:SPY", timeframe, start_us, end_us)
    assert_same_bars(actual, expected)
    assert actual["ts"].dt.epoch("us").min() == bucket_start
    assert actual["ts"].dt.epoch("us").max() < end_us


def test_bars_between_empty_result_has_the_bar_layout(store: Store) -> None:
    frame = queries.bars_between(store, "SIM:NONE", "1h", None, None)
    assert frame.is_empty()
    assert frame.columns == CANDLE_COLUMNS
    assert queries.last_bars(store, "SIM:NONE", "1m", 10).is_empty()
    assert queries.last_bar_ts(store, "SIM:NONE") is None
    assert queries.first_bar_ts(store, "SIM:NONE") == 0


def test_last_bars_returns_n_newest_across_a_multi_day_gap(store: Store) -> None:
    old = make_bars("SIM:SPY", list(range(30)), seed=1)  # day 0
    new = make_bars("SIM:SPY", list(range(5)), seed=2, start_us=DAY0_US + 11 * US_PER_DAY)
    store.upsert_bars(pl.concat([old, new]))

    last = queries.last_bars(store, "SIM:SPY", "1m", 20)
    assert last.height == 20
    expected = as_stored(pl.concat([old.tail(15), new])).drop("instrument")
    assert last.equals(expected)

    assert queries.last_bars(store, "SIM:SPY", "1m", 5).equals(as_stored(new).drop("instrument"))
    assert queries.last_bars(store, "SIM:SPY", "1m", 1000).height == 35  # all there is
    assert queries.last_bars(store, "SIM:SPY", "1m", 0).is_empty()
    hourly = queries.last_bars(store, "SIM:SPY", "1h", 2)
    assert hourly["ts"].dt.epoch("us").to_list() == [DAY0_US, DAY0_US + 11 * US_PER_DAY]


def test_last_and_first_bar_ts_and_instruments(gappy_store: tuple[Store, pl.DataFrame]) -> None:
    store, spy = gappy_store
    epochs = spy["ts"].dt.epoch("us")
    assert queries.last_bar_ts(store, "SIM:SPY") == epochs.max()
    assert queries.first_bar_ts(store, "SIM:SPY") == epochs.min()
    assert queries.stored_instruments(store) == ["SIM:AAPL", "SIM:SPY"]
    counts = queries.table_counts(store)
    assert counts == {
        "bars_1m": spy.height + len(range(0, 3 * 1440, 7)),
        "ticks": 0,
        "service_events": 0,
    }


def test_recent_closes_filters_instruments_and_time(
    gappy_store: tuple[Store, pl.DataFrame],
) -> None:
    store, spy = gappy_store
    since = DAY0_US + 2 * US_PER_DAY
    frame = queries.recent_closes(store, ["SIM:SPY"], since)
    expected = spy.filter(pl.col("ts").dt.epoch("us") >= since)
    assert frame["instrument"].unique().to_list() == ["SIM:SPY"]
    assert frame["close"].to_list() == expected["close"].to_list()
    assert queries.recent_closes(store, [], since).is_empty()


# --- the file lock -----------------------------------------------------------------------


def test_locked_store_names_file_and_holder(home: Path) -> None:
    path = home / "sptrader.duckdb"
    with holding_database(path) as holder, pytest.raises(StoreLockedError) as caught:
        Store(path)
    message = str(caught.value)
    assert str(path) in message
    assert f"process {holder.pid}" in message
    assert caught.value.exit_code == 3
    assert "\n" not in message
    # Once the holder is gone the file opens normally.
    reopened = Store(path)
    reopened.close()


def test_the_writers_bar_frame_mixes_live_bars_and_history_without_flow() -> None:
    from sptrader.models import Bar, HistoryBarsReady, HistoryFetched
    from sptrader.store.writer import _ordered_bar_frame

    history = make_bars("SIM:SPY", [1])  # a feed's history: no order-flow columns
    live = [
        Bar("SIM:SPY", "1m", DAY0_US, 1.0, 2.0, 0.5, 1.5, 10.0, 3, 6.0, 4.0),
        Bar("SIM:SPY", "1m", DAY0_US + 2 * US_PER_MINUTE, 1.0, 2.0, 0.5, 1.5, 10.0, 3),
    ]
    fetched = HistoryFetched(
        "SIM:SPY", DAY0_US + US_PER_MINUTE, DAY0_US + 2 * US_PER_MINUTE, history
    )
    frame = _ordered_bar_frame([live[0], HistoryBarsReady(fetched), live[1]])
    assert frame.columns == [*BAR_SCHEMA, "buy_volume", "sell_volume"]
    assert frame.select("buy_volume", "sell_volume").rows() == [
        (6.0, 4.0),
        (None, None),
        (None, None),
    ]
