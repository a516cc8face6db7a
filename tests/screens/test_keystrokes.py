"""Every keystroke counted: keys typed into the order ticket and the `/` search while
the whole default SIM watchlist streams fast arrive in order, none lost (a burst as a
terminal delivers a paste-fast typist's keys in one read, and keys 10 ms apart)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import conftest
import pytest
from textual import events
from textual.pilot import Pilot
from textual.widgets import Input

from sptrader.app import SptraderApp
from sptrader.config import Config, FeedsConfig, Settings, SimFeedConfig, StoreConfig
from sptrader.screens import SymbolSearchScreen
from sptrader.screens.order_ticket import OrderTicket

# The default watchlist (8 SIM instruments) at many times the default rate: the app's
# loop is as busy as it gets with quotes to coalesce and panes to repaint.
LOAD = SimFeedConfig(tick_rate=40.0, publish_interval_ms=20)


@pytest.fixture
def app(tmp_path: Path) -> SptraderApp:
    home = tmp_path / "home"
    home.mkdir()
    config = Config(store=StoreConfig(seed_days=0.05), feeds=FeedsConfig(sim=LOAD))
    return SptraderApp(Settings(home=home, config_path=None, config=config))


@asynccontextmanager
async def streaming(app: SptraderApp) -> AsyncIterator[Pilot]:
    async with app.run_test(size=(160, 48)) as pilot:
        await conftest.wait_for(pilot, lambda: app.engine_ready, 20, "the engine to start")
        watchlist = app.client.watchlist
        await conftest.wait_for(
            pilot, lambda: all(name in app.quotes for name in watchlist), 20, "quotes"
        )
        try:
            yield pilot
        finally:
            if app.return_code is None:
                while len(app.screen_stack) > 1:  # the ticket or the search, then q
                    await pilot.press("escape")
                await pilot.press("q")
                await conftest.wait_for(pilot, lambda: app.return_code is not None, 15, "exit")


def key(name: str) -> events.Key:
    character = name if len(name) == 1 else {"backspace": "\x7f"}.get(name)
    return events.Key(name, character)


async def burst(app: SptraderApp, keys: list[str], spacing: float = 0.0) -> None:
    """Keys as the terminal driver hands them to the app: posted to its queue at once
    (one read of stdin) or ``spacing`` seconds apart, without waiting for them to be
    handled (Pilot.press waits between keys, which hides a reordering)."""
    for name in keys:
        app.post_message(key(name))
        if spacing:
            await asyncio.sleep(spacing)


async def settled(pilot: Pilot, field: Input, expected: str) -> None:
    await conftest.wait_for(
        pilot, lambda: field.value == expected, 5, f"{expected!r} (shows {field.value!r})"
    )
    await pilot.pause(0.3)  # and nothing arrives late to change it again
    assert field.value == expected


@pytest.mark.parametrize("spacing", [0.0, 0.01], ids=["burst", "10ms-apart"])
async def test_no_key_is_lost_in_the_ticket_quantity_under_streaming(
    app: SptraderApp, spacing: float
) -> None:
    async with streaming(app) as pilot:
        await pilot.press("b")
        await conftest.wait_for(pilot, lambda: isinstance(app.screen, OrderTicket), 5, "ticket")
        quantity = app.screen.query_one("#ticket-size", Input)
        assert quantity.has_focus
        await burst(app, list("1000"), spacing)
        await settled(pilot, quantity, "1000")
        await burst(app, ["backspace", "backspace", "5", "0"], spacing)
        await settled(pilot, quantity, "1050")
        for _ in range(3):  # again and again: the loop is never idle meanwhile
            await burst(app, ["backspace", "backspace", "backspace", "2", "k"], spacing)
            await settled(pilot, quantity, "12k")
            await burst(app, ["backspace", "backspace", "backspace", "1", "0", "5", "0"], spacing)
            await settled(pilot, quantity, "1050")
        await burst(app, ["home", "delete", "9", "end", "backspace", "7"], spacing)
        await settled(pilot, quantity, "9057")
        assert app.screen.form.size == "9057"


@pytest.mark.parametrize("spacing", [0.0, 0.01], ids=["burst", "10ms-apart"])
async def test_no_key_is_lost_in_the_symbol_search_under_streaming(
    app: SptraderApp, spacing: float
) -> None:
    async with streaming(app) as pilot:
        await pilot.press("slash")
        await conftest.wait_for(
            pilot, lambda: isinstance(app.screen, SymbolSearchScreen), 5, "the search"
        )
        box = app.screen.query_one("#search-input", Input)
        assert box.has_focus
        await burst(app, list("golx"), spacing)
        await settled(pilot, box, "golx")
        await burst(app, ["backspace", "d", "left", "left", "backspace", "backspace", "g"], spacing)
        await settled(pilot, box, "gld")
        await burst(app, ["end", "backspace", "backspace", "o", "l", "d"], spacing)
        await settled(pilot, box, "gold")
