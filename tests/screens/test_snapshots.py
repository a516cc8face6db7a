"""What the control center looks like at 80x24, 120x40, 160x48 and 220x60: SVG snapshots
(pytest-textual-snapshot) of the main screen, the order ticket and the Strategies, Data
and Journal screens.

Every snapshot is taken at one frozen wall clock over a home whose SIM history was
stored beforehand (the SIM market is seeded: the same clock gives the same bars), with
only the store open (nothing streams, so no price moves between two runs). A change in
the layout shows as a failing snapshot; `pytest tests/screens/test_snapshots.py
--snapshot-update` accepts it after a look at the report."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import conftest
import pytest
import time_machine
from textual.widgets import Input

from sptrader.app import SptraderApp
from sptrader.cli import main
from sptrader.client.connect import client_for
from sptrader.config import DEFAULT_WATCHLIST
from sptrader.screens import ChartPane

# A Monday afternoon (UTC): FX, metals, crypto and US equities all trade.
FROZEN = datetime(2026, 11, 30, 15, 0, tzinfo=UTC)
WATCHLIST = list(DEFAULT_WATCHLIST)  # the eight SIM instruments a fresh home shows
SIZES = [(80, 24), (120, 40), (160, 48), (220, 60)]
# screen -> the key that opens it from the main screen (none: the main screen itself)
SCREENS = {"main": None, "ticket": "b", "strategies": "S", "data": "d", "journal": "J"}


@pytest.fixture(scope="module")
def frozen_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A home with two days of SIM history for the watchlist, stored at FROZEN."""
    home = tmp_path_factory.mktemp("snapshots") / "home"
    # backfill points the sptrader logger at the home's log file: put it back.
    with conftest.logging_restored(), time_machine.travel(FROZEN, tick=False):
        code = main(["--home", str(home), "backfill", "--from", "2026-11-28", *WATCHLIST])
    assert code == 0
    yield home


def frozen_app(home: Path) -> SptraderApp:
    settings = conftest.make_settings(home, watchlist=list(WATCHLIST))
    return SptraderApp(settings, client=client_for(settings, run="store"))


@pytest.mark.parametrize("size", SIZES, ids=[f"{w}x{h}" for w, h in SIZES])
@pytest.mark.parametrize("screen", list(SCREENS))
def test_screen_snapshot(snap_compare, frozen_home: Path, screen: str, size) -> None:
    app = frozen_app(frozen_home)
    key = SCREENS[screen]

    async def settle(pilot) -> None:
        await conftest.wait_for(pilot, lambda: app.engine_ready, 20, "the engine")
        chart = app.query_one(ChartPane)
        await conftest.wait_for(pilot, lambda: chart.loaded_key is not None, 20, "the chart")
        if key is not None:
            await pilot.press(key)
            await conftest.wait_for(
                pilot, lambda: app.screen is not app.screen_stack[0], 20, f"the {screen} screen"
            )
        # A blinking cursor would be on or off depending on when the shot is taken.
        for field in app.screen.query(Input):
            field.cursor_blink = False
        await pilot.pause(0.5)
        await pilot.wait_for_scheduled_animations()

    with time_machine.travel(FROZEN, tick=False):
        assert snap_compare(app, terminal_size=size, run_before=settle)
