"""Reads: bars of any timeframe (rolled up from 1m in SQL), ranges and summaries.

Every query of the recent past carries a lower time bound: with one, DuckDB's zone maps
skip old row groups (p50 5 ms for the last 1000 bars on 21M rows; 17-20 ms without).
"""

from __future__ import annotations

import polars as pl

from sptrader.models import US_PER_MINUTE, timeframe_minutes
from sptrader.store.database import BAR_SCHEMA, Store

OUTPUT_COLUMNS = ["ts", "open", "high", "low", "close", "volume", "trades"]

_ONE_MINUTE_SQL = """
SELECT ts, open, high, low, close, volume, trades
FROM bars_1m
WHERE instrument = $instrument AND ts >= make_timestamp($start) AND ts < make_timestamp($end)
ORDER BY ts
"""

_ROLLUP_SQL = """
SELECT time_bucket(to_minutes($minutes), ts) AS ts,
       arg_min(open, ts) AS open,
       max(high) AS high,
       min(low) AS low,
       arg_max(close, ts) AS close,
       sum(volume) AS volume,
       sum(trades)::BIGINT AS trades
FROM bars_1m
WHERE instrument = $instrument AND ts >= make_timestamp($start) AND ts < make_timestamp($end)
GROUP BY 1
ORDER BY 1
"""

_FAR_FUTURE_US = 253_402_300_799_000_000  # 9999-12-31


def _bucket_start(ts_us: int, minutes: int) -> int:
    width = minutes * US_PER_MINUTE
    return ts_us - ts_us % width


def bars_between(
    store: Store, instrument: str, timeframe: str, start_us: int | None, end_us: int | None
) -> pl.DataFrame:
    """Bars whose open time is in [start, end); higher timeframes rolled up from 1m."""
    minutes = timeframe_minutes(timeframe)
    start = 0 if start_us is None else _bucket_start(start_us, minutes)
    end = _FAR_FUTURE_US if end_us is None else end_us
    if minutes == 1:
        params = {"instrument": instrument, "start": start, "end": end}
        frame = store.cursor().sql(_ONE_MINUTE_SQL, params=params).pl()
    else:
        # Read the 1m rows up to the end of the bucket that holds `end`, so the last
        # bar is whole, then keep the buckets that open before `end`.
        width = minutes * US_PER_MINUTE
        rows_end = min(_FAR_FUTURE_US, -(-end // width) * width)
        params = {"instrument": instrument, "start": start, "end": rows_end, "minutes": minutes}
        frame = store.cursor().sql(_ROLLUP_SQL, params=params).pl()
        frame = frame.filter(pl.col("ts") < pl.lit(end).cast(pl.Datetime("us")))
    if frame.is_empty():
        return empty_bars()
    return frame.with_columns(pl.col("ts").cast(pl.Datetime("us")))


def last_bar_ts(store: Store, instrument: str) -> int | None:
    """Open time (µs) of the newest stored 1m bar of ``instrument``, or None."""
    row = (
        store.cursor()
        .execute("SELECT epoch_us(max(ts)) FROM bars_1m WHERE instrument = ?", [instrument])
        .fetchall()[0]
    )
    return None if row is None or row[0] is None else int(row[0])


def last_bars(store: Store, instrument: str, timeframe: str, count: int) -> pl.DataFrame:
    """The newest ``count`` bars. Starts with a tight lower bound and widens it only when
    the window holds too few bars (weekends, gaps, a short history)."""
    newest = last_bar_ts(store, instrument)
    if newest is None or count <= 0:
        return empty_bars()
    minutes = timeframe_minutes(timeframe)
    span = count * minutes * US_PER_MINUTE
    start = _bucket_start(newest, minutes) - span
    while True:
        frame = bars_between(store, instrument, timeframe, start, None)
        if frame.height >= count or start <= 0:
            return frame.tail(count)
        if first_bar_ts(store, instrument) >= start:
            return frame.tail(count)
        span *= 4
        start = max(0, _bucket_start(newest, minutes) - span)


def first_bar_ts(store: Store, instrument: str) -> int:
    row = (
        store.cursor()
        .execute("SELECT epoch_us(min(ts)) FROM bars_1m WHERE instrument = ?", [instrument])
        .fetchall()[0]
    )
    return 0 if row is None or row[0] is None else int(row[0])


def stored_instruments(store: Store) -> list[str]:
    rows = store.cursor().execute("SELECT DISTINCT instrument FROM bars_1m ORDER BY 1").fetchall()
    return [row[0] for row in rows]


def recent_closes(store: Store, instruments: list[str], since_us: int) -> pl.DataFrame:
    """instrument, ts, open, close of the 1m bars since ``since_us`` (for watchlist rows)."""
    if not instruments:
        return pl.DataFrame(
            schema={
                "instrument": pl.String,
                "ts": pl.Datetime("us"),
                "open": pl.Float64,
                "close": pl.Float64,
            }
        )
    return (
        store.cursor()
        .sql(
            "SELECT instrument, ts, open, close FROM bars_1m"
            " WHERE instrument IN (SELECT unnest($instruments)) AND ts >= make_timestamp($since)"
            " ORDER BY instrument, ts",
            params={"instruments": instruments, "since": since_us},
        )
        .pl()
    )


def table_counts(store: Store) -> dict[str, int]:
    cursor = store.cursor()
    return {
        table: cursor.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0]
        for table in ("bars_1m", "ticks", "service_events")
    }


def empty_bars() -> pl.DataFrame:
    return pl.DataFrame(
        schema={name: kind for name, kind in BAR_SCHEMA.items() if name != "instrument"}
    )
