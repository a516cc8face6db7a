"""Issue 12: what a user (or another user on the machine, or a misbehaving API client)
can do to SPtrader that it must survive: private files, bounded arguments rejected in one
line, an API that answers bad requests instead of dropping the connection, and a burst of
clients at once."""

from __future__ import annotations

import asyncio
import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import CliResult, running_daemon
from test_api import free_port

from sptrader.api import paths
from sptrader.api.connection import call_daemon

HUGE = "100000000000000000000"  # 1e20: beyond int64, DuckDB and time_t


@pytest.fixture
def loose_umask() -> Iterator[None]:
    """The usual login umask (022), which would make new files world-readable."""
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


def one_line(result: CliResult, code: int = 2) -> str:
    """Exit ``code``, one ``sptrader: ...`` line on stderr, no traceback, nothing on stdout."""
    assert result.code == code, result
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got: {result.err!r}"
    assert lines[0].startswith("sptrader: "), lines[0]
    assert "Traceback" not in result.err + result.out
    return lines[0]


def modes(home: Path) -> dict[str, int]:
    """Permission bits of the home and of everything under it (sockets left out: their
    mode is checked by test_api)."""
    found = {".": stat.S_IMODE(home.stat().st_mode)}
    for path in home.rglob("*"):
        info = path.lstat()
        if not stat.S_ISSOCK(info.st_mode):
            found[str(path.relative_to(home))] = stat.S_IMODE(info.st_mode)
    return found


def assert_private(home: Path) -> dict[str, int]:
    found = modes(home)
    loose = {
        name: oct(mode)
        for name, mode in found.items()
        if mode & 0o077 or mode != (0o700 if (home / name).is_dir() else 0o600)
    }
    assert not loose, f"readable by others: {loose}"
    return found


# --- 1. file permissions --------------------------------------------------------------------


def test_a_new_home_and_every_file_in_it_are_private(run, cli_home: Path, loose_umask) -> None:
    result = run("candles", "SIM:EURUSD", "--last", "3", "--wait", "0", "--format", "csv")
    assert result.code == 0, result
    found = assert_private(cli_home)
    assert {"sptrader.duckdb", "sptrader.log"} <= set(found)
    assert os.umask(0o022) == 0o022  # main() put the caller's umask back


def test_a_loose_existing_home_and_its_files_are_tightened(
    run, cli_home: Path, loose_umask
) -> None:
    assert run("candles", "SIM:EURUSD", "--last", "3", "--wait", "0").code == 0
    (cli_home / "sptrader.log.1").write_text("an old rotated log\n")
    (cli_home / "watchlist.json").write_text('{"instruments": ["SIM:EURUSD"]}\n')
    os.chmod(cli_home, 0o755)
    for path in cli_home.iterdir():
        os.chmod(path, 0o644)
    assert run("candles", "SIM:EURUSD", "--last", "3", "--wait", "0").code == 0
    found = assert_private(cli_home)
    assert {"sptrader.duckdb", "sptrader.log", "sptrader.log.1", "watchlist.json"} <= set(found)


def test_the_daemons_store_wal_log_pid_and_token_are_private(tmp_path: Path, loose_umask) -> None:
    config = f"""\
watchlist = ["SIM:EURUSD"]
[store]
seed_days = 0.02
flush_interval_ms = 50
[feeds.sim]
tick_rate = 20.0
[api]
tcp_port = {free_port()}
"""
    with running_daemon(tmp_path, config) as (home, _config):
        asyncio.run(call_daemon(home, "add_instrument", instrument="SIM:BTCUSD"))
        deadline = time.monotonic() + 20
        wal = home / "sptrader.duckdb.wal"
        while not wal.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        found = assert_private(home)
        assert {
            "sptrader.duckdb",
            "sptrader.duckdb.wal",
            "sptrader.log",
            "sptrader.pid",
            "api.token",
            "watchlist.json",
        } <= set(found), found
        assert stat.S_IMODE(paths.socket_path(home).stat().st_mode) == 0o600


# --- 2. arguments: bounded, one line, at parse time --------------------------------------------


@pytest.mark.parametrize(
    ("args", "mentions"),
    [
        (["candles", "SIM:EURUSD", "--last", HUGE], "--last"),
        (["candles", "SIM:EURUSD", "--last", "-1"], "--last"),
        (["candles", "SIM:EURUSD", "--last", "2.5"], "--last"),
        (["candles", "SIM:EURUSD", "--wait", "nan"], "--wait"),
        (["candles", "SIM:EURUSD", "--wait", "inf"], "--wait"),
        (["candles", "SIM:EURUSD", "--wait", "-1"], "--wait"),
        (["candles", "SIM:EURUSD", "--wait", "1e12"], "--wait"),
        (["symbols", "eur", "--limit", HUGE], "--limit"),
        (["symbols", "eur", "--limit", "0"], "--limit"),
        (["data", "status", "--days", HUGE], "--days"),
        (["data", "status", "--days", "-5"], "--days"),
        (["orders", "--all", "--limit", HUGE], "--limit"),
        (["runs", "--last", HUGE], "--last"),
        (["runs", "--last", "-1"], "--last"),
        (["runs", "show", HUGE], "ID"),
        (["runs", "show", "-1"], "ID"),
        (["order", "buy", "SIM:EURUSD", "1", "--wait", "nan"], "--wait"),
        (["order", "buy", "SIM:EURUSD", "1", "--wait", "0"], "--wait must be a positive"),
        (["close", "SIM:EURUSD", "--wait", "-1"], "--wait"),
        (["cancel", HUGE], "an order id is a positive whole number"),
        (["cancel", "abc"], "an order id is a positive whole number"),
        (["export", "SIM:EURUSD", "--from", "2026-01-01", "--out", "/proc/nope"], "/proc"),
        (["candles", "SIM:EURUSD", "--format", "yaml"], "--format"),
        (["candles"], "INSTRUMENT"),
    ],
    ids=lambda value: " ".join(value) if isinstance(value, list) else None,
)
def test_bad_arguments_are_one_line_at_parse_time(
    run, cli_home: Path, args: list[str], mentions: str
) -> None:
    line = one_line(run(*args))
    assert mentions in line
    # Refused before anything ran: the home was not even created.
    assert not cli_home.exists()


def test_export_into_a_file_is_one_line(run, cli_home: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory\n")
    for out in (blocker, blocker / "below"):
        line = one_line(run("export", "SIM:EURUSD", "--from", "2026-01-01", "--out", str(out)))
        assert str(blocker) in line and "not a directory" in line
    assert blocker.read_text() == "not a directory\n"


def test_import_of_an_unreadable_directory_is_one_line(run) -> None:
    line = one_line(run("import", "/proc"), code=1)
    assert "/proc" in line


def test_a_home_that_is_a_file_is_one_line(run, tmp_path: Path, monkeypatch) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("mine\n")
    line = one_line(run("--home", str(blocker), "candles", "SIM:EURUSD", with_home=False))
    assert str(blocker) in line and "not a directory" in line
    monkeypatch.setenv("SPTRADER_HOME", str(blocker))
    line = one_line(run("status", with_home=False))
    assert str(blocker) in line
    assert blocker.read_text() == "mine\n"
