"""Issue 12: what a user (or another user on the machine, or a misbehaving API client)
can do to SPtrader that it must survive: private files, bounded arguments rejected in one
line, an API that answers bad requests instead of dropping the connection, and a burst of
clients at once."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import CliResult, run_cli, running_daemon
from test_api import WATCHLIST, connected, free_port, serving
from websockets.asyncio.client import connect, unix_connect
from websockets.exceptions import InvalidStatus

from sptrader.client import paths
from sptrader.client.connection import ApiConnection, call_daemon
from sptrader.client.wire import PROTOCOL_VERSION
from sptrader.errors import SptraderError

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


def test_huge_and_negative_bar_counts_through_the_daemon_are_one_line(tmp_path: Path) -> None:
    with running_daemon(tmp_path, DAEMON_CONFIG) as (home, config):
        for last in (HUGE, "-1", "0"):
            result = run_cli(home, config, "candles", "SIM:EURUSD", "--last", last)
            line = one_line(CliResult(result.returncode, result.stdout, result.stderr))
            assert "--last" in line
        # The API itself refuses them too (another client, the same rule).
        for last in (10**20, -1, 0, "5", True):
            with pytest.raises(SptraderError) as error:
                asyncio.run(call_daemon(home, "candles", instrument="SIM:EURUSD", last=last))
            assert "last" in str(error.value) and "\n" not in str(error.value)
            assert error.value.exit_code == 2


DAEMON_CONFIG = """\
watchlist = ["SIM:EURUSD"]
[store]
seed_days = 0.02
flush_interval_ms = 50
[feeds.sim]
tick_rate = 5.0
"""

#: Mistakes whose message comes from the engine: the same line with or without a daemon.
SAME_EITHER_WAY = [
    ["candles", "NOPE:XYZ", "--wait", "0"],
    ["data", "check", "NOPE:XYZ", "--from", "2026-01-01"],
    ["cancel", "424242"],
    ["runs", "show", "424242"],
    ["symbols", "eur", "--feed", "nosuch"],
    ["journal", "equity", "--tf", "7x"],
    ["export", "SIM:EURUSD", "NOPE:XYZ", "--from", "2026-01-01", "--out", "exported"],
]


def test_errors_through_the_daemon_are_the_same_line_as_locally(tmp_path: Path) -> None:
    home = tmp_path / "home"
    config = tmp_path / "config.toml"
    config.write_text(DAEMON_CONFIG)
    local = {}
    for args in SAME_EITHER_WAY:
        result = run_cli(home, config, *args)
        local[" ".join(args)] = (result.returncode, result.stderr.strip())
    with running_daemon(tmp_path, DAEMON_CONFIG) as (home, config):
        remote = {}
        for args in SAME_EITHER_WAY:
            result = run_cli(home, config, *args)
            remote[" ".join(args)] = (result.returncode, result.stderr.strip())
    for command, (code, line) in local.items():
        assert code != 0 and line.startswith("sptrader: ") and "\n" not in line, (command, line)
        assert remote[command] == (code, line), command


async def test_the_remote_client_raises_what_the_local_client_raises(home: Path) -> None:
    from sptrader.client.local import LocalEngineClient
    from sptrader.client.remote import RemoteEngineClient
    from sptrader.errors import UsageError

    async with serving(home) as (engine, _server):
        remote = RemoteEngineClient(home, welcome={})
        await remote.start()
        try:
            for client in (LocalEngineClient(engine), remote):
                with pytest.raises(UsageError) as missing:
                    await client.cancel_order(424242)
                assert "424242" in str(missing.value) and missing.value.exit_code == 2
                with pytest.raises(UsageError) as bad_day:
                    await client.journal("March")
                assert "bad" in str(bad_day.value) and "March" in str(bad_day.value)
        finally:
            await remote.close()


# --- 3. the API: bad requests get an answer --------------------------------------------------


async def raw_hello(home: Path, hello: str | bytes) -> tuple[dict[str, Any] | None, int | None]:
    """Send ``hello`` as the first frame; (the reply, the close code) of the server."""
    async with unix_connect(str(paths.socket_path(home)), "ws://localhost/") as raw:
        await raw.send(hello)
        reply = None
        with contextlib.suppress(Exception):
            reply = json.loads(await asyncio.wait_for(raw.recv(), 10))
        await asyncio.wait_for(raw.wait_closed(), 10)
        return reply, raw.close_code


@pytest.mark.parametrize("maxsize", ["abc", -1, 0, 10**30, True, 1.5, [1]])
async def test_subscribe_with_a_bad_maxsize_is_answered_and_the_connection_kept(
    home: Path, maxsize: Any
) -> None:
    async with serving(home), connected(home) as api:
        with pytest.raises(SptraderError) as error:
            await api.call("subscribe", maxsize=maxsize)
        text = str(error.value)
        assert "maxsize" in text and "\n" not in text, text
        assert error.value.exit_code == 2
        assert await api.call("subscribe", maxsize=100) is True
        assert (await api.call("status"))["pid"] == os.getpid()


async def test_a_deeply_nested_hello_is_refused_with_a_policy_close_and_one_log_line(
    home: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with serving(home):
        caplog.set_level(logging.INFO, logger="sptrader")
        caplog.clear()
        reply, code = await raw_hello(home, "[" * 100_000 + "]" * 100_000)
        assert code == 1008
        assert reply is not None and reply["type"] == "error"
        assert "hello" in reply["error"]
        refused = [r for r in caplog.records if r.name == "sptrader.api.server"]
        assert len(refused) == 1 and refused[0].levelno == logging.WARNING, refused
        assert "\n" not in refused[0].getMessage()

        # After a good hello, a deeply nested request is answered; the connection stays.
        async with unix_connect(str(paths.socket_path(home)), "ws://localhost/") as raw:
            await raw.send(json.dumps({"type": "hello", "protocol": PROTOCOL_VERSION}))
            assert json.loads(await raw.recv())["type"] == "welcome"
            await raw.send("[" * 100_000 + "]" * 100_000)
            answer = json.loads(await asyncio.wait_for(raw.recv(), 10))
            assert answer["type"] == "response" and answer["id"] is None
            assert "error" in answer
            await raw.send(json.dumps({"type": "request", "id": 2, "method": "status"}))
            status = json.loads(await asyncio.wait_for(raw.recv(), 10))
            assert status["id"] == 2 and status["result"]["pid"] == os.getpid()


@pytest.mark.parametrize(
    ("hello", "mentions"),
    [
        ({"type": "hello", "protocol": "1"}, "'1'"),
        ({"type": "hello", "protocol": True}, "True"),
        ({"type": "hello", "protocol": 1.5}, "1.5"),
        ({"type": "hello"}, "protocol"),
        ({"type": "request", "protocol": 1}, "hello"),
        (["hello", 1], "hello"),
        ("not json", "hello"),
    ],
)
async def test_a_bad_hello_says_what_was_wrong(home: Path, hello: Any, mentions: str) -> None:
    async with serving(home):
        text = hello if isinstance(hello, str) else json.dumps(hello)
        reply, code = await raw_hello(home, text)
        assert code == 1008
        assert reply is not None and reply["type"] == "error"
        assert mentions in reply["error"]
        assert "the client 1;" not in reply["error"]


async def test_tcp_needs_the_bearer_scheme(home: Path) -> None:
    port = free_port()
    async with serving(home, api={"tcp_port": port}):
        token = paths.read_or_create_token(home)
        for header in (token, f"Basic {token}", f"Bearer{token}", f"Bearer  {token}x"):
            with pytest.raises(InvalidStatus) as refused:
                async with connect(
                    f"ws://127.0.0.1:{port}/",
                    additional_headers={"Authorization": header},
                    open_timeout=5,
                ):
                    pass
            assert refused.value.response.status_code == 401, header
        async with connected(home, tcp=("127.0.0.1", port, token)) as api:
            assert (await api.call("status"))["pid"] == os.getpid()


@pytest.mark.parametrize(
    ("method", "params", "mentions"),
    [
        ("candles", {"instrument": 5}, "instrument"),
        ("candles", {"instrument": "SIM:EURUSD", "last": "5"}, "last"),
        ("candles", {"instrument": "SIM:EURUSD", "last": 10**20}, "last"),
        ("candles", {"instrument": "SIM:EURUSD", "start_us": "yesterday"}, "start_us"),
        ("candles", {"instrument": "SIM:EURUSD", "start_us": 10**30}, "start_us"),
        ("candles", {"instrument": "SIM:EURUSD", "colour": "red"}, "colour"),
        ("candles", {}, "instrument"),
        ("summaries", {"instruments": "SIM:EURUSD", "points": 5}, "instruments"),
        ("summaries", {"instruments": [1, 2], "points": 5}, "instruments"),
        ("data_gaps", {"instrument": "SIM:EURUSD", "start_us": 1.5, "end_us": 2}, "start_us"),
        ("search_symbols", {"query": "eur", "limit": -3}, "limit"),
        ("cancel_order", {"order_id": "7"}, "order_id"),
        ("cancel_order", {"order_id": 0}, "order_id"),
        ("place_order", {"request": "buy"}, "request"),
        ("recent_signals", {"limit": 10**20}, "limit"),
        ("run_steps", {"run_id": None}, "run_id"),
        ("service_stop", {"name": ["sim"]}, "name"),
        ("journal", {"day_from": 20260101}, "day_from"),
    ],
)
async def test_every_method_checks_its_parameters(
    home: Path, method: str, params: dict[str, Any], mentions: str
) -> None:
    async with serving(home), connected(home) as api:
        with pytest.raises(SptraderError) as error:
            await api.call(method, **params)
        text = str(error.value)
        assert mentions in text and method in text and "\n" not in text, text
        assert error.value.exit_code == 2
        assert (await api.call("status"))["pid"] == os.getpid()


@pytest.mark.parametrize(
    "request_",
    [
        {"type": "request", "id": 1, "method": 7},
        {"type": "request", "id": 1, "method": "status", "params": [1, 2]},
        {"type": "request", "id": {"a": 1}, "method": "status"},
    ],
)
async def test_a_malformed_request_is_answered(home: Path, request_: dict[str, Any]) -> None:
    async with (
        serving(home),
        unix_connect(str(paths.socket_path(home)), "ws://localhost/") as raw,
    ):
        await raw.send(json.dumps({"type": "hello", "protocol": PROTOCOL_VERSION}))
        assert json.loads(await raw.recv())["type"] == "welcome"
        await raw.send(json.dumps(request_))
        answer = json.loads(await asyncio.wait_for(raw.recv(), 10))
        assert answer["type"] == "response" and answer["error"], answer
        await raw.send(json.dumps({"type": "request", "id": 2, "method": "status"}))
        status = json.loads(await asyncio.wait_for(raw.recv(), 10))
        assert status["id"] == 2 and "result" in status


# --- 4. a burst of clients ---------------------------------------------------------------------

CLIENTS = 200


async def test_200_clients_at_once_all_complete_the_hello(home: Path) -> None:
    async with serving(home):

        async def one() -> str:
            connection = ApiConnection(home)
            try:
                welcome = await connection.open(timeout=30)
                return "welcome" if welcome["watchlist"] == WATCHLIST else repr(welcome)
            except Exception as error:  # counted below
                return f"{type(error).__name__}: {error}"
            finally:
                await connection.close()

        outcomes = await asyncio.wait_for(asyncio.gather(*(one() for _ in range(CLIENTS))), 60)
        failed = [outcome for outcome in outcomes if outcome != "welcome"]
        assert not failed, f"{len(failed)} of {CLIENTS} failed, e.g. {failed[:3]}"
