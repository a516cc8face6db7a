"""Chart scrollback, lazy history and the Data screen, driven as a user drives them:
Pilot key presses, wheel notches and clicks on a fixed-size terminal over a small
simulated market on a temporary home (the simulator has any history asked for)."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import conftest
import pytest
from textual import events
from textual.pilot import Pilot
from textual.widgets import DataTable, Label

from sptrader.app import SptraderApp
from sptrader.config import (
    BINDING_IDS,
    ChartConfig,
    Config,
    FeedsConfig,
    Settings,
    SimFeedConfig,
    StoreConfig,
)
from sptrader.feeds.sim import SimFeed
from sptrader.models import US_PER_DAY, US_PER_MINUTE
from sptrader.screens import (
    ChartPane,
    CoverageTable,
    DataScreen,
    ErrorScreen,
    ServicesPane,
    StrategiesScreen,
    WatchlistPane,
)
from sptrader.screens.backtest import BacktestScreen
from sptrader.screens.journal import JournalScreen
from sptrader.screens.order_ticket import OrderTicket
from sptrader.screens.orders import OrdersPane
from sptrader.screens.positions import PositionsPane

WATCHLIST = ["SIM:EURUSD", "SIM:SPY"]
TERMINAL_SIZE = (160, 48)
WINDOW = 60  # chart bars: one hour of 1m bars
SEED_DAYS = 0.2  # stored when the app starts: the last 288 minutes


def app_settings(home: Path) -> Settings:
    """Two instruments, a few hours of history, a one-hour chart window."""
    config = Config(
        watchlist=list(WATCHLIST),
        store=StoreConfig(seed_days=SEED_DAYS),
        feeds=FeedsConfig(sim=SimFeedConfig(tick_rate=5.0)),
        chart=ChartConfig(bars=WINDOW),
    )
    return Settings(home=home, config_path=None, config=config)


async def wait_for(pilot, condition, timeout: float = 15, what: str = "") -> None:
    """conftest's wait_for with this file's longer default (history fetches)."""
    await conftest.wait_for(pilot, condition, timeout, what)


@contextlib.asynccontextmanager
async def running(app: SptraderApp) -> AsyncIterator[Pilot]:
    """The app ready to use (engine started, chart loaded, prices shown), left with
    ``q`` as a user leaves it."""
    async with app.run_test(size=TERMINAL_SIZE) as pilot:
        await wait_for(pilot, lambda: app.engine_ready, what="the engine to start")
        chart = app.query_one(ChartPane)
        await wait_for(
            pilot, lambda: chart.loaded_key == (WATCHLIST[0], "1m"), what="the first chart"
        )
        # Seeded history stored: the chart holds a whole window.
        await wait_for(pilot, lambda: len(chart.shown_bars()) >= WINDOW, what="a full window")
        watchlist = app.query_one(WatchlistPane)
        await wait_for(
            pilot,
            lambda: all(watchlist.row_values(name)["bid"] != "…" for name in WATCHLIST),
            what="prices in every watchlist row",
        )
        try:
            yield pilot
            failed = [
                f"{screen.title_text}: {screen.message}"
                for screen in app.screen_stack
                if isinstance(screen, ErrorScreen)
            ]
            assert not failed, f"a background job failed: {failed}"
        finally:
            if app.return_code is None:
                await pilot.press("q")
                await wait_for(pilot, lambda: app.return_code is not None, what="the app to exit")


def record_backfills(app: SptraderApp) -> list[tuple[str, int, int]]:
    """Every start_backfill the app asks of its client, as (instrument, start, end)."""
    calls: list[tuple[str, int, int]] = []
    original = app.client.start_backfill

    async def recording(instruments: list[str], start_us: int, end_us: int) -> None:
        calls.extend((name, start_us, end_us) for name in instruments)
        await original(instruments, start_us, end_us)

    app.client.start_backfill = recording  # type: ignore[method-assign]
    return calls


def title(app: SptraderApp) -> str:
    """What the chart's title and status lines say."""
    status = app.query_one("#chart-status", Label)
    text = str(app.query_one("#chart-title", Label).content)
    return f"{text}  {status.content}" if status.display else text


def chart_loaded(chart: ChartPane) -> bool:
    """The window panned to is the one shown."""
    return chart.loaded_end == chart.history_end


