"""Key or click to a redrawn chart, and what the chart's rendering costs at steady state.

    .venv/bin/python bench/chart_latency.py [--presses 24] [--steady-s 20] [--size 160x48]

Drives the real app with Textual's Pilot (headless, 160x48) on the default watchlist
(8 SIM instruments) in a temporary home, as the tests do. Every chart render shown is
timed (ChartPane._show_plot, wrapped here); a press counts from just before the key
to the first chart shown with the bars it asked for:

- timeframe keys: 1..6 in turn, once the previous press was drawn and settled;
- instrument switches: Down / Up in the watchlist (the chart follows the cursor row).

Then, with no input for ``--steady-s`` seconds on the 1m chart (prices streaming), the
CPU time spent building charts (render_candles, wrapped here, timed with the thread's
own CPU clock) as a share of one core, the renders per second, and the whole process's
CPU share for comparison.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

from sptrader.app import SptraderApp
from sptrader.config import Config, Settings, StoreConfig
from sptrader.screens import ChartPane
from sptrader.screens import chart as chart_module

TIMEFRAME_KEYS = {"1": "1m", "2": "5m", "3": "15m", "4": "1h", "5": "4h", "6": "1d"}


class Probe:
    """Every chart shown (when, what) and the CPU time of every chart built."""

    def __init__(self) -> None:
        self.shown: list[tuple[float, tuple[str, str] | None]] = []
        self.render_cpu_s = 0.0
        self.renders = 0
        self._lock = threading.Lock()

    def install(self) -> None:
        probe = self
        show_plot = ChartPane._show_plot
        render_candles = chart_module.render_candles

        def timed_show_plot(chart, *args, **kwargs):
            show_plot(chart, *args, **kwargs)
            probe.shown.append((time.perf_counter(), chart.loaded_key))

        def timed_render_candles(*args, **kwargs):
            started = time.thread_time()
            try:
                return render_candles(*args, **kwargs)
            finally:
                with probe._lock:
                    probe.render_cpu_s += time.thread_time() - started
                    probe.renders += 1

        ChartPane._show_plot = timed_show_plot
        chart_module.render_candles = timed_render_candles


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


async def until(condition, timeout: float = 30.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        await asyncio.sleep(0.002)


async def press_and_time(pilot, probe: Probe, key: str, expect) -> float:
    """Milliseconds from just before ``key`` to the first chart shown whose bars are
    ``expect()`` (instrument, timeframe); then waits for the chart to settle."""
    started = time.perf_counter()
    await pilot.press(key)
    await until(
        lambda: any(at > started and loaded == expect() for at, loaded in probe.shown),
        what=f"the chart after {key}",
    )
    shown_at = next(at for at, loaded in probe.shown if at > started and loaded == expect())
    await asyncio.sleep(0.4)  # history fetches and reloads of this press run out
    return (shown_at - started) * 1000


async def run(args) -> None:
    probe = Probe()
    probe.install()
    width, height = (int(part) for part in args.size.split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        home.mkdir()
        config = Config(store=StoreConfig(seed_days=args.seed_days))
        app = SptraderApp(Settings(home=home, config_path=None, config=config))
        async with app.run_test(size=(width, height)) as pilot:
            chart = app.query_one(ChartPane)
            first = app.client.watchlist[0]
            await until(lambda: chart.loaded_key == (first, "1m") and chart.renders, 60, "start")
            await asyncio.sleep(2.0)

            timeframe_ms = []
            keys = list(TIMEFRAME_KEYS)
            for index in range(args.presses):
                key = keys[(index + 1) % len(keys)]
                timeframe = TIMEFRAME_KEYS[key]
                timeframe_ms.append(
                    await press_and_time(
                        pilot, probe, key, lambda t=timeframe: (chart.instrument, t)
                    )
                )
            await pilot.press("1")
            await until(lambda: chart.loaded_key == (chart.instrument, "1m"), what="1m")

            app.query_one("#watchlist-table").focus()
            switch_ms = []
            names = app.client.watchlist
            for index in range(args.presses):
                # Down through the list, then Up back, and again.
                position = names.index(chart.instrument)
                going_down = (index // (len(names) - 1)) % 2 == 0
                key, target = ("down", position + 1) if going_down else ("up", position - 1)
                expected = (names[target], "1m")
                switch_ms.append(await press_and_time(pilot, probe, key, lambda e=expected: e))

            await asyncio.sleep(3.0)
            process = psutil.Process()
            cpu_before = process.cpu_times()
            renders_before, render_cpu_before = probe.renders, probe.render_cpu_s
            started = time.perf_counter()
            await asyncio.sleep(args.steady_s)
            wall = time.perf_counter() - started
            cpu_after = process.cpu_times()
            renders = probe.renders - renders_before
            render_cpu = probe.render_cpu_s - render_cpu_before
            process_cpu = (cpu_after.user + cpu_after.system) - (
                cpu_before.user + cpu_before.system
            )
            await pilot.press("q")

    print(f"chart latency, {width}x{height}, {len(app.client.watchlist)} SIM instruments")
    for name, values in (("timeframe key 1..6", timeframe_ms), ("instrument switch", switch_ms)):
        print(
            f"  {name:20} p50 {statistics.median(values):6.0f} ms   "
            f"p95 {percentile(values, 0.95):6.0f} ms   max {max(values):6.0f} ms"
            f"   ({len(values)} presses)"
        )
    print(
        f"steady state ({wall:.0f} s, no input): chart renders {renders / wall:.2f}/s, "
        f"chart build CPU {100 * render_cpu / wall:.1f}% of a core "
        f"(whole process {100 * process_cpu / wall:.0f}%)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--presses", type=int, default=24)
    parser.add_argument("--steady-s", type=float, default=20.0)
    parser.add_argument("--size", default="160x48")
    parser.add_argument("--seed-days", type=float, default=3.0)
    args = parser.parse_args()
    asyncio.run(run(args))
    sys.exit(0)


if __name__ == "__main__":
    main()
