"""How fast `q` quits the TUI that hosts the engine, as a user sees it.

    .venv/bin/python bench/quit.py [--runs 5] [--stream-s 3]

``sptrader tui`` runs in tmux (160x48) on a fresh temporary home with the default
config (8 SIM instruments) until it streams, then `q` is pressed. Printed per run, then
the median and the worst: seconds from the key to "stopping" on screen (polled with
``capture-pane`` every 10 ms) and to the process's exit (the store flushed and closed).
Afterwards neither the pid file nor the socket may be left in the home.
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tmux_util import EURUSD_PRICED, TmuxTui

from sptrader.client import paths

STOPPING = re.compile(r"stopping")


def one_quit(home: Path, cwd: Path, stream_s: float) -> tuple[float | None, float | None]:
    tui = TmuxTui(home, cwd)
    try:
        tui.start()
        if tui.wait_for(EURUSD_PRICED, 60) is None:
            raise SystemExit(f"the TUI did not stream:\n{tui.capture()}")
        time.sleep(stream_s)
        pressed = time.monotonic()
        tui.send("q")
        said = exited = None
        while time.monotonic() - pressed < 15 and exited is None:
            if tui.dead():
                exited = time.monotonic() - pressed
            elif said is None and STOPPING.search(tui.capture()):
                said = time.monotonic() - pressed
            time.sleep(0.01)
    finally:
        tui.kill()
    if paths.pid_path(home).exists() or paths.socket_path(home).exists():
        raise SystemExit("the pid file or socket was left behind")
    return said, exited


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--stream-s", type=float, default=3.0)
    args = parser.parse_args()
    if shutil.which("tmux") is None:
        print("tmux: not installed", file=sys.stderr)
        return 1
    said_s: list[float] = []
    exit_s: list[float] = []
    with tempfile.TemporaryDirectory(prefix="sptrader-bench-quit-") as temp:
        cwd = Path(temp) / "cwd"
        cwd.mkdir()
        for run in range(args.runs):
            said, exited = one_quit(Path(temp) / f"home{run}", cwd, args.stream_s)
            if exited is None:
                print(f"run {run + 1}: did not exit within 15 s")
                continue
            exit_s.append(exited)
            if said is not None:
                said_s.append(said)
            shown = "never shown" if said is None else f"shown {said * 1000:.0f} ms"
            print(f"run {run + 1}: 'stopping' {shown}, exited {exited:.2f} s")
    if said_s:
        print(
            f"q -> 'stopping' on screen: median {statistics.median(said_s) * 1000:.0f} ms,"
            f" worst {max(said_s) * 1000:.0f} ms ({len(said_s)}/{args.runs} runs showed it)"
        )
    if exit_s:
        print(f"q -> exit: median {statistics.median(exit_s):.2f} s, worst {max(exit_s):.2f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