@pytest.fixture
def home(tmp_path: Path) -> Path:
    directory = tmp_path / "home"
    directory.mkdir()
    return directory


@pytest.fixture
def app(home: Path) -> SptraderApp:
    return SptraderApp(app_settings(home))


# --- key bindings -----------------------------------------------------------------------


def test_remappable_binding_ids_are_the_ones_the_app_defines() -> None:
    defined = [
        binding.id
        for owner in (
            SptraderApp,
            WatchlistPane,
            ServicesPane,
            ChartPane,
            DataScreen,
            StrategiesScreen,
            PositionsPane,
            OrdersPane,
            OrderTicket,
            JournalScreen,
            BacktestScreen,
        )
        for binding in owner.BINDINGS
        if binding.id is not None
    ]
    assert sorted(defined) == sorted(BINDING_IDS)


# --- chart scrollback -------------------------------------------------------------------


async def test_left_pans_back_to_older_bars_and_end_returns_to_live(app: SptraderApp) -> None:
    async with running(app) as pilot:
        chart = app.query_one(ChartPane)
        await pilot.press("c")
        assert chart.has_focus
        assert chart.live and "history" not in title(app)
        live_bars = chart.shown_bars()
        newest = live_bars[-1].ts_us

        await pilot.press("left")
        assert not chart.live
        await wait_for(pilot, lambda: chart_loaded(chart), what="the panned window")
        start, end = chart.view_range()
        assert end - start == WINDOW * US_PER_MINUTE
        # A quarter window back from the live bucket's end (a minute later if the clock
        # turned a minute meanwhile).
        assert end <= newest + 2 * US_PER_MINUTE - WINDOW // 4 * US_PER_MINUTE
        bars = chart.shown_bars()
        assert len(bars) == WINDOW  # all stored: the seed holds 288 minutes
        assert bars[0].ts_us == start and bars[-1].ts_us == end - US_PER_MINUTE
        assert "(history; End for live)" in title(app)
        assert "→" in title(app) and "loading history" not in title(app)

        # Further back: the window moves by a quarter.
        await pilot.press("left")
        await wait_for(pilot, lambda: chart_loaded(chart), what="the window a quarter older")
        assert chart.view_range() == (
            start - WINDOW // 4 * US_PER_MINUTE,
            end - WINDOW // 4 * US_PER_MINUTE,
        )
        older = chart.shown_bars()
        assert older[-1].ts_us < bars[-1].ts_us

        # Live bars keep coming (the price in the title) but the window stays put.
        loads = chart.loads
        close = chart.live_close
        await wait_for(pilot, lambda: chart.live_close != close, what="a live price")
        assert chart.shown_bars() == older
        assert chart.loads == loads

        await pilot.press("end")
        assert chart.live
        await wait_for(pilot, lambda: chart_loaded(chart), what="the live window again")
        assert "history" not in title(app)
        assert chart.shown_bars()[-1].ts_us >= newest
        assert chart.current_minutes  # the forming bar is back


async def test_the_mouse_wheel_pans_the_chart(app: SptraderApp) -> None:
    async with running(app) as pilot:
        chart = app.query_one(ChartPane)
        step = WINDOW // 8 * US_PER_MINUTE
        # Pilot has no wheel helper: its own mouse-event path, as a notch would arrive.
        await pilot._post_mouse_events([events.MouseScrollUp], "#chart-plot", offset=(20, 5))
        assert not chart.live
        first_end = chart.history_end
        assert first_end is not None
        await pilot._post_mouse_events([events.MouseScrollUp], "#chart-plot", offset=(20, 5))
        assert chart.history_end == first_end - step
        await wait_for(pilot, lambda: chart_loaded(chart), what="the window two notches back")
        assert chart.shown_bars()[-1].ts_us == first_end - step - US_PER_MINUTE
        assert "(history; End for live)" in title(app)

        await pilot._post_mouse_events([events.MouseScrollDown], "#chart-plot", offset=(20, 5))
        assert chart.history_end == first_end
        await wait_for(pilot, lambda: chart_loaded(chart), what="the window a notch forward")
        assert chart.shown_bars()[-1].ts_us == first_end - US_PER_MINUTE

        # Forward past the newest bar is live again.
        for _ in range(3):
            await pilot._post_mouse_events([events.MouseScrollDown], "#chart-plot", offset=(20, 5))
        assert chart.live
        await wait_for(pilot, lambda: chart_loaded(chart), what="the live window")
        assert "history" not in title(app)


