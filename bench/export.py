"""``sptrader export`` and ``sptrader import`` throughput, in bars/s.

    .venv/bin/python bench/export.py [--instruments 20] [--days 180] [--runs 1]
        [--skip-alternatives]

A temporary store is filled with ``--instruments`` x ``--days`` of 1m bars (20 x 180 =
5,184,000 bars, 3,600 day files per export). Then, each through the real command
(``sptrader.cli.main`` in-process, on a temporary home):

- export of every bar to Hive-partitioned Parquet, then CSV;
- import of each export (the whole directory) into a fresh home (read, check every
  row, one upsert transaction);
- for the choice of writer (skip with ``--skip-alternatives``): the same 1m bars of the
  store written with DuckDB's ``COPY ... (PARTITION_BY (instrument, date))`` and with
  polars' ``write_parquet(partition_by=...)``, each run twice to see whether a rerun
  gives identical bytes.

Figures are medians of ``--runs`` runs (default 1: one export is millions of rows),
each started after ``os.sync()`` (writeback of the previous run's hundreds of MB would
otherwise slow it); everything lives in a temporary directory.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import duckdb
import numpy as np
import polars as pl

from sptrader.cli import main
from sptrader.schema import BAR_SCHEMA
from sptrader.store import Store

START_US = 1_767_225_600_000_000  # 2026-01-01T00:00Z
MINUTE_US = 60_000_000
DAY_MINUTES = 1440


def instruments(count: int) -> list[str]:
    # Names that need escaping, as real ones do (KRAKEN:BTC/USD).
    return [f"KRAKEN:SYM{index:02d}/USD" for index in range(count)]


def fill_store(home: Path, names: list[str], days: int) -> int:
    store = Store(home / "sptrader.duckdb")
    store.migrate()
    rng = np.random.default_rng(0)
    minutes = days * DAY_MINUTES
    ts = pl.Series(START_US + np.arange(minutes, dtype=np.int64) * MINUTE_US).cast(
        pl.Datetime("us")
    )
    try:
        for name in names:
            close = 100 * np.exp(np.cumsum(rng.normal(0, 1e-4, minutes)))
            open_ = np.roll(close, 1)
            store.upsert_bars(
                pl.DataFrame(
                    {
                        "instrument": [name] * minutes,
                        "ts": ts,
                        "open": open_,
                        "high": np.maximum(open_, close) * (1 + rng.random(minutes) * 1e-4),
                        "low": np.minimum(open_, close) * (1 - rng.random(minutes) * 1e-4),
                        "close": close,
                        "volume": rng.random(minutes) * 1000,
                        "trades": rng.integers(1, 500, minutes),
                    }
                ).cast(BAR_SCHEMA)
            )
    finally:
        store.close()
    return len(names) * minutes


def cli(*argv: str) -> str:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    if code != 0:
        raise SystemExit(f"sptrader {' '.join(argv)} failed ({code}): {err.getvalue().strip()}")
    return out.getvalue().strip()


def size_and_files(root: Path) -> tuple[float, int]:
    files = [path for path in root.rglob("*") if path.is_file()]
    return sum(path.stat().st_size for path in files) / 1e6, len(files)


def digest(root: Path) -> str:
    hashed = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        if path.is_file():
            hashed.update(str(path.relative_to(root)).encode())
            hashed.update(path.read_bytes())
    return hashed.hexdigest()


def timed(
    runs: int, action: Callable[[int], None], setup: Callable[[], None] | None = None
) -> float:
    """Median seconds of ``action`` (``setup`` runs before each, untimed)."""
    seconds = []
    for index in range(runs):
        if setup is not None:
            setup()
        os.sync()  # the last run's dirty pages would throttle this run's writes
        started = time.perf_counter()
        action(index)
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds)


def main_bench() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--instruments", type=int, default=20)
    parser.add_argument("--days", type=int, default=180)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--skip-alternatives", action="store_true")
    args = parser.parse_args()
    names = instruments(args.instruments)
    end_day = time.strftime(
        "%Y-%m-%d", time.gmtime((START_US // 1_000_000) + args.days * DAY_MINUTES * 60)
    )
    rows: list[tuple[str, int, float, str]] = []

    with tempfile.TemporaryDirectory(prefix="sptrader-bench-export-") as tmp:
        root = Path(tmp)
        home = root / "home"
        started = time.perf_counter()
        bars = fill_store(home, names, args.days)
        print(
            f"store: {bars:,} bars of {len(names)} instruments x {args.days} days"
            f" (filled in {time.perf_counter() - started:.1f}s)",
            flush=True,
        )

        for fmt in ("parquet", "csv"):
            out = root / f"export-{fmt}"

            def export(_: int, fmt: str = fmt, out: Path = out) -> None:
                cli("--home", str(home), "export", *names, "--from", "2026-01-01",
                    "--to", end_day, "--format", fmt, "--out", str(out))  # fmt: skip

            seconds = timed(
                args.runs, export, lambda out=out: shutil.rmtree(out, ignore_errors=True)
            )
            megabytes, files = size_and_files(out)
            rows.append((f"export {fmt}", bars, seconds, f"{files:,} files, {megabytes:,.0f} MB"))
            print(f"  {rows[-1][0]}: {bars / seconds:,.0f} bars/s", flush=True)

            def import_(index: int, fmt: str = fmt, out: Path = out) -> None:
                cli("--home", str(root / f"import-{fmt}-{index}"), "import", str(out))

            seconds = timed(args.runs, import_)
            for index in range(args.runs):
                shutil.rmtree(root / f"import-{fmt}-{index}")
            rows.append((f"import {fmt} (directory)", bars, seconds, "checked, one transaction"))
            print(f"  {rows[-1][0]}: {bars / seconds:,.0f} bars/s", flush=True)

        if not args.skip_alternatives:
            rows += alternatives(home, root, bars)

    print()
    print(f"{'what':<40} {'bars':>11} {'seconds':>8} {'bars/s':>11}  notes")
    for name, count, seconds, notes in rows:
        print(f"{name:<40} {count:>11,} {seconds:>8.2f} {count / seconds:>11,.0f}  {notes}")


def alternatives(home: Path, root: Path, bars: int) -> list[tuple[str, int, float, str]]:
    """Other writers of the same partitioned layout, for the choice (1m, all bars)."""
    query = (
        "SELECT instrument, ts::DATE AS date, ts, open, high, low, close, volume, trades"
        " FROM bars_1m ORDER BY instrument, ts"
    )
    csv_query = query.replace("ts, open", "strftime(ts, '%Y-%m-%dT%H:%M:%SZ') AS ts, open")
    connection = duckdb.connect(str(home / "sptrader.duckdb"), read_only=True)

    def duckdb_parquet(out: Path) -> None:
        connection.execute(
            f"COPY ({query}) TO '{out}' (FORMAT parquet, PARTITION_BY (instrument, date))"
        )

    def duckdb_csv(out: Path) -> None:
        connection.execute(
            f"COPY ({csv_query}) TO '{out}' (FORMAT csv, PARTITION_BY (instrument, date))"
        )

    def polars_parquet(out: Path) -> None:
        connection.sql(query).pl().write_parquet(out, partition_by=["instrument", "date"])

    results = []
    try:
        for name, write in (
            ("duckdb COPY parquet PARTITION_BY", duckdb_parquet),
            ("duckdb COPY csv PARTITION_BY", duckdb_csv),
            ("polars write_parquet(partition_by)", polars_parquet),
        ):
            digests, seconds = [], []
            for attempt in range(2):
                out = root / f"alt-{attempt}"
                shutil.rmtree(out, ignore_errors=True)
                os.sync()
                started = time.perf_counter()
                write(out)
                seconds.append(time.perf_counter() - started)
                digests.append(digest(out))
            same = "identical" if digests[0] == digests[1] else "DIFFERENT"
            results.append((f"({name})", bars, min(seconds), f"rerun bytes {same}; best of 2"))
            print(f"  {results[-1][0]}: {bars / min(seconds):,.0f} bars/s, {same}", flush=True)
    finally:
        connection.close()
    return results


if __name__ == "__main__":
    sys.exit(main_bench())
