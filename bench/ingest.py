"""DuckDB ingest through the store (sptrader.store.Store) and the StoreWriter.

Prints ``name: value unit`` lines; figures are medians of ``--runs`` runs (default 3).

    .venv/bin/python bench/ingest.py [--runs 3] [--skip-executemany]

(a) Store.append_ticks with polars batches of 100k and 1M rows;
(b) Store.upsert_bars at 100k-row batches, new bars and re-upserting stored bars;
(c) for contrast, ``executemany`` of 10k rows into a plain table;
(d) the StoreWriter end to end: BarClosed events / ticks published on a Bus, consumed by
    StoreWriter.run (its flushes run in a thread), until every row is in the file.

Everything happens in a temporary directory that is removed afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
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

from sptrader.bus import Bus
from sptrader.config import StoreConfig
from sptrader.models import US_PER_MINUTE, Bar, BarClosed, QuoteReceived, TradeReceived
from sptrader.store import Store
from sptrader.store.writer import StoreWriter
from sptrader.supervisor import ServiceContext

INSTRUMENTS = [f"SIM:SYM{index:02d}" for index in range(20)]
START_US = 1_767_225_600_000_000  # 2026-01-01T00:00Z


def report(name: str, value: float, unit: str, extra: str = "") -> None:
    suffix = f"  ({extra})" if extra else ""
    print(f"{name}: {value:,.0f} {unit}{suffix}", flush=True)


def median_of(runs: int, measure: Callable[[Path], float], root: Path) -> tuple[float, list[float]]:
    values = []
    for index in range(runs):
        directory = root / f"run-{measure.__name__}-{index}"
        directory.mkdir()
        try:
            values.append(measure(directory))
        finally:
            shutil.rmtree(directory, ignore_errors=True)
    return statistics.median(values), values


def open_store(directory: Path) -> Store:
    store = Store(directory / "bench.duckdb")
    store.migrate()
    return store


# --- synthetic data ---------------------------------------------------------------------


def tick_frame(rows: int, offset: int = 0) -> pl.DataFrame:
    """``rows`` ticks of 20 instruments, interleaved, 10 ms apart per instrument; about a
    third are trades (price/size), the rest quotes (bid/ask)."""
    rng = np.random.default_rng(offset)
    index = np.arange(offset, offset + rows, dtype=np.int64)
    is_trade = rng.random(rows) < 0.35
    mid = 100 + np.cumsum(rng.normal(0, 0.01, rows))
    nan = np.full(rows, np.nan)
    return pl.DataFrame(
        {
            "instrument": pl.Series(np.array(INSTRUMENTS)[index % 20]),
            "ts": pl.Series(START_US + index // 20 * 10_000).cast(pl.Datetime("us")),
            "bid": np.where(is_trade, nan, mid - 0.01),
            "ask": np.where(is_trade, nan, mid + 0.01),
            "bid_size": np.where(is_trade, nan, rng.lognormal(0, 0.5, rows)),
            "ask_size": np.where(is_trade, nan, rng.lognormal(0, 0.5, rows)),
            "price": np.where(is_trade, mid, nan),
            "size": np.where(is_trade, rng.lognormal(-1, 0.8, rows), nan),
        }
    ).with_columns(pl.col(pl.Float64).fill_nan(None))


def bar_frame(rows: int, first_minute: int) -> pl.DataFrame:
    """``rows`` 1m bars: 20 instruments x consecutive minutes from ``first_minute``."""
    per_instrument = rows // len(INSTRUMENTS)
    rng = np.random.default_rng(first_minute)
    minutes = np.arange(first_minute, first_minute + per_instrument, dtype=np.int64)
    ts = np.tile(START_US + minutes * US_PER_MINUTE, len(INSTRUMENTS))
    names = np.repeat(np.array(INSTRUMENTS), per_instrument)
    close = 100 + rng.normal(0, 1, len(ts))
    return pl.DataFrame(
        {
            "instrument": names,
            "ts": pl.Series(ts).cast(pl.Datetime("us")),
            "open": close + 0.1,
            "high": close + 0.5,
            "low": close - 0.5,
            "close": close,
            "volume": rng.lognormal(3, 1, len(ts)),
            "trades": rng.integers(1, 500, len(ts)),
        }
    )


# --- (a) ticks ------------------------------------------------------------------------


def make_append_ticks(batch_rows: int, total_rows: int) -> Callable[[Path], float]:
    batches = [tick_frame(batch_rows, offset) for offset in range(0, total_rows, batch_rows)]

    def append_ticks(directory: Path) -> float:
        store = open_store(directory)
        try:
            started = time.perf_counter()
            written = sum(store.append_ticks(batch) for batch in batches)
            elapsed = time.perf_counter() - started
            stored = store.cursor().execute("SELECT count(*) FROM ticks").fetchall()[0][0]
            assert stored == written == total_rows, (stored, written)
            return written / elapsed
        finally:
            store.close()

    return append_ticks


# --- (b) bars ---------------------------------------------------------------------------


def make_upsert_bars(batch_rows: int, batches: int) -> tuple[Callable, Callable]:
    per_instrument = batch_rows // len(INSTRUMENTS)
    frames = [bar_frame(batch_rows, index * per_instrument) for index in range(batches)]
    total = batch_rows * batches
    results: dict[str, list[float]] = {"new": [], "again": []}

    def upsert_bars(directory: Path) -> float:
        store = open_store(directory)
        try:
            started = time.perf_counter()
            for frame in frames:
                store.upsert_bars(frame)
            new_rate = total / (time.perf_counter() - started)
            started = time.perf_counter()
            for frame in frames:
                store.upsert_bars(frame)
            again_rate = total / (time.perf_counter() - started)
            stored = store.cursor().execute("SELECT count(*) FROM bars_1m").fetchall()[0][0]
            duplicates = (
                store.cursor()
                .execute(
                    "SELECT count(*) FROM (SELECT instrument, ts FROM bars_1m"
                    " GROUP BY ALL HAVING count(*) > 1)"
                )
                .fetchall()[0][0]
            )
            assert stored == total and duplicates == 0, (stored, duplicates)
            results["new"].append(new_rate)
            results["again"].append(again_rate)
            return new_rate
        finally:
            store.close()

    return upsert_bars, lambda: results


# --- (c) executemany ----------------------------------------------------------------------


def make_executemany(rows: int) -> Callable[[Path], float]:
    frame = tick_frame(rows)
    records = [
        (instrument, ts, bid, ask, bid_size, ask_size, price, size)
        for instrument, ts, bid, ask, bid_size, ask_size, price, size in frame.iter_rows()
    ]

    def executemany(directory: Path) -> float:
        connection = duckdb.connect(str(directory / "plain.duckdb"))
        try:
            connection.execute(
                "CREATE TABLE ticks (instrument VARCHAR, ts TIMESTAMP, bid DOUBLE, ask DOUBLE,"
                " bid_size DOUBLE, ask_size DOUBLE, price DOUBLE, size DOUBLE)"
            )
            started = time.perf_counter()
            connection.executemany("INSERT INTO ticks VALUES (?, ?, ?, ?, ?, ?, ?, ?)", records)
            elapsed = time.perf_counter() - started
            assert connection.execute("SELECT count(*) FROM ticks").fetchall()[0][0] == rows
            return rows / elapsed
        finally:
            connection.close()

    return executemany


# --- (d) the StoreWriter ------------------------------------------------------------------


def tick_events(count: int) -> list[object]:
    rng = np.random.default_rng(7)
    mids = (100 + np.cumsum(rng.normal(0, 0.01, count))).tolist()
    draws = rng.random(count).tolist()
    events: list[object] = []
    for index in range(count):
        instrument = INSTRUMENTS[index % 20]
        ts = START_US + index // 20 * 10_000
        mid = mids[index]
        if draws[index] < 0.35:
            events.append(TradeReceived(instrument, ts, mid, 1.5))
        else:
            events.append(QuoteReceived(instrument, ts, mid - 0.01, mid + 0.01, 2.0, 3.0))
    return events


def bar_events(count: int) -> list[object]:
    """BarClosed events as the BarBuilder emits them: minute by minute, 20 instruments."""
    rng = np.random.default_rng(8)
    closes = (100 + rng.normal(0, 1, count)).tolist()
    events: list[object] = []
    for index in range(count):
        minute, instrument = divmod(index, len(INSTRUMENTS))
        close = closes[index]
        events.append(
            BarClosed(
                Bar(
                    INSTRUMENTS[instrument],
                    "1m",
                    START_US + minute * US_PER_MINUTE,
                    close + 0.1,
                    close + 0.5,
                    close - 0.5,
                    close,
                    42.0,
                    17,
                )
            )
        )
    return events


async def drive_writer(store: Store, events: list[object], publish_batch: int) -> tuple[float, int]:
    """Publish ``events`` in batches (yielding after each, as a feed does) and return the
    wall time until the writer has written every row, and the writer's flush count."""
    bus = Bus()
    writer = StoreWriter(store, bus, StoreConfig(keep_ticks=["*"]))
    context = ServiceContext("store", bus)
    task = asyncio.create_task(writer.run(context))
    await asyncio.sleep(0)
    total = len(events)
    started = time.perf_counter()
    for offset in range(0, total, publish_batch):
        await bus.publish(events[offset : offset + publish_batch])
        await asyncio.sleep(0)
    while writer.rows_written < total:
        await asyncio.sleep(0.002)
    elapsed = time.perf_counter() - started
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return elapsed, writer.flushes


