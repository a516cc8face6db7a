"""Live trading in the control center, driven as a user drives it: a venue configured
with [brokers.binance] trading = "live" (against FakeBinanceTrading on 127.0.0.1) is
marked LIVE BINANCE in red in the header, the account strip, the positions and orders
panes and a ticket sent there; the ticket defaults to paper; ✕ close and ✕ cancel act at
the live venue; the kill switch (ctrl+k) asks before it halts. Without a live venue
nothing of this shows (tests/screens/test_snapshots.py)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import conftest
import pytest
from fake_binance_trading import FakeBinanceTrading
from textual.pilot import Pilot
from textual.widgets import Button, RadioButton
from textual.widgets._header import HeaderTitle

from sptrader.app import SptraderApp
from sptrader.screens import ChartPane, ErrorScreen
from sptrader.screens.account import AccountBar
from sptrader.screens.halt import HaltScreen
from sptrader.screens.order_ticket import OrderTicket
from sptrader.screens.orders import OrdersPane
from sptrader.screens.positions import ACTION, ActionTable, PositionsPane

SIZE = (160, 48)
EURUSD = "SIM:EURUSD"


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeBinanceTrading]:
    with FakeBinanceTrading(timeout_s=0.5) as venue:
        for name, value in venue.env.items():
            monkeypatch.setenv(name, value)
        yield venue


def live_app(tmp_path: Path, binance: dict[str, Any]) -> SptraderApp:
    settings = conftest.make_settings(
        tmp_path / "home",
        watchlist=[EURUSD],
        store={"seed_days": 0.02},
        brokers={"binance": binance},
    )
    return SptraderApp(settings)


async def wait_for(pilot: Pilot, condition, what: str, timeout: float = 10) -> None:
    await conftest.wait_for(pilot, condition, timeout, what)


@contextlib.asynccontextmanager
async def running(app: SptraderApp, connected: bool = True) -> AsyncIterator[Pilot]:
    """The app started and the live venue's account read (connected, unless told);
    left with ``q``, no background job having failed."""
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.engine_ready, "the engine to start")
        bar = app.query_one(AccountBar)
        await wait_for(pilot, lambda: bar.account is not None and bar.live, "the accounts")
        if connected:
            await wait_for(pilot, lambda: bar.live[0].get("equity") is not None, "binance equity")
        try:
            yield pilot
            failed = [s.title_text for s in app.screen_stack if isinstance(s, ErrorScreen)]
            assert not failed, f"a background job failed: {failed}"
        finally:
            if app.return_code is None:
                await pilot.press("q")
                await wait_for(pilot, lambda: app.return_code is not None, "the app to exit")


def styles_of(text: Any, word: str) -> set[str]:
    """The styles over ``word`` in a rich Text or a Textual Content."""
    start = text.plain.index(word)
    return {
        str(span.style)
        for span in text.spans
        if span.start <= start and span.end >= start + len(word)
    }


def header_text(app: SptraderApp) -> Any:
    return app.screen.query_one(HeaderTitle).content


def strip_text(app: SptraderApp) -> Any:
    return app.query_one(AccountBar).content


def is_red(styles: set[str]) -> bool:
    return any("red" in style and "bold" in style for style in styles)


def cell_offset(table: ActionTable, row_key: str, column_key: str) -> tuple[int, int]:
    """Where to click, relative to the table, to land on a cell (not scrolled)."""
    columns = table.ordered_columns
    index = next(i for i, column in enumerate(columns) if column.key.value == column_key)
    x = sum(column.get_render_width(table) for column in columns[:index]) + 2
    return x, table.header_height + table.get_row_index(row_key) - round(table.scroll_y)


async def test_a_live_venue_is_marked_in_the_header_strip_and_panes(
    tmp_path: Path, fake: FakeBinanceTrading
) -> None:
    web = fake.place_elsewhere(fake.instrument, "buy", 0.01, "limit", 40_000.0)
    app = live_app(tmp_path, fake.config)
    async with running(app) as pilot:
        title = header_text(app)
        assert title.plain.startswith("LIVE BINANCE   SPtrader")
        assert is_red(styles_of(title, "LIVE BINANCE"))
        strip = strip_text(app)
        assert strip.plain.startswith("paper Equity 100,000.00 USD")
        assert "│ LIVE BINANCE  Equity 150,000.00 USDT  Day P&L 0.00" in strip.plain
        assert is_red(styles_of(strip, "LIVE BINANCE"))

        # The order made on the venue's website is adopted, marked as the venue's.
        orders = app.query_one(OrdersPane)
        await wait_for(pilot, lambda: orders.orders, "the adopted order")
        (order_id,) = orders.orders
        assert orders.table.column_keys[:3] == ["order_id", "instrument", "venue"]
        assert orders.table.cell_text(str(order_id), "venue") == "LIVE BINANCE"
        assert is_red({str(orders.table.data[str(order_id)]["venue"].style)})
        fake.fill(web)
        positions = app.query_one(PositionsPane)
        key = f"binance {fake.instrument}"
        await wait_for(pilot, lambda: key in positions.positions, "the live position")
        assert positions.table.column_keys[:2] == ["instrument", "venue"]
        assert positions.table.cell_text(key, "venue") == "LIVE BINANCE"

        # ✕ close flattens it at the venue (a market sell there).
        app.action_focus_pane("positions-table")
        await pilot.pause()
        assert await pilot.click(
            "#positions-table", offset=cell_offset(positions.table, key, ACTION)
        )
        await wait_for(pilot, lambda: key not in positions.positions, "the position closed")
        sells = [o for o in fake.orders.values() if o["side"] == "SELL" and o["type"] == "MARKET"]
        assert len(sells) == 1 and sells[0]["status"] == "FILLED"


async def test_cancel_on_a_live_row_cancels_at_the_venue(
    tmp_path: Path, fake: FakeBinanceTrading
) -> None:
    web = fake.place_elsewhere(fake.instrument, "sell", 0.01, "limit", 60_000.0)
    app = live_app(tmp_path, fake.config)
    async with running(app) as pilot:
        orders = app.query_one(OrdersPane)
        await wait_for(pilot, lambda: orders.orders, "the adopted order")
        (order_id,) = orders.orders
        app.action_focus_pane("orders-table")
        await pilot.pause()
        assert await pilot.click(
            "#orders-table", offset=cell_offset(orders.table, str(order_id), ACTION)
        )
        await wait_for(pilot, lambda: not orders.orders, "the order gone from the pane")
        (placed,) = [o for o in fake.orders.values() if o["clientOrderId"] == web]
        assert placed["status"] == "CANCELED"


async def test_the_ticket_defaults_to_paper_and_says_live_when_switched(
    tmp_path: Path, fake: FakeBinanceTrading
) -> None:
    app = live_app(tmp_path, fake.config)
    async with running(app) as pilot:
        chart = app.query_one(ChartPane)
        await wait_for(pilot, lambda: chart.loaded_key is not None, "the chart")
        await pilot.press("b")
        await wait_for(pilot, lambda: isinstance(app.screen, OrderTicket), "the ticket")
        ticket = app.screen
        assert isinstance(ticket, OrderTicket)
        body = ticket.query_one("#ticket-body")
        submit = ticket.query_one("#ticket-submit", Button)
        assert ticket.venue == "paper" and ticket.query_one("#venue-paper", RadioButton).value
        assert "LIVE" not in str(body.border_title) and not body.has_class("-live")
        assert str(submit.label) == "Buy"

        assert await pilot.click("#venue-binance")
        await pilot.pause()
        assert ticket.venue == "binance" and body.has_class("-live")
        assert "LIVE BINANCE" in str(body.border_title)
        assert str(submit.label) == "Buy LIVE at BINANCE"
        assert ticket.account["currency"] == "USDT"  # risk % sizes from the venue's equity

        # What goes to the client says where (caught here: no order is sent).
        sent: list[dict] = []

        async def place_order(request: dict) -> dict:
            sent.append(request)
            raise RuntimeError("caught by the test")

        app.client.place_order = place_order  # type: ignore[method-assign]
        assert await pilot.click("#ticket-size")
        await pilot.press("1", "0", "0", "0", "enter")
        await wait_for(pilot, lambda: sent, "the request")
        assert sent[0]["venue"] == "binance" and sent[0]["instrument"] == EURUSD

        # Never remembered: the next ticket goes to paper again.
        await pilot.press("escape")
        await wait_for(pilot, lambda: app.screen is app.screen_stack[0], "the ticket closed")
        await pilot.press("b")
        await wait_for(pilot, lambda: isinstance(app.screen, OrderTicket), "a new ticket")
        assert app.screen.venue == "paper"
        assert str(app.screen.query_one("#ticket-submit", Button).label) == "Buy"
        await pilot.press("escape")


async def test_the_kill_switch_asks_first_then_halts_and_resumes(
    tmp_path: Path, fake: FakeBinanceTrading
) -> None:
    app = live_app(tmp_path, fake.config)

    async def halted() -> dict[str, Any]:
        return {row["venue"]: row["halted"] for row in await app.client.trading_venues()}

    async with running(app) as pilot:
        await pilot.press("ctrl+k")
        await wait_for(pilot, lambda: isinstance(app.screen, HaltScreen), "the confirmation")
        assert "Halt every venue?" in str(app.screen.query_one("#halt-question").content)
        assert not app.screen.query("#halt-resume")  # nothing is halted
        await pilot.press("escape")
        await wait_for(pilot, lambda: not isinstance(app.screen, HaltScreen), "it closed")
        assert set((await halted()).values()) == {None}

        await pilot.press("ctrl+k")
        await wait_for(pilot, lambda: isinstance(app.screen, HaltScreen), "the confirmation")
        await pilot.press("enter")  # on Halt, focused
        bar = app.query_one(AccountBar)
        await wait_for(
            pilot, lambda: bar.paper_halted and bar.live[0]["halted"], "the halt shown", 5
        )
        reasons = await halted()
        assert reasons["paper"] == reasons["binance"] == "halted from the TUI"
        assert header_text(app).plain.startswith("PAPER HALTED   LIVE BINANCE HALTED")
        assert "LIVE BINANCE HALTED" in strip_text(app).plain
        assert any("halted paper" in str(n.message) for n in app._notifications)

        # The same dialog now offers Resume.
        await pilot.press("ctrl+k")
        await wait_for(pilot, lambda: isinstance(app.screen, HaltScreen), "the confirmation")
        assert await pilot.click("#halt-resume")
        await wait_for(pilot, lambda: not bar.paper_halted, "the resume shown", 5)
        assert set((await halted()).values()) == {None}
        assert header_text(app).plain.startswith("LIVE BINANCE   SPtrader")


async def test_an_unreachable_live_venue_shows_not_connected(tmp_path: Path) -> None:
    unreachable = {
        "trading": "live",
        "rest_url": "http://127.0.0.1:9",
        "ws_url": "ws://127.0.0.1:9/ws-api/v3",
        "timeout_s": 0.5,
    }
    app = live_app(tmp_path, unreachable)
    async with running(app, connected=False) as pilot:
        await pilot.pause()
        assert header_text(app).plain.startswith("LIVE BINANCE not connected   SPtrader")
        strip = strip_text(app).plain
        assert strip.startswith("paper Equity 100,000.00 USD")
        assert "│ LIVE BINANCE not connected" in strip and "USDT" not in strip
