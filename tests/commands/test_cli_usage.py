"""What a user types: global options anywhere, mistyped words with a suggestion, homes
that cannot be written, and Ctrl+C in the long commands (a real SIGINT to the CLI
process, against a slow local fake venue or the SIM feed)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import fake_coinbase
import pytest
from conftest import CliResult
from fakes import FakeHttpServer, FakeRequest, FakeResponse


def _one_line(result: CliResult, code: int = 2) -> str:
    assert result.code == code, result
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result.err
    assert result.out == ""
    return lines[0]


# --- global options before or after the command -------------------------------------------


def test_home_and_config_work_after_the_command(run, cli_home: Path, tmp_path: Path) -> None:
    config = tmp_path / "elsewhere.toml"
    config.write_text('watchlist = ["SIM:EURUSD"]\n')
    result = run(
        "config", "check", "--home", str(cli_home), "--config", str(config), with_home=False
    )
    assert result.code == 0, result
    assert f"config: {config} is valid" in result.out
    assert f"home: {cli_home}" in result.out
    assert "watchlist (1): SIM:EURUSD" in result.out


def test_scan_config_is_the_config_not_a_scanner_name(run, tmp_path: Path) -> None:
    missing = tmp_path / "no-such.toml"
    line = _one_line(run("scan", "--config", str(missing)))
    assert line == f"sptrader: {missing}: config file not found"


def test_global_option_forms_with_equals_after_the_command(run, cli_home: Path) -> None:
    result = run("candles", "SIM:EURUSD", "--last", "2", f"--home={cli_home}", with_home=False)
    assert result.code == 0, result
    assert (cli_home / "sptrader.duckdb").is_file()


# --- mistakes get one line with a suggestion ------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["candels"], "sptrader: unknown command 'candels'; did you mean 'candles'?"),
        (["data", "stauts"], "sptrader: unknown data action 'stauts'; did you mean 'status'?"),
        (
            ["candles", "SIM:EURUSD", "--frm", "2026-01-01"],
            "sptrader: unknown option '--frm'; did you mean '--from'?",
        ),
        (
            ["candles", "SIM:EURUSD", "--format", "jsno"],
            "sptrader: --format: unknown value 'jsno'; did you mean 'json'?",
        ),
        (
            ["journal", "--too=2026-01-01"],
            "sptrader: unknown option '--too'; did you mean '--to'?",
        ),
    ],
)
def test_a_mistyped_word_gets_the_nearest_valid_one(run, argv: list[str], expected: str) -> None:
    assert _one_line(run(*argv)) == expected


def test_a_word_like_no_command_points_at_help(run) -> None:
    assert _one_line(run("xyzzy")) == "sptrader: unknown command 'xyzzy'; see `sptrader --help`"


# --- homes that cannot be used ---------------------------------------------------------------


def test_a_home_that_is_a_file_is_one_line(run, tmp_path: Path) -> None:
    home = tmp_path / "a-file"
    home.write_text("")
    line = _one_line(run("--home", str(home), "positions", with_home=False))
    assert line == f"sptrader: the home {home} is not a directory (--home or SPTRADER_HOME)"


def test_a_read_only_home_is_one_line_and_exit_2(
    run, cli_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read-only file system (EROFS; as root, permission bits would not stop us)."""
    cli_home.mkdir(parents=True)

    def read_only(*args: object, **kwargs: object):  # type: ignore[no-untyped-def]
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    line = _one_line(run("candles", "SIM:EURUSD", "--last", "2"))
    assert line.startswith(f"sptrader: the home {cli_home} is read-only: `sptrader candles`")
    assert not list(cli_home.iterdir())  # no log, no store half-created
    # `status` needs nothing written: it still answers.
    assert run("status").code == 3


