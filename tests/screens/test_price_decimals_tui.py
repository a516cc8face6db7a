"""The control center shows prices at each instrument's own precision from its feed's
symbol metadata, even for an instrument whose quotes it never saw (a position held in
one that is not on the watchlist)."""

from __future__ import annotations

import re
from pathlib import Path

import conftest
import pytest

from sptrader.app import SptraderApp
from sptrader.client.connect import connect
from sptrader.config import Config, FeedsConfig, Settings, SimFeedConfig, StoreConfig
from sptrader.screens.positions import PositionsPane

USDJPY = "SIM:USDJPY"


def settings(home: Path) -> Settings:
    config = Config(
        watchlist=["SIM:EURUSD"],
        store=StoreConfig(seed_days=0.05),
        feeds=FeedsConfig(sim=SimFeedConfig(tick_rate=5.0)),
    )
    return Settings(home=home, config_path=None, config=config)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    directory = tmp_path / "home"
    directory.mkdir()
    return directory


async def test_a_position_off_the_watchlist_shows_its_instruments_decimals(home: Path) -> None:
    # A JPY position bought earlier (as `sptrader order` does), then the TUI opened on
    # a watchlist without it: no USDJPY quote reaches the app.
    async with connect(settings(home), streaming=[USDJPY]) as client:
        await client.wait_for_quote(USDJPY, 10)
        result = await client.place_order({"instrument": USDJPY, "side": "buy", "qty": 1000})
    assert result["rejected"] is None
    [fill] = result["fills"]

    app = SptraderApp(settings(home))
    async with app.run_test(size=(160, 48)) as pilot:
        pane = app.query_one(PositionsPane)
        await conftest.wait_for(
            pilot, lambda: USDJPY in pane.table.data, timeout=15, what="the position"
        )
        shown = pane.table.cell_text(USDJPY, "avg_price")
        assert USDJPY not in app.quotes
        await pilot.press("q")
        await conftest.wait_for(pilot, lambda: app.return_code is not None, what="the exit")
    assert re.fullmatch(r"\d{3}\.\d{3}", shown), shown  # 150.123, not 150.12
    assert shown == f"{fill['price']:.3f}"
