"""Switching the chart's instrument in the running app (SIM market, temporary home): the
title names the new instrument with its own last price (or … until it is known) from
the first moment, never the previous instrument's price."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_app import WATCHLIST, app_settings, running, wait_for

from sptrader.app import SptraderApp
from sptrader.screens import ChartPane
from sptrader.screens.chart import ChartTitle


@pytest.fixture
def app(tmp_path: Path) -> SptraderApp:
    home = tmp_path / "home"
    home.mkdir()
    return SptraderApp(app_settings(home))


def _price(title: str) -> float | None:
    """The price in a full title ``INSTRUMENT  TF  PRICE``; None for the … placeholder."""
    text = title.split("  ")[2]
    return None if text == "…" else float(text.replace(",", ""))


async def test_the_title_never_shows_the_previous_instruments_price(app: SptraderApp) -> None:
    async with running(app) as pilot:
        chart = app.query_one(ChartPane)
        title = app.query_one(ChartTitle)
        shown: list[str] = []
        show = title.show

        def recorded(variants) -> None:
            shown.append(variants[0])
            show(variants)

        title.show = recorded  # every title the chart sets, however briefly
        # Each instrument's price known (its first tick in): the title must show it at once.
        await wait_for(
            pilot,
            lambda: all(app.client.forming_bar(name) is not None for name in WATCHLIST[:3]),
            what="a live price of each instrument",
        )
        # EURUSD ~1.06, BTCUSD ~50,000, SPY ~500: a price of the wrong one is obvious.
        for instrument in [WATCHLIST[1], WATCHLIST[2], WATCHLIST[0], WATCHLIST[1]]:
            shown.clear()
            chart.show_instrument(instrument)
            await wait_for(
                pilot, lambda i=instrument: chart.drawn_key == (i, "1m"), what=instrument
            )
            await pilot.pause(0.6)  # a few refreshes of live prices after the switch
            price = app.client.forming_bar(instrument).close
            titles = [text for text in shown if text.startswith(instrument)]
            assert titles and all(text.startswith(instrument) for text in shown)
            for text in titles:
                value = _price(text)
                assert value is None or abs(value - price) < 0.02 * price, (text, price)
            # At once: the first title already has the new instrument's own price.
            assert _price(titles[0]) is not None
