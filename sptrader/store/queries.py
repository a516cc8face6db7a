"""Reads: bars of any timeframe (rolled up from 1m in SQL), ranges and summaries.

``bars_between`` and ``last_bars`` return one instrument's bars in sptrader.schema's
candle layout (``CANDLE_SCHEMA``); ``bars_between_many`` adds ``instrument`` first.

Every query of the recent past carries a lower time bound: with one, DuckDB's zone maps
skip old row groups (an ART index is never used for these filters). That includes
finding an instrument's newest bar (last_bar_ts). bench/reads.py measures the reads on
21M bars: the last 1000 1m bars in 3-6 ms. Rollups scan every 1m row of the range, and
their cost depends on the file's layout: ``db compact`` writes bars_1m sorted by
(instrument, ts), which makes them 2-10x faster than on live-written (interleaved) rows.

Rolled-up buckets are multiples of the timeframe's width since the Unix epoch, in SQL
(time_bucket with an explicit epoch origin: DuckDB's default origin, Monday 2000-01-03,
shifts widths that do not divide 10,959 days, such as 2d, 7d or 7m) and in Python
(_bucket_start), so a bar's bounds agree everywhere, the chart's live bucket included.
A rolled-up volume is summed in time order (``sum(volume ORDER BY ts)``): a plain float
sum adds the partial sums of parallel threads in any order, so the same bar could come
out a few ulps different from one read to the next, or between ``bars_between`` and
``bars_between_many``; ordered, it is always the same (about +3 ms on a 30-day 1h
rollup).

Order flow (``buy_volume``, ``sell_volume``: NULL in a 1m bar whose source did not say)
rolls up as the sum of the minutes that have it, NULL only when none of the bucket's
minutes has it; that is SQL's own ``sum``, which skips NULLs. Like a 1m bar's known
sides, a rolled-up bar's buy + sell then counts only what is known (a day with one
minute fetched from candles that lack it keeps the rest of its order flow), rather than
a NULL spreading from one minute to the whole day or week.
"""

from __future__ import annotations

import math
import weakref

import polars as pl

from sptrader.clock import now_us
from sptrader.models import US_PER_DAY, US_PER_MINUTE, timeframe_minutes
from sptrader.schema import CANDLE_SCHEMA, STORED_BAR_SCHEMA
from sptrader.store.database import Store

_ONE_MINUTE_SQL = """
SELECT ts, open, high, low, close, volume, trades, buy_volume, sell_volume
FROM bars_1m
WHERE instrument = $instrument AND ts >= make_timestamp($start) AND ts < make_timestamp($end)
ORDER BY ts
"""

_ROLLUP_SQL = """
SELECT time_bucket(to_minutes($minutes), ts, TIMESTAMP '1970-01-01') AS ts,
       arg_min(open, ts) AS open,
       max(high) AS high,
       min(low) AS low,
       arg_max(close, ts) AS close,
       sum(volume ORDER BY ts) AS volume,
       sum(trades)::BIGINT AS trades,
       sum(buy_volume ORDER BY ts) AS buy_volume,
       sum(sell_volume ORDER BY ts) AS sell_volume
FROM bars_1m
WHERE instrument = $instrument AND ts >= make_timestamp($start) AND ts < make_timestamp($end)
GROUP BY 1
ORDER BY 1
"""

# The same, for several instruments at once (stacked, sorted by instrument, ts).
_ONE_MINUTE_MANY_SQL = """
SELECT instrument, ts, open, high, low, close, volume, trades, buy_volume, sell_volume
FROM bars_1m
WHERE instrument IN (SELECT unnest($instruments))
  AND ts >= make_timestamp($start) AND ts < make_timestamp($end)
ORDER BY instrument, ts
"""

_ROLLUP_MANY_SQL = """
SELECT instrument,
       time_bucket(to_minutes($minutes), ts, TIMESTAMP '1970-01-01') AS ts,
       arg_min(open, ts) AS open,
       max(high) AS high,
       min(low) AS low,
       arg_max(close, ts) AS close,
       sum(volume ORDER BY ts) AS volume,
       sum(trades)::BIGINT AS trades,
       sum(buy_volume ORDER BY ts) AS buy_volume,
       sum(sell_volume ORDER BY ts) AS sell_volume
FROM bars_1m
WHERE instrument IN (SELECT unnest($instruments))
  AND ts >= make_timestamp($start) AND ts < make_timestamp($end)
GROUP BY 1, 2
ORDER BY 1, 2
"""

_FAR_FUTURE_US = 253_402_300_799_000_000  # 9999-12-31


def _bucket_start(ts_us: int, minutes: int) -> int:
    width = minutes * US_PER_MINUTE
    return ts_us - ts_us % width


