"""Chart reads on a big store: last N bars (1m and rolled up) and a 30-day window.

Builds a store of 1m bars in a temporary directory (default: 48 instruments x 365 days
up to the current minute; half 24/7 crypto, half FX closed at the weekend; every 8th
instrument stopped 30 days ago: about 21M rows), written through Store.upsert_bars in
time order, a week of every instrument per batch. Copies of it in other physical
layouts are then timed the same way:

    as-written   the generated file: each week sorted by (instrument, ts), as backfills
                 and bulk imports leave it
    interleaved  sorted by (ts, instrument): what live ingestion leaves (every flush
                 holds a few seconds of every instrument)
    clustered    sorted by (instrument, ts): what ``sptrader db compact`` writes
    art          as-written plus an ART index on (instrument, ts)

For each: ``--queries`` reads of random live instruments (last_bars 1m/1h/1d x1000,
1d x120, 3m x1000, bars_between 1h over a random 30 days, last_bar_ts), the newest bar
of a stopped instrument with nothing remembered, and the same last_bars through the
previous implementation (``old``), printed as ``name: p50 … ms, p99 … ms`` lines, with
file sizes, build times and what EXPLAIN ANALYZE shows for the main scans.

    .venv/bin/python bench/reads.py [--instruments 48] [--days 365] [--queries 200]
                                    [--layouts as-written,interleaved,clustered,art]
                                    [--keep DIR]

``--keep DIR`` builds in DIR and leaves the files there (reused by the next run with
the same DIR); otherwise everything is removed afterwards.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import duckdb
import numpy as np
import polars as pl

from sptrader.clock import now_us
from sptrader.models import US_PER_DAY, US_PER_MINUTE, timeframe_minutes
from sptrader.schema import BAR_SCHEMA
from sptrader.store import Store, queries

STOPPED_DAYS = 30  # every 8th instrument has no bars in the last 30 days
WEEK_MINUTES = 7 * 1440

COINS = [
    "BTC", "ETH", "SOL", "BNB", "XRP", "ADA", "DOGE", "AVAX", "DOT", "LINK", "LTC", "TRX",
    "ATOM", "NEAR", "UNI", "ETC", "XLM", "FIL", "APT", "ARB", "OP", "INJ", "SUI", "PEPE",
]  # fmt: skip
CURRENCIES = ["EUR", "USD", "GBP", "JPY", "CHF", "AUD", "CAD", "NZD"]


def instrument_names(count: int) -> list[str]:
    """Half crypto (BINANCE:xxxUSDT, all sharing an 8-byte prefix), half FX (OANDA:)."""
    pairs = [f"{a}_{b}" for a in CURRENCIES for b in CURRENCIES if a != b]
    crypto = [f"BINANCE:{coin}USDT" for coin in COINS]
    fx = [f"OANDA:{pair}" for pair in pairs]
    names = []
    for index in range(count):
        source = crypto if index % 2 == 0 else fx
        names.append(
            source[index // 2 % len(source)] + ("" if index < 2 * len(COINS) else str(index))
        )
    return names


def fx_open(minutes: np.ndarray) -> np.ndarray:
    """FX trades from Sunday 22:00 to Friday 22:00 UTC (epoch day 0 was a Thursday)."""
    weekday = (minutes // 1440 + 3) % 7
    hour = minutes % 1440 // 60
    closed = (weekday == 5) | ((weekday == 4) & (hour >= 22)) | ((weekday == 6) & (hour < 22))
    return ~closed


def is_stopped(index: int) -> bool:
    return index % 8 == 7


def generate_store(
    path: Path, instruments: int, days: int, end_minute: int, seed: int = 1
) -> dict[str, float]:
    """Write ``days`` of 1m bars up to ``end_minute`` week by week (every instrument per
    batch, vectorised in numpy) through Store.upsert_bars."""
    rng = np.random.default_rng(seed)
    names = pl.Series("instrument", instrument_names(instruments))
    is_fx = np.array([index % 2 == 1 for index in range(instruments)])
    stopped = np.array([is_stopped(index) for index in range(instruments)])
    stop_minute = end_minute - STOPPED_DAYS * 1440
    last_close = rng.uniform(1, 1000, instruments)
    first_minute = end_minute - days * 1440
    store = Store(path)
    store.migrate()
    generating = writing = 0.0
    rows = 0
    try:
        for week_start in range(first_minute, end_minute, WEEK_MINUTES):
            started = time.perf_counter()
            minutes = np.arange(week_start, min(week_start + WEEK_MINUTES, end_minute))
            steps = rng.normal(0, 0.001, (instruments, minutes.size)) * last_close[:, None]
            opens = last_close[:, None] + steps.cumsum(axis=1)
            closes = opens + rng.normal(0, 0.0003, opens.shape) * opens
            last_close = closes[:, -1]
            keep = np.ones(opens.shape, dtype=bool)
            keep[is_fx] &= fx_open(minutes)[None, :]
            keep[stopped] &= (minutes < stop_minute)[None, :]
            which, column = np.nonzero(keep)
            o, c = opens[which, column], closes[which, column]
            spread = np.abs(rng.normal(0, 0.0003, o.size)) * o
            frame = pl.DataFrame(
                {
                    "instrument": names.gather(which),
                    "ts": pl.Series(minutes[column] * US_PER_MINUTE).cast(pl.Datetime("us")),
                    "open": o,
                    "high": np.maximum(o, c) + spread,
                    "low": np.minimum(o, c) - spread,
                    "close": c,
                    "volume": rng.exponential(100, o.size),
                    "trades": rng.integers(1, 200, o.size),
                },
                schema=BAR_SCHEMA,
            )
            generating += time.perf_counter() - started
            started = time.perf_counter()
            rows += store.upsert_bars(frame)
            writing += time.perf_counter() - started
        started = time.perf_counter()
        store.cursor().execute("CHECKPOINT")
        writing += time.perf_counter() - started
    finally:
        store.close()
    return {"rows": rows, "generate_s": generating, "write_s": writing}


# --- layouts ------------------------------------------------------------------------------

ORDERS = {"interleaved": "ts, instrument", "clustered": "instrument, ts"}


def build_layout(source: Path, layout: str, target: Path) -> None:
    """A copy of ``source`` whose bars_1m is physically in another order (the way
    ``db compact`` copies: the catalog, then the rows in the order wanted), or with an
    ART index."""
    if layout == "art":
        shutil.copyfile(source, target)
        connection = duckdb.connect(str(target))
        connection.execute("CREATE INDEX bars_1m_key ON bars_1m (instrument, ts)")
        connection.execute("CHECKPOINT")
        connection.close()
        return
    connection = duckdb.connect()
    try:
        connection.execute(f"ATTACH '{source}' AS src (READ_ONLY)")
        connection.execute(f"ATTACH '{target}' AS dst")
        connection.execute("COPY FROM DATABASE src TO dst (SCHEMA)")
        for table in ("schema_version", "ticks", "service_events"):
            connection.execute(f"INSERT INTO dst.{table} SELECT * FROM src.{table}")
        connection.execute(
            f"INSERT INTO dst.bars_1m SELECT * FROM src.bars_1m ORDER BY {ORDERS[layout]}"
        )
        connection.execute("CHECKPOINT dst")
    finally:
        connection.close()


def file_mb(path: Path) -> float:
    wal = path.with_name(path.name + ".wal")
    return (path.stat().st_size + (wal.stat().st_size if wal.exists() else 0)) / 1e6


# --- the previous implementation, for before/after figures -----------------------------


def old_last_bars(store: Store, instrument: str, timeframe: str, count: int) -> pl.DataFrame:
    """queries.last_bars before issue 5: unbounded max(ts), then count * width back,
    widening 4x and asking for the first bar (unbounded) when short."""

    def unbounded(aggregate: str) -> int | None:
        row = store.cursor().execute(
            f"SELECT epoch_us({aggregate}(ts)) FROM bars_1m WHERE instrument = ?", [instrument]
        )
        value = row.fetchall()[0][0]
        return None if value is None else int(value)

    newest = unbounded("max")
    if newest is None:
        return queries.empty_bars()
    minutes = timeframe_minutes(timeframe)
    span = count * minutes * US_PER_MINUTE
    bucket = newest - newest % (minutes * US_PER_MINUTE)
    start = bucket - span
    while True:
        frame = queries.bars_between(store, instrument, timeframe, start, None)
        if frame.height >= count or start <= 0:
            return frame.tail(count)
        if (unbounded("min") or 0) >= start:
            return frame.tail(count)
        span *= 4
        start = max(0, bucket - span)


# --- timing -------------------------------------------------------------------------------


def load() -> str:
    """The 1-minute load average over the cores: these machines are shared and noisy."""
    return f"{os.getloadavg()[0]:.1f}/{os.cpu_count()}"


def percentiles(values: list[float]) -> tuple[float, float]:
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, -(-99 * len(ordered) // 100) - 1))
    return ordered[len(ordered) // 2], ordered[rank]


def timed(
    label: str, queries_n: int, pick: Callable[[], str], read: Callable[[str], object]
) -> tuple[float, float]:
    read(pick())  # warm: the first read of a file pays for loading its metadata
    times = []
    for _ in range(queries_n):
        name = pick()
        started = time.perf_counter()
        read(name)
        times.append((time.perf_counter() - started) * 1000)
    p50, p99 = percentiles(times)
    print(f"  {label}: p50 {p50:.1f} ms, p99 {p99:.1f} ms  (load {load()})", flush=True)
    return p50, p99


_EXPLAIN_LINES = re.compile(
    r"(Type: [\w ]*\w|Row Groups Scanned: [\d /]*\d|Total Time: [\d.]+s|[\d,]+ rows?)"
)


def explain(store: Store, sql: str, params: list) -> str:
    """The scan's type, row groups read and rows produced, from EXPLAIN ANALYZE."""
    plan = store.cursor().execute("EXPLAIN ANALYZE " + sql, params).fetchall()[0][1]
    found = [m.group(1).strip() for m in _EXPLAIN_LINES.finditer(plan)]
    # the summary's time and the table scan's lines (the scan is the last operator)
    total = next((f for f in found if f.startswith("Total Time")), "")
    scan = plan[plan.rfind("Table Scan") :] if "Table Scan" in plan else plan
    scan_lines = [m.group(1).strip() for m in _EXPLAIN_LINES.finditer(scan)]
    return ", ".join([total, *scan_lines])


