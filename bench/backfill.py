"""History backfill into the store (sptrader.backfill.Backfill), in bars/s.

    .venv/bin/python bench/backfill.py [--days 5] [--duka-days 2] [--tick-rate 7]
        [--format bi5|json] [--runs 3]

(a) SIM: ``Backfill.plan`` + ``run`` of the 20-instrument watchlist (bench/common.py)
    over ``--days`` whole UTC days (a fresh SimFeed and a fresh store each run):
    bars written / wall time, with the feed's own piece size (a day) and concurrency.
(b) Dukascopy: EURUSD and USDJPY over ``--duka-days`` weekdays of synthetic ticks,
    ``--tick-rate`` ticks/s on average (Poisson per hour, a random walk in points, a 1-3
    point spread), served by tests/fake_dukascopy.py's route on a FakeHttpServer in
    this process. The hour files are built (LZMA-compressed) and cached before the
    clock starts, so the server only copies bytes. A Backfill without and with
    keep_ticks: ticks/s fetched, decoded and aggregated, bars/s and ticks stored.
(c) For reference, ``Store.upsert_bars`` alone into a fresh store of the same bar
    frames, one call per backfill piece (what the backfill does) and one call for all.

Figures are medians of ``--runs`` runs; everything lives in a temporary directory. Lines
``retries``/``failed`` count the backfill's warnings and errors (should be 0).
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import fake_dukascopy
from common import INSTRUMENTS
from fakes import FakeHttpServer, FakeRequest, FakeResponse

from sptrader.backfill import Backfill
from sptrader.config import DukascopyFeedConfig, SimFeedConfig
from sptrader.feeds.base import Feed
from sptrader.feeds.dukascopy import US_PER_HOUR, DukascopyFeed, hour_path
from sptrader.feeds.dukascopy_instruments import lookup
from sptrader.feeds.sim import SimFeed
from sptrader.models import US_PER_DAY
from sptrader.store import Store

SIM_FIRST_DAY = 20_458  # 2026-01-05, a Monday
DUKA_FIRST_DAY = 19_724  # 2024-01-02, a Tuesday
DUKA_SYMBOLS = {"EURUSD": 110_000, "USDJPY": 145_000}  # symbol: start price in points


class LogCounter(logging.Handler):
    """Counts the backfill's warnings (retries) and errors (pieces given up)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.warnings = 0
        self.errors = 0
        self.first = ""

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.ERROR:
            self.errors += 1
        else:
            self.warnings += 1
        self.first = self.first or record.getMessage()


def open_store(directory: Path, name: str) -> Store:
    store = Store(directory / f"{name}.duckdb")
    store.migrate()
    return store


def count_rows(store: Store, table: str) -> int:
    return store.cursor().execute(f"SELECT count(*) FROM {table}").fetchall()[0][0]


def line(name: str, value: float, unit: str, extra: str = "") -> None:
    suffix = f"  ({extra})" if extra else ""
    print(f"{name}: {value:,.0f} {unit}{suffix}", flush=True)


# --- one backfill ---------------------------------------------------------------------