def test_a_log_file_that_cannot_be_written_is_one_line(run, cli_home: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    config = tmp_path / "config.toml"
    config.write_text(f'[log]\nfile = "{blocker}/sptrader.log"\n')
    line = _one_line(run("--config", str(config), "candles", "SIM:EURUSD"))
    assert line.startswith("sptrader: cannot write the log file: cannot use ")
    assert "(see [log] file)" in line


# --- Ctrl+C ---------------------------------------------------------------------------------

#: Seconds each candles answer of the slow fake venue takes (a day is 5 answers).
SLOW_ANSWER_S = 1.0


def _slow_coinbase(request: FakeRequest) -> FakeResponse | None:
    if request.path.endswith("/candles"):
        time.sleep(SLOW_ANSWER_S)
    return fake_coinbase.history_route(request)


def _cli(home: Path, *args: str, config: Path | None = None) -> subprocess.Popen[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("SPTRADER_")}
    extra = ["--config", str(config)] if config else []
    return subprocess.Popen(
        [sys.executable, "-m", "sptrader.cli", "--home", str(home), *extra, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=home.parent,
    )


def _interrupt(process: subprocess.Popen[str]) -> tuple[float, str, str]:
    """SIGINT (a terminal's Ctrl+C); seconds until the process exited, stdout, stderr."""
    sent = time.monotonic()
    process.send_signal(signal.SIGINT)
    try:
        out, err = process.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
        pytest.fail(f"still running 30 s after SIGINT: {err[-2000:]}")
    return time.monotonic() - sent, out, err


def _wait_for_ranges(server: FakeHttpServer, answered: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while sum(r.path.endswith("/candles") for r in server.requests) < answered:
        assert time.monotonic() < deadline, "the backfill did not start"
        time.sleep(0.05)


@pytest.mark.parametrize("command", [["backfill"], ["data", "ensure"]])
def test_ctrl_c_stops_a_backfill_within_a_second(tmp_path: Path, command: list[str]) -> None:
    start = (datetime.now(UTC) - timedelta(days=40)).strftime("%Y-%m-%d")
    with FakeHttpServer(_slow_coinbase) as server:
        config = tmp_path / "config.toml"
        config.write_text(
            f'[feeds.coinbase]\nenabled = true\nrest_url = "{server.url}"\n'
            'ws_url = "ws://127.0.0.1:9"\n'
        )
        home = tmp_path / "home"
        process = _cli(home, *command, "COINBASE:BTC-USD", "--from", start, config=config)
        # Some days stored (4 at a time, 5 answers each), more in flight.
        _wait_for_ranges(server, 30)
        took, _, err = _interrupt(process)
    assert process.returncode == 130, err
    assert took < 1.0, f"{took:.2f}s after SIGINT"
    lines = err.strip().splitlines()
    assert lines and lines[-1].startswith("interrupted: "), err
    assert lines[-1].endswith(" ranges stored; run it again to resume"), err
    done, total = (int(part) for part in lines[-1].split()[1].split("/"))
    assert 1 <= done < total
    assert "Traceback" not in err


def test_ctrl_c_in_a_sweep_prints_the_results_so_far(tmp_path: Path) -> None:
    psutil = pytest.importorskip("psutil")
    home = tmp_path / "home"
    start = (datetime.now(UTC) - timedelta(days=20)).strftime("%Y-%m-%d")
    # History first, so that the interrupt falls in the sweep itself.
    stored = subprocess.run(
        [sys.executable, "-m", "sptrader.cli", "--home", str(home), "backfill", "SIM:EURUSD",
         "--from", start],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )  # fmt: skip
    assert stored.returncode == 0, stored.stderr
    process = _cli(
        home, "backtest", "sma_cross", "SIM:EURUSD", "--from", start,
        # 9,900 combinations (a sweep takes at most 10,000): far more than any machine
        # runs before the interrupt (594 finished within 4 s on a quiet one: exit 0).
        "--param", "fast=2..100:1", "--param", "slow=50..149:1",
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while not psutil.Process(process.pid).children() and process.poll() is None:
        assert time.monotonic() < deadline, "the sweep did not start"
        time.sleep(0.05)
    time.sleep(4.0)  # some combinations done (about 40/s), most not
    took, out, err = _interrupt(process)
    assert process.returncode == 130, err
    assert took < 1.0, f"{took:.2f}s after SIGINT"
    last = err.strip().splitlines()[-1]
    assert last.startswith("interrupted: ") and last.endswith(" (the results so far above)"), err
    done, total = (int(part) for part in last.split()[1].split("/"))
    assert total == 99 * 100 and 1 <= done < total
    assert "Traceback" not in err  # the workers did not die of the SIGINT each
    # One table row per combination computed, fast and slow first.
    rows = [line.split() for line in out.splitlines() if line.strip()[:1].isdigit()]
    assert len(rows) == done, out


def test_backfill_piped_starts_with_its_result_not_an_empty_line(run, tmp_path: Path) -> None:
    start = (datetime.now(UTC) - timedelta(days=1)).strftime("%Y-%m-%d")
    result = run("backfill", "SIM:EURUSD", "--from", start)
    assert result.code == 0, result
    assert result.out.splitlines()[0].startswith("SIM:EURUSD: "), repr(result.out)


# --- symbols by name ------------------------------------------------------------------------


def test_symbols_gold_finds_xauusd(run) -> None:
    """README and the `/` hint promise it; SIM describes XAUUSD without the word gold."""
    result = run("symbols", "gold")
    assert result.code == 0, result
    rows = [line.split()[0] for line in result.out.splitlines()[1:] if line.strip()]
    assert rows[0] == "SIM:XAUUSD", result.out
    assert "SIM:XAGUSD" not in rows


def test_status_json_times_are_iso_at_any_depth() -> None:
    from sptrader.commands.daemon_control import iso_times

    status = {
        "pid": 7,
        "services": [{"name": "sim", "last_event_us": 1_796_216_700_000_000, "errors": 0}],
        "started_us": None,
    }
    assert iso_times(status) == {
        "pid": 7,
        "services": [{"name": "sim", "last_event": "2026-12-02T13:05:00Z", "errors": 0}],
        "started": None,
    }


# --- wording --------------------------------------------------------------------------------


def test_one_of_a_thing_is_singular(run) -> None:
    """`1 days`, `1 ranges`, `1 gaps` were printed before."""
    status = run("data", "status", "SIM:EURUSD", "--days", "1")
    assert status.code == 0, status
    assert "coverage of the last 1 day\n" in status.out.replace(" \n", "\n")
    start = datetime.now(UTC) - timedelta(minutes=30)
    fetched = run("backfill", "SIM:EURUSD", "--from", start.strftime("%Y-%m-%dT%H:%MZ"))
    assert fetched.code == 0, fetched
    assert " from 1 range (" in fetched.out, fetched.out


# --- unknown SIM symbols --------------------------------------------------------------------


def test_config_check_refuses_an_unknown_sim_symbol_with_a_suggestion(run, tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('watchlist = ["SIM:EURUSD", "SIM:EURUDS"]\n')
    line = _one_line(run("--config", str(config), "config", "check"))
    assert line == (
        f"sptrader: {config}: watchlist[1]: unknown symbol SIM:EURUDS (not in sim's"
        " instrument list; did you mean SIM:EURUSD?)"
    )


@pytest.mark.parametrize(
    "argv",
    [
        ["candles", "SIM:EURUDS", "--last", "3"],
        ["order", "buy", "SIM:EURUDS", "1000"],
    ],
)
def test_candles_and_orders_on_an_unknown_sim_symbol_are_refused(
    run, cli_home: Path, argv: list[str]
) -> None:
    """Before, the simulator made up a market for the typo and traded it."""
    line = _one_line(run(*argv))
    assert line == (
        "sptrader: unknown symbol SIM:EURUDS (not in sim's instrument list);"
        " did you mean SIM:EURUSD?"
    )
    assert run("orders", "--all", "--format", "json").out.strip() == "[]"
