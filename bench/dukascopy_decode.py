"""Dukascopy tick decoding and aggregation throughput (sptrader.feeds.dukascopy).

Prints ``name: value unit`` lines; figures are medians of ``--runs`` runs (default 3).

    .venv/bin/python bench/dukascopy_decode.py [--runs 3] [--ticks 2000000]
        [--ticks-per-hour 4000] [--threads 4]

Synthetic EURUSD ticks: a random walk in points with a 1-3 point spread and round-lot
volumes, split into hours of ``--ticks-per-hour`` ticks (a busy FX hour has 3-10k).

(a) bi5 records to tick columns (numpy): one buffer of all ticks, and hour by hour
    (``decode_bi5_records`` per hour, then ``join_ticks``);
(b) the same from LZMA-compressed hour files (``decode_bi5``: decompress + decode), on
    one thread and on ``--threads`` (the feed decodes each hour in its fetch thread);
(c) JSON API hours (``decode_json_hour``: msgspec decode, cumulative sums), likewise;
(d) ticks to the store frame (``ticks_frame``) and to 1m bars (``ticks_to_bars``).

No network: this measures the CPU side of a backfill only.
"""

from __future__ import annotations

import argparse
import json
import lzma
import statistics
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import polars as pl

from sptrader.feeds.dukascopy import (
    BI5_RECORD,
    US_PER_HOUR,
    TickArrays,
    decode_bi5,
    decode_bi5_records,
    decode_json_hour,
    join_ticks,
    ticks_frame,
    ticks_to_bars,
)

DIVISOR = 100_000
START_US = 1_704_067_200_000_000  # 2024-01-01T00:00Z
INSTRUMENT = "DUKASCOPY:EURUSD"


def report(name: str, value: float, unit: str, extra: str = "") -> None:
    suffix = f"  ({extra})" if extra else ""
    print(f"{name}: {value:,.0f} {unit}{suffix}", flush=True)


def measure(runs: int, ticks: int, work: Callable[[], object]) -> tuple[float, list[float]]:
    """Median ticks/s of ``runs`` timed calls of ``work`` (after one warm-up call)."""
    work()
    rates = []
    for _ in range(runs):
        started = time.perf_counter()
        work()
        rates.append(ticks / (time.perf_counter() - started))
    return statistics.median(rates), rates


def runs_text(rates: list[float]) -> str:
    return "runs " + ", ".join(f"{rate / 1e6:.1f}M" for rate in rates)


# --- synthetic data ---------------------------------------------------------------------


def hour_records(total: int, per_hour: int, seed: int = 7) -> list[np.ndarray]:
    """Structured bi5 records, ``per_hour`` ticks in each hour, times increasing."""
    rng = np.random.default_rng(seed)
    bid = 110_000 + np.cumsum(rng.integers(-2, 3, total))
    hours = []
    for offset in range(0, total, per_hour):
        count = min(per_hour, total - offset)
        records = np.zeros(count, dtype=BI5_RECORD)
        records["ms"] = np.sort(rng.integers(0, 3_600_000, count))
        records["bid"] = bid[offset : offset + count]
        records["ask"] = records["bid"] + rng.integers(1, 4, count)
        records["bid_volume"] = rng.integers(1, 50, count) / 4
        records["ask_volume"] = rng.integers(1, 50, count) / 4
        hours.append(records)
    return hours


