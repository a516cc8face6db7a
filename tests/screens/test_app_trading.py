"""Paper trading in the control center, driven as a user drives it: the order ticket
(`b`/`s`), the positions pane (click ✕ close), the orders pane (click ✕ cancel) and the
account strip, over a small simulated market on a temporary home (Pilot clicks and key
presses, a fixed terminal size, waits for conditions, never fixed sleeps)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import conftest
import msgspec
import pytest
from conftest import running_daemon
from textual.pilot import Pilot
from textual.widgets import Button, Input, Label

from sptrader.app import SptraderApp
from sptrader.config import (
    BINDING_IDS,
    Config,
    FeedsConfig,
    RiskConfig,
    Settings,
    SimFeedConfig,
    StoreConfig,
)
from sptrader.screens import ChartPane, ErrorScreen, ServicesPane
from sptrader.screens.account import AccountBar
from sptrader.screens.order_ticket import OrderTicket, TicketForm, check_ticket, parse_number
from sptrader.screens.orders import OrdersPane
from sptrader.screens.positions import ACTION, ActionTable, PositionsPane

WATCHLIST = ["SIM:EURUSD", "SIM:SPY"]
TERMINAL_SIZE = (160, 48)
EURUSD = "SIM:EURUSD"


def app_settings(home: Path, risk: RiskConfig | None = None) -> Settings:
    """Two instruments, an hour or so of history, a fast market; risk limits as given
    (the defaults otherwise)."""
    config = Config(
        watchlist=list(WATCHLIST),
        store=StoreConfig(seed_days=0.05),
        feeds=FeedsConfig(sim=SimFeedConfig(tick_rate=5.0)),
        risk=risk or RiskConfig(),
    )
    return Settings(home=home, config_path=None, config=config)


async def wait_for(pilot, condition, timeout: float = 15, what: str = "") -> None:
    await conftest.wait_for(pilot, condition, timeout, what)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    directory = tmp_path / "home"
    directory.mkdir()
    return directory


@pytest.fixture
def app(home: Path) -> SptraderApp:
    return SptraderApp(app_settings(home))


@contextlib.asynccontextmanager
async def trading(
    app: SptraderApp, size: tuple[int, int] = TERMINAL_SIZE
) -> AsyncIterator[Pilot]:
    """The app started, quotes arriving and the account read; left with ``q`` (and no
    background job may have failed meanwhile)."""
    async with app.run_test(size=size) as pilot:
        await wait_for(pilot, lambda: app.engine_ready, what="the engine to start")
        chart = app.query_one(ChartPane)
        await wait_for(pilot, lambda: chart.loaded_key is not None, what="the first chart")
        await wait_for(pilot, lambda: all(name in app.quotes for name in WATCHLIST), what="quotes")
        account = app.query_one(AccountBar)
        await wait_for(pilot, lambda: account.account is not None, what="the account read")
        try:
            yield pilot
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


def notifications(app: SptraderApp) -> list[str]:
    return [str(notification.message) for notification in app._notifications]


def cell_offset(table: ActionTable, row_key: str, column_key: str) -> tuple[int, int]:
    """Where to click, relative to the table, to land on a cell (not scrolled)."""
    columns = table.ordered_columns
    index = next(i for i, column in enumerate(columns) if column.key.value == column_key)
    x = sum(column.get_render_width(table) for column in columns[:index]) + 2
    y = table.header_height + table.get_row_index(row_key) - round(table.scroll_y)
    return x, y


async def open_ticket(pilot: Pilot, app: SptraderApp, key: str = "b") -> OrderTicket:
    await pilot.press(key)
    await wait_for(pilot, lambda: isinstance(app.screen, OrderTicket), what="the ticket")
    ticket = app.screen
    assert isinstance(ticket, OrderTicket)
    return ticket


async def type_into(pilot: Pilot, ticket: OrderTicket, field: str, text: str) -> None:
    """Click a field of the ticket, clear it and type ``text`` (as a user does)."""
    assert await pilot.click(f"#ticket-{field}")
    field_input = ticket.query_one(f"#ticket-{field}", Input)
    assert field_input.has_focus
    if field_input.value:
        await pilot.press("end", *["backspace"] * len(field_input.value))
    assert field_input.value == ""
    if text:
        await pilot.press(*text)
    await pilot.pause()


def error_under(ticket: OrderTicket, field: str) -> str:
    label = ticket.query_one(f"#error-{field}", Label)
    return str(label.content) if label.display else ""


def submit_enabled(ticket: OrderTicket) -> bool:
    return not ticket.query_one("#ticket-submit", Button).disabled


def positions_shown(app: SptraderApp) -> list[str]:
    return list(app.query_one(PositionsPane).table.data)


def orders_shown(app: SptraderApp) -> list[str]:
    return list(app.query_one(OrdersPane).table.data)


# --- the form, without a screen ---------------------------------------------------------


def test_numbers_are_read_as_traders_type_them() -> None:
    assert parse_number("1,000", "quantity") == 1000
    assert parse_number("10k", "quantity") == 10_000
    assert parse_number(" 1.5m ", "quantity") == 1_500_000
    assert parse_number("", "quantity") is None
    with pytest.raises(Exception, match="quantity must be a number, not 'abc'"):
        parse_number("abc", "quantity")


def test_the_ticket_checks_its_fields_as_the_broker_would() -> None:
    quote = (1.05600, 1.05610)
    ok = check_ticket(TicketForm(EURUSD, "buy", size="1000"), quote, equity=100_000.0)
    assert ok.ok and ok.request == {
        "instrument": EURUSD,
        "side": "buy",
        "type": "market",
        "tif": "gtc",
        "qty": 1000.0,
    }
    assert "1,056.10" in ok.estimate  # 1,000 at the ask

    wrong_stop = check_ticket(TicketForm(EURUSD, "buy", size="1000", sl="1.06"), quote)
    assert wrong_stop.errors == {"sl": "the stop-loss must be below the entry 1.05610 for a buy"}
    limit_without_price = check_ticket(TicketForm(EURUSD, "sell", size="5", type="limit"), quote)
    assert limit_without_price.errors == {"price": "a limit order needs a price"}
    risk_without_stop = check_ticket(TicketForm(EURUSD, "buy", sizing="risk", size="1"), quote)
    assert risk_without_stop.errors == {"sl": "sizing by risk % needs a stop-loss"}

    sized = check_ticket(
        TicketForm(EURUSD, "sell", sizing="risk", size="0.5", sl="1.0661"),
        quote,
        equity=100_000.0,
    )
    # 0.5% of 100,000 lost over 0.0101 from the bid: 49,504.95 units.
    assert sized.ok and sized.request["risk_pct"] == 0.5 and "qty" not in sized.request
    assert sized.qty == pytest.approx(500 / 0.0101)
    assert "risk to the stop 500.00 (0.50% of equity)" in sized.estimate
    unknown = check_ticket(TicketForm("SIM:GBPUSD", size="1"), quote, streamed=set(WATCHLIST))
    assert "not streamed" in unknown.errors["instrument"]


def test_the_new_keys_are_remappable() -> None:
    for binding_id in (
        "order-buy",
        "order-sell",
        "journal-screen",
        "focus-positions",
        "focus-orders",
        "position-close",
        "order-cancel",
        "ticket-close",
        "journal-close",
        "journal-note",
    ):
        assert binding_id in BINDING_IDS


# --- the ticket -------------------------------------------------------------------------


async def test_b_opens_a_ticket_that_checks_as_you_type_and_fills(app: SptraderApp) -> None:
    async with trading(app) as pilot:
        ticket = await open_ticket(pilot, app, "b")
        assert ticket.form.instrument == EURUSD  # the chart's instrument
        assert ticket.form.side == "buy"
        assert not submit_enabled(ticket)  # no quantity yet

        await type_into(pilot, ticket, "size", "abc")
        assert error_under(ticket, "size") == "↑ quantity must be a number, not 'abc'"
        assert not submit_enabled(ticket)
        await type_into(pilot, ticket, "sl", "9")  # above the ask: wrong side for a buy
        assert "stop-loss must be below the entry" in error_under(ticket, "sl")

        await type_into(pilot, ticket, "sl", "")
        await type_into(pilot, ticket, "size", "1000")
        assert error_under(ticket, "size") == "" and error_under(ticket, "sl") == ""
        assert submit_enabled(ticket)
        estimate = str(ticket.query_one("#ticket-estimate", Label).content)
        assert estimate.startswith("≈ 1,000 at ") and "USD notional" in estimate

        assert await pilot.click("#ticket-submit")
        await wait_for(pilot, lambda: not isinstance(app.screen, OrderTicket), what="closed")
        await wait_for(
            pilot,
            lambda: any(
                text.startswith(f"filled 1,000 {EURUSD} at ") for text in notifications(app)
            ),
            what="the fill notified",
        )
        await wait_for(pilot, lambda: positions_shown(app) == [EURUSD], what="the position")
        table = app.query_one(PositionsPane).table
        assert table.cell_text(EURUSD, "side") == "long"
        assert table.cell_text(EURUSD, "qty") == "1,000"
        # Unrealized P&L is a signed amount, coloured by its sign.
        pnl = table.data[EURUSD]["unrealized"]
        amount = float(pnl.plain.replace(",", ""))
        assert str(pnl.style) == ("green" if amount > 0 else "red" if amount < 0 else "")
        account = app.query_one(AccountBar)
        await wait_for(
            pilot,
            lambda: "1 position" in str(account.content),
            what="the account strip to count the position",
        )
        assert "Equity" in str(account.content) and "Day P&L" in str(account.content)


async def test_s_opens_a_sell_ticket_but_starts_a_service_in_the_services_pane(
    app: SptraderApp,
) -> None:
    async with trading(app) as pilot:
        ticket = await open_ticket(pilot, app, "s")
        assert ticket.form.side == "sell"
        assert str(ticket.query_one("#ticket-submit", Button).label) == "Sell"
        await pilot.press("escape")
        await wait_for(pilot, lambda: not isinstance(app.screen, OrderTicket), what="closed")
        assert app.query_one(PositionsPane).positions == {}  # escape placed nothing

        await pilot.press("v")  # the services pane: `s` is its Start key
        assert app.query_one("#services-table").has_focus
        await pilot.press("s")
        await pilot.pause()
        assert not isinstance(app.screen, OrderTicket)
        assert isinstance(app.query_one(ServicesPane), ServicesPane)


async def test_a_rejected_order_keeps_the_ticket_open_with_the_limit(home: Path) -> None:
    app = SptraderApp(app_settings(home, RiskConfig(max_qty={EURUSD: 500.0})))
    async with trading(app) as pilot:
        ticket = await open_ticket(pilot, app, "b")
        await type_into(pilot, ticket, "size", "1000")
        assert submit_enabled(ticket)
        await pilot.press("enter")  # enter in a field submits
        rejection = ticket.query_one("#ticket-rejection", Label)
        await wait_for(pilot, lambda: bool(ticket.rejection), what="the rejection")
        assert isinstance(app.screen, OrderTicket)  # still open, to fix the order
        assert ticket.rejection == (
            f"rejected: max quantity for {EURUSD}: the position would be 1000, the limit is 500"
        )
        assert rejection.display
        assert positions_shown(app) == []

        await type_into(pilot, ticket, "size", "400")  # within the limit: goes through
        assert ticket.rejection == ""
        await pilot.press("enter")
        await wait_for(pilot, lambda: not isinstance(app.screen, OrderTicket), what="closed")
        await wait_for(pilot, lambda: positions_shown(app) == [EURUSD], what="the position")
        # The rejection was said in the ticket, not notified again from its event.
        assert not any("rejected" in text for text in notifications(app))


async def test_a_limit_order_works_in_the_orders_pane_and_a_click_cancels_it(
    app: SptraderApp,
) -> None:
    async with trading(app) as pilot:
        bid, _ = app.quotes[EURUSD]
        ticket = await open_ticket(pilot, app, "b")
        assert ticket.query_one("#ticket-price", Input).disabled  # market: no price
        assert await pilot.click("#type-limit")
        assert ticket.form.type == "limit"
        assert not ticket.query_one("#ticket-price", Input).disabled
        await type_into(pilot, ticket, "size", "2000")
        assert not submit_enabled(ticket)  # a limit needs its price
        limit = round(bid * 0.9, 5)  # far below the market: it rests
        await type_into(pilot, ticket, "price", f"{limit}")
        assert submit_enabled(ticket)
        assert await pilot.click("#ticket-submit")
        await wait_for(pilot, lambda: not isinstance(app.screen, OrderTicket), what="closed")
        await wait_for(
            pilot,
            lambda: any(" working: buy 2,000 SIM:EURUSD limit " in t for t in notifications(app)),
            what="the working order notified",
        )
        pane = app.query_one(OrdersPane)
        await wait_for(pilot, lambda: len(orders_shown(app)) == 1, what="the order listed")
        (order_key,) = orders_shown(app)
        assert pane.table.cell_text(order_key, "type") == "limit"
        assert pane.table.cell_text(order_key, "qty") == "2,000"
        assert pane.table.cell_text(order_key, ACTION) == "✕ cancel"
        assert "1 open order" in str(app.query_one(AccountBar).content)

        offset = cell_offset(pane.table, order_key, ACTION)
        assert await pilot.click("#orders-table", offset=offset)
        await wait_for(pilot, lambda: orders_shown(app) == [], what="the order cancelled")
        await wait_for(
            pilot,
            lambda: any(f"order {order_key} cancelled" in t for t in notifications(app)),
            what="the cancel notified",
        )
        assert (await app.client.open_orders()) == []


async def test_clicking_a_positions_close_cell_flattens_it(app: SptraderApp) -> None:
    async with trading(app) as pilot:
        result = await app.client.place_order({"instrument": EURUSD, "side": "sell", "qty": 3000})
        assert result["rejected"] is None
        pane = app.query_one(PositionsPane)
        await wait_for(pilot, lambda: positions_shown(app) == [EURUSD], what="the position")
        assert pane.table.cell_text(EURUSD, "side") == "short"
        assert pane.table.cell_text(EURUSD, ACTION) == "✕ close"

        assert await pilot.click("#positions-table", offset=cell_offset(pane.table, EURUSD, ACTION))
        await wait_for(pilot, lambda: positions_shown(app) == [], what="the position closed")
        await wait_for(
            pilot,
            lambda: any(f"buy 3,000 {EURUSD} at " in text for text in notifications(app)),
            what="the close notified",
        )
        assert (await app.client.positions()) == []
        assert "0 positions" in str(app.query_one(AccountBar).content)


async def test_x_closes_the_selected_position_from_the_keyboard(app: SptraderApp) -> None:
    async with trading(app) as pilot:
        await app.client.place_order({"instrument": "SIM:SPY", "side": "buy", "qty": 10})
        await wait_for(pilot, lambda: positions_shown(app) == ["SIM:SPY"], what="the position")
        await pilot.press("p")
        assert app.query_one("#positions-table").has_focus
        ticket = await open_ticket(pilot, app, "s")  # prefilled from the selected position
        assert ticket.form.instrument == "SIM:SPY" and ticket.form.side == "sell"
        await pilot.press("escape")
        await wait_for(pilot, lambda: not isinstance(app.screen, OrderTicket), what="closed")
        await pilot.press("x")
        await wait_for(pilot, lambda: positions_shown(app) == [], what="the position closed")


async def test_a_resting_order_filling_later_is_notified(app: SptraderApp) -> None:
    async with trading(app) as pilot:
        _, ask = app.quotes[EURUSD]
        result = await app.client.place_order(
            {"instrument": EURUSD, "side": "buy", "qty": 1000, "type": "stop", "price": ask * 1.5}
        )
        order_id = result["order"]["order_id"]
        await wait_for(pilot, lambda: orders_shown(app) == [str(order_id)], what="working")
        # A buy limit above the market fills on the next quote, through the bus.
        await app.client.cancel_order(order_id)
        result = await app.client.place_order(
            {"instrument": EURUSD, "side": "buy", "qty": 1000, "type": "limit", "price": ask * 2}
        )
        assert result["order"]["status"] == "filled"  # crossed at once
        await wait_for(pilot, lambda: positions_shown(app) == [EURUSD], what="the position")
        # Placed from outside the TUI (as `sptrader order` would): notified from its event.
        await wait_for(
            pilot,
            lambda: any(text.startswith(f"filled 1,000 {EURUSD}") for text in notifications(app)),
            what="the fill notified",
        )


async def test_with_the_broker_disabled_the_strip_says_so_and_b_opens_no_ticket(
    home: Path,
) -> None:
    settings = app_settings(home)
    config = msgspec.structs.replace(
        settings.config,
        broker=msgspec.structs.replace(settings.config.broker, enabled=False),
    )
    app = SptraderApp(Settings(home=home, config_path=None, config=config))
    async with app.run_test(size=TERMINAL_SIZE) as pilot:
        await wait_for(pilot, lambda: app.engine_ready, what="the engine to start")
        account = app.query_one(AccountBar)
        await wait_for(pilot, lambda: bool(account.problem), what="the strip to say why")
        assert "the paper broker is disabled" in str(account.content)
        await pilot.press("b")
        await wait_for(
            pilot,
            lambda: any("paper broker is disabled" in text for text in notifications(app)),
            what="the notification",
        )
        assert not isinstance(app.screen, OrderTicket)
        await pilot.press("q")
        await wait_for(pilot, lambda: app.return_code is not None, what="the app to exit")


# --- attached to a daemon ---------------------------------------------------------------

DAEMON_CONFIG = """\
watchlist = ["SIM:EURUSD"]
[feeds.sim]
tick_rate = 5.0
[store]
seed_days = 0.02
"""


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    with running_daemon(tmp_path, DAEMON_CONFIG, "daemon-home") as started:
        yield started


async def test_the_ticket_trades_through_the_daemon(daemon: tuple[Path, Path]) -> None:
    from sptrader.client.remote import RemoteEngineClient, fetch_welcome
    from sptrader.config import load_settings

    home, config = daemon
    settings = load_settings(home, config)
    client = RemoteEngineClient(home, await asyncio.to_thread(fetch_welcome, home))
    app = SptraderApp(settings, client=client)
    async with app.run_test(size=TERMINAL_SIZE) as pilot:
        await wait_for(pilot, lambda: app.engine_ready, what="the app to attach")
        await wait_for(pilot, lambda: EURUSD in app.quotes, what="quotes from the daemon")
        account = app.query_one(AccountBar)
        await wait_for(pilot, lambda: account.account is not None, what="the account")
        ticket = await open_ticket(pilot, app, "b")
        await type_into(pilot, ticket, "size", "1000")
        await pilot.press("enter")
        await wait_for(pilot, lambda: not isinstance(app.screen, OrderTicket), what="closed")
        await wait_for(pilot, lambda: positions_shown(app) == [EURUSD], what="the position")
        pane = app.query_one(PositionsPane)
        assert await pilot.click("#positions-table", offset=cell_offset(pane.table, EURUSD, ACTION))
        await wait_for(pilot, lambda: positions_shown(app) == [], what="the position closed")
        assert await client.positions() == []
        await pilot.press("q")
        await wait_for(pilot, lambda: app.return_code is not None, what="the app to exit")
