"""The control center as a user drives it: Pilot clicks and key presses on a fixed-size
terminal, asserting on what the panes show. Every test runs its own engine on a
temporary home; waits are for conditions, never fixed sleeps."""

from __future__ import annotations

import contextlib
import itertools
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from conftest import first_palette_option, wait_for
from textual.pilot import Pilot
from textual.widgets import Button, DataTable, Label, OptionList

from sptrader.app import SptraderApp
from sptrader.config import (
    Config,
    FeedsConfig,
    Settings,
    SimFeedConfig,
    StoreConfig,
    SupervisorConfig,
)
from sptrader.feeds.sim import SimFeed
from sptrader.models import US_PER_DAY, US_PER_MINUTE, ServiceState
from sptrader.screens import (
    BackfillsPane,
    ChartPane,
    EventLogPane,
    HelpScreen,
    ServicesPane,
    SymbolSearchScreen,
    WatchlistPane,
)
from sptrader.screens.watchlist import WatchlistTable
from sptrader.store import Store, queries

WATCHLIST = ["SIM:EURUSD", "SIM:BTCUSD", "SIM:SPY"]
TERMINAL_SIZE = (160, 48)


def app_settings(home: Path, *, supervisor: SupervisorConfig | None = None) -> Settings:
    """A small, fast market on a temporary home: three instruments, a few hours of
    history, five times the normal tick rate."""
    config = Config(
        watchlist=list(WATCHLIST),
        store=StoreConfig(seed_days=0.2),
        feeds=FeedsConfig(sim=SimFeedConfig(tick_rate=5.0)),
        supervisor=supervisor or SupervisorConfig(),
    )
    return Settings(home=home, config_path=None, config=config)


def row_offset(table: WatchlistTable, row_key: str, x: int = 2) -> tuple[int, int]:
    """Where to click, relative to the table widget, to land on ``row_key``'s row
    (the header takes the first line(s); the table is not scrolled in these tests)."""
    return (x, table.header_height + table.get_row_index(row_key) - round(table.scroll_y))


def _price(text: str) -> float | None:
    try:
        return float(text.replace(",", ""))
    except ValueError:
        return None


def _prices_shown(watchlist: WatchlistPane) -> bool:
    for instrument in WATCHLIST:
        row = watchlist.row_values(instrument)
        if any(_price(row[column]) is None for column in ("bid", "ask", "last")):
            return False
    return True


async def _until_ready(pilot, app: SptraderApp) -> None:
    """The engine has started, the chart shows the first instrument and every
    watchlist row shows prices."""
    await wait_for(pilot, lambda: app.engine_ready, what="the engine to start")
    chart = app.query_one(ChartPane)
    await wait_for(
        pilot,
        lambda: chart.loaded_key == (WATCHLIST[0], "1m"),
        what=f"the chart to load {WATCHLIST[0]} 1m",
    )
    # On a slow machine the feed streams before its gap fill lands (GAP_FILL_WAIT_S);
    # the chart reloads when it does. Tests that read history wait for it here.
    await wait_for(
        pilot, lambda: len(chart.shown_bars()) >= 30, what="the seeded history on the chart"
    )
    watchlist = app.query_one(WatchlistPane)
    await wait_for(pilot, lambda: _prices_shown(watchlist), what="prices in every watchlist row")


@contextlib.asynccontextmanager
async def running(app: SptraderApp) -> AsyncIterator[Pilot]:
    """The app on a fixed-size terminal, ready to use; left with ``q`` as a user
    leaves it (run_test's own teardown skips the app's quit action)."""
    async with app.run_test(size=TERMINAL_SIZE) as pilot:
        await _until_ready(pilot, app)
        try:
            yield pilot
        finally:
            if app.return_code is None:
                await pilot.press("q")
                await wait_for(pilot, lambda: app.return_code is not None, what="the app to exit")


def _cell(table: DataTable, row: str, column: str) -> str:
    return str(table.get_cell(row, column))


def _event_lines(pane: EventLogPane) -> list[str]:
    return [line.text for line in pane.lines]


@pytest.fixture
def home(tmp_path: Path) -> Path:
    directory = tmp_path / "home"
    directory.mkdir()
    return directory


@pytest.fixture
def app(home: Path) -> SptraderApp:
    return SptraderApp(app_settings(home))


# --- watchlist ------------------------------------------------------------------------