def json_payload(records: np.ndarray, hour_start_us: int) -> bytes:
    """The JSON API's answer for one hour of ``records``."""
    asks = records["ask"].astype(np.int64)
    bids = records["bid"].astype(np.int64)
    return json.dumps(
        {
            "timestamp": hour_start_us // 1000,
            "multiplier": 1 / DIVISOR,
            "ask": int(asks[0]) / DIVISOR,
            "bid": int(bids[0]) / DIVISOR,
            "times": np.diff(records["ms"].astype(np.int64), prepend=0).tolist(),
            "asks": np.diff(asks, prepend=asks[0]).tolist(),
            "bids": np.diff(bids, prepend=bids[0]).tolist(),
            "askVolumes": (records["ask_volume"].astype(np.float64) * 1e6).tolist(),
            "bidVolumes": (records["bid_volume"].astype(np.float64) * 1e6).tolist(),
        }
    ).encode()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--ticks", type=int, default=2_000_000)
    parser.add_argument("--ticks-per-hour", type=int, default=4_000)
    parser.add_argument("--threads", type=int, default=4, help="workers for the threaded runs")
    args = parser.parse_args()
    runs, total, per_hour = args.runs, args.ticks, args.ticks_per_hour

    print(f"python: {sys.version.split()[0]}  numpy {np.__version__}  polars {pl.__version__}")
    hours = hour_records(total, per_hour)
    starts = [START_US + index * US_PER_HOUR for index in range(len(hours))]
    end_us = starts[-1] + US_PER_HOUR
    shape = f"{total:,} ticks in {len(hours):,} hours of {per_hour:,}"

    # (a)
    whole = np.concatenate(hours).tobytes()
    value, rates = measure(runs, total, lambda: decode_bi5_records(whole, START_US, DIVISOR))
    report(
        "(a) bi5 records decode, one buffer",
        value,
        "ticks/s",
        f"{total:,} ticks; {runs_text(rates)}",
    )
    raw_hours = [records.tobytes() for records in hours]

    def records_by_hour() -> TickArrays:
        parts = [
            decode_bi5_records(raw, start, DIVISOR)
            for raw, start in zip(raw_hours, starts, strict=True)
        ]
        return join_ticks(parts, START_US, end_us)

    value, rates = measure(runs, total, records_by_hour)
    report(
        "(a) bi5 records decode, hour by hour + join",
        value,
        "ticks/s",
        f"{shape}; {runs_text(rates)}",
    )

    # (b)
    files = [lzma.compress(raw, format=lzma.FORMAT_ALONE) for raw in raw_hours]
    compressed = sum(map(len, files))

    def bi5_files() -> TickArrays:
        parts = [
            decode_bi5(payload, start, DIVISOR)
            for payload, start in zip(files, starts, strict=True)
        ]
        return join_ticks(parts, START_US, end_us)

    value, rates = measure(runs, total, bi5_files)
    report(
        "(b) bi5 files: LZMA decompress + decode + join",
        value,
        "ticks/s",
        f"{shape}; {compressed / total:.1f} compressed bytes/tick; {runs_text(rates)}",
    )
    value, rates = measure(runs, total, lambda: [lzma.decompress(payload) for payload in files])
    report("(b) of which LZMA decompress alone", value, "ticks/s", runs_text(rates))
    with ThreadPoolExecutor(args.threads) as pool:

        def bi5_files_threaded() -> TickArrays:
            parts = list(pool.map(decode_bi5, files, starts, [DIVISOR] * len(files)))
            return join_ticks(parts, START_US, end_us)

        value, rates = measure(runs, total, bi5_files_threaded)
    report(
        f"(b) bi5 files on {args.threads} threads (as the feed fetches them)",
        value,
        "ticks/s",
        f"LZMA releases the GIL; {runs_text(rates)}",
    )

    # (c)
    payloads = [json_payload(records, start) for records, start in zip(hours, starts, strict=True)]
    size = sum(map(len, payloads))

    def json_hours() -> TickArrays:
        return join_ticks(
            [decode_json_hour(payload, DIVISOR) for payload in payloads], START_US, end_us
        )

    value, rates = measure(runs, total, json_hours)
    report(
        "(c) JSON hours decode + join",
        value,
        "ticks/s",
        f"{shape}; {size / total:.1f} JSON bytes/tick; {runs_text(rates)}",
    )
    with ThreadPoolExecutor(args.threads) as pool:

        def json_hours_threaded() -> TickArrays:
            parts = list(pool.map(decode_json_hour, payloads, [DIVISOR] * len(payloads)))
            return join_ticks(parts, START_US, end_us)

        value, rates = measure(runs, total, json_hours_threaded)
    report(
        f"(c) JSON hours on {args.threads} threads",
        value,
        "ticks/s",
        f"msgspec holds the GIL; {runs_text(rates)}",
    )
    check = json_hours()
    reference = bi5_files()
    assert all(np.array_equal(a, b) for a, b in zip(check[:3], reference[:3], strict=True))

    # (d)
    value, rates = measure(runs, total, lambda: ticks_frame(INSTRUMENT, reference))
    report("(d) tick columns to the store frame", value, "ticks/s", runs_text(rates))
    frame = ticks_frame(INSTRUMENT, reference)
    now = end_us + US_PER_HOUR
    bars = ticks_to_bars(frame, "bid", now)
    value, rates = measure(runs, total, lambda: ticks_to_bars(frame, "bid", now))
    report(
        "(d) ticks to 1m bars (bid)", value, "ticks/s", f"{bars.height:,} bars; {runs_text(rates)}"
    )
    value, rates = measure(runs, total, lambda: ticks_to_bars(frame, "mid", now))
    report("(d) ticks to 1m bars (mid)", value, "ticks/s", runs_text(rates))
    return 0


if __name__ == "__main__":
    sys.exit(main())
