"""The Strategies screen, driven as a user drives it: Pilot key presses on a fixed-size
terminal over a small simulated market with one scanner whose schedule never fires
during the test (runs happen only when asked)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import conftest
import pytest
from textual.pilot import Pilot
from textual.widgets import DataTable, Label, Static, Tree

from sptrader.api.server import ApiServer
from sptrader.app import SptraderApp
from sptrader.charting import SignalMark
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
from sptrader.models import US_PER_MINUTE, ServiceState, SignalRaised
from sptrader.screens import (
    ChartPane,
    ErrorScreen,
    StrategiesScreen,
)

WATCHLIST = ["SIM:EURUSD", "SIM:SPY"]
TERMINAL_SIZE = (160, 48)
SCANNER = "cross"


WINDOW = 60  # chart bars


def app_settings(
    home: Path, timeframe: str = "1m", keymap: dict[str, str] | None = None
) -> Settings:
    """Two instruments, a few hours of history, one sma_cross scanner (on ``timeframe``
    bars) due on 1 January only (it never fires by itself during a test)."""
    config = Config(
        watchlist=list(WATCHLIST),
        store=StoreConfig(seed_days=0.2),
        feeds=FeedsConfig(sim=SimFeedConfig(tick_rate=5.0)),
        chart=ChartConfig(bars=WINDOW),
        scanners=[
            ScannerConfig(
                name=SCANNER,
                strategy="sma_cross",
                instruments=list(WATCHLIST),
                timeframe=timeframe,
                schedule="0 0 1 1 *",
                bars=30,
            )
        ],
        keymap=keymap or {},
    )
    return Settings(home=home, config_path=None, config=config)


async def wait_for(pilot, condition, timeout: float = 15, what: str = "") -> None:
    await conftest.wait_for(pilot, condition, timeout, what)


@contextlib.asynccontextmanager
async def strategies_open(app: SptraderApp) -> AsyncIterator[tuple[Pilot, StrategiesScreen]]:
    """The app started (the seeded history shown), the Strategies screen opened with `S`
    and read once; left with ``q``."""
    async with app.run_test(size=TERMINAL_SIZE) as pilot:
        await wait_for(pilot, lambda: app.engine_ready, what="the engine to start")
        chart = app.query_one(ChartPane)
        await wait_for(pilot, lambda: chart.loaded_key is not None, what="the first chart")
        # The seeded history stored (a run before it would skip every instrument).
        await wait_for(pilot, lambda: len(chart.shown_bars()) >= WINDOW, what="a full window")
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


async def api_result(server: ApiServer, method: str, params: dict[str, Any]) -> Any:
    """The result the daemon's API gives a request: through its dispatch point, _reply
    (the method's METHODS row checks the parameters, then its _api_ handler runs), as a
    connected client's request goes; an error reply fails the test."""
    reply = await server._reply(None, 1, method, params, [])  # no websocket: not subscribe
    assert "error" not in reply, reply
    return reply["result"]


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
        # The run's steps hang from the run (sma_cross is stacked: one evaluation over
        # both instruments), an instrument's own steps from its branch.
        branches = {str(node.label) for node in tree.root.children if node.children}
        assert branches <= set(WATCHLIST)
        steps = [
            str(leaf.label).split()[0]
            for node in tree.root.children
            for leaf in (node.children or [node])
        ]
        labels = [str(leaf.label) for node in tree.root.children for leaf in node.children]
        assert "load_bars" in steps and "evaluate" in steps, labels
        assert "(run)" not in str(tree.root.children)
        scanners_table = screen.query_one("#scanners-table", DataTable)
        assert "ok" in str(scanners_table.get_cell(SCANNER, "last"))

        # An attached TUI asks the daemon the same through its API methods.
        server = ApiServer(app.engine)
        steps = await api_result(server, "run_steps", {"run_id": run_id})
        assert steps == await app.client.run_steps(run_id)
        (listed,) = await api_result(server, "scanners", {})
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
            "INSERT INTO signals (run_id, scanner, instrument, ts, side, strength, reason, stop, target, created) VALUES (99, ?, ?, make_timestamp(?), 'buy', 0.5, 'test cross',"
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


async def test_remapped_keys_run_and_pause_the_scanner(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    keymap = {"strategies-run": "x", "strategies-pause": "z"}
    app = SptraderApp(app_settings(home, keymap=keymap))
    async with strategies_open(app) as (pilot, screen):
        title = str(screen.query_one("#strategies-title", Label).content)
        assert "x runs the selected one now" in title and "z pauses" in title
        await pilot.press("r")  # no longer bound here
        await pilot.pause(0.3)
        assert screen.scanners[SCANNER]["last_status"] is None and not screen.running
        await pilot.press("x")
        await wait_for(
            pilot,
            lambda: screen.scanners[SCANNER]["last_status"] == "ok",
            what="the run the remapped key asked for",
        )
        await wait_for(pilot, lambda: service_state(app) == ServiceState.RUNNING, what="running")
        await pilot.press("p")
        await pilot.pause(0.3)
        assert service_state(app) == ServiceState.RUNNING
        await pilot.press("z")
        await wait_for(pilot, lambda: service_state(app) == ServiceState.STOPPED, what="paused")


# --- a chosen signal in the chart --------------------------------------------------------


async def raise_signal(
    app: SptraderApp,
    run_id: int,
    instrument: str,
    bar_us: int,
    side: str,
    reason: str,
    stop: float | None = None,
    target: float | None = None,
) -> None:
    """A signal as a scanner records and announces it."""
    created = now_us()
    app.engine.require_store().cursor().execute(
        "INSERT INTO signals (run_id, scanner, instrument, ts, side, strength, reason, stop, target, created) VALUES (?, ?, ?, make_timestamp(?), ?, 0.5, ?, ?, ?,"
        " make_timestamp(?))",
        [run_id, SCANNER, instrument, bar_us, side, reason, stop, target, created],
    )
    await app.engine.bus.publish(
        [
            SignalRaised(
                created, SCANNER, run_id, instrument, bar_us, side, 0.5, reason, stop, target
            )
        ]
    )


async def click_signal_row(pilot: Pilot, screen: StrategiesScreen, row: int) -> None:
    """One click on a row of the signals table (below its border and header)."""
    table = screen.query_one("#signals-table", DataTable)
    top = table.content_region.y - table.region.y + 1  # the header line
    await pilot.click("#signals-table", offset=(4, top + row))


def plot_text(app: SptraderApp) -> str:
    return str(app.query_one("#chart-plot", Static).content)


def clear_key_shown(app: SptraderApp) -> bool:
    return any(
        active.binding.id == "chart-clear-signal" for active in app.screen.active_bindings.values()
    )


def status_text(app: SptraderApp) -> str:
    return str(app.query_one("#chart-status", Label).content)


async def test_clicking_a_signal_charts_and_marks_it(app: SptraderApp) -> None:
    async with strategies_open(app) as (pilot, screen):
        chart = app.query_one(ChartPane)
        assert chart.instrument == WATCHLIST[0]
        now = now_us()
        minute = now - now % US_PER_MINUTE
        buy_us = minute - 5 * US_PER_MINUTE
        await raise_signal(app, 7, WATCHLIST[1], buy_us, "buy", "fast above slow", 90.0, 130.0)
        await raise_signal(app, 8, WATCHLIST[0], minute - US_PER_MINUTE, "sell", "newer")
        table = screen.query_one("#signals-table", DataTable)
        await wait_for(pilot, lambda: table.row_count == 2, what="the signal rows")
        assert str(table.get_row_at(1)[2]) == WATCHLIST[1]  # newest first
        assert table.cursor_row == 0

        # One click on the second row (not under the cursor) chooses it.
        await click_signal_row(pilot, screen, 1)
        await wait_for(pilot, lambda: not isinstance(app.screen, StrategiesScreen), what="close")
        assert chart.instrument == WATCHLIST[1] and chart.timeframe == "1m"
        assert chart.signal == SignalMark(
            WATCHLIST[1], buy_us, "buy", SCANNER, "fast above slow", 90.0, 130.0, "1m"
        )
        await wait_for(pilot, lambda: chart.has_focus, what="the chart focused")
        # Among the newest bars: the chart stays live.
        assert chart.live
        start, end = chart.view_range()
        assert start <= buy_us < end
        await wait_for(pilot, lambda: chart.signal_drawn_at == buy_us, what="the marker drawn")
        plot = plot_text(app)
        assert "▲" in plot and "▼" not in plot
        assert "stop 90" in plot and "target 130" in plot
        status = status_text(app)
        assert f"signal: BUY {SCANNER}" in status and "fast above slow" in status
        assert "stop" in status and "target" in status

        # It stays while live bars come, and escape clears it.
        renders = chart.renders
        await wait_for(pilot, lambda: chart.renders > renders + 1, what="more renders")
        assert chart.signal is not None and "▲" in plot_text(app)
        assert clear_key_shown(app)  # in the footer
        await pilot.press("escape")
        assert chart.signal is None
        assert not clear_key_shown(app)
        assert not app.query_one("#chart-status", Label).display
        await wait_for(pilot, lambda: "▲" not in plot_text(app), what="the marker gone")
        assert chart.signal_drawn_at is None


async def test_an_old_signal_scrolls_back_to_its_bar_in_its_timeframe(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    app = SptraderApp(app_settings(home, timeframe="5m"))
    width = 5 * US_PER_MINUTE
    async with strategies_open(app) as (pilot, screen):
        chart = app.query_one(ChartPane)
        assert chart.timeframe == "1m"
        now = now_us()
        # Ten hours back: older than the live window (5 h of 5m bars) and than the
        # stored history (the seed's 0.2 days), so the chart fetches it.
        bar_us = now - now % width - 120 * width
        await raise_signal(app, 9, WATCHLIST[0], bar_us, "sell", "fast below slow")
        table = screen.query_one("#signals-table", DataTable)
        await wait_for(pilot, lambda: table.row_count == 1, what="the signal row")
        await click_signal_row(pilot, screen, 0)
        await wait_for(pilot, lambda: not isinstance(app.screen, StrategiesScreen), what="close")

        assert chart.timeframe == "5m"  # the scanner's
        assert not chart.live
        start, end = chart.view_range()
        assert start <= bar_us < end
        assert (bar_us - start) // width == WINDOW * 3 // 4  # three quarters across
        await wait_for(
            pilot,
            lambda: chart.signal_drawn_at == bar_us,
            timeout=30,
            what="the fetched bars with the marker",
        )
        assert "▼" in plot_text(app) and "▲" not in plot_text(app)
        assert "signal: SELL" in status_text(app) and "history" in status_text(app)

        # The mark scrolls with the chart: a quarter window back, its bar is just past
        # the right edge; forward again, it is back.
        await pilot.press("left")
        await wait_for(pilot, lambda: chart.loaded_end == chart.history_end, what="panned")
        assert chart.view_range()[1] <= bar_us
        await wait_for(pilot, lambda: chart.signal_drawn_at is None, what="out of the window")
        await pilot.press("right")
        await wait_for(pilot, lambda: chart.signal_drawn_at == bar_us, what="back in the window")
        # End returns to live; the mark stays (out of the window) until cleared.
        await pilot.press("end")
        assert chart.live and chart.signal is not None
        await wait_for(pilot, lambda: chart.loaded_end is None, what="live again")
        await wait_for(pilot, lambda: chart.signal_drawn_at is None, what="live, no marker")
        # Another instrument drops the mark.
        chart.show_instrument(WATCHLIST[1])
        assert chart.signal is None


# --- opening on a scanner that has run; a signal recorded twice; a click on row 0 -------


async def test_opening_shows_the_last_runs_lineage(app: SptraderApp) -> None:
    """The tree shows the newest run at once, not "no run yet": the first read's tree
    is not lost when the scanners row's highlight starts a newer read meanwhile."""
    async with app.run_test(size=TERMINAL_SIZE) as pilot:
        await wait_for(pilot, lambda: app.engine_ready, what="the engine to start")
        chart = app.query_one(ChartPane)
        await wait_for(pilot, lambda: len(chart.shown_bars()) >= WINDOW, what="a full window")
        run = await app.client.run_scanner(SCANNER)
        await pilot.press("S")
        await wait_for(pilot, lambda: isinstance(app.screen, StrategiesScreen), what="the screen")
        screen = app.screen
        assert isinstance(screen, StrategiesScreen)
        tree = screen.query_one("#lineage-tree", Tree)
        await wait_for(
            pilot,
            lambda: f"run {run['run_id']}" in str(tree.root.label),
            what="the last run's lineage",
        )
        assert tree.root.children  # its steps
        assert screen.lineage_run_id == run["run_id"]
        await pilot.press("q")
        await wait_for(pilot, lambda: app.return_code is not None, what="the app to exit")


async def test_a_signal_recorded_twice_shows_once(app: SptraderApp) -> None:
    async with strategies_open(app) as (pilot, screen):
        now = now_us()
        bar_us = now - now % US_PER_MINUTE - US_PER_MINUTE
        # The scheduled run and a run now on the same closed bar both raise it.
        await raise_signal(app, 7, WATCHLIST[1], bar_us, "buy", "fast above slow")
        await raise_signal(app, 8, WATCHLIST[1], bar_us, "buy", "fast above slow")
        # A different signal (another bar) still gets its own row.
        await raise_signal(app, 8, WATCHLIST[0], bar_us - US_PER_MINUTE, "sell", "other")
        table = screen.query_one("#signals-table", DataTable)
        await wait_for(pilot, lambda: screen.loads and table.row_count >= 2, what="the rows")
        await pilot.pause(0.3)
        rows = [[str(cell) for cell in table.get_row_at(index)] for index in range(table.row_count)]
        assert table.row_count == 2, rows
        assert [row[2] for row in rows] == [WATCHLIST[0], WATCHLIST[1]]  # newest first
        assert screen.signals[1]["run_id"] == 8  # the newest record of the twice-raised one


async def test_clicking_the_highlighted_first_signal_charts_it(app: SptraderApp) -> None:
    """Row 0 is under the cursor from the start (and the scanners table has the focus):
    one click on it, anywhere in the row, chooses it."""
    async with strategies_open(app) as (pilot, screen):
        chart = app.query_one(ChartPane)
        now = now_us()
        bar_us = now - now % US_PER_MINUTE - 3 * US_PER_MINUTE
        await raise_signal(app, 7, WATCHLIST[1], bar_us, "buy", "fast above slow")
        table = screen.query_one("#signals-table", DataTable)
        await wait_for(pilot, lambda: table.row_count == 1, what="the signal row")
        assert table.cursor_row == 0 and not table.has_focus
        top = table.content_region.y - table.region.y + 1
        # Past the last column: still the row.
        await pilot.click("#signals-table", offset=(table.content_region.width - 2, top))
        await wait_for(pilot, lambda: not isinstance(app.screen, StrategiesScreen), what="close")
        assert chart.instrument == WATCHLIST[1] and chart.signal is not None
        assert chart.signal.ts_us == bar_us