async def test_watchlist_fills_with_prices_that_move(app: SptraderApp) -> None:
    async with running(app) as pilot:
        watchlist = app.query_one(WatchlistPane)
        for instrument in WATCHLIST:
            row = watchlist.row_values(instrument)
            assert row["instrument"] == instrument
            bid, ask, last = (_price(row[column]) for column in ("bid", "ask", "last"))
            assert bid is not None and ask is not None and last is not None, row
            assert 0 < bid <= ask, row
            assert row["trend"], f"no sparkline for {instrument}: {row}"

        first_bids = {name: watchlist.row_values(name)["bid"] for name in WATCHLIST}
        await wait_for(
            pilot,
            lambda: any(
                watchlist.row_values(name)["bid"] != first_bids[name] for name in WATCHLIST
            ),
            what=f"a bid to change from {first_bids}",
        )


async def test_clicking_a_watchlist_row_shows_that_instrument(app: SptraderApp) -> None:
    async with running(app) as pilot:
        chart = app.query_one(ChartPane)
        table = app.query_one("#watchlist-table", WatchlistTable)
        assert chart.instrument == WATCHLIST[0]

        offset = row_offset(table, WATCHLIST[1])
        assert offset == (2, 2)  # header on row 0, first instrument on row 1
        assert await pilot.click("#watchlist-table", offset=offset)
        await wait_for(
            pilot,
            lambda: chart.loaded_key == (WATCHLIST[1], "1m"),
            what=f"the chart to load {WATCHLIST[1]}",
        )
        assert chart.instrument == WATCHLIST[1]
        assert table.cursor_row == 1
        assert WATCHLIST[1] in str(app.query_one("#chart-title", Label).content)
        assert all(bar.instrument == WATCHLIST[1] for bar in chart.shown_bars())


async def test_enter_on_a_watchlist_row_shows_that_instrument(app: SptraderApp) -> None:
    async with running(app) as pilot:
        chart = app.query_one(ChartPane)
        table = app.query_one("#watchlist-table", WatchlistTable)
        table.focus()
        await pilot.press("down", "down")
        assert table.cursor_row == 2
        await wait_for(pilot, lambda: chart.instrument == WATCHLIST[2], what="the cursor row")

        # Show another instrument from the command palette; the watchlist cursor stays
        # on the third row, and Enter there brings its instrument back.
        await pilot.press("ctrl+p")
        await pilot.press(*"EURUSD")
        await wait_for(
            pilot,
            lambda: first_palette_option(app) == "Chart SIM:EURUSD",
            what="the palette to offer Chart SIM:EURUSD",
        )
        await pilot.press("enter")
        await wait_for(pilot, lambda: chart.instrument == WATCHLIST[0], what="the palette command")
        await wait_for(pilot, lambda: table.has_focus, what="focus back on the watchlist")
        await pilot.pause()
        assert chart.instrument == WATCHLIST[0]
        assert table.cursor_row == 2

        await pilot.press("enter")
        await wait_for(
            pilot,
            lambda: chart.loaded_key == (WATCHLIST[2], "1m"),
            what=f"Enter to show {WATCHLIST[2]}",
        )


# --- chart ------------------------------------------------------------------------------


async def test_timeframe_keys_reload_the_chart(app: SptraderApp) -> None:
    async with running(app) as pilot:
        chart = app.query_one(ChartPane)
        assert app.query_one("#tf-1m", Button).has_class("-current")

        await pilot.press("3")
        assert chart.timeframe == "15m"
        await wait_for(pilot, lambda: chart.loaded_key == (WATCHLIST[0], "15m"), what="15m bars")
        # 120 15m bars reach past the seeded history: the chart fetches the rest first.
        await wait_for(pilot, lambda: not chart.loading_history, what="the history fill")
        assert app.query_one("#tf-15m", Button).has_class("-current")
        assert not app.query_one("#tf-1m", Button).has_class("-current")
        assert len(app.query(".tf-button.-current")) == 1
        bars = chart.shown_bars()
        assert len(bars) >= 2
        assert all(bar.timeframe == "15m" for bar in bars)
        assert all(bar.ts_us % (15 * US_PER_MINUTE) == 0 for bar in bars)
        assert [b.ts_us - a.ts_us for a, b in itertools.pairwise(bars)] == [15 * US_PER_MINUTE] * (
            len(bars) - 1
        )
        assert "15m" in str(app.query_one("#chart-title", Label).content)
        await wait_for(
            pilot, lambda: chart.drawn_key == (WATCHLIST[0], "15m"), what="the 15m chart drawn"
        )

        await pilot.press("6")
        assert chart.timeframe == "1d"
        await wait_for(pilot, lambda: chart.loaded_key == (WATCHLIST[0], "1d"), what="1d bars")
        assert app.query_one("#tf-1d", Button).has_class("-current")
        assert not app.query_one("#tf-15m", Button).has_class("-current")
        bars = chart.shown_bars()
        assert bars and all(bar.timeframe == "1d" for bar in bars)
        assert all(bar.ts_us % US_PER_DAY == 0 for bar in bars)


