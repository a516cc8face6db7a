"""The Journal screen (`J`), driven as a user drives it: a closed paper trade shows with
its P&L and statistics, the cumulative P&L chart is drawn, and a note typed in is saved
and shown (Pilot key presses and clicks on a small simulated market)."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_app_trading import (
    EURUSD,
    TERMINAL_SIZE,
    WATCHLIST,
    app_settings,
    positions_shown,
    trading,
    wait_for,
)
from textual.widgets import DataTable, Input, Static

from sptrader.app import SptraderApp
from sptrader.screens.journal import (
    ALL,
    JournalScreen,
    render_equity_chart,
    render_pnl_chart,
    stats_text,
    today,
)

__all__ = ["TERMINAL_SIZE", "WATCHLIST"]


@pytest.fixture
def app(tmp_path: Path) -> SptraderApp:
    home = tmp_path / "home"
    home.mkdir()
    return SptraderApp(app_settings(home))


def test_stats_text_names_every_figure() -> None:
    stats = {
        "trades": 3,
        "wins": 2,
        "losses": 1,
        "win_rate": 2 / 3,
        "avg_win": 15.0,
        "avg_loss": -10.0,
        "profit_factor": 3.0,
        "expectancy": 6.67,
        "net_pnl": 20.0,
        "max_drawdown": 10.0,
        "max_drawdown_pct": 0.01,
        "fees": 0.5,
    }
    text = stats_text(stats).plain
    for expected in (
        "Trades        3: 2 won, 1 lost",
        "Win rate      66.7%",
        "Average win   +15.00",
        "Average loss  -10.00",
        "Profit factor 3.00",
        "Expectancy    +6.67",
        "Max drawdown  10.00 (0.01%)",  # a positive fall, as the CLI says it
        "Net P&L       +20.00",
    ):
        assert expected in text
    assert stats_text({"trades": 0}).plain == "no closed trades"
    only_wins = stats_text({**stats, "losses": 0, "profit_factor": None}).plain
    assert "∞ (no losing trade)" in only_wins


def test_the_pnl_chart_draws_from_zero() -> None:
    points = [
        {"time_us": 1_700_000_000_000_000, "pnl": 5.0, "cum_pnl": 5.0},
        {"time_us": 1_700_000_600_000_000, "pnl": -2.0, "cum_pnl": 3.0},
    ]
    chart = render_pnl_chart(points, 60, 12)
    assert "cumulative P&L +3.00" in chart
    assert "no closed trades" in render_pnl_chart([], 60, 12)


def test_the_equity_chart_names_the_last_equity() -> None:
    points = [
        {"ts_us": 1_700_000_000_000_000, "equity": 10_000.0},
        {"ts_us": 1_700_003_600_000_000, "equity": 10_123.5},
    ]
    assert "equity 10,123.50" in render_equity_chart(points, 60, 12)
    assert "no equity curve" in render_equity_chart([], 60, 12)


async def test_the_journal_shows_a_closed_trade_its_stats_and_a_new_note(
    app: SptraderApp,
) -> None:
    async with trading(app) as pilot:
        # A round trip: buy, then close it with a click-free call (the positions pane's
        # close is tested in test_app_trading).
        await app.client.place_order({"instrument": EURUSD, "side": "buy", "qty": 1000})
        await wait_for(pilot, lambda: positions_shown(app) == [EURUSD], what="the position")
        await app.client.close_position(EURUSD)
        await wait_for(pilot, lambda: positions_shown(app) == [], what="flat again")

        await pilot.press("J")
        await wait_for(pilot, lambda: isinstance(app.screen, JournalScreen), what="the journal")
        screen = app.screen
        assert isinstance(screen, JournalScreen)
        await wait_for(pilot, lambda: screen.loads > 0, what="the journal read")

        days = screen.query_one("#journal-days", DataTable)
        assert [key.value for key in days.rows] == [ALL, today()]
        assert screen.selected_day == today()
        assert str(days.get_cell(today(), "trades")) == "1"
        (trade,) = screen.trade_rows()
        assert trade["instrument"] == EURUSD
        assert trade["side"] == "long"
        assert trade["qty"] == "1,000"
        pnl = float(trade["pnl"].replace(",", ""))
        stats = str(screen.query_one("#journal-stats", Static).content)
        assert "Trades        1" in stats
        assert "Win rate" in stats and "Profit factor" in stats and "Max drawdown" in stats
        assert f"Net P&L       {pnl:+,.2f}" in stats
        await wait_for(pilot, lambda: screen.charts > 0, what="the P&L chart")
        chart = screen.query_one("#journal-chart", Static)
        assert "cumulative P&L" in str(chart.content)

        # `e` switches the chart to the equity curve, and back.
        await pilot.press("e")
        await wait_for(pilot, lambda: "equity " in str(chart.content), what="the equity chart")
        assert chart.border_title == "Equity"
        assert screen.chart_mode == "equity"
        await pilot.press("e")
        await wait_for(
            pilot, lambda: "cumulative P&L" in str(chart.content), what="the P&L chart again"
        )
        assert chart.border_title == "Cumulative P&L"

        # A note about today: `n` goes to the input, enter saves it.
        await pilot.press("n")
        note_input = screen.query_one("#journal-note-input", Input)
        assert note_input.has_focus
        await pilot.press(*"took profit too early", "enter")
        notes = screen.query_one("#journal-notes-text", Static)
        await wait_for(
            pilot, lambda: "took profit too early" in str(notes.content), what="the note shown"
        )
        assert note_input.value == ""
        await wait_for(
            pilot, lambda: str(days.get_cell(today(), "notes")) == "1", what="the note counted"
        )

        # All days: the same trade, the note with its day.
        days.focus()
        await pilot.press("up")
        await wait_for(pilot, lambda: screen.selected_day == ALL, what="All days selected")
        await wait_for(pilot, lambda: today() in str(notes.content), what="the notes of all days")
        assert len(screen.trade_rows()) == 1

        await pilot.press("escape")
        await wait_for(
            pilot, lambda: not isinstance(app.screen, JournalScreen), what="the main screen"
        )
