"""Helpers for the TUI benchmarks: run ``sptrader tui`` in a private tmux server (its own
socket, so a user's tmux sessions are never touched) and read the screen as a user sees
it with ``capture-pane``."""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from itertools import count
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
VENV_SPTRADER = REPO / ".venv" / "bin" / "sptrader"
# The watchlist row of SIM:EURUSD with a price in the Bid column. (The chart title
# "SIM:EURUSD  1m  1.08…" must not match: a price has a decimal point.)
EURUSD_PRICED = re.compile(r"SIM:EURUSD\s+\d[\d,]*\.\d+")
CLOCK = re.compile(r"\b(\d\d:\d\d:\d\d)\b")
_SERVERS = count()


def sptrader_command() -> list[str]:
    if VENV_SPTRADER.exists():
        return [str(VENV_SPTRADER)]
    return [sys.executable, "-m", "sptrader.cli"]


class TmuxTui:
    """One ``sptrader tui`` in a detached tmux session on a private server."""

    def __init__(
        self,
        home: Path,
        cwd: Path,
        *,
        config: Path | None = None,
        width: int = 160,
        height: int = 48,
    ) -> None:
        # A new server per instance: a killed one may take a moment to go away.
        self.socket = f"sptrader-bench-{os.getpid()}-{next(_SERVERS)}"
        self.session = "bench"
        self.home = home
        self.cwd = cwd
        self.config = config
        self.width = width
        self.height = height

    def tmux(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["tmux", "-L", self.socket, *args], capture_output=True, text=True, check=check
        )

    def start(self) -> None:
        argv = [*sptrader_command()]
        if self.config is not None:
            argv += ["--config", str(self.config)]
        argv.append("tui")
        # exec: the pane's process is sptrader itself (for RSS sampling).
        shell = f"exec env SPTRADER_HOME={shlex.quote(str(self.home))} {shlex.join(argv)}"
        result = self.tmux(
            "-f", "/dev/null",
            "new-session", "-d", "-s", self.session,
            "-x", str(self.width), "-y", str(self.height),
            "-c", str(self.cwd),
            shell,
            check=False,
        )  # fmt: skip
        if result.returncode != 0:
            raise RuntimeError(f"tmux new-session failed: {result.stderr.strip()}")
        # Keep the pane (and its last screen) if the app exits, so a crash can be shown.
        self.tmux("set-option", "-t", self.session, "remain-on-exit", "on", check=False)

    def app_pid(self) -> int | None:
        """The sptrader process (the pane runs it through exec, so it is the pane's pid)."""
        return self.pid()

    def pid(self) -> int | None:
        result = self.tmux("display-message", "-p", "-t", self.session, "#{pane_pid}", check=False)
        text = result.stdout.strip()
        return int(text) if text.isdigit() else None

    def dead(self) -> bool:
        result = self.tmux("display-message", "-p", "-t", self.session, "#{pane_dead}", check=False)
        return result.returncode != 0 or result.stdout.strip() == "1"

    def capture(self) -> str:
        result = self.tmux("capture-pane", "-p", "-t", self.session, check=False)
        return result.stdout

    def wait_for(
        self, pattern: re.Pattern[str], timeout: float, poll: float = 0.02
    ) -> float | None:
        """Seconds (monotonic clock) when ``pattern`` first showed, or None on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if pattern.search(self.capture()):
                return time.monotonic()
            if self.dead():
                return None
            time.sleep(poll)
        return None

    def send(self, *keys: str) -> None:
        self.tmux("send-keys", "-t", self.session, *keys, check=False)

    def quit(self, timeout: float = 10.0) -> float | None:
        """Press q and wait for the app to exit; seconds it took, or None."""
        started = time.monotonic()
        self.send("q")
        while time.monotonic() - started < timeout:
            if self.dead():
                return time.monotonic() - started
            time.sleep(0.05)
        return None

    def kill(self) -> None:
        """Kill the private tmux server; make sure the app it ran is gone too."""
        pid = self.pid()
        socket_path = self.tmux(
            "display-message", "-p", "#{socket_path}", check=False
        ).stdout.strip()
        self.tmux("kill-server", check=False)
        if socket_path:
            with contextlib.suppress(OSError):
                os.unlink(socket_path)  # the server leaves its socket file behind
        if pid is None:
            return
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if not _alive(pid):
                return
            time.sleep(0.05)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
            time.sleep(1)
            if not _alive(pid):
                return


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not reaped by tmux yet) counts as gone.
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