async def test_clicking_a_timeframe_button_reloads_the_chart(app: SptraderApp) -> None:
    async with running(app) as pilot:
        chart = app.query_one(ChartPane)
        assert await pilot.click("#tf-1h")
        assert chart.timeframe == "1h"
        await wait_for(pilot, lambda: chart.loaded_key == (WATCHLIST[0], "1h"), what="1h bars")
        assert not app.query_one("#tf-1m", Button).has_class("-current")
        bars = chart.shown_bars()
        assert bars and all(bar.timeframe == "1h" for bar in bars)
        assert all(bar.ts_us % (60 * US_PER_MINUTE) == 0 for bar in bars)


async def test_clicked_timeframe_button_stays_marked_active(app: SptraderApp) -> None:
    async with running(app) as pilot:
        chart = app.query_one(ChartPane)
        button = app.query_one("#tf-1h", Button)
        assert await pilot.click("#tf-1h")
        await wait_for(pilot, lambda: chart.loaded_key == (WATCHLIST[0], "1h"), what="1h bars")
        # Outlast the button's press effect (a fixed pause: it is a fixed-length effect).
        await pilot.pause(max(0.5, 2 * button.active_effect_duration))
        assert chart.timeframe == "1h"
        assert [widget.id for widget in app.query(".tf-button.-current")] == ["tf-1h"]


# --- services ---------------------------------------------------------------------------


async def test_stop_and_start_the_sim_feed_from_the_services_pane(app: SptraderApp) -> None:
    async with running(app) as pilot:
        services = app.query_one(ServicesPane)
        table = app.query_one("#services-table", DataTable)
        await wait_for(pilot, lambda: "sim" in services.statuses, what="the sim row")
        await wait_for(
            pilot, lambda: _cell(table, "sim", "state") == "running", what="sim to be running"
        )

        assert await pilot.click("#services-table", offset=row_offset(table, "sim"))
        assert services.selected == "sim"
        stop = app.query_one("#service-stop", Button)
        start = app.query_one("#service-start", Button)
        assert not stop.disabled
        assert start.disabled

        assert await pilot.click("#service-stop")
        await wait_for(
            pilot,
            lambda: _cell(table, "sim", "state") == "stopped",
            what="the sim row to show stopped",
        )
        states = {status.name: status.state for status in await app.client.services()}
        assert states == {
            "store": ServiceState.RUNNING,
            "bars": ServiceState.RUNNING,
            "broker": ServiceState.RUNNING,
            "sim": ServiceState.STOPPED,
        }
        await wait_for(pilot, lambda: not start.disabled, what="Start to be enabled")
        assert stop.disabled

        assert await pilot.click("#service-start")
        await wait_for(
            pilot,
            lambda: _cell(table, "sim", "state") == "running",
            what="the sim row to show running again",
        )
        states = {status.name: status.state for status in await app.client.services()}
        assert states["sim"] == ServiceState.RUNNING
        assert not stop.disabled


async def test_store_and_bars_services_cannot_be_stopped(app: SptraderApp) -> None:
    async with running(app) as pilot:
        services = app.query_one(ServicesPane)
        table = app.query_one("#services-table", DataTable)
        await wait_for(pilot, lambda: len(services.statuses) == 4, what="four service rows")
        for name in ("store", "bars", "broker"):
            assert await pilot.click("#services-table", offset=row_offset(table, name))
            assert services.selected == name
            for button in ("#service-stop", "#service-start", "#service-restart"):
                assert app.query_one(button, Button).disabled, f"{button} enabled for {name}"
            # The key does nothing either.
            await pilot.press("x")
            assert _cell(table, name, "state") == "running"
        states = {status.name: status.state for status in await app.client.services()}
        assert states["store"] == states["bars"] == ServiceState.RUNNING


