"""The headless daemon as a user drives it: ``sptrader start|stop|restart|status|service``
through the real entry point, in real processes, on a temporary home with a small config
(two SIM instruments, an hour of seeded history) so a start takes about a second.

Every wait is a poll with a deadline. Every test stops its daemon on the way out, and
kills whatever the pid file (or a start) named if it is still running, so no test leaves
a process behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from sptrader.client import paths
from sptrader.store import Store

WATCHLIST = ["SIM:EURUSD", "SIM:BTCUSD"]
CONFIG = """\
watchlist = ["SIM:EURUSD", "SIM:BTCUSD"]

[store]
seed_days = 0.05
flush_interval_ms = 50

[feeds.sim]
tick_rate = 5.0
"""
SEED_MINUTES = 72  # store.seed_days = 0.05
STARTED = re.compile(r"started \(pid (\d+)\) in (\d+\.\d+)s")
SERVICES = ("store", "bars", "broker", "sim")


# --- processes ---------------------------------------------------------------------------


def process_state(pid: int) -> str | None:
    """The kernel's state letter for ``pid`` (``Z`` for a zombie), None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            # The command name is in parentheses and may contain spaces.
            return handle.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def running(pid: int) -> bool:
    """Alive and not a zombie: a zombie is dead, only its exit status is left."""
    return process_state(pid) not in (None, "Z")


