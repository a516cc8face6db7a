"""The lake's tables: the store's columns plus a ``date`` partition column.

- ``bars_1m``: ``STORED_BAR_COLUMNS`` (``instrument ts open high low close volume trades
  buy_volume sell_volume``) and ``date`` (the UTC day of ``ts``, a DATE), partitioned by
  ``instrument`` and ``date``. ``ts`` is TIMESTAMP_NTZ in microseconds holding UTC (as
  in the store and in ``sptrader export``); one row per (instrument, ts).
- ``ticks``: ``STORED_TICK_COLUMNS`` (``instrument ts bid ask bid_size ask_size price
  size side``) and ``date``, partitioned the same way.
"""

from __future__ import annotations

from typing import Any

import polars as pl

from sptrader.schema import STORED_BAR_SCHEMA, STORED_TICK_SCHEMA, stored_bars, stored_ticks

PARTITION_BY = ["instrument", "date"]
LAKE_BAR_SCHEMA: dict[str, Any] = {**STORED_BAR_SCHEMA, "date": pl.Date}
LAKE_TICK_SCHEMA: dict[str, Any] = {**STORED_TICK_SCHEMA, "date": pl.Date}
BAR_KEY = ("instrument", "ts")


def lake_bars(frame: pl.DataFrame) -> pl.DataFrame:
    """Any bar frame (at least BAR_COLUMNS) in the lake's layout, one row per
    (instrument, ts): of repeated rows the last wins."""
    bars = stored_bars(frame).unique(subset=list(BAR_KEY), keep="last", maintain_order=True)
    return bars.with_columns(pl.col("ts").dt.date().alias("date")).sort(list(BAR_KEY))


def lake_ticks(frame: pl.DataFrame) -> pl.DataFrame:
    """Ticks (at least TICK_COLUMNS) in the lake's layout, in time order per instrument."""
    return (
        stored_ticks(frame)
        .with_columns(pl.col("ts").dt.date().alias("date"))
        .sort("instrument", "ts", maintain_order=True)
    )
