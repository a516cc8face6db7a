"""Bars of any timeframe from the lake, and the store's bars completed by the lake's
(``--source lake`` and ``--source auto`` of ``sptrader candles`` and backtests).

Higher timeframes are rolled up from the 1m rows exactly as the store's SQL does:
buckets on multiples of the width since the epoch, open = first, high = max, low = min,
close = last, volume and trades summed, order flow summed (NULL when no row knows it);
a window's first bucket starts at the bucket holding ``start`` and its last is whole.
"""

from __future__ import annotations

import polars as pl

from sptrader.lake.append import open_table
from sptrader.lake.location import Lake, LakeError
from sptrader.lake.read import coverage, read_bars
from sptrader.models import US_PER_DAY, US_PER_MINUTE, timeframe_minutes
from sptrader.schema import CANDLE_COLUMNS, CANDLE_SCHEMA

_FAR_FUTURE_US = 253_402_300_799_000_000  # 9999-12-31


def rollup(bars: pl.DataFrame, minutes: int) -> pl.DataFrame:
    """1m bars (CANDLE_COLUMNS, ascending ts) into ``minutes`` buckets."""
    if minutes == 1 or bars.is_empty():
        return bars
    width = minutes * US_PER_MINUTE
    epoch = pl.col("ts").dt.epoch("us")
    flow = [
        pl.when(pl.col(name).is_null().all()).then(None).otherwise(pl.col(name).sum()).alias(name)
        for name in ("buy_volume", "sell_volume")
    ]
    return (
        bars.with_columns((epoch - epoch % width).cast(pl.Datetime("us")).alias("bucket"))
        .group_by("bucket", maintain_order=True)
        .agg(
            pl.col("open").first(),
            pl.col("high").max(),
            pl.col("low").min(),
            pl.col("close").last(),
            pl.col("volume").sum(),
            pl.col("trades").sum(),
            *flow,
        )
        .rename({"bucket": "ts"})
        .select(CANDLE_COLUMNS)
        .cast(CANDLE_SCHEMA)
    )


def one_minute_window(timeframe: str, start_us: int, end_us: int) -> tuple[int, int]:
    """The 1m rows a ``timeframe`` window of [start, end) rolls up: from the bucket
    holding ``start`` to the end of the one holding ``end``."""
    width = timeframe_minutes(timeframe) * US_PER_MINUTE
    return start_us - start_us % width, min(_FAR_FUTURE_US, -(-end_us // width) * width)


def finish(one_minute: pl.DataFrame, timeframe: str, end_us: int) -> pl.DataFrame:
    bars = rollup(one_minute.sort("ts"), timeframe_minutes(timeframe))
    return bars.filter(pl.col("ts") < pl.lit(end_us).cast(pl.Datetime("us")))


def lake_candles(
    lake: Lake, instrument: str, timeframe: str, start_us: int, end_us: int
) -> pl.DataFrame:
    """The lake's ``timeframe`` bars of ``instrument`` opening in [start, end)."""
    first, rows_end = one_minute_window(timeframe, start_us, end_us)
    return finish(read_bars(lake, instrument, first, rows_end), timeframe, end_us)


def last_lake_candles(
    lake: Lake, instrument: str, timeframe: str, count: int, before_us: int | None = None
) -> pl.DataFrame:
    """The lake's newest ``count`` bars of ``instrument`` (opening before ``before_us``
    when given), read back day by day from its newest."""
    held = {row.instrument: row for row in coverage(lake)}
    if instrument not in held:
        if open_table(lake, lake.bars_uri) is None:
            raise LakeError(f"lake {lake}: no bars table ({lake.bars_uri} is not a Delta table)")
        return pl.DataFrame(schema=CANDLE_SCHEMA)
    newest = held[instrument].last_us + US_PER_MINUTE
    end = newest if before_us is None else min(newest, before_us)
    start_limit = held[instrument].first_us
    minutes = timeframe_minutes(timeframe)
    span = max(US_PER_DAY, count * minutes * US_PER_MINUTE)
    start = end
    bars = pl.DataFrame(schema=CANDLE_SCHEMA)
    while start > start_limit:
        start = max(start_limit - start_limit % US_PER_DAY, start - span)
        bars = lake_candles(lake, instrument, timeframe, start, end)
        if bars.height >= count:
            break
        span *= 2
    return bars.tail(count)


#: Bars of the lake this close together count as one held run (quiet minutes inside a
#: run have no bar but are not missing); farther apart, the time between is a hole.
RUN_JOIN_US = 15 * US_PER_MINUTE


def held_runs(one_minute: pl.DataFrame) -> list[tuple[int, int]]:
    """The time 1m bars cover, as [start, end) runs (see RUN_JOIN_US)."""
    runs: list[tuple[int, int]] = []
    for ts in one_minute["ts"].dt.epoch("us").sort():
        if runs and ts - runs[-1][1] <= RUN_JOIN_US:
            runs[-1] = (runs[-1][0], ts + US_PER_MINUTE)
        else:
            runs.append((ts, ts + US_PER_MINUTE))
    return runs


def completed(store_bars: pl.DataFrame, lake_bars: pl.DataFrame) -> pl.DataFrame:
    """The store's 1m bars and the lake's of the minutes the store does not hold."""
    if lake_bars.is_empty():
        return store_bars
    if store_bars.is_empty():
        return lake_bars
    extra = lake_bars.join(store_bars.select("ts"), on="ts", how="anti")
    return pl.concat([store_bars.select(CANDLE_COLUMNS).cast(CANDLE_SCHEMA), extra]).sort("ts")
