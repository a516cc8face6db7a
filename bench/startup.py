"""Startup times as a user sees them.

    .venv/bin/python bench/startup.py [--help-runs 10] [--tui-runs 1]

(a) ``sptrader --help``: median wall time of 10 subprocess runs;
(b) ``sptrader tui`` in tmux (160x48) until the watchlist row of SIM:EURUSD shows a
    price in the Bid column, polling ``capture-pane`` every 20 ms: on a fresh home (the
    first start seeds 3 days of history) and on a second start with the same home.

Runs in a temporary cwd and home (the repository's ./config.toml is never read).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from tmux_util import EURUSD_PRICED, TmuxTui, sptrader_command


def help_times(runs: int, cwd: Path, env: dict[str, str]) -> list[float]:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(
            [*sptrader_command(), "--help"], cwd=cwd, env=env, capture_output=True, check=True
        )
        times.append(time.perf_counter() - started)
    return times


def tui_first_prices(
    home: Path, cwd: Path, timeout: float = 30.0
) -> tuple[float | None, float | None, str]:
    """(seconds to a priced EURUSD row, seconds to quit, last screen on failure)."""
    tui = TmuxTui(home, cwd)
    try:
        started = time.monotonic()
        tui.start()
        shown = tui.wait_for(EURUSD_PRICED, timeout)
        screen = tui.capture()
        if shown is not None:
            # A priced row next to an error dialog is not a successful start.
            problems = [
                text.strip(" │█")
                for text in screen.splitlines()
                if "failed" in text or "Error" in text
            ]
            screen = "\n".join(problems)
        quit_s = tui.quit()
        return (None if shown is None else shown - started), quit_s, screen
    finally:
        tui.kill()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--help-runs", type=int, default=10)
    parser.add_argument("--tui-runs", type=int, default=1, help="fresh-home/second-start pairs")
    args = parser.parse_args()
    if shutil.which("tmux") is None:
        print("tmux: not installed; skipping the TUI figures", file=sys.stderr)

    with tempfile.TemporaryDirectory(prefix="sptrader-bench-startup-") as temp:
        root = Path(temp)
        cwd = root / "cwd"
        cwd.mkdir()
        env = {**os.environ, "SPTRADER_HOME": str(root / "help-home")}
        env.pop("SPTRADER_CONFIG", None)

        help_times(1, cwd, env)  # warm the page cache and .pyc files
        times = help_times(args.help_runs, cwd, env)
        print(
            f"sptrader --help: {statistics.median(times):.3f} s  (median of {len(times)}; "
            f"min {min(times):.3f}, max {max(times):.3f}; {' '.join(sptrader_command())})"
        )
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        print(f"bare python startup: {time.perf_counter() - started:.3f} s  (for reference)")

        if shutil.which("tmux") is None:
            return 0
        fresh_times: list[float] = []
        second_times: list[float] = []
        for index in range(args.tui_runs):
            home = root / f"home-{index}"
            for label, bucket in (("fresh home", fresh_times), ("second start", second_times)):
                shown, quit_s, screen = tui_first_prices(home, cwd)
                if shown is None:
                    print(
                        f"tui {label}: no priced SIM:EURUSD row within 30 s; last screen:\n{screen}"
                    )
                    continue
                bucket.append(shown)
                if screen:
                    print(f"warning: the screen shows a problem: {screen[:300]}")
                quit_text = "did not exit within 10 s" if quit_s is None else f"{quit_s:.2f} s"
                print(
                    f"tui to first priced watchlist, {label}: {shown:.3f} s  (q to exit: {quit_text})"
                )
        if args.tui_runs > 1:
            for label, bucket in (("fresh home", fresh_times), ("second start", second_times)):
                if bucket:
                    print(
                        f"tui to first priced watchlist, {label}, median: {statistics.median(bucket):.3f} s"
                    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
