"""A TUI hosting the engine serves the daemon's API: every command (and another TUI)
goes through it while it runs, as through a daemon; quitting or killing it leaves
nothing that blocks the next start."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import run_cli, wait_for

from sptrader.app import SptraderApp
from sptrader.client import paths
from sptrader.client.connect import client_for
from sptrader.client.local import LocalEngineClient
from sptrader.client.remote import RemoteEngineClient
from sptrader.config import load_settings
from sptrader.models import QuoteReceived
from sptrader.screens import WatchlistPane
from sptrader.screens.positions import PositionsPane

CONFIG = """\
watchlist = ["SIM:EURUSD", "SIM:BTCUSD"]
[feeds.sim]
tick_rate = 5.0
[store]
seed_days = 0.05
"""


@pytest.fixture
def home(tmp_path: Path) -> tuple[Path, Path]:
    config = tmp_path / "config.toml"
    config.write_text(CONFIG)
    return tmp_path / "home", config


async def cli(home: Path, config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The `sptrader` entry point in another process (as a user's second terminal)."""
    return await asyncio.to_thread(run_cli, home, config, *args)


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"exit {result.returncode}: {result.stderr}{result.stdout}"
    return result.stdout


async def test_every_command_goes_through_the_tui_while_it_runs(
    home: tuple[Path, Path],
) -> None:
    home_dir, config = home
    settings = load_settings(home_dir, config)
    app = SptraderApp(settings)
    assert isinstance(app.client, LocalEngineClient)  # no daemon: the TUI hosts it
    async with app.run_test(size=(160, 48)) as pilot:
        await wait_for(pilot, lambda: app.engine_ready, what="the engine to start")
        watchlist = app.query_one(WatchlistPane)
        await wait_for(
            pilot, lambda: watchlist.row_values("SIM:EURUSD")["bid"] != "…", what="a quote"
        )
        assert paths.running_pid(home_dir) == os.getpid()

        status = ok(await cli(home_dir, config, "status"))
        assert f"sptrader engine hosted by a TUI (pid {os.getpid()})" in status
        assert "sim" in status and "running" in status
        assert "no open positions" in ok(await cli(home_dir, config, "positions"))
        candles = ok(await cli(home_dir, config, "candles", "SIM:EURUSD", "--last", "3"))
        assert len([line for line in candles.splitlines() if "Z" in line or ":" in line]) >= 3

        # A command's order fills in the TUI's engine: its positions pane shows it.
        ok(await cli(home_dir, config, "order", "buy", "SIM:EURUSD", "1000"))
        positions = app.query_one(PositionsPane)
        await wait_for(pilot, lambda: "SIM:EURUSD" in positions.positions, what="the fill")
        assert "SIM:EURUSD" in ok(await cli(home_dir, config, "positions"))
        services = ok(await cli(home_dir, config, "service", "list"))
        assert "broker" in services

        # A daemon cannot take the home over, nor `stop` kill the user's TUI.
        started = await cli(home_dir, config, "start")
        assert started.returncode == 1 and "a TUI (pid" in started.stderr
        stopped = await cli(home_dir, config, "stop")
        assert stopped.returncode == 1 and "quit it there" in stopped.stderr
        assert app.return_code is None

        await pilot.press("q")
        await wait_for(pilot, lambda: app.return_code is not None, what="the app to exit")
    assert not paths.pid_path(home_dir).exists()
    assert not paths.socket_path(home_dir).exists()
    # The home is free: a command opens the store itself again.
    assert "SIM:EURUSD" in ok(await cli(home_dir, config, "positions"))
    assert (await cli(home_dir, config, "status")).returncode == 3  # no engine runs


async def test_a_second_tui_attaches_to_the_first(home: tuple[Path, Path]) -> None:
    home_dir, config = home
    settings = load_settings(home_dir, config)
    app = SptraderApp(settings)
    async with app.run_test(size=(160, 48)) as pilot:
        await wait_for(pilot, lambda: app.engine_ready, what="the engine to start")
        # What `sptrader tui` gets on this home now (greeted before its loop runs).
        second = await asyncio.to_thread(client_for, settings, run="everything")
        assert isinstance(second, RemoteEngineClient)
        subscription = second.subscribe("second-tui", 10_000)
        await second.start()
        try:
            assert second.mode == f"attached to TUI pid {os.getpid()}"
            assert second.watchlist == ["SIM:EURUSD", "SIM:BTCUSD"]
            quotes: list[object] = []

            def streamed() -> bool:
                quotes.extend(e for e in subscription.get_nowait() if type(e) is QuoteReceived)
                return bool(quotes)

            await wait_for(pilot, streamed, what="quotes through the first TUI")
        finally:
            await second.close()
        await pilot.press("q")
        await wait_for(pilot, lambda: app.return_code is not None, what="the app to exit")


HEADLESS_TUI = """\
import sys
from pathlib import Path
from sptrader.app import SptraderApp
from sptrader.config import load_settings
SptraderApp(load_settings(Path(sys.argv[1]), Path(sys.argv[2]))).run(headless=True)
"""


async def test_a_killed_tui_leaves_nothing_that_blocks_the_next_start(
    home: tuple[Path, Path],
) -> None:
    home_dir, config = home
    env = {key: value for key, value in os.environ.items() if not key.startswith("SPTRADER_")}
    process = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(HEADLESS_TUI), str(home_dir), str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    try:
        for _ in range(600):
            status = await cli(home_dir, config, "status")
            if f"hosted by a TUI (pid {process.pid})" in status.stdout:
                break
            await asyncio.sleep(0.1)
        else:
            pytest.fail(f"the headless TUI never served: {status.stdout}{status.stderr}")
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    # What it leaves: a pid file naming a dead process, and its socket.
    assert paths.pid_path(home_dir).exists()
    assert paths.running_pid(home_dir) is None
    assert (await cli(home_dir, config, "status")).returncode == 3  # no engine runs

    settings = load_settings(home_dir, config)
    app = SptraderApp(settings)
    async with app.run_test(size=(160, 48)) as pilot:
        await wait_for(pilot, lambda: app.engine_ready, what="the next start")
        assert paths.running_pid(home_dir) == os.getpid()
        status = ok(await cli(home_dir, config, "status"))
        assert f"hosted by a TUI (pid {os.getpid()})" in status
        await pilot.press("q")
        await wait_for(pilot, lambda: app.return_code is not None, what="the app to exit")
    assert not paths.pid_path(home_dir).exists()
