"""Enter places the order whatever field of the ticket has focus: a text field or one
of its choices (side, sizing, type, time in force), where enter used to pick the
highlighted option instead."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_app_trading import (
    app_settings,
    open_ticket,
    positions_shown,
    trading,
    type_into,
    wait_for,
)

from sptrader.app import SptraderApp
from sptrader.screens.order_ticket import OrderTicket, TicketChoice

EURUSD = "SIM:EURUSD"


@pytest.mark.parametrize("choice", ["ticket-side", "ticket-type", "ticket-tif"])
async def test_enter_on_a_choice_places_the_order(tmp_path: Path, choice: str) -> None:
    app = SptraderApp(app_settings(tmp_path))
    async with trading(app) as pilot:
        ticket = await open_ticket(pilot, app, "s")
        await type_into(pilot, ticket, "size", "1000")
        field = ticket.query_one(f"#{choice}", TicketChoice)
        field.focus()
        await pilot.pause()
        assert field.has_focus
        before = ticket.form.side, ticket.form.type, ticket.form.tif
        await pilot.press("enter")
        await wait_for(pilot, lambda: not isinstance(app.screen, OrderTicket), what="placed")
        await wait_for(pilot, lambda: positions_shown(app) == [EURUSD], what="the position")
        # Enter chose nothing: the order went as the form said (a sell at market, GTC).
        assert (ticket.form.side, ticket.form.type, ticket.form.tif) == before
        assert app.ticket_sizes[EURUSD] == ("qty", "1000")


async def test_space_on_a_choice_still_picks_the_option(tmp_path: Path) -> None:
    app = SptraderApp(app_settings(tmp_path))
    async with trading(app) as pilot:
        ticket = await open_ticket(pilot, app, "b")
        side = ticket.query_one("#ticket-side", TicketChoice)
        side.focus()
        await pilot.press("right", "space")
        await wait_for(pilot, lambda: ticket.form.side == "sell", what="sell picked")
        assert isinstance(app.screen, OrderTicket)
        await pilot.press("escape")
