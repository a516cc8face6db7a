"""Gap check speed: `DataManager.gaps` and `status` over one year of one instrument.

A temporary store gets a year of coverage for an FX instrument (closed every weekend)
and a crypto one, each with 200 random holes, as live collection and backfills leave
it; the figures are medians and p99 of 50 runs. Run: .venv/bin/python bench/gaps.py
"""

from __future__ import annotations

import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from conftest import make_settings

from sptrader.clock import now_us
from sptrader.engine import Engine
from sptrader.intervals import subtract
from sptrader.models import US_PER_DAY, US_PER_MINUTE

RUNS = 50


def timed(function, *args) -> tuple[float, float, object]:
    samples = []
    result = None
    for _ in range(RUNS):
        started = time.perf_counter()
        result = function(*args)
        samples.append((time.perf_counter() - started) * 1000)
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.99) - 1], result


def main() -> None:
    home = Path(tempfile.mkdtemp(prefix="sptrader-bench-gaps-"))
    settings = make_settings(
        home,
        watchlist=["SIM:EURUSD"],
        feeds={"oanda": {"enabled": True, "account_id": "x"}, "binance": {"enabled": True}},
    )
    engine = Engine(settings)
    store = engine.open_store()
    now = now_us() - now_us() % US_PER_MINUTE
    start = now - 365 * US_PER_DAY
    rng = random.Random(7)
    print(f"one year, {RUNS} runs each; 200 random holes per instrument")
    print(f"{'instrument':<18} {'what':<8} {'p50 ms':>8} {'p99 ms':>8}  result")
    for instrument, source in (("OANDA:EUR_USD", "oanda"), ("BINANCE:BTCUSDT", "binance")):
        holes = []
        for _ in range(200):
            hole = start + rng.randrange(0, 365 * 1440) * US_PER_MINUTE
            holes.append((hole, hole + rng.randrange(1, 180) * US_PER_MINUTE))
        # Coverage as collected: many ranges, merged by the store as they arrive.
        pieces = subtract([(start, now)], holes)
        store.add_coverage_many([(instrument, "1m", source, s, e) for s, e in pieces])
        p50, p99, gaps = timed(engine.data.gaps, instrument, start, now)
        print(f"{instrument:<18} {'gaps':<8} {p50:>8.2f} {p99:>8.2f}  {len(gaps)} gaps")
        p50, p99, status = timed(engine.data.status, instrument, start, now)
        print(
            f"{instrument:<18} {'status':<8} {p50:>8.2f} {p99:>8.2f}"
            f"  {status.coverage_pct:.2f}% covered, {len(status.days)} days"
        )
    store.close()


if __name__ == "__main__":
    main()