async def test_events_pane_shows_service_state_changes(app: SptraderApp) -> None:
    async with running(app) as pilot:
        events = app.query_one(EventLogPane)
        await wait_for(pilot, lambda: events.lines_written > 0, what="a line in the events pane")
        await wait_for(
            pilot,
            lambda: any("sim:" in line and "running" in line for line in _event_lines(events)),
            what="the sim feed's start in the events pane",
        )

        # Keyboard only: focus the services pane, pick the sim row, stop it.
        await pilot.press("v")
        table = app.query_one("#services-table", DataTable)
        assert table.has_focus
        while app.query_one(ServicesPane).selected != "sim":
            await pilot.press("down")
        written = events.lines_written
        await pilot.press("x")
        await wait_for(
            pilot,
            lambda: any("sim:" in line and "→ stopped" in line for line in _event_lines(events)),
            what="the sim feed's stop in the events pane",
        )
        assert events.lines_written > written


async def test_a_crashing_feed_is_restarted_and_counted(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    original_generate = SimFeed.generate
    crashes: list[int] = []

    def generate_failing_once(self: SimFeed, start_us: int, end_us: int) -> list[object]:
        if not crashes:
            crashes.append(start_us)
            raise RuntimeError("simulated feed failure")
        return original_generate(self, start_us, end_us)

    monkeypatch.setattr(SimFeed, "generate", generate_failing_once)
    app = SptraderApp(
        app_settings(home, supervisor=SupervisorConfig(backoff_initial_s=0.05, backoff_jitter=0))
    )
    async with running(app) as pilot:
        assert crashes, "the patched feed never ran"
        table = app.query_one("#services-table", DataTable)
        await wait_for(
            pilot,
            lambda: _cell(table, "sim", "errors") == "1" and _cell(table, "sim", "restarts") == "1",
            what="the sim row to count one error and one restart",
        )
        await wait_for(
            pilot, lambda: _cell(table, "sim", "state") == "running", what="sim running again"
        )
        (sim,) = [status for status in await app.client.services() if status.name == "sim"]
        assert sim.errors == 1
        assert sim.restarts == 1
        assert sim.state == ServiceState.RUNNING
        assert "simulated feed failure" in sim.last_error
        events = app.query_one(EventLogPane)
        await wait_for(
            pilot,
            lambda: any("simulated feed failure" in line for line in _event_lines(events)),
            what="the crash in the events pane",
        )


# --- help and quit ----------------------------------------------------------------------


async def test_question_mark_opens_help_and_escape_closes_it(app: SptraderApp) -> None:
    async with running(app) as pilot:
        await pilot.press("question_mark")
        await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen), what="the help screen")
        await pilot.press("escape")
        await wait_for(
            pilot, lambda: not isinstance(app.screen, HelpScreen), what="the help screen to close"
        )
        assert app.query_one("#watchlist-table").has_focus

        # ``?`` toggles it too.
        await pilot.press("question_mark")
        await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen), what="the help screen")
        await pilot.press("question_mark")
        await wait_for(
            pilot, lambda: not isinstance(app.screen, HelpScreen), what="the help screen to close"
        )


async def test_q_quits_from_the_help_screen(app: SptraderApp) -> None:
    async with running(app) as pilot:
        await pilot.press("question_mark")
        await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen), what="the help screen")
        await pilot.press("q")
        await wait_for(pilot, lambda: app.return_code is not None, what="the app to exit")
    assert app.return_code == 0
    assert app.engine.store is None


async def test_q_quits_and_leaves_the_bars_in_the_store(app: SptraderApp) -> None:
    store_path = app.settings.store_path
    async with running(app) as pilot:
        await wait_for(
            pilot,
            lambda: all(app.client.forming_bar(name) is not None for name in WATCHLIST),
            what="a forming bar for every instrument",
        )
        forming = {name: app.client.forming_bar(name).ts_us for name in WATCHLIST}
        await pilot.press("q")
        await wait_for(pilot, lambda: app.return_code is not None, what="the app to exit")
    assert app.return_code == 0
    assert app.engine.store is None
    assert not app.engine.started

    store = Store(store_path)
    try:
        counts = queries.table_counts(store)
        assert counts["bars_1m"] > 0
        assert counts["service_events"] > 0
        assert queries.stored_instruments(store) == sorted(WATCHLIST)
        for name, ts_us in forming.items():
            # The forming bar at quit time was flushed too.
            assert queries.last_bar_ts(store, name) >= ts_us
    finally:
        store.close()


# --- instrument search, watchlist changes, backfills, stale rows -------------------------


