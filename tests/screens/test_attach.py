"""The TUI attached to a real daemon process, used as a user uses it (Pilot)."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import run_cli, running_daemon
from textual.widgets import OptionList

from sptrader.app import SptraderApp
from sptrader.client.connection import call_daemon
from sptrader.client.paths import running_pid
from sptrader.client.remote import RemoteEngineClient, fetch_welcome
from sptrader.config import load_settings
from sptrader.screens import ServicesPane, SymbolSearchScreen, WatchlistPane

CONFIG = """\
watchlist = ["SIM:EURUSD", "SIM:BTCUSD"]
[feeds.sim]
tick_rate = 5.0
[store]
seed_days = 0.05
"""


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    with running_daemon(tmp_path, CONFIG) as started:
        yield started


async def _wait(pilot, condition, what: str, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await pilot.pause(0.05)


async def test_attached_tui_streams_and_controls_the_daemon(daemon: tuple[Path, Path]) -> None:
    home, config = daemon
    settings = load_settings(home, config)
    client = RemoteEngineClient(home, await asyncio.to_thread(fetch_welcome, home))
    app = SptraderApp(settings, client=client)
    pid = running_pid(home)
    async with app.run_test(size=(160, 48)) as pilot:
        await _wait(pilot, lambda: app.engine_ready, "the app to attach")
        assert app.engine is None  # no local engine: the daemon holds the store
        assert f"attached to daemon pid {pid}" in client.mode
        watchlist = app.query_one(WatchlistPane)

        def priced() -> bool:
            return all(
                watchlist.row_values(name)["bid"] != "…" for name in ["SIM:EURUSD", "SIM:BTCUSD"]
            )

        await _wait(pilot, priced, "quotes from the daemon")
        first = watchlist.row_values("SIM:BTCUSD")["bid"]
        await _wait(
            pilot, lambda: watchlist.row_values("SIM:BTCUSD")["bid"] != first, "prices to move"
        )

        # Stop the daemon's sim feed from the services pane, with the mouse.
        services = app.query_one(ServicesPane)
        await _wait(pilot, lambda: "sim" in services.statuses, "the services pane")
        table = services.query_one("#services-table")
        # Panes can still move (the backfills pane appears when the daemon's first
        # backfill reports): click again where the row is now until it is selected.
        for _ in range(10):
            row = table.get_row_index("sim")
            await pilot.click("#services-table", offset=(2, table.header_height + row))
            await pilot.pause(0.2)
            if services.selected == "sim":
                break
        await _wait(pilot, lambda: services.selected == "sim", "the sim row to be selected")
        await pilot.click("#service-stop")
        await _wait(pilot, lambda: services.statuses["sim"].state.value == "stopped", "sim to stop")
        status = await call_daemon(home, "status")
        assert {service["name"]: service["state"] for service in status["services"]}[
            "sim"
        ] == "stopped"

        await pilot.press("q")
        await _wait(pilot, lambda: app.return_code is not None, "the app to exit")
    # Quitting an attached TUI leaves the daemon running.
    assert running_pid(home) == pid
    status = await call_daemon(home, "status")
    assert status["pid"] == pid


async def test_attached_tui_survives_the_daemon_restarting(daemon: tuple[Path, Path]) -> None:
    home, config = daemon
    settings = load_settings(home, config)
    client = RemoteEngineClient(home, await asyncio.to_thread(fetch_welcome, home))
    app = SptraderApp(settings, client=client)
    async with app.run_test(size=(160, 48)) as pilot:
        await _wait(pilot, lambda: client.connected, "the app to attach")
        watchlist = app.query_one(WatchlistPane)
        await _wait(pilot, lambda: watchlist.row_values("SIM:EURUSD")["bid"] != "…", "a quote")
        first_pid = running_pid(home)
        assert first_pid is not None
        os.kill(first_pid, signal.SIGKILL)
        await _wait(pilot, lambda: not client.connected, "the loss to be noticed")
        assert "gone" in client.mode
        # The last data stays on screen.
        assert watchlist.row_values("SIM:EURUSD")["bid"] != "…"
        restarted = await asyncio.to_thread(run_cli, home, config, "start")
        assert restarted.returncode == 0, restarted.stderr
        await _wait(pilot, lambda: client.connected, "the reconnect", timeout=20)
        assert client.welcome["pid"] != first_pid
        await pilot.press("q")
        await _wait(pilot, lambda: app.return_code is not None, "the app to exit")


async def test_attached_tui_searches_and_adds_an_instrument(daemon: tuple[Path, Path]) -> None:
    """`/` in an attached TUI searches the daemon's symbol cache and adds to its
    watchlist; the row appears and streams."""
    home, config = daemon
    settings = load_settings(home, config)
    client = RemoteEngineClient(home, await asyncio.to_thread(fetch_welcome, home))
    app = SptraderApp(settings, client=client)
    async with app.run_test(size=(160, 48)) as pilot:
        await _wait(pilot, lambda: app.engine_ready, "the app to attach")
        await pilot.press("slash")
        await pilot.press(*"ethusd")
        screen = app.screen
        assert isinstance(screen, SymbolSearchScreen)
        results = screen.query_one(OptionList)
        await _wait(
            pilot,
            lambda: results.option_count and results.get_option_at_index(0).id == "SIM:ETHUSD",
            "the daemon's search results",
        )
        await pilot.press("enter")
        watchlist = app.query_one(WatchlistPane)
        await _wait(pilot, lambda: "SIM:ETHUSD" in watchlist.instruments, "the new row")
        await _wait(pilot, lambda: watchlist.row_values("SIM:ETHUSD")["bid"] != "…", "its quotes")
        assert client.watchlist == ["SIM:EURUSD", "SIM:BTCUSD", "SIM:ETHUSD"]
        await pilot.press("q")
        await _wait(pilot, lambda: app.return_code is not None, "the app to exit")
    status = await call_daemon(home, "status")
    assert status["pid"] == running_pid(home)
    assert "SIM:ETHUSD" in (home / "watchlist.json").read_text()
