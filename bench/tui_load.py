"""CPU and RSS of the TUI at steady state, as a user runs it (``sptrader tui`` in tmux,
160x48, so it really paints):

    .venv/bin/python bench/tui_load.py [--seconds 30] [--warmup 20] [--only default|fast]

- ``default``: a fresh home and no config (the default 8-SIM-instrument watchlist);
- ``fast``: 20 SIM instruments with ``feeds.sim.tick_rate`` set so that together they
  send about ``--events`` quotes/s (35,000 by default).

After ``--warmup`` seconds (start, seed, first paint), it samples the process for
``--seconds``: CPU % of one core (user+system time over wall time) and RSS (mean and
peak). Aims (issue 14): default <= 12 % and <= 180 MB; fast <= 25 %.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import INSTRUMENTS
from tmux_util import EURUSD_PRICED, TmuxTui
from tui_rss import rates_now

MB = 1024 * 1024


def measure(label: str, config: Path | None, warmup: float, seconds: float) -> dict:
    with tempfile.TemporaryDirectory(prefix="sptrader-load-") as tmp:
        home = Path(tmp) / "home"
        tui = TmuxTui(home, Path(tmp), config=config, width=160, height=48)
        tui.start()
        try:
            if tui.wait_for(EURUSD_PRICED, 60) is None:
                raise RuntimeError(f"{label}: no prices on screen after 60 s")
            pid = tui.app_pid()
            if pid is None:
                raise RuntimeError(f"{label}: no sptrader process")
            process = psutil.Process(pid)
            time.sleep(warmup)
            rss = []
            started = time.monotonic()
            cpu0 = sum(process.cpu_times()[:2])
            while time.monotonic() - started < seconds:
                rss.append(process.memory_info().rss)
                time.sleep(0.5)
            wall = time.monotonic() - started
            cpu = (sum(process.cpu_times()[:2]) - cpu0) / wall * 100
            threads = process.num_threads()
            tui.quit()
        finally:
            tui.kill()
    return {
        "label": label,
        "cpu": cpu,
        "rss_mean": sum(rss) / len(rss) / MB,
        "rss_peak": max(rss) / MB,
        "threads": threads,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--warmup", type=float, default=20.0)
    parser.add_argument("--events", type=float, default=35_000.0, help="quotes/s for fast")
    parser.add_argument("--only", choices=("default", "fast"))
    args = parser.parse_args()

    results = []
    if args.only in (None, "default"):
        results.append(measure("default (8 SIM)", None, args.warmup, args.seconds))
    if args.only in (None, "fast"):
        base = sum(rates_now(1.0, args.warmup + args.seconds + 60).values())
        multiplier = math.ceil(args.events / base)
        with tempfile.TemporaryDirectory(prefix="sptrader-load-config-") as tmp:
            config = Path(tmp) / "config.toml"
            watchlist = ", ".join(f'"{name}"' for name in INSTRUMENTS)
            config.write_text(
                f"watchlist = [{watchlist}]\n\n[feeds.sim]\ntick_rate = {multiplier}\n",
                encoding="utf-8",
            )
            label = f"20 SIM at ~{base * multiplier:,.0f} quotes/s (tick_rate {multiplier})"
            results.append(measure(label, config, args.warmup, args.seconds))
    print(f"{'scenario':<48} {'CPU %':>6} {'RSS mean':>9} {'RSS peak':>9} {'threads':>7}")
    for row in results:
        print(
            f"{row['label']:<48} {row['cpu']:>6.1f} {row['rss_mean']:>7.0f}MB"
            f" {row['rss_peak']:>7.0f}MB {row['threads']:>7}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