async def add_by_search(pilot, app: SptraderApp, query: str, instrument: str) -> None:
    """`/`, type ``query``, wait until ``instrument`` is the only result, `enter`."""
    await pilot.press("slash")
    screen = app.screen
    assert isinstance(screen, SymbolSearchScreen)
    await pilot.press(*query)
    results = screen.query_one(OptionList)
    await wait_for(
        pilot,
        lambda: results.option_count == 1 and results.get_option_at_index(0).id == instrument,
        what=f"the search to find {instrument}",
    )
    await pilot.press("enter")


async def test_slash_searches_and_enter_adds_a_streaming_instrument(
    app: SptraderApp, home: Path
) -> None:
    async with running(app) as pilot:
        await add_by_search(pilot, app, "solusd", "SIM:SOLUSD")
        watchlist = app.query_one(WatchlistPane)
        await wait_for(
            pilot, lambda: "SIM:SOLUSD" in watchlist.instruments, what="a SIM:SOLUSD row"
        )
        await wait_for(
            pilot,
            lambda: _price(watchlist.row_values("SIM:SOLUSD")["bid"]) is not None,
            what="live SIM:SOLUSD prices",
        )
        assert "SIM:SOLUSD" in (home / "watchlist.json").read_text()

        # delete on the selected row takes it out again.
        table = app.query_one("#watchlist-table", WatchlistTable)
        table.focus()
        table.move_cursor(row=table.get_row_index("SIM:SOLUSD"))
        await pilot.press("delete")
        await wait_for(
            pilot, lambda: "SIM:SOLUSD" not in watchlist.instruments, what="the row to go"
        )
        assert "SIM:SOLUSD" not in (home / "watchlist.json").read_text()


async def test_search_escape_adds_nothing(app: SptraderApp) -> None:
    async with running(app) as pilot:
        await pilot.press("slash")
        await pilot.press(*"eur", "escape")
        await pilot.pause()
        assert not isinstance(app.screen, SymbolSearchScreen)
        assert app.query_one(WatchlistPane).instruments == WATCHLIST


async def test_a_backfill_from_the_palette_shows_its_progress(app: SptraderApp, home: Path) -> None:
    async with running(app) as pilot:
        await pilot.press("ctrl+p")
        await pilot.press(*"Backfill SIM:SPY: last 7")
        await wait_for(
            pilot,
            lambda: first_palette_option(app) == "Backfill SIM:SPY: last 7 days",
            what="the palette to offer the backfill",
        )
        await pilot.press("enter")
        pane = app.query_one(BackfillsPane)
        await wait_for(
            pilot,
            lambda: "SIM:SPY" in pane.progress and pane.progress["SIM:SPY"].state == "done",
            what="the backfill to finish",
        )
        assert pane.display
        line = str(pane.render())
        assert "SIM:SPY" in line and "done" in line
        done = pane.progress["SIM:SPY"]
        assert done.done == done.total >= 7
    store = Store(home / "sptrader.duckdb")
    try:
        first = queries.first_bar_ts(store, "SIM:SPY")
    finally:
        store.close()
    assert first is not None and first <= time.time() * 1e6 - 6.9 * US_PER_DAY


async def test_rows_of_a_stopped_feed_are_marked_stale(app: SptraderApp) -> None:
    async with running(app) as pilot:
        watchlist = app.query_one(WatchlistPane)
        await app.client.stop_service("sim")
        await wait_for(
            pilot,
            lambda: watchlist.row_values("SIM:EURUSD")["instrument"] == "SIM:EURUSD ⚠",
            what="the stale mark",
        )
        await app.client.start_service("sim")
        await wait_for(
            pilot,
            lambda: watchlist.row_values("SIM:EURUSD")["instrument"] == "SIM:EURUSD",
            what="the mark to go",
        )


async def test_a_scanner_signal_shows_a_notification(app: SptraderApp) -> None:
    from sptrader.models import SignalRaised

    async with running(app) as pilot:
        app.engine.bus.publish_nowait(
            [
                SignalRaised(
                    0, "crosses", 7, "SIM:EURUSD", 0, "buy", 0.8,
                    "SMA(10) crossed above SMA(30)", None, None,
                )
            ]
        )  # fmt: skip
        await wait_for(
            pilot,
            lambda: any(
                "BUY SIM:EURUSD: SMA(10) crossed above SMA(30)" in str(note.message)
                for note in app._notifications
            ),
            what="the signal's notification",
        )
