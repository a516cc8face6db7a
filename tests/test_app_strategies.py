"""The Strategies screen, driven as a user drives it: Pilot key presses on a fixed-size
terminal over a small simulated market with one scanner whose schedule never fires
during the test (runs happen only when asked)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import conftest
import pytest
from textual.pilot import Pilot
from textual.widgets import DataTable, Tree

from sptrader.api.server import ApiServer
from sptrader.app import SptraderApp
from sptrader.clock import now_us
from sptrader.config import (
    BINDING_IDS,
    ChartConfig,
    Config,
    FeedsConfig,
    ScannerConfig,
    Settings,
    SimFeedConfig,
    StoreConfig,
)
from sptrader.models import US_PER_MINUTE, ServiceState
from sptrader.scanners import SignalRaised
from sptrader.screens import ChartPane, ErrorScreen, StrategiesScreen

WATCHLIST = ["SIM:EURUSD", "SIM:SPY"]
TERMINAL_SIZE = (160, 48)
SCANNER = "cross"


def app_settings(home: Path) -> Settings:
    """Two instruments, a few hours of history, one sma_cross scanner due on 1 January
    only (it never fires by itself during a test)."""
    config = Config(
        watchlist=list(WATCHLIST),
        store=StoreConfig(seed_days=0.2),
        feeds=FeedsConfig(sim=SimFeedConfig(tick_rate=5.0)),
        chart=ChartConfig(bars=60),
        scanners=[
            ScannerConfig(
                name=SCANNER,
                strategy="sma_cross",
                instruments=list(WATCHLIST),
                schedule="0 0 1 1 *",
                bars=30,
            )
        ],
    )
    return Settings(home=home, config_path=None, config=config)


async def wait_for(pilot, condition, timeout: float = 15, what: str = "") -> None:
    await conftest.wait_for(pilot, condition, timeout, what)


@contextlib.asynccontextmanager
async def strategies_open(app: SptraderApp) -> AsyncIterator[tuple[Pilot, StrategiesScreen]]:
    """The app started, the Strategies screen opened with `S` and read once; left with
    ``q``."""
    async with app.run_test(size=TERMINAL_SIZE) as pilot:
        await wait_for(pilot, lambda: app.engine_ready, what="the engine to start")
        chart = app.query_one(ChartPane)
        await wait_for(pilot, lambda: chart.loaded_key is not None, what="the first chart")
        await pilot.press("S")
        await wait_for(pilot, lambda: isinstance(app.screen, StrategiesScreen), what="the screen")
        screen = app.screen
        assert isinstance(screen, StrategiesScreen)
        await wait_for(pilot, lambda: SCANNER in screen.scanners, what="the scanners read")
        try:
            yield pilot, screen
            failed = [
                f"{error.title_text}: {error.message}"
                for error in app.screen_stack
                if isinstance(error, ErrorScreen)
            ]
            assert not failed, f"a background job failed: {failed}"
        finally:
            if app.return_code is None:
                await pilot.press("q")
                await wait_for(pilot, lambda: app.return_code is not None, what="the app to exit")


@pytest.fixture
def app(tmp_path: Path) -> SptraderApp:
    home = tmp_path / "home"
    home.mkdir()
    return SptraderApp(app_settings(home))


def service_state(app: SptraderApp) -> ServiceState:
    states = {status.name: status.state for status in app.engine.supervisor.status()}
    return states[f"scanner:{SCANNER}"]


def test_the_strategies_key_is_remappable() -> None:
    assert "strategies-screen" in BINDING_IDS
    assert any(binding.id == "strategies-screen" for binding in SptraderApp.BINDINGS)


async def test_run_now_shows_the_run_and_its_lineage(app: SptraderApp) -> None:
    async with strategies_open(app) as (pilot, screen):
        row = screen.scanners[SCANNER]
        assert row["strategy"] == "sma_cross" and row["last_status"] is None
        assert row["next_run_us"] is not None and not row["paused"]
        await pilot.press("r")
        await wait_for(
            pilot,
            lambda: screen.scanners[SCANNER]["last_status"] is not None,
            what="the run to show",
        )
        assert screen.scanners[SCANNER]["last_status"] == "ok"
        run_id = screen.scanners[SCANNER]["last_run_id"]
        tree = screen.query_one("#lineage-tree", Tree)
        await wait_for(pilot, lambda: screen.lineage_run_id == run_id, what="the lineage")
        assert f"run {run_id}" in str(tree.root.label)
        instruments = {str(node.label) for node in tree.root.children}
        assert instruments == set(WATCHLIST)
        steps = [
            str(leaf.label).split()[0] for node in tree.root.children for leaf in node.children
        ]
        assert "load_bars" in steps and "evaluate" in steps
        scanners_table = screen.query_one("#scanners-table", DataTable)
        assert "ok" in str(scanners_table.get_cell(SCANNER, "last"))

        # An attached TUI asks the daemon the same through its API methods.
        server = ApiServer(app.engine)
        steps = await server._call("run_steps", {"run_id": run_id})
        assert steps == await app.client.run_steps(run_id)
        (listed,) = await server._call("scanners", {})
        assert listed["last_run_id"] == run_id and listed["name"] == SCANNER


async def test_pause_and_resume_stop_and_start_the_service(app: SptraderApp) -> None:
    async with strategies_open(app) as (pilot, screen):
        await wait_for(pilot, lambda: service_state(app) == ServiceState.RUNNING, what="running")
        await pilot.press("p")
        await wait_for(pilot, lambda: service_state(app) == ServiceState.STOPPED, what="paused")
        await wait_for(pilot, lambda: screen.scanners[SCANNER]["paused"], what="shown paused")
        table = screen.query_one("#scanners-table", DataTable)
        assert str(table.get_cell(SCANNER, "paused")) == "paused"
        await pilot.press("p")
        await wait_for(pilot, lambda: service_state(app) == ServiceState.RUNNING, what="resumed")
        await wait_for(pilot, lambda: not screen.scanners[SCANNER]["paused"], what="shown active")
        assert str(table.get_cell(SCANNER, "paused")) == "active"


async def test_a_signal_appears_and_choosing_it_charts_its_instrument(
    app: SptraderApp,
) -> None:
    async with strategies_open(app) as (pilot, screen):
        chart = app.query_one(ChartPane)
        assert chart.instrument == WATCHLIST[0]
        now = now_us()
        bar_us = now - now % US_PER_MINUTE - US_PER_MINUTE
        store = app.engine.require_store()
        store.cursor().execute(
            "INSERT INTO signals VALUES (99, ?, ?, make_timestamp(?), 'buy', 0.5, 'test cross',"
            " NULL, NULL, make_timestamp(?))",
            [SCANNER, WATCHLIST[1], bar_us, now],
        )
        await app.engine.bus.publish(
            [
                SignalRaised(
                    now, SCANNER, 99, WATCHLIST[1], bar_us, "buy", 0.5, "test cross", None, None
                )
            ]
        )
        table = screen.query_one("#signals-table", DataTable)
        await wait_for(pilot, lambda: table.row_count == 1, what="the signal row")
        assert [str(cell) for cell in table.get_row_at(0)][1:] == [
            SCANNER,
            WATCHLIST[1],
            "BUY",
            "0.50",
            "test cross",
        ]
        table.focus()
        await pilot.press("enter")
        await wait_for(pilot, lambda: not isinstance(app.screen, StrategiesScreen), what="close")
        assert chart.instrument == WATCHLIST[1]