def make_writer(kind: str, events: list[object], publish_batch: int) -> Callable[[Path], float]:
    table = "ticks" if kind == "ticks" else "bars_1m"
    flushes: list[int] = []

    def writer(directory: Path) -> float:
        store = open_store(directory)
        try:
            elapsed, count = asyncio.run(drive_writer(store, events, publish_batch))
            stored = store.cursor().execute(f"SELECT count(*) FROM {table}").fetchall()[0][0]
            assert stored == len(events), (stored, len(events))
            flushes.append(count)
            return len(events) / elapsed
        finally:
            store.close()

    writer.__name__ = f"writer_{kind}"
    writer.flushes = flushes  # type: ignore[attr-defined]
    return writer


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--skip-executemany", action="store_true", help="skip (c), which takes ~30 s"
    )
    parser.add_argument("--writer-ticks", type=int, default=1_000_000)
    parser.add_argument("--writer-bars", type=int, default=300_000)
    args = parser.parse_args()
    runs = args.runs

    print(f"python: {sys.version.split()[0]}  duckdb {duckdb.__version__}  polars {pl.__version__}")
    with tempfile.TemporaryDirectory(prefix="sptrader-bench-ingest-") as temp:
        root = Path(temp)

        # (a)
        for batch, total in ((100_000, 2_000_000), (1_000_000, 3_000_000)):
            measure = make_append_ticks(batch, total)
            measure.__name__ = f"ticks_{batch}"
            value, values = median_of(runs, measure, root)
            report(
                f"append_ticks batch={batch:,}",
                value,
                "rows/s",
                f"{total:,} rows per run; runs {', '.join(f'{v / 1e6:.2f}M' for v in values)}",
            )

        # (b)
        upsert, results = make_upsert_bars(100_000, 10)
        median_of(runs, upsert, root)
        for key, label in (("new", "new bars"), ("again", "re-upsert of stored bars")):
            values = results()[key]
            report(
                f"upsert_bars batch=100,000 {label}",
                statistics.median(values),
                "rows/s",
                f"1,000,000 rows per run; runs {', '.join(f'{v / 1e6:.2f}M' for v in values)}",
            )

        # (c)
        if not args.skip_executemany:
            value, values = median_of(runs, make_executemany(10_000), root)
            report(
                "executemany 10k rows, plain table",
                value,
                "rows/s",
                f"runs {', '.join(f'{v:,.0f}' for v in values)}",
            )

        # (d)
        for kind, events, batch in (
            ("ticks", tick_events(args.writer_ticks), 2_000),
            ("bars", bar_events(args.writer_bars), 200),
        ):
            measure = make_writer(kind, events, batch)
            value, values = median_of(runs, measure, root)
            report(
                f"StoreWriter {kind} end to end (bus -> writer -> DuckDB)",
                value,
                "rows/s",
                f"{len(events):,} events published {batch:,} per batch; flushes per run "
                f"{measure.flushes}; runs {', '.join(f'{v / 1e6:.2f}M' for v in values)}",
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