def backfill_once(
    directory: Path,
    name: str,
    feed_factory: Callable[[], Feed],
    instruments: list[str],
    start_us: int,
    end_us: int,
    keep_ticks: bool = False,
) -> dict[str, Any]:
    """Plan and run one backfill into a fresh store; wall time, rows, pieces, log counts."""
    store = open_store(directory, name)
    counter = LogCounter()
    logger = logging.getLogger("sptrader")
    logger.addHandler(counter)
    try:
        feed = feed_factory()
        backfill = Backfill(
            store, lambda instrument: feed, keep_ticks=lambda instrument: keep_ticks
        )
        started = time.perf_counter()
        jobs = backfill.run(backfill.plan(instruments, start_us, end_us))
        elapsed = time.perf_counter() - started
        bars = count_rows(store, "bars_1m")
        ticks = count_rows(store, "ticks")
        written = sum(job.rows for job in jobs)
        assert written == bars, (written, bars)
        failed = [job.failed for job in jobs if job.failed]
        return {
            "seconds": elapsed,
            "bars": bars,
            "ticks": ticks,
            "pieces": sum(len(job.pieces) for job in jobs),
            "warnings": counter.warnings,
            "errors": counter.errors + len(failed),
            "first_problem": counter.first or (failed[0] if failed else ""),
        }
    finally:
        logger.removeHandler(counter)
        store.close()


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    ordered = sorted(runs, key=lambda run: run["seconds"])
    return ordered[len(ordered) // 2]


def problems(run: dict[str, Any]) -> str:
    text = f"retries {run['warnings']:.0f}, failed {run['errors']:.0f}"
    if run["first_problem"]:
        text += f"; first: {run['first_problem']}"
    return text


# --- (c) upsert alone -------------------------------------------------------------------


def piece_frames(
    feed: Feed, instruments: list[str], start_us: int, end_us: int
) -> list[pl.DataFrame]:
    """The bar frames the backfill's pieces (one per instrument and chunk) yield."""
    frames = []
    for instrument in instruments:
        for piece in range(start_us, end_us, feed.history_chunk_us):
            frame = feed.history(instrument, piece, min(piece + feed.history_chunk_us, end_us))
            if frame is not None and not frame.is_empty():
                frames.append(frame)
    return frames


def upsert_only(
    directory: Path, name: str, frames: list[pl.DataFrame], runs: int
) -> tuple[float, float]:
    """bars/s of upsert_bars: one call per frame, and one call with all frames."""
    total = sum(frame.height for frame in frames)
    together = pl.concat(frames)
    per_piece, single = [], []
    for run in range(runs):
        store = open_store(directory, f"{name}-upsert-{run}")
        try:
            started = time.perf_counter()
            for frame in frames:
                store.upsert_bars(frame)
            per_piece.append(total / (time.perf_counter() - started))
            assert count_rows(store, "bars_1m") == total
        finally:
            store.close()
        store = open_store(directory, f"{name}-upsert-one-{run}")
        try:
            started = time.perf_counter()
            store.upsert_bars(together)
            single.append(total / (time.perf_counter() - started))
        finally:
            store.close()
    return statistics.median(per_piece), statistics.median(single)


# --- (b) Dukascopy ticks ----------------------------------------------------------------


def weekday_hours(first_day: int, days: int) -> list[int]:
    """Hour starts of ``days`` days from ``first_day`` (callers pick weekdays)."""
    return [
        day * US_PER_DAY + hour * US_PER_HOUR
        for day in range(first_day, first_day + days)
        for hour in range(24)
    ]


def synthetic_hours(
    start_points: int, hours: list[int], tick_rate: float, seed: int
) -> dict[int, tuple[np.ndarray, ...]]:
    """Tick columns per hour: ms into the hour, ask and bid in points, ask and bid
    volume in millions."""
    rng = np.random.default_rng(seed)
    points = start_points
    by_hour = {}
    for hour in hours:
        count = int(rng.poisson(tick_rate * 3600))
        ms = np.sort(rng.integers(0, 3_600_000, count))
        bid = points + np.cumsum(rng.integers(-2, 3, count))
        points = int(bid[-1]) if count else points
        ask = bid + rng.integers(1, 4, count)
        ask_volume = np.round(rng.uniform(0.1, 5.0, count), 2)
        bid_volume = np.round(rng.uniform(0.1, 5.0, count), 2)
        by_hour[hour] = (ms, ask, bid, ask_volume, bid_volume)
    return by_hour


def dukascopy_route(
    hours: list[int], tick_rate: float, fmt: str
) -> tuple[Callable[[FakeRequest], FakeResponse | None], int, float]:
    """One route serving every symbol's hours from cached bodies (built here, in
    threads: LZMA compression dominates), the tick count, and the build time."""
    built = time.perf_counter()
    routes = []
    requests = []
    total = 0
    for seed, (symbol, start_points) in enumerate(DUKA_SYMBOLS.items()):
        divisor = lookup(symbol).divisor
        ticks_by_hour = {}
        for hour, (ms, ask, bid, ask_volume, bid_volume) in synthetic_hours(
            start_points, hours, tick_rate, seed
        ).items():
            rows = list(
                zip(
                    ms.tolist(),
                    (ask / divisor).tolist(),
                    (bid / divisor).tolist(),
                    ask_volume.tolist(),
                    bid_volume.tolist(),
                    strict=True,
                )
            )
            ticks_by_hour[hour] = rows
            total += len(rows)
            requests.append(FakeRequest("GET", hour_path(lookup(symbol), hour, fmt), {}, {}))
        routes.append(fake_dukascopy.route(ticks_by_hour, fmt, symbol=symbol))

    def uncached(request: FakeRequest) -> FakeResponse | None:
        for route in routes:
            response = route(request)
            if response is not None:
                return response
        return None

    with ThreadPoolExecutor(4) as pool:
        cache = dict(zip((r.path for r in requests), pool.map(uncached, requests), strict=True))

    def cached(request: FakeRequest) -> FakeResponse | None:
        return cache.get(request.path)

    return cached, total, time.perf_counter() - built


# --- main -------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=5, help="SIM days (20 instruments)")
    parser.add_argument("--duka-days", type=int, default=2, help="Dukascopy weekdays, max 4")
    parser.add_argument("--tick-rate", type=float, default=7.0, help="Dukascopy ticks/s")
    parser.add_argument("--format", choices=("bi5", "json"), default="bi5")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    if not 1 <= args.duka_days <= 4:
        parser.error("--duka-days must be 1 to 4 (Tuesday to Friday)")
    logging.getLogger("sptrader").setLevel(logging.WARNING)
    logging.getLogger("sptrader").propagate = False  # counted, not printed

    print(f"python {sys.version.split()[0]}; polars {pl.__version__}", flush=True)
    rows: list[tuple[str, str, str, str, str]] = []
    with tempfile.TemporaryDirectory(prefix="sptrader-bench-backfill-") as temp:
        root = Path(temp)

        # (a) SIM
        start = SIM_FIRST_DAY * US_PER_DAY
        end = start + args.days * US_PER_DAY

        def sim_feed() -> Feed:
            return SimFeed(INSTRUMENTS, SimFeedConfig())

        sim_runs = [
            backfill_once(root, f"sim-{run}", sim_feed, INSTRUMENTS, start, end)
            for run in range(args.runs)
        ]
        sim = median_run(sim_runs)
        rate = sim["bars"] / sim["seconds"]
        rows.append(
            ("SIM backfill", f"{rate:,.0f}", "", f"{sim['bars']:,.0f}", f"{sim['seconds']:.2f}")
        )
        line(
            f"(a) SIM backfill, {len(INSTRUMENTS)} instruments x {args.days} days",
            rate,
            "bars/s",
            f"{sim['bars']:,.0f} bars in {sim['seconds']:.2f}s, {sim['pieces']:.0f} pieces, "
            f"{sim_feed().max_concurrency} in flight; {problems(sim)}",
        )
        sim_frames = piece_frames(sim_feed(), INSTRUMENTS, start, end)

        # (b) Dukascopy
        hours = weekday_hours(DUKA_FIRST_DAY, args.duka_days)
        route, served_ticks, build_s = dukascopy_route(hours, args.tick_rate, args.format)
        instruments = [f"DUKASCOPY:{symbol}" for symbol in DUKA_SYMBOLS]
        d_start = DUKA_FIRST_DAY * US_PER_DAY
        d_end = d_start + args.duka_days * US_PER_DAY
        print(
            f"    Dukascopy: {served_ticks:,} ticks in {len(hours) * len(instruments)} {args.format}"
            f" hour files, built in {build_s:.1f}s (not timed)",
            flush=True,
        )
        with FakeHttpServer(route) as server:

            def duka_feed() -> Feed:
                config = DukascopyFeedConfig(enabled=True, url=server.url, format=args.format)
                return DukascopyFeed(instruments, config)

            for keep in (False, True):
                runs = [
                    backfill_once(
                        root,
                        f"duka-{keep}-{run}",
                        duka_feed,
                        instruments,
                        d_start,
                        d_end,
                        keep_ticks=keep,
                    )
                    for run in range(args.runs)
                ]
                duka = median_run(runs)
                assert duka["ticks"] == (served_ticks if keep else 0), duka["ticks"]
                tick_rate = served_ticks / duka["seconds"]
                bar_rate = duka["bars"] / duka["seconds"]
                label = "keep_ticks" if keep else "bars only"
                rows.append(
                    (
                        f"Dukascopy {label}",
                        f"{bar_rate:,.0f}",
                        f"{tick_rate:,.0f}",
                        f"{duka['bars']:,.0f}",
                        f"{duka['seconds']:.2f}",
                    )
                )
                line(
                    f"(b) Dukascopy backfill ({args.format}), {label}",
                    tick_rate,
                    "ticks/s",
                    f"{bar_rate:,.0f} bars/s; {duka['bars']:,.0f} bars and {duka['ticks']:,.0f} "
                    f"ticks stored in {duka['seconds']:.2f}s, {duka['pieces']:.0f} pieces; "
                    f"{problems(duka)}",
                )
            duka_frames = piece_frames(duka_feed(), instruments, d_start, d_end)

        # (c) upsert alone
        for name, frames in (("SIM", sim_frames), ("Dukascopy", duka_frames)):
            per_piece, single = upsert_only(root, name, frames, args.runs)
            bars = sum(frame.height for frame in frames)
            rows.append(
                (
                    f"upsert {name}, per piece",
                    f"{per_piece:,.0f}",
                    "",
                    f"{bars:,}",
                    f"{bars / per_piece:.2f}",
                )
            )
            rows.append(
                (
                    f"upsert {name}, one call",
                    f"{single:,.0f}",
                    "",
                    f"{bars:,}",
                    f"{bars / single:.2f}",
                )
            )
            line(
                f"(c) Store.upsert_bars of the {name} frames",
                per_piece,
                "bars/s",
                f"{len(frames)} calls of ~{bars // len(frames):,} bars; one call of all "
                f"{bars:,}: {single:,.0f} bars/s",
            )

    print()
    widths = (28, 12, 14, 10, 8)
    header = ("measure", "bars/s", "ticks/s", "bars", "s")
    for row in (header, *rows):
        print(
            f"{row[0]:<{widths[0]}}"
            + "".join(f"{c:>{w}}" for c, w in zip(row[1:], widths[1:], strict=True))
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
