"""The header's instrument count follows an add or a delete at once (it used to wait
for the header's periodic refresh, up to 2 s)."""

from __future__ import annotations

from pathlib import Path

from conftest import make_settings, wait_for
from test_app import add_by_search

from sptrader.app import SptraderApp
from sptrader.screens import WatchlistPane
from sptrader.screens.watchlist import WatchlistTable

WATCHLIST = ["SIM:EURUSD", "SIM:BTCUSD", "SIM:SPY"]


def _count_shown(app: SptraderApp, count: int) -> bool:
    return f"· {count} instrument" in app.sub_title


async def test_the_header_counts_an_added_and_a_deleted_instrument_at_once(
    tmp_path: Path,
) -> None:
    app = SptraderApp(make_settings(tmp_path, watchlist=WATCHLIST, store={"seed_days": 0.1}))
    async with app.run_test(size=(160, 48)) as pilot:
        await wait_for(pilot, lambda: app.engine_ready, timeout=20, what="the engine")
        await wait_for(pilot, lambda: _count_shown(app, 3), what="3 instruments in the header")
        # The periodic refresh paused: only the add or delete itself can move the count.
        await wait_for(pilot, lambda: app._refresh_timers, what="the refresh timers")
        (refresh,) = [timer for timer in app._refresh_timers if timer.name == "mode-refresh"]
        refresh.pause()
        watchlist = app.query_one(WatchlistPane)

        await add_by_search(pilot, app, "solusd", "SIM:SOLUSD")
        await wait_for(pilot, lambda: _count_shown(app, 4), what="4 instruments in the header")
        await wait_for(pilot, lambda: "SIM:SOLUSD" in watchlist.instruments, what="its row")

        table = app.query_one("#watchlist-table", WatchlistTable)
        table.focus()
        table.move_cursor(row=table.get_row_index("SIM:SOLUSD"))
        await pilot.press("delete")
        await wait_for(pilot, lambda: _count_shown(app, 3), what="3 instruments again")
        refresh.resume()
        await pilot.press("q")
        await wait_for(pilot, lambda: app.return_code is not None, what="the app to exit")
