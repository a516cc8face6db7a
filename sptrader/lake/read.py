"""Reading the lake: a range of one instrument's bars in the store's layout, and what
the lake holds of each instrument (from the Delta log's file statistics: no data file
is read)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import polars as pl
import pyarrow as pa

from sptrader.config import LakeConfig
from sptrader.lake.append import lake_error, open_table
from sptrader.lake.location import Lake, LakeError, lake_of
from sptrader.models import US_PER_DAY
from sptrader.schema import CANDLE_COLUMNS, CANDLE_SCHEMA

_EPOCH = datetime(1970, 1, 1)
_FIRST_DAY = (datetime(1, 1, 1) - _EPOCH).days
_LAST_DAY = (datetime(9999, 12, 31) - _EPOCH).days


@dataclass(frozen=True, slots=True)
class LakeCoverage:
    """What the lake holds of one instrument's 1m bars."""

    instrument: str
    first_us: int
    last_us: int
    rows: int
    days: int  # UTC days with at least one bar


def _day(ts_us: int) -> str:
    """The UTC date of ``ts_us`` (ISO, as the ``date`` partition holds it), clamped to
    the years 1..9999."""
    days = min(max(ts_us // US_PER_DAY, _FIRST_DAY), _LAST_DAY)
    return (_EPOCH + timedelta(days=days)).date().isoformat()


def _table(lake: Lake):
    table = open_table(lake, lake.bars_uri)
    if table is None:
        raise LakeError(f"lake {lake}: no bars table ({lake.bars_uri} is not a Delta table)")
    return table


def read_bars(
    config_or_uri: LakeConfig | Lake | str,
    instrument: str,
    start_us: int,
    end_us: int,
    *,
    home: Path | None = None,
) -> pl.DataFrame:
    """The lake's 1m bars of ``instrument`` with open time in [start, end), ascending,
    as the store gives them (CANDLE_COLUMNS)."""
    lake = lake_of(config_or_uri, home)
    table = _table(lake)
    if end_us <= start_us:
        return pl.DataFrame(schema=CANDLE_SCHEMA)
    start = pl.lit(start_us).cast(pl.Datetime("us"))
    end = pl.lit(end_us).cast(pl.Datetime("us"))
    try:
        dataset = table.to_pyarrow_dataset(
            file_pruning_predicate=[
                ("instrument", "=", instrument),
                ("date", ">=", _day(start_us)),
                ("date", "<=", _day(end_us - 1)),
            ]
        )
        frame = (
            pl.scan_pyarrow_dataset(dataset)
            .filter(pl.col("ts") >= start, pl.col("ts") < end)
            .select(CANDLE_COLUMNS)
            .collect()
        )
    except Exception as error:
        raise lake_error(lake, f"cannot read {instrument}", error) from error
    return frame.cast(CANDLE_SCHEMA).sort("ts")


def coverage(
    config_or_uri: LakeConfig | Lake | str, *, home: Path | None = None
) -> list[LakeCoverage]:
    """Per instrument (sorted by name): first and last bar, rows and days held. An
    empty list when the lake has no bars table yet."""
    lake = lake_of(config_or_uri, home)
    table = open_table(lake, lake.bars_uri)
    if table is None:
        return []
    try:
        actions = pl.from_arrow(pa.table(table.get_add_actions(flatten=True)))
    except Exception as error:
        raise lake_error(lake, "cannot list files", error) from error
    assert isinstance(actions, pl.DataFrame)
    if actions.is_empty():
        return []
    if "min.ts" not in actions.columns or actions["min.ts"].null_count():
        return _coverage_by_scan(lake, table)
    summary = (
        actions.group_by("partition.instrument")
        .agg(
            pl.col("min.ts").min().dt.epoch("us").alias("first"),
            pl.col("max.ts").max().dt.epoch("us").alias("last"),
            pl.col("num_records").sum().alias("rows"),
            pl.col("partition.date").filter(pl.col("num_records") > 0).n_unique().alias("days"),
        )
        .filter(pl.col("rows") > 0)
        .sort("partition.instrument")
    )
    return [LakeCoverage(*row) for row in summary.iter_rows()]


def _coverage_by_scan(lake: Lake, table) -> list[LakeCoverage]:
    try:
        summary = (
            pl.scan_pyarrow_dataset(table.to_pyarrow_dataset())
            .group_by("instrument")
            .agg(
                pl.col("ts").min().dt.epoch("us").alias("first"),
                pl.col("ts").max().dt.epoch("us").alias("last"),
                pl.len().cast(pl.Int64).alias("rows"),
                pl.col("date").n_unique().alias("days"),
            )
            .sort("instrument")
            .collect()
        )
    except Exception as error:
        raise lake_error(lake, "cannot read coverage", error) from error
    return [LakeCoverage(*row) for row in summary.iter_rows()]
