"""The control center at every terminal size from 80x24: the watchlist and a chart of at
least 40 columns always on screen, the other panes one key or click away, the ✕ close and
✕ cancel cells never dropped, events wrapped rather than cut (Pilot on the SIM market)."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_app_trading import (
    EURUSD,
    app_settings,
    cell_offset,
    open_ticket,
    trading,
    type_into,
    wait_for,
)

from sptrader.app import SptraderApp
from sptrader.models import EngineLogged
from sptrader.screens import ChartPane
from sptrader.screens.account import AccountBar
from sptrader.screens.event_log import EventLogPane
from sptrader.screens.orders import OrdersPane
from sptrader.screens.pane_bar import PaneBar
from sptrader.screens.positions import ACTION, PositionsPane
from sptrader.screens.watchlist import WatchlistPane

SIZES = [(80, 24), (100, 30), (120, 40), (159, 40), (160, 48), (220, 60)]


def shown(app: SptraderApp, selector: str) -> bool:
    """On screen: displayed, and given some room by the layout."""
    widget = app.query_one(selector)
    region = widget.region
    return widget.display and region.width > 0 and region.height > 0


@pytest.mark.parametrize(("width", "height"), SIZES)
async def test_every_size_keeps_the_watchlist_and_a_readable_chart(
    tmp_path: Path, width: int, height: int
) -> None:
    app = SptraderApp(app_settings(tmp_path))
    async with trading(app, size=(width, height)) as pilot:
        watchlist = app.query_one(WatchlistPane)
        # every instrument's row fits (border, header, rows)
        assert watchlist.region.height >= len(app.client.watchlist) + 3
        chart = app.query_one(ChartPane)
        assert chart.region.width >= 40
        assert chart.region.right <= width
        assert shown(app, "#chart-title")
        for button in chart.query(".tf-button"):
            assert button.region.right <= chart.region.right
        assert shown(app, AccountBar.__name__)
        account = app.query_one(AccountBar)
        assert account.content.cell_len <= account.content_size.width  # type: ignore[attr-defined]
        bar = app.query_one(PaneBar)
        if width >= 160:
            for pane in ("#positions", "#orders", "#events", "#services"):
                assert shown(app, pane)
            assert not bar.display
        else:
            assert shown(app, "#pane-bar")
            assert shown(app, "#positions")
            assert not shown(app, "#events")
            assert not shown(app, "#services")
        await pilot.pause()


@pytest.mark.parametrize("size", [(80, 24), (120, 40)])
async def test_each_pane_is_one_key_or_one_click_away(tmp_path: Path, size) -> None:
    app = SptraderApp(app_settings(tmp_path))
    async with trading(app, size=size) as pilot:
        for key, pane, focused in [
            ("e", "#events", "#events"),
            ("v", "#services", "#services-table"),
            ("o", "#orders", "#orders-table"),
            ("p", "#positions", "#positions-table"),
        ]:
            await pilot.press(key)
            await wait_for(pilot, lambda pane=pane: shown(app, pane), what=f"{pane} shown")
            await wait_for(
                pilot,
                lambda focused=focused: app.focused is app.query_one(focused),
                what=f"{focused} focused",
            )
            assert shown(app, "#watchlist") and shown(app, "#chart")
        bar = app.query_one(PaneBar)
        for pane in ("services", "events", "orders", "positions"):
            start, _ = bar._spans[pane]
            assert await pilot.click(PaneBar, offset=(start + 2, 0))
            await wait_for(pilot, lambda pane=pane: shown(app, f"#{pane}"), what=f"{pane} clicked")
            assert bar.current == pane
        if size[0] < 120:  # one pane at a time
            assert not shown(app, "#orders")


async def test_at_80x24_a_trader_places_and_closes_an_order(tmp_path: Path) -> None:
    app = SptraderApp(app_settings(tmp_path))
    async with trading(app, size=(80, 24)) as pilot:
        ticket = await open_ticket(pilot, app, "b")
        await type_into(pilot, ticket, "size", "1000")
        await pilot.press("enter")
        await wait_for(pilot, lambda: EURUSD in app.query_one(PositionsPane).positions, what="fill")
        positions = app.query_one(PositionsPane)
        table = positions.table
        await wait_for(pilot, lambda: table.row_count == 1, what="the position listed")
        assert ACTION in table.column_keys
        # every shown column fits the table: the ✕ close cell is on screen, not scrolled off
        assert sum(table._widths) + len(table._widths) <= table.size.width
        assert table.cell_text(EURUSD, "instrument") == EURUSD
        assert await pilot.click("#positions-table", offset=cell_offset(table, EURUSD, ACTION))
        await wait_for(pilot, lambda: not positions.positions, what="the position closed")


async def test_orders_pane_keeps_its_cancel_cell_when_narrow(tmp_path: Path) -> None:
    app = SptraderApp(app_settings(tmp_path))
    async with trading(app, size=(120, 40)) as pilot:
        bid, _ = app.quotes[EURUSD]
        ticket = await open_ticket(pilot, app, "b")
        assert await pilot.click("#type-limit")
        await type_into(pilot, ticket, "size", "2000")
        await type_into(pilot, ticket, "price", f"{round(bid * 0.9, 5)}")
        await pilot.press("enter")
        await pilot.press("o")
        pane = app.query_one(OrdersPane)
        await wait_for(pilot, lambda: pane.table.row_count == 1, what="the order listed")
        await wait_for(pilot, lambda: pane.region.width > 0, what="the orders pane shown")
        table = pane.table
        assert ACTION in table.column_keys
        assert sum(table._widths) + len(table._widths) <= table.size.width
        assert pane.border_subtitle == "1 working"
        (key,) = list(table.data)
        assert await pilot.click("#orders-table", offset=cell_offset(table, key, ACTION))
        await wait_for(pilot, lambda: table.row_count == 0, what="the order cancelled")
        # the subtitle says so with the row, not a refresh later
        assert pane.border_subtitle == "none working"


async def test_event_lines_wrap_instead_of_being_cut(tmp_path: Path) -> None:
    app = SptraderApp(app_settings(tmp_path))
    async with trading(app, size=(80, 24)) as pilot:
        await pilot.press("e")
        events = app.query_one(EventLogPane)
        await wait_for(pilot, lambda: events.region.width > 0, what="events shown")
        message = "a long message " * 8 + "THE-END"
        events.add([EngineLogged(ts_us=0, level="WARNING", source="test", message=message)])
        await pilot.pause()
        text = "\n".join(strip.text for strip in events.lines)
        assert "THE-END" in text
        assert all(strip.cell_length <= events.scrollable_content_region.width for strip in events.lines)