def run_layout(
    path: Path, layout: str, names: list[str], args: argparse.Namespace, end_us: int
) -> dict[str, tuple[float, float]]:
    rng = random.Random(args.seed)
    live = [name for index, name in enumerate(names) if not is_stopped(index)]
    stopped = [name for index, name in enumerate(names) if is_stopped(index)]
    store = Store(path)
    results: dict[str, tuple[float, float]] = {}
    n = args.queries
    try:
        print(f"{layout}: file {file_mb(path):,.0f} MB", flush=True)

        def pick_live() -> str:
            return rng.choice(live)

        for timeframe, count in (("1m", 1000), ("1h", 1000), ("1d", 1000), ("1d", 120),
                                 ("3m", 1000)):  # fmt: skip
            label = f"last_bars {timeframe} x{count}"
            results[label] = timed(
                label,
                n,
                pick_live,
                lambda name, tf=timeframe, c=count: queries.last_bars(store, name, tf, c),
            )
        window = 30 * US_PER_DAY

        def between(name: str) -> object:
            start = end_us - args.days * US_PER_DAY + rng.randrange(args.days - 30) * US_PER_DAY
            return queries.bars_between(store, name, "1h", start, start + window)

        results["bars_between 1h 30 days"] = timed("bars_between 1h 30 days", n, pick_live, between)
        results["last_bar_ts"] = timed(
            "last_bar_ts", n, pick_live, lambda name: queries.last_bar_ts(store, name)
        )

        def forgetful_last_bar_ts(name: str) -> object:
            queries._newest_seen.pop(store, None)  # the cold case
            return queries.last_bar_ts(store, name)

        label = "last_bar_ts, stopped instrument, nothing remembered"
        results[label] = timed(label, max(20, n // 4), lambda: rng.choice(stopped),
                               forgetful_last_bar_ts)  # fmt: skip
        for name in stopped:
            queries.last_bar_ts(store, name)
        label = "last_bars 1m x1000, stopped instrument, remembered"
        results[label] = timed(label, n, lambda: rng.choice(stopped),
                               lambda name: queries.last_bars(store, name, "1m", 1000))  # fmt: skip
        if not args.skip_old:
            for timeframe in ("1m", "1h", "1d"):
                label = f"old last_bars {timeframe} x1000"
                results[label] = timed(
                    label,
                    n,
                    pick_live,
                    lambda name, tf=timeframe: old_last_bars(store, name, tf, 1000),
                )

        name = live[1]
        newest = queries.last_bar_ts(store, name) or end_us
        for label, sql, params in (
            (
                "1m window (instrument = ? AND ts >= ?)",
                "SELECT * FROM bars_1m WHERE instrument = ? AND ts >= make_timestamp(?)",
                [name, newest - 1000 * US_PER_MINUTE],
            ),
            (
                "1h rollup of 1000 h",
                "SELECT time_bucket(INTERVAL 1 HOUR, ts) AS b, arg_min(open, ts), max(high),"
                " min(low), arg_max(close, ts), sum(volume), sum(trades) FROM bars_1m"
                " WHERE instrument = ? AND ts >= make_timestamp(?) GROUP BY 1",
                [name, newest - 1000 * 60 * US_PER_MINUTE],
            ),
            (
                "newest bar, unbounded",
                "SELECT max(ts) FROM bars_1m WHERE instrument = ?",
                [name],
            ),
            (
                "newest bar, above a day ago",
                "SELECT max(ts) FROM bars_1m WHERE instrument = ? AND ts >= make_timestamp(?)",
                [name, newest - US_PER_DAY],
            ),
            (
                "one bar (instrument = ? AND ts = ?)",
                "SELECT * FROM bars_1m WHERE instrument = ? AND ts = make_timestamp(?)",
                [name, newest],
            ),
        ):
            print(f"  EXPLAIN {label}: {explain(store, sql, params)}", flush=True)
    finally:
        store.close()
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instruments", type=int, default=48)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--layouts", default="as-written,interleaved,clustered,art")
    parser.add_argument("--skip-old", action="store_true", help="skip the old last_bars")
    parser.add_argument("--keep", type=Path, help="build in (and reuse) this directory")
    args = parser.parse_args()
    layouts = [layout.strip() for layout in args.layouts.split(",") if layout.strip()]
    root = args.keep or Path(tempfile.mkdtemp(prefix="sptrader-reads-"))
    root.mkdir(parents=True, exist_ok=True)
    names = instrument_names(args.instruments)
    base = root / "as-written.duckdb"
    end_file = root / "end_minute.txt"
    try:
        if base.exists() and end_file.exists():
            end_minute = int(end_file.read_text())
            print(f"reusing {base} (bars up to {end_minute * 60} s since the epoch)")
        else:
            for stale in root.glob("*.duckdb*"):
                stale.unlink()
            end_minute = now_us() // US_PER_MINUTE + 1
            figures = generate_store(base, args.instruments, args.days, end_minute)
            end_file.write_text(str(end_minute))
            rows = figures["rows"]
            print(
                f"generated {rows:,} 1m bars ({args.instruments} instruments x {args.days} days):"
                f" numpy/polars {figures['generate_s']:.1f} s, Store.upsert_bars in weekly"
                f" batches {figures['write_s']:.1f} s ({rows / figures['write_s'] / 1e6:.2f}M"
                f" rows/s), file {file_mb(base):,.0f} MB",
                flush=True,
            )
        end_us = end_minute * US_PER_MINUTE
        for layout in layouts:
            path = base if layout == "as-written" else root / f"{layout}.duckdb"
            if not path.exists():
                started = time.perf_counter()
                build_layout(base, layout, path)
                print(f"built {layout} in {time.perf_counter() - started:.1f} s", flush=True)
            run_layout(path, layout, names, args, end_us)
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
