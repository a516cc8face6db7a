"""``sptrader scan``, ``runs`` and ``runs show`` while the daemon runs: the commands ask
it through the API ("scan", "runs", "run_detail") and print what the local path prints.

A real daemon (subprocess, as in tests/daemon/test_daemon.py) whose config has one
``[[scanners]]`` entry on a schedule that never fires during the test.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_daemon import CONFIG as DAEMON_CONFIG
from test_daemon import Daemon, daemon_home, describe, one_error_line

CONFIG = (
    DAEMON_CONFIG
    + """
[[scanners]]
name = "cross"
strategy = "sma_cross"
instruments = ["SIM:EURUSD", "SIM:BTCUSD"]
schedule = "0 0 1 1 *"
bars = 30
"""
)
SUMMARY = re.compile(
    r"^cross: run (\d+) (ok|partial|failed): (\d+) scanned, (\d+) skipped, (\d+) failed,"
    r" (\d+) signals?$",
    re.MULTILINE,
)


@pytest.fixture
def scan_daemon(tmp_path: Path) -> Iterator[Daemon]:
    with daemon_home(tmp_path, CONFIG) as control:
        control.start()
        yield control


def test_scan_runs_and_show_through_the_daemon(scan_daemon: Daemon) -> None:
    empty = scan_daemon.run("runs")
    assert empty.returncode == 0, describe(empty)
    assert empty.stdout.strip() == "no scanner runs yet"

    scanned = scan_daemon.run("scan", "cross")
    assert scanned.returncode == 0, describe(scanned)
    match = SUMMARY.search(scanned.stdout)
    assert match, describe(scanned)
    run_id, status = int(match.group(1)), match.group(2)
    assert status == "ok"
    assert int(match.group(3)) + int(match.group(4)) == 2

    # No name: every enabled scanner (the one), a second run.
    again = scan_daemon.run("scan")
    assert again.returncode == 0, describe(again)
    second = SUMMARY.search(again.stdout)
    assert second and int(second.group(1)) > run_id, describe(again)

    listing = scan_daemon.run("runs", "--last", "5")
    assert listing.returncode == 0, describe(listing)
    lines = listing.stdout.splitlines()
    assert lines[0].split() == ["ID", "SCANNER", "START", "DURATION", "STATUS", "SIGNALS"]
    rows = [line.split() for line in lines[1:]]
    assert [int(row[0]) for row in rows] == [run_id, int(second.group(1))]  # newest last
    assert all(row[1] == "cross" and "ok" in row for row in rows)

    only_last = scan_daemon.run("runs", "--last", "1")
    assert only_last.returncode == 0, describe(only_last)
    assert [line.split()[0] for line in only_last.stdout.splitlines()[1:]] == [second.group(1)]

    shown = scan_daemon.run("runs", "show", str(run_id))
    assert shown.returncode == 0, describe(shown)
    out = shown.stdout.splitlines()
    assert out[0].startswith(f"run {run_id}  cross  manual  started"), describe(shown)
    assert out[0].endswith(" ok")
    assert out[1].startswith("  2 instruments,")
    assert "SIM:EURUSD" in shown.stdout and "SIM:BTCUSD" in shown.stdout
    assert re.search(r"^\s+\d+\. (load_bars|skip)\s", shown.stdout, re.MULTILINE), describe(shown)


def test_mistakes_through_the_daemon_are_one_line(scan_daemon: Daemon) -> None:
    unknown = scan_daemon.run("scan", "nope")
    assert unknown.returncode == 2, describe(unknown)
    assert "unknown scanner 'nope'" in one_error_line(unknown)
    assert unknown.stdout == ""

    missing = scan_daemon.run("runs", "show", "999")
    assert missing.returncode == 2, describe(missing)
    assert "no scanner run 999" in one_error_line(missing)

    bad_last = scan_daemon.run("runs", "--last", "0")
    assert bad_last.returncode == 2, describe(bad_last)
    one_error_line(bad_last)
