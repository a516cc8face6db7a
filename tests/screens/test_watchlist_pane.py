"""The watchlist pane on its own (a small host app, synthetic quotes): its columns fit
any width (dropped by priority, never cut, every sparkline bar shown, no horizontal
scrollbar), a quote repaints only its own row, stale rows are marked, and the cursor
follows keys and clicks."""

from __future__ import annotations

import pytest
from textual.app import App, ComposeResult

from sptrader.client.protocol import InstrumentSummary
from sptrader.models import QuoteReceived
from sptrader.screens.watchlist import WatchlistPane, WatchlistTable

NAMES = ["SIM:EURUSD", "SIM:BTCUSD", "SIM:USDJPY"]
PRICES = {"SIM:EURUSD": 1.08123, "SIM:BTCUSD": 104_321.5, "SIM:USDJPY": 148.123}
DECIMALS = {"SIM:EURUSD": 5, "SIM:BTCUSD": 2, "SIM:USDJPY": 3}
POINTS = 20


class Host(App[None]):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.pane_width = width
        self.chosen: list[str] = []

    def compose(self) -> ComposeResult:
        pane = WatchlistPane(NAMES, POINTS, decimals=DECIMALS.get, id="watchlist")
        pane.styles.width = self.pane_width
        yield pane

    def on_watchlist_pane_instrument_chosen(self, event: WatchlistPane.InstrumentChosen) -> None:
        self.chosen.append(event.instrument)


def quote(name: str, bid: float) -> QuoteReceived:
    return QuoteReceived(name, 1, bid, round(bid * 1.0001, 5), 1.0, 1.0)


def feed(pane: WatchlistPane) -> None:
    pane.load_summaries(
        {
            name: InstrumentSummary(
                instrument=name,
                session_open=price * 0.99,
                last=price,
                closes=[price * (1 + i / 1000) for i in range(POINTS)],
            )
            for name, price in PRICES.items()
        }
    )
    pane.apply({name: quote(name, price) for name, price in PRICES.items()}, {}, [])


def lines(table: WatchlistTable) -> list[str]:
    return [table.render_line(y).text for y in range(table.row_count + 1)]


@pytest.mark.parametrize(
    ("width", "columns"),
    [
        (34, ("instrument", "last", "change")),
        (40, ("instrument", "last", "change", "trend")),
        (70, ("instrument", "bid", "ask", "last", "change", "trend")),
        (84, ("instrument", "bid", "ask", "last", "change", "trend")),
    ],
)
async def test_columns_fit_the_pane_by_priority(width: int, columns: tuple[str, ...]) -> None:
    app = Host(width)
    async with app.run_test(size=(120, 20)) as pilot:
        pane = app.query_one(WatchlistPane)
        feed(pane)
        await pilot.pause()
        table = pane.table
        assert table.columns == columns
        inner = table.scrollable_content_region.width
        assert not table.show_horizontal_scrollbar
        assert table.virtual_size.width <= inner
        shown = lines(table)
        for line in shown:
            assert len(line.rstrip()) <= inner, line
        for name in NAMES:
            row = pane.row_values(name)
            line = next(text for text in shown if name in text)
            for column in columns:  # every shown cell whole, at the instrument's decimals
                assert row[column] in line, (column, row[column], line)
            if "trend" in columns:  # every sparkline bar (the trend's width of points)
                assert len(row["trend"]) == table.trend_width
                assert table.trend_width == min(
                    POINTS, inner - len(line.rstrip()) + len(row["trend"])
                )
        assert pane.row_values("SIM:BTCUSD")["last"] == "104,321.50"
        assert pane.row_values("SIM:USDJPY")["bid"] == "148.123"


async def test_a_quote_repaints_only_its_row() -> None:
    app = Host(84)
    async with app.run_test(size=(120, 20)) as pilot:
        pane = app.query_one(WatchlistPane)
        feed(pane)
        await pilot.pause(0.7)  # flashes over
        pane.repaint_flashes()
        table = pane.table
        repainted: list[int] = []
        original = table.repaint_line
        table.repaint_line = lambda y: (repainted.append(y), original(y))  # type: ignore[method-assign]
        pane.apply({"SIM:BTCUSD": quote("SIM:BTCUSD", 104_400.25)}, {}, [])
        assert repainted == [1 + NAMES.index("SIM:BTCUSD")]
        repainted.clear()
        pane.apply({}, {}, [])  # nothing new: nothing repainted
        assert repainted == []
        await pilot.pause()
        assert "104,400.25" in lines(table)[2]


async def test_stale_rows_are_marked_and_keys_and_clicks_choose_rows() -> None:
    app = Host(84)
    async with app.run_test(size=(120, 20)) as pilot:
        pane = app.query_one(WatchlistPane)
        feed(pane)
        pane.mark_stale({"SIM:USDJPY"})
        await pilot.pause()
        table = pane.table
        assert "SIM:USDJPY ⚠" in lines(table)[3]
        table.focus()
        await pilot.press("down", "down")
        assert table.cursor_row == 2
        assert app.chosen[-1] == "SIM:USDJPY"
        await pilot.press("up")
        assert app.chosen[-1] == "SIM:BTCUSD"
        assert await pilot.click(WatchlistTable, offset=(3, 1))  # the first row
        await pilot.pause()
        assert table.cursor_row == 0 and app.chosen[-1] == "SIM:EURUSD"
        pane.set_instruments(NAMES[:2])
        await pilot.pause()
        assert table.row_count == 2 and "SIM:USDJPY" not in "".join(lines(table))


class TallHost(App[None]):
    """More rows than the pane's height: the table scrolls under its header."""

    names = [f"SIM:X{i}" for i in range(10)]

    def compose(self) -> ComposeResult:
        pane = WatchlistPane(self.names, POINTS, id="watchlist")
        pane.styles.height = 6  # the header and 5 rows
        yield pane


async def test_a_scrolled_table_keeps_its_header_and_repaints_the_right_line() -> None:
    app = TallHost()
    async with app.run_test(size=(100, 20)) as pilot:
        pane = app.query_one(WatchlistPane)
        table = pane.table
        table.focus()
        await pilot.press("end")
        await pilot.pause()
        assert table.cursor_row == 9 and round(table.scroll_y) == 5
        shown = [table.render_line(y).text for y in range(6)]
        assert shown[0].lstrip().startswith("Instrument")
        assert "SIM:X9" in shown[5] and "SIM:X5" in shown[1]
        repainted: list[int] = []
        original = table.repaint_line
        table.repaint_line = lambda y: (repainted.append(y), original(y))  # type: ignore[method-assign]
        pane.apply({"SIM:X9": quote("SIM:X9", 2.5), "SIM:X0": quote("SIM:X0", 1.5)}, {}, [])
        assert repainted == [5]  # X0 is scrolled out of sight: nothing to repaint
        await pilot.pause()
        assert "2.50000" in table.render_line(5).text