async def test_panning_into_unstored_history_fetches_it_once(
    app: SptraderApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    # History older than the seed waits for the test's go, so "loading" can be seen.
    cutoff = time.time_ns() // 1000 - int((SEED_DAYS * 1440 + 10) * US_PER_MINUTE)
    go = threading.Event()
    original_history = SimFeed.history

    def gated_history(self: SimFeed, instrument: str, start_us: int, end_us: int):
        if start_us < cutoff:
            go.wait(30)
        return original_history(self, instrument, start_us, end_us)

    monkeypatch.setattr(SimFeed, "history", gated_history)
    calls = record_backfills(app)
    try:
        async with running(app) as pilot:
            chart = app.query_one(ChartPane)
            await pilot.press("c", "home")
            # The window starting at the oldest stored bar: all there, nothing fetched.
            await wait_for(pilot, lambda: not chart.live and chart_loaded(chart), what="oldest")
            oldest_start, _ = chart.view_range()
            assert chart.shown_bars()[0].ts_us == oldest_start
            assert len(chart.shown_bars()) == WINDOW
            await pilot.pause(0.3)
            assert calls == []

            # Home again: a window further back, which the store lacks.
            await pilot.press("home")
            await wait_for(
                pilot,
                lambda: chart.history_end == oldest_start and chart_loaded(chart),
                what="the window before the oldest bar",
            )
            await wait_for(pilot, lambda: "loading history…" in title(app), what="loading")
            assert chart.shown_bars() == []  # what is stored: nothing yet
            assert len(calls) == 1
            (instrument, start_us, end_us) = calls[0]
            assert instrument == WATCHLIST[0]
            assert start_us <= oldest_start - WINDOW * US_PER_MINUTE and end_us >= oldest_start

            go.set()
            await wait_for(
                pilot,
                lambda: len(chart.shown_bars()) == WINDOW,
                what="the fetched bars in the chart",
            )
            bars = chart.shown_bars()
            assert bars[0].ts_us == oldest_start - WINDOW * US_PER_MINUTE
            assert bars[-1].ts_us == oldest_start - US_PER_MINUTE
            await wait_for(
                pilot, lambda: "loading history" not in title(app), what="loading to end"
            )
            assert "(history; End for live)" in title(app)

            # The request fetched a window more: panning on needs no second one.
            await pilot.press("left")
            await wait_for(pilot, lambda: chart_loaded(chart), what="a quarter further back")
            assert len(chart.shown_bars()) == WINDOW
            await pilot.pause(0.3)
            assert len(calls) == 1
    finally:
        go.set()


async def test_a_live_window_longer_than_the_stored_history_fills_itself(
    app: SptraderApp,
) -> None:
    calls = record_backfills(app)
    async with running(app) as pilot:
        chart = app.query_one(ChartPane)
        assert calls == []  # an hour of 1m bars is stored
        await pilot.press("3")  # 60 bars of 15m: 15 hours, the seed holds under 5
        await wait_for(pilot, lambda: chart.loaded_key == (WATCHLIST[0], "15m"), what="15m")
        await wait_for(pilot, lambda: len(calls) == 1, what="a backfill request")
        await wait_for(
            pilot, lambda: len(chart.shown_bars()) == WINDOW, what="the whole 15m window"
        )
        await wait_for(pilot, lambda: "loading history" not in title(app), what="loading ended")
        assert chart.live
        bars = chart.shown_bars()
        assert all(bar.ts_us % (15 * US_PER_MINUTE) == 0 for bar in bars)
        assert bars[-1].ts_us - bars[0].ts_us == (WINDOW - 1) * 15 * US_PER_MINUTE
        await pilot.pause(0.3)
        assert len(calls) == 1


# --- the Data screen --------------------------------------------------------------------


def _coverage_text(table: DataTable, instrument: str) -> str:
    return str(table.get_cell(instrument, "coverage"))


def _heat_offset(table: DataTable, instrument: str, day: int) -> tuple[int, int]:
    """Where to click, relative to the table widget (a border around it), to land on
    ``day`` of ``instrument``'s heatmap."""
    columns = table.ordered_columns
    index = [column.key.value for column in columns].index("days")
    left = sum(column.get_render_width(table) for column in columns[:index])
    x = 1 + left + table.cell_padding + day
    y = 1 + table.header_height + table.get_row_index(instrument)
    return x, y


async def test_data_screen_shows_coverage_and_fills_gaps(app: SptraderApp) -> None:
    async with running(app) as pilot:
        await pilot.press("d")
        await wait_for(pilot, lambda: isinstance(app.screen, DataScreen), what="the Data screen")
        screen = app.screen
        assert isinstance(screen, DataScreen)
        await wait_for(pilot, lambda: screen.loads >= 1, what="the coverage rows")
        table = screen.query_one(CoverageTable)
        assert [row.key.value for row in table.ordered_rows] == WATCHLIST
        assert screen.days == 30
        instrument = WATCHLIST[1]
        status = screen.statuses[instrument]
        assert 0 < status["coverage_pct"] < 2  # under 5 hours of 30 days
        assert _coverage_text(table, instrument) == f"{status['coverage_pct']:.1f}%"
        heat = str(table.get_cell(instrument, "days"))
        assert len(heat) == 30
        assert heat[:-2] == "░" * 28  # empty days (the seed reaches back under 5 hours)

        # A click on one empty day fills that day only.
        day = 25
        assert status["days"][day] == 0
        assert await pilot.click("#data-table", offset=_heat_offset(table, instrument, day))
        await wait_for(
            pilot,
            lambda: screen.statuses[instrument]["days"][day] >= 0.999,
            timeout=30,  # as the fills below: a day's backfill under a loaded machine
            what=f"day {day} of {instrument} to be filled",
        )
        days = screen.statuses[instrument]["days"]
        assert days[day - 1] == 0 and days[day + 1] == 0
        assert str(table.get_cell(instrument, "days"))[day] == "█"
        assert table.cursor_row == table.get_row_index(instrument)

        # f fills the selected row's gaps over the window: the row becomes complete.
        await pilot.press("f")
        await wait_for(
            pilot,
            lambda: _coverage_text(table, instrument) == "100.0%",
            timeout=30,
            what=f"{instrument} to be complete",
        )
        # 100.0% is rounded: today's cell can lag while the live minute closes.
        await wait_for(
            pilot,
            lambda: str(table.get_cell(instrument, "days")) == "█" * 30,
            timeout=30,
            what=f"every day of {instrument} full",
        )
        status_line = str(screen.query_one("#data-status", Label).content)
        assert instrument in status_line and "filled" in status_line
        # The other row was left alone.
        assert _coverage_text(table, WATCHLIST[0]) != "100.0%"
        # Nothing left to fill: said so, nothing asked of the engine.
        await pilot.press("f")
        assert "complete over the last 30 days" in str(
            screen.query_one("#data-status", Label).content
        )

        await pilot.press("escape")
        await wait_for(pilot, lambda: not isinstance(app.screen, DataScreen), what="going back")
        assert app.query_one("#watchlist-table").has_focus


async def test_data_screen_window_keys_and_palette(app: SptraderApp) -> None:
    async with running(app) as pilot:
        await pilot.press("ctrl+p")
        await pilot.press(*"coverage and gaps")
        await pilot.pause(0.5)
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, DataScreen), what="the Data screen")
        screen = app.screen
        assert isinstance(screen, DataScreen)
        await wait_for(pilot, lambda: screen.loads >= 1, what="the coverage rows")
        table = screen.query_one(CoverageTable)

        await pilot.press("right_square_bracket")
        assert screen.days == 60
        await wait_for(
            pilot,
            lambda: len(str(table.get_cell(WATCHLIST[0], "days"))) == 60,
            what="60 days of heatmap",
        )
        await pilot.press("left_square_bracket", "minus")
        assert screen.days == 14
        await wait_for(
            pilot,
            lambda: len(str(table.get_cell(WATCHLIST[0], "days"))) == 14,
            what="14 days of heatmap",
        )
        start, end = screen.window()
        assert end - start == 14 * US_PER_DAY

        # Keys for the main screen's panes do nothing here; d goes back.
        await pilot.press("3")
        assert app.query_one(ChartPane).timeframe == "1m"
        await pilot.press("d")
        await wait_for(pilot, lambda: not isinstance(app.screen, DataScreen), what="going back")
