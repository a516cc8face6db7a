"""Appending to the lake: every call is one Delta commit (atomic: readers see all of it
or none of it) and idempotent, so a writer that crashed after a commit and sends the
same rows again does not double them.

- Bars are upserted on (instrument, ts): a bar already there is replaced by the new
  version, a new one is inserted (the store's upsert, in Delta terms). The first append
  creates the table. The upsert is a delete of exactly the batch's keys and an append,
  in one commit (``write_deltalake`` with a predicate naming each run of consecutive
  minutes of the batch, so nothing else is deleted): 3x faster than deltalake's merge
  for the sink's minute appends (bench/lake.py). A batch of more than MAX_RUNS runs
  (sparse bars) takes the merge (``TableMerger``, the same result).
- Ticks have no key (two trades may share a microsecond and their values): an append
  replaces, per instrument, the ticks of [its first ts, its last ts] with the batch, in
  the same commit (``write_deltalake`` with a predicate), so a batch sent twice is
  stored once. A batch must hold every tick of its span (the sink's do).
"""

from __future__ import annotations

import re
from pathlib import Path

import polars as pl
from deltalake import DeltaTable, write_deltalake
from deltalake.exceptions import TableNotFoundError

from sptrader.config import LakeConfig
from sptrader.lake.layout import PARTITION_BY, lake_bars, lake_ticks
from sptrader.lake.location import Lake, LakeError, lake_of

MERGE_PREDICATE = "t.instrument = s.instrument AND t.date = s.date AND t.ts = s.ts"
MAX_RUNS = 64
_MINUTE_US = 60_000_000


def open_table(lake: Lake, uri: str) -> DeltaTable | None:
    """The Delta table at ``uri``, None when there is none yet; LakeError when the
    storage cannot be reached."""
    try:
        return DeltaTable(uri, storage_options=lake.storage_options or None)
    except TableNotFoundError:
        return None
    except Exception as error:
        raise lake_error(lake, "cannot open", error) from error


def lake_error(lake: Lake, doing: str, error: BaseException) -> LakeError:
    return LakeError(f"lake {lake}: {doing}: {_reason(error)}")


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_S3_ERROR = re.compile(r"<Code>([^<]+)</Code>\s*<Message>([^<]*)</Message>")


def _reason(error: BaseException) -> str:
    """One line of deltalake's error: the store's own code and message when it sent
    one (NoSuchBucket, AccessDenied), else the first and last links of its chain of
    causes (coloured, over several lines, in deltalake's text)."""
    text = _ANSI.sub("", str(error))
    said = _S3_ERROR.search(text)
    if said:
        return f"{said[1]}: {said[2]}"
    chain = [" ".join(part.split()) for part in text.split("↳") if part.strip()]
    if len(chain) > 2:
        chain = [chain[0], chain[-1]]
    return ": ".join(chain)[:300] or type(error).__name__


def append_bars(
    config_or_uri: LakeConfig | Lake | str, frame: pl.DataFrame, *, home: Path | None = None
) -> int:
    """Merge ``frame``'s bars (at least BAR_COLUMNS; of repeated (instrument, ts) the
    last wins) into the lake's ``bars_1m`` in one commit; the rows written."""
    lake = lake_of(config_or_uri, home)
    bars = lake_bars(frame)
    if bars.is_empty():
        return 0
    table = open_table(lake, lake.bars_uri)
    try:
        if table is None:
            write_deltalake(
                lake.bars_uri,
                bars,
                partition_by=PARTITION_BY,
                mode="append",
                storage_options=lake.storage_options or None,
            )
        else:
            predicate = _runs_predicate(bars)
            if predicate is not None:
                write_deltalake(
                    table, bars, partition_by=PARTITION_BY, mode="overwrite", predicate=predicate
                )
            else:
                (
                    table.merge(bars, MERGE_PREDICATE, source_alias="s", target_alias="t")
                    .when_matched_update_all()
                    .when_not_matched_insert_all()
                    .execute()
                )
    except Exception as error:
        raise lake_error(lake, "cannot append bars", error) from error
    return bars.height


def _runs_predicate(bars: pl.DataFrame) -> str | None:
    """A predicate true for exactly the (instrument, ts) keys of ``bars`` (sorted, one
    row per key): one clause per run of consecutive minutes, the instruments sharing a
    run in one IN list; None when there are more than MAX_RUNS runs."""
    epoch = pl.col("ts").dt.epoch("us")
    runs = (
        bars.select("instrument", "ts", "date")
        .with_columns(
            ((epoch.diff() != _MINUTE_US).fill_null(True).cum_sum()).over("instrument").alias("run")
        )
        .group_by("instrument", "run", maintain_order=True)
        .agg(
            pl.col("ts").first().alias("first"),
            pl.col("ts").last().alias("last"),
            pl.col("date").first().alias("first_day"),
            pl.col("date").last().alias("last_day"),
        )
        .group_by("first", "last", "first_day", "last_day", maintain_order=True)
        .agg(pl.col("instrument"))
    )
    if runs.height > MAX_RUNS:
        return None
    return " OR ".join(
        f"(instrument IN ({', '.join(_quoted(name) for name in names)})"
        f" AND date >= '{first_day.isoformat()}' AND date <= '{last_day.isoformat()}'"
        f" AND ts >= '{first.isoformat(sep=' ')}' AND ts <= '{last.isoformat(sep=' ')}')"
        for first, last, first_day, last_day, names in runs.iter_rows()
    )


def append_ticks(
    config_or_uri: LakeConfig | Lake | str, frame: pl.DataFrame, *, home: Path | None = None
) -> int:
    """Write ``frame``'s ticks to the lake's ``ticks`` in one commit, replacing those of
    each instrument's span of the batch; the rows written."""
    lake = lake_of(config_or_uri, home)
    ticks = lake_ticks(frame)
    if ticks.is_empty():
        return 0
    table = open_table(lake, lake.ticks_uri)
    options = lake.storage_options or None
    try:
        if table is None:
            write_deltalake(
                lake.ticks_uri,
                ticks,
                partition_by=PARTITION_BY,
                mode="append",
                storage_options=options,
            )
        else:
            write_deltalake(
                table,
                ticks,
                partition_by=PARTITION_BY,
                mode="overwrite",
                predicate=_spans_predicate(ticks),
            )
    except Exception as error:
        raise lake_error(lake, "cannot append ticks", error) from error
    return ticks.height


def _spans_predicate(ticks: pl.DataFrame) -> str:
    spans = ticks.group_by("instrument", maintain_order=True).agg(
        pl.col("ts").min().alias("first"),
        pl.col("ts").max().alias("last"),
        pl.col("date").min().alias("first_day"),
        pl.col("date").max().alias("last_day"),
    )
    clauses = [
        f"(instrument = {_quoted(instrument)}"
        f" AND date >= '{first_day.isoformat()}' AND date <= '{last_day.isoformat()}'"
        f" AND ts >= '{first.isoformat(sep=' ')}' AND ts <= '{last.isoformat(sep=' ')}')"
        for instrument, first, last, first_day, last_day in spans.iter_rows()
    ]
    return " OR ".join(clauses)


def _quoted(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"