def _read_window(
    store: Store,
    one_minute_sql: str,
    rollup_sql: str,
    params: dict[str, object],
    timeframe: str,
    start_us: int | None,
    end_us: int | None,
) -> pl.DataFrame:
    """Bars opening in [start, end) by ``one_minute_sql`` (1m) or ``rollup_sql``
    (higher timeframes); ``params`` names the instrument(s)."""
    minutes = timeframe_minutes(timeframe)
    start = 0 if start_us is None else _bucket_start(start_us, minutes)
    end = _FAR_FUTURE_US if end_us is None else end_us
    if minutes == 1:
        frame = store.cursor().sql(one_minute_sql, params={**params, "start": start, "end": end})
        return frame.pl()
    # Read the 1m rows up to the end of the bucket that holds `end`, so the last bar is
    # whole, then keep the buckets that open before `end`.
    width = minutes * US_PER_MINUTE
    rows_end = min(_FAR_FUTURE_US, -(-end // width) * width)
    window = {**params, "start": start, "end": rows_end, "minutes": minutes}
    frame = store.cursor().sql(rollup_sql, params=window).pl()
    return frame.filter(pl.col("ts") < pl.lit(end).cast(pl.Datetime("us")))


def bars_between(
    store: Store, instrument: str, timeframe: str, start_us: int | None, end_us: int | None
) -> pl.DataFrame:
    """Bars whose open time is in [start, end); higher timeframes rolled up from 1m."""
    frame = _read_window(
        store,
        _ONE_MINUTE_SQL,
        _ROLLUP_SQL,
        {"instrument": instrument},
        timeframe,
        start_us,
        end_us,
    )
    if frame.is_empty():
        return empty_bars()
    return frame.with_columns(pl.col("ts").cast(pl.Datetime("us")))


def bars_between_many(
    store: Store,
    instruments: list[str],
    timeframe: str,
    start_us: int | None,
    end_us: int | None,
) -> pl.DataFrame:
    """:func:`bars_between` of several instruments in one query: the bars stacked, with
    an ``instrument`` column first, sorted by instrument, ts (an instrument with no
    bars has no rows). Each instrument's rows are exactly its ``bars_between``."""
    timeframe_minutes(timeframe)  # a bad timeframe is an error even with no instruments
    if not instruments:
        return empty_bars_many()
    frame = _read_window(
        store,
        _ONE_MINUTE_MANY_SQL,
        _ROLLUP_MANY_SQL,
        {"instruments": list(dict.fromkeys(instruments))},
        timeframe,
        start_us,
        end_us,
    )
    if frame.is_empty():
        return empty_bars_many()
    return frame.with_columns(pl.col("ts").cast(pl.Datetime("us")))


# The newest bar seen per store and instrument: a lower bound for the next look (bars
# are only ever added or replaced, and a probe that finds nothing above it falls back).
_newest_seen: weakref.WeakKeyDictionary[Store, dict[str, int]] = weakref.WeakKeyDictionary()

_NEWEST_SQL = """
SELECT epoch_us(max(ts)) FROM bars_1m
WHERE instrument = $instrument AND ts >= make_timestamp($start) AND ts < make_timestamp($end)
"""


def _newest_between(store: Store, instrument: str, start: int, end: int) -> int | None:
    params = {"instrument": instrument, "start": start, "end": end}
    row = store.cursor().execute(_NEWEST_SQL, params).fetchall()[0]
    return None if row[0] is None else int(row[0])


def last_bar_ts(store: Store, instrument: str) -> int | None:
    """Open time (µs) of the newest stored 1m bar of ``instrument``, or None.

    Looks above a lower bound first (the newest bar seen before, then a day ago), so zone
    maps skip all but the newest row groups: an unbounded max(ts) reads every row group
    that may hold the instrument (10-25 ms on 21M rows as written, 2 ms clustered).
    Whatever it finds above a bound is the newest bar, so the answer is always exact.
    """
    seen = _newest_seen.setdefault(store, {})
    bounds = {now_us() - US_PER_DAY}
    if instrument in seen:
        bounds.add(seen[instrument])
    newest = None
    for bound in sorted(bounds, reverse=True):
        newest = _newest_between(store, instrument, bound, _FAR_FUTURE_US)
        if newest is not None:
            break
    else:
        newest = _newest_between(store, instrument, 0, _FAR_FUTURE_US)
    if newest is None:
        seen.pop(instrument, None)
    else:
        seen[instrument] = newest
    return newest


def last_bars(store: Store, instrument: str, timeframe: str, count: int) -> pl.DataFrame:
    """The newest ``count`` bars, each whole (every stored minute of its bucket).

    The first read covers exactly ``count`` buckets up to the newest bar. Gaps (closed
    markets, missing data) or a short history leave it short: then older slices are read
    and prepended, each sized by the share of buckets found full so far (FX over 30
    days: 5 of 7 days), until there are ``count`` bars or nothing older. Slices meet on
    bucket bounds, so no bar is split between two reads.
    """
    minutes = timeframe_minutes(timeframe)
    if count <= 0:
        return empty_bars()
    newest = last_bar_ts(store, instrument)
    if newest is None:
        return empty_bars()
    width = minutes * US_PER_MINUTE
    top = _bucket_start(newest, minutes) + width
    start = top - count * width
    pieces = [bars_between(store, instrument, timeframe, start, None)]
    have = pieces[0].height  # at least 1: the window holds the newest bar
    looked = count  # buckets read so far (jumped gaps not counted)
    jumped = False
    while have < count:
        more = count - have
        if jumped:
            grow = more  # just landed on stored bars: expect them dense
        else:
            # Expect the older buckets as full as the ones read, with a margin; at most
            # 4x what was read so far, so one sparse stretch cannot pull in years of rows.
            grow = max(more, min(math.ceil(more * looked / have * 1.25), 4 * looked))
        piece = bars_between(store, instrument, timeframe, start - grow * width, start)
        looked += grow
        start -= grow * width
        jumped = piece.is_empty()
        if jumped:
            # A gap wider than the slice, or the start of the history: go to the
            # newest bar before it, if any.
            older = _newest_between(store, instrument, 0, start)
            if older is None:
                break
            start = _bucket_start(older, minutes) + width
            continue
        pieces.append(piece)
        have += piece.height
    if len(pieces) == 1:
        return pieces[0].tail(count)
    return pl.concat(reversed(pieces)).tail(count)


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
            schema={name: STORED_BAR_SCHEMA[name] for name in ("instrument", "ts", "open", "close")}
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
    return pl.DataFrame(schema=CANDLE_SCHEMA)


def empty_bars_many() -> pl.DataFrame:
    """No bars, with the ``instrument`` column of :func:`bars_between_many`."""
    return pl.DataFrame(schema=STORED_BAR_SCHEMA)
