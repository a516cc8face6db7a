"""The command palette lists the control center's commands in their order: backfills
of 1, 7 and 30 days (not 1, 30, 7 as sorted by title), timeframes 1m .. 1d."""

from __future__ import annotations

import re
from pathlib import Path

from conftest import make_settings, wait_for
from textual.command import CommandList

from sptrader.app import SptraderApp

WATCHLIST = ["SIM:EURUSD", "SIM:SPY"]


def _titles(app: SptraderApp) -> list[str]:
    lists = app.screen.query(CommandList)
    if not lists:
        return []
    options = lists.first()
    return [
        str(options.get_option_at_index(index).prompt).splitlines()[0]
        for index in range(options.option_count)
    ]


def _backfill_days(titles: list[str], instrument: str) -> list[int]:
    pattern = re.compile(rf"Backfill {re.escape(instrument)}: last (\d+) days?$")
    return [int(match[1]) for title in titles if (match := pattern.match(title))]


async def test_backfills_and_timeframes_in_their_order(tmp_path: Path) -> None:
    app = SptraderApp(make_settings(tmp_path, watchlist=WATCHLIST, store={"seed_days": 0.1}))
    async with app.run_test(size=(160, 48)) as pilot:
        await wait_for(pilot, lambda: app.engine_ready, timeout=20, what="the engine")
        await pilot.press("ctrl+p")
        # Nothing typed: every command, listed.
        await wait_for(
            pilot,
            lambda: len(_backfill_days(_titles(app), "SIM:SPY")) == 3,
            what="the backfill commands listed",
        )
        titles = _titles(app)
        assert _backfill_days(titles, "SIM:EURUSD") == [1, 7, 30]
        assert _backfill_days(titles, "SIM:SPY") == [1, 7, 30]
        timeframes = [title.split()[1] for title in titles if title.startswith("Timeframe ")]
        assert timeframes == ["1m", "5m", "15m", "1h", "4h", "1d"]
        assert "Quit" in " ".join(titles)  # Textual's own commands are still there

        # Typed: matches that score alike keep that order.
        await pilot.press(*"backfill SIM:SPY")
        await wait_for(
            pilot,
            lambda: _titles(app) and all(t.startswith("Backfill SIM:SPY") for t in _titles(app)),
            what="the matching backfills",
        )
        assert _backfill_days(_titles(app), "SIM:SPY") == [1, 7, 30]
        await pilot.press("escape")
        await pilot.press("q")
        await wait_for(pilot, lambda: app.return_code is not None, what="the app to exit")