def poll(condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    """Call ``condition`` until it returns something truthy; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


@dataclass
class Daemon:
    """One temporary home and the ``sptrader`` command pointed at it."""

    tmp_path: Path
    home: Path
    config: Path
    pids: set[int] = field(default_factory=set)

    @property
    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.pop("SPTRADER_CONFIG", None)
        env.pop("SPTRADER_HOME", None)
        return env

    def command(self, *args: str) -> list[str]:
        return [
            sys.executable,
            "-m",
            "sptrader.cli",
            "--home",
            str(self.home),
            "--config",
            str(self.config),
            *args,
        ]

    def run(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            self.command(*args),
            cwd=self.tmp_path,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        for match in STARTED.finditer(result.stdout):
            self.pids.add(int(match.group(1)))
        return result

    def start(self) -> int:
        """``sptrader start``; returns the daemon's pid."""
        result = self.run("start")
        assert result.returncode == 0, describe(result)
        match = STARTED.search(result.stdout)
        assert match, describe(result)
        return int(match.group(1))

    def status(self) -> dict[str, Any]:
        result = self.run("status", "--json")
        assert result.returncode == 0, describe(result)
        return json.loads(result.stdout)

    def services(self) -> dict[str, dict[str, Any]]:
        return {service["name"]: service for service in self.status()["services"]}

    def pid_file(self) -> int | None:
        with contextlib.suppress(FileNotFoundError, ValueError):
            return int(paths.pid_path(self.home).read_text().strip())
        return None

    def cleanup(self) -> None:
        """Stop the daemon; kill -9 anything still running that a start or the pid file
        named."""
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.run("stop", timeout=30)
        named = set(self.pids)
        if (pid := self.pid_file()) is not None:
            named.add(pid)
        for pid in named:
            if running(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        for pid in named:
            with contextlib.suppress(AssertionError):
                poll(lambda pid=pid: not running(pid), 10, f"pid {pid} to die")


def describe(result: subprocess.CompletedProcess[str]) -> str:
    return f"exit {result.returncode}\nstdout: {result.stdout!r}\nstderr: {result.stderr!r}"


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The single ``sptrader: ...`` line a user's mistake gets on stderr."""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, describe(result)
    assert lines[0].startswith("sptrader: "), describe(result)
    assert "Traceback" not in result.stdout + result.stderr
    return lines[0]


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    with daemon_home(tmp_path, CONFIG) as control:
        yield control


@contextlib.contextmanager
def daemon_home(tmp_path: Path, config_text: str) -> Iterator[Daemon]:
    """A home with ``config_text`` as its config, and the daemon cleaned up after."""
    home = tmp_path / "home"
    home.mkdir()
    config = home / "config.toml"
    config.write_text(config_text)
    control = Daemon(tmp_path, home, config)
    try:
        yield control
    finally:
        control.cleanup()


def store_flushes(status: dict[str, Any]) -> int:
    store = next(service for service in status["services"] if service["name"] == "store")
    return int(store["counters"].get("flushes", 0))


def duplicate_bars(store_path: Path) -> tuple[int, list[tuple[str, int, int]]]:
    """(rows in bars_1m, instruments whose (instrument, ts) repeat with rows/distinct)."""
    store = Store(store_path)
    try:
        cursor = store.cursor()
        total = cursor.execute("SELECT count(*) FROM bars_1m").fetchall()[0][0]
        repeated = cursor.execute(
            "SELECT instrument, count(*), count(DISTINCT ts) FROM bars_1m"
            " GROUP BY 1 HAVING count(*) <> count(DISTINCT ts) ORDER BY 1"
        ).fetchall()
    finally:
        store.close()
    return total, repeated


# --- start / status / stop ---------------------------------------------------------------


def test_start_status_stop_cycle(daemon: Daemon) -> None:
    result = daemon.run("start")
    assert result.returncode == 0, describe(result)
    match = STARTED.search(result.stdout)
    assert match, describe(result)
    pid = int(match.group(1))
    assert float(match.group(2)) < 30
    assert running(pid)
    assert daemon.pid_file() == pid

    socket = paths.socket_path(daemon.home)
    assert stat.S_ISSOCK(socket.stat().st_mode)
    assert stat.S_IMODE(socket.stat().st_mode) == 0o600

    table = daemon.run("status")
    assert table.returncode == 0, describe(table)
    assert f"pid {pid}" in table.stdout
    lines = table.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("service "))
    rows = {line.split()[0]: line.split()[1] for line in lines[header + 1 :] if line.strip()}
    assert set(rows) == set(SERVICES), table.stdout
    assert set(rows.values()) <= {"starting", "running"}, table.stdout
    assert "bars" in table.stdout.splitlines()[1]  # the store line: size and row counts

    status = daemon.status()
    assert status["running"] is True
    assert status["pid"] == pid
    assert isinstance(status["uptime_s"], float) and 0 <= status["uptime_s"] < 120
    assert [service["name"] for service in status["services"]] == list(SERVICES)
    for service in status["services"]:
        assert {"state", "events_per_s", "last_event", "errors", "restarts"} <= set(service)
    assert status["store"]["rows"]["bars_1m"] >= SEED_MINUTES * len(WATCHLIST)

    stopped = daemon.run("stop")
    assert stopped.returncode == 0, describe(stopped)
    assert f"stopped (pid {pid})" in stopped.stdout
    assert not running(pid)
    assert not paths.pid_path(daemon.home).exists()
    assert not socket.exists()

    after = daemon.run("status")
    assert after.returncode == 3, describe(after)
    assert "not running" in after.stdout


def test_a_second_start_says_already_running(daemon: Daemon) -> None:
    pid = daemon.start()
    again = daemon.run("start")
    assert again.returncode == 0, describe(again)
    assert "already running" in again.stdout
    assert f"pid {pid}" in again.stdout
    assert daemon.pid_file() == pid
    assert daemon.status()["pid"] == pid


def test_nothing_running(daemon: Daemon) -> None:
    stopped = daemon.run("stop")
    assert stopped.returncode == 0, describe(stopped)
    assert stopped.stdout.strip() == "sptrader daemon is not running"
    assert stopped.stderr == ""

    status = daemon.run("status")
    assert status.returncode == 3, describe(status)
    assert "not running" in status.stdout

    as_json = daemon.run("status", "--json")
    assert as_json.returncode == 3, describe(as_json)
    assert json.loads(as_json.stdout) == {"running": False}

    services = daemon.run("service", "list")
    assert services.returncode == 3, describe(services)
    assert "not running" in services.stdout


def test_a_stale_pid_file_is_detected_and_replaced(daemon: Daemon) -> None:
    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    finished.wait(timeout=30)  # reaped: its pid names no process now
    assert process_state(finished.pid) is None
    paths.pid_path(daemon.home).write_text(f"{finished.pid}\n")

    status = daemon.run("status")
    assert status.returncode == 3, describe(status)
    assert "not running" in status.stdout

    pid = daemon.start()
    assert pid != finished.pid
    assert daemon.pid_file() == pid
    assert daemon.status()["pid"] == pid


def test_restart_replaces_the_daemon(daemon: Daemon) -> None:
    first = daemon.start()
    result = daemon.run("restart")
    assert result.returncode == 0, describe(result)
    assert f"stopped (pid {first})" in result.stdout
    match = STARTED.search(result.stdout)
    assert match, describe(result)
    second = int(match.group(1))
    assert second != first
    assert not running(first)
    assert daemon.status()["pid"] == second


def test_foreground_stops_on_sigterm(daemon: Daemon) -> None:
    process = subprocess.Popen(
        daemon.command("start", "--foreground"),
        cwd=daemon.tmp_path,
        env=daemon.env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    daemon.pids.add(process.pid)
    try:

        def answering() -> bool:
            if process.poll() is not None:
                raise AssertionError(f"the daemon exited: {process.stderr.read()}")
            return daemon.run("status").returncode == 0

        poll(answering, 30, "the foreground daemon to answer", interval=0.1)
        assert daemon.status()["pid"] == process.pid
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
        assert not paths.pid_path(daemon.home).exists()
        assert not paths.socket_path(daemon.home).exists()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
        if process.stderr is not None:
            process.stderr.close()


# --- a crash ----------------------------------------------------------------------------


def test_kill_9_then_status_start_and_a_consistent_store(daemon: Daemon) -> None:
    pid = daemon.start()
    # Let live (forming) bars reach the store, so the crash leaves a partial minute. The
    # seed stores exactly SEED_MINUTES closed bars per instrument; more are live ones.
    seeded = SEED_MINUTES * len(WATCHLIST)
    poll(
        lambda: daemon.status()["store"]["rows"]["bars_1m"] > seeded,
        20,
        "live bars in the store",
        interval=0.2,
    )
    os.kill(pid, signal.SIGKILL)
    # Dead, though perhaps not reaped yet by init: a zombie counts as gone (the test
    # below holds one on purpose).
    poll(lambda: not running(pid), 10, "the killed daemon to die")

    status = daemon.run("status")
    assert status.returncode == 3, describe(status)
    assert "not" in status.stdout  # "not running" or "not answering"

    again = daemon.run("start")
    assert again.returncode == 0, describe(again)
    match = STARTED.search(again.stdout)
    assert match, describe(again)
    second = int(match.group(1))
    assert second != pid
    restarted = daemon.status()
    assert restarted["pid"] == second
    assert {service["name"]: service["state"] for service in restarted["services"]}["sim"] in (
        "starting",
        "running",
    )
    # Live bars again after the restart, then a clean stop.
    before = restarted["store"]["rows"]["bars_1m"]
    flushes = store_flushes(restarted)
    poll(
        lambda: store_flushes(daemon.status()) > flushes,
        20,
        "the store to flush live bars",
        interval=0.2,
    )
    stopped = daemon.run("stop")
    assert stopped.returncode == 0, describe(stopped)
    assert not running(second)

    total, repeated = duplicate_bars(daemon.home / "sptrader.duckdb")
    assert repeated == [], f"duplicate (instrument, ts) bars: {repeated}"
    assert total >= before


def test_a_dead_daemon_not_yet_reaped_does_not_block_start(daemon: Daemon) -> None:
    """A daemon killed while its parent has not reaped it yet is a zombie: dead, only its
    exit status left. Under an init that reaps late or never (containers without one)
    that state lasts; it must count as not running."""
    process = subprocess.Popen(
        daemon.command("start", "--foreground"),
        cwd=daemon.tmp_path,
        env=daemon.env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    daemon.pids.add(process.pid)
    try:
        poll(lambda: daemon.run("status").returncode == 0, 30, "the daemon to answer", 0.1)
        os.kill(process.pid, signal.SIGKILL)
        # We are its parent and do not wait() for it yet: it stays a zombie.
        poll(lambda: process_state(process.pid) == "Z", 10, "the daemon to be a zombie")

        status = daemon.run("status")
        assert status.returncode == 3, describe(status)

        stopped = daemon.run("stop")
        assert stopped.returncode == 0, describe(stopped)
        assert "not running" in stopped.stdout, describe(stopped)
        assert not paths.pid_path(daemon.home).exists()

        again = daemon.run("start")
        assert again.returncode == 0, describe(again)
        assert STARTED.search(again.stdout), describe(again)
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)


# --- services ---------------------------------------------------------------------------


def test_service_list_stop_and_start(daemon: Daemon) -> None:
    daemon.start()
    listed = daemon.run("service", "list")
    assert listed.returncode == 0, describe(listed)
    names = [line.split()[0] for line in listed.stdout.splitlines()[1:] if line.strip()]
    assert names == list(SERVICES), listed.stdout

    poll(lambda: daemon.services()["sim"]["state"] == "running", 20, "sim to run", 0.1)
    stopped = daemon.run("service", "stop", "sim")
    assert stopped.returncode == 0, describe(stopped)
    assert daemon.services()["sim"]["state"] == "stopped"
    table = daemon.run("status")
    assert re.search(r"^sim\s+stopped\b", table.stdout, re.MULTILINE), table.stdout

    started = daemon.run("service", "start", "sim")
    assert started.returncode == 0, describe(started)
    poll(lambda: daemon.services()["sim"]["state"] == "running", 20, "sim to run again", 0.1)

    refused = daemon.run("service", "stop", "store")
    assert refused.returncode != 0, describe(refused)
    assert "store" in one_error_line(refused)
    assert daemon.services()["store"]["state"] == "running"

    unknown = daemon.run("service", "stop", "nosuch")
    assert unknown.returncode != 0, describe(unknown)
    assert "nosuch" in one_error_line(unknown)


# --- reads while the daemon holds the database ------------------------------------------


def test_candles_while_the_daemon_runs(daemon: Daemon) -> None:
    """The daemon holds the DuckDB file; `candles` reads through its API instead."""
    daemon.start()
    result = daemon.run("candles", "SIM:EURUSD", "--last", "3", "--format", "csv")
    assert result.returncode == 0, describe(result)
    lines = result.stdout.strip().splitlines()
    header = "ts,open,high,low,close,volume,trades,buy_volume,sell_volume"
    assert lines[0] == header, describe(result)
    assert len(lines) == 4, describe(result)
    assert all(re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:00Z,", line) for line in lines[1:])
    # SIM FX bars are built from quotes: the API's rows carry their order flow as unknown.
    assert all(line.endswith(",,") for line in lines[1:]), describe(result)

    # Not in the watchlist: the daemon fills it from the feed's history.
    other = daemon.run("candles", "SIM:GBPUSD", "--last", "2", "--format", "json")
    assert other.returncode == 0, describe(other)
    bars = json.loads(other.stdout)
    assert len(bars) == 2
    assert all(list(bar) == header.split(",") for bar in bars), bars
    assert all(bar["buy_volume"] is None and bar["sell_volume"] is None for bar in bars), bars

    unknown = daemon.run("candles", "NOPE:XYZ", "--last", "2", "--format", "csv")
    assert unknown.returncode == 2, describe(unknown)
    assert "NOPE:XYZ" in one_error_line(unknown)
    assert unknown.stdout == ""

    assert daemon.status()["services"][0]["state"] == "running"


def test_backfill_and_symbols_while_the_daemon_runs(daemon: Daemon) -> None:
    """The daemon holds the store: both commands go through its API."""
    daemon.start()
    result = daemon.run(
        "backfill", "SIM:GBPUSD", "--from", "2026-11-01", "--to", "2026-11-03", timeout=120
    )
    assert result.returncode == 0, describe(result)
    assert re.search(r"SIM:GBPUSD: 2,880 bars from 2 ranges \(0 already stored\)", result.stdout)
    again = daemon.run("backfill", "SIM:GBPUSD", "--from", "2026-11-01", "--to", "2026-11-03")
    assert re.search(r"SIM:GBPUSD: 0 bars from 0 ranges \(2 already stored\)", again.stdout)

    found = daemon.run("symbols", "gbp", "--json")
    assert found.returncode == 0, describe(found)
    assert json.loads(found.stdout)[0]["instrument"] == "SIM:GBPUSD"

    bad = daemon.run("backfill", "NOPE:X", "--from", "2026-11-01")
    assert bad.returncode == 2, describe(bad)
    assert "NOPE:X" in one_error_line(bad)
