"""Delta Lake history: append, read and compaction speed.

    .venv/bin/python bench/lake.py [--days 365] [--instruments 100] [--minutes 30] [--runs 5]

In a temporary directory (a local lake; S3 adds the network on top):

- bulk append: one year (``--days``) of 1m bars of one instrument into an empty lake
  (the table's creation), then the same bars again (the upsert on instrument and ts
  that makes a re-sent range idempotent: delete its keys + append, one commit), bars/s;
- incremental: ``--minutes`` one-minute appends of ``--instruments`` instruments (what
  the sink commits every flush when it flushes every minute), bars/s and ms per commit,
  and 10 more through deltalake's TableMerger (the alternative) for comparison;
- read: one month of the instrument from the lake (``read_bars``) and from a DuckDB
  store holding the same year (``queries.bars_between``), median of ``--runs``;
- compaction of the lake after the incremental appends (``compact``: optimize + vacuum).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from deltalake import DeltaTable

from sptrader.lake.append import MERGE_PREDICATE, append_bars
from sptrader.lake.layout import lake_bars
from sptrader.lake.maintain import compact
from sptrader.lake.read import read_bars
from sptrader.schema import STORED_BAR_SCHEMA
from sptrader.store import Store, queries

MINUTE_US = 60_000_000
DAY_US = 1440 * MINUTE_US
START_US = 1_735_689_600_000_000  # 2025-01-01T00:00Z


def bars(instruments: list[str], first_minute: int, minutes: int, seed: int) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    count = len(instruments) * minutes
    ts = (
        START_US
        + (first_minute + np.tile(np.arange(minutes, dtype=np.int64), len(instruments))) * MINUTE_US
    )
    close = 100 + rng.normal(0, 1, count).cumsum() * 0.01
    return pl.DataFrame(
        {
            "instrument": np.repeat(instruments, minutes),
            "ts": pl.Series(ts).cast(pl.Datetime("us")),
            "open": close,
            "high": close + 0.05,
            "low": close - 0.05,
            "close": close,
            "volume": rng.random(count) * 10,
            "trades": rng.integers(1, 100, count),
            "buy_volume": None,
            "sell_volume": None,
        }
    ).cast(STORED_BAR_SCHEMA)


def timed(function, *args):
    started = time.perf_counter()
    result = function(*args)
    return time.perf_counter() - started, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--instruments", type=int, default=100)
    parser.add_argument("--minutes", type=int, default=30)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="sptrader-bench-lake-") as tmp:
        root = Path(tmp)
        lake = str(root / "lake")
        year = bars(["SIM:EURUSD"], 0, args.days * 1440, 1)
        seconds, _ = timed(append_bars, lake, year)
        print(
            f"bulk append, new table: {year.height:,} bars in {seconds:.2f} s = {year.height / seconds:,.0f} bars/s"
        )
        seconds, _ = timed(append_bars, lake, year)
        print(
            f"bulk re-append (upsert): {year.height:,} bars in {seconds:.2f} s = {year.height / seconds:,.0f} bars/s"
        )

        names = [f"SIM:I{index:03d}" for index in range(args.instruments)]
        commits = []
        for minute in range(args.minutes):
            frame = bars(names, args.days * 1440 + minute, 1, minute)
            seconds, _ = timed(append_bars, lake, frame)
            commits.append(seconds)
        per = statistics.median(commits)
        print(
            f"incremental: {args.minutes} commits of {args.instruments} bars (1 minute each):"
            f" median {per * 1000:.0f} ms/commit = {args.instruments / per:,.0f} bars/s"
            f" (max {max(commits) * 1000:.0f} ms)"
        )

        # The alternative the append does not take for them: deltalake's TableMerger.
        merges = []
        for minute in range(args.minutes, args.minutes + 10):
            frame = lake_bars(bars(names, args.days * 1440 + minute, 1, minute))
            table = DeltaTable(f"{lake}/bars_1m")
            started = time.perf_counter()
            (
                table.merge(frame, MERGE_PREDICATE, source_alias="s", target_alias="t")
                .when_matched_update_all()
                .when_not_matched_insert_all()
                .execute()
            )
            merges.append(time.perf_counter() - started)
        per = statistics.median(merges)
        print(
            f"  the same with TableMerger (10 commits): median {per * 1000:.0f} ms/commit"
            f" = {args.instruments / per:,.0f} bars/s"
        )

        store = Store(root / "sptrader.duckdb")
        store.migrate()
        store.upsert_bars(year)
        month = (START_US + 59 * DAY_US, START_US + 90 * DAY_US)  # March
        lake_times, store_times = [], []
        for _ in range(args.runs):
            seconds, from_lake = timed(read_bars, lake, "SIM:EURUSD", *month)
            lake_times.append(seconds)
            seconds, from_store = timed(queries.bars_between, store, "SIM:EURUSD", "1m", *month)
            store_times.append(seconds)
        assert from_lake.height == from_store.height, (from_lake.height, from_store.height)
        store.close()
        rows = from_lake.height
        lake_s, store_s = statistics.median(lake_times), statistics.median(store_times)
        print(
            f"read one month ({rows:,} bars): lake {lake_s * 1000:.1f} ms ({rows / lake_s:,.0f} bars/s),"
            f" DuckDB store {store_s * 1000:.1f} ms ({rows / store_s:,.0f} bars/s)"
        )

        seconds, done = timed(compact, lake)
        bars_table = done[0]
        print(
            f"compaction: {seconds:.2f} s ({bars_table.files_removed:,} files into"
            f" {bars_table.files_added:,}; {bars_table.vacuumed} vacuumed, the rest kept for"
            " the 7-day retention)"
        )
        seconds, _ = timed(read_bars, lake, "SIM:EURUSD", *month)
        print(f"read one month after compaction: lake {seconds * 1000:.1f} ms")


if __name__ == "__main__":
    main()
