"""What the header of a TUI attaching to a daemon says: never that the daemon is gone
while it is attaching or attached (it said `daemon pid N gone: reconnecting…` for the
first seconds)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from conftest import wait_for
from test_attach import daemon  # noqa: F401  (the daemon fixture, its config)

from sptrader.app import SptraderApp
from sptrader.client.connect import client_for
from sptrader.client.paths import running_pid
from sptrader.client.remote import RemoteEngineClient
from sptrader.config import load_settings
from sptrader.screens import WatchlistPane


async def test_the_header_never_says_gone_while_attaching(daemon: tuple[Path, Path]) -> None:  # noqa: F811
    home, config = daemon
    settings = load_settings(home, config)
    pid = running_pid(home)
    # What `sptrader tui` gets on a home a daemon serves (greeted before the loop runs).
    client = await asyncio.to_thread(client_for, settings, run="everything")
    assert isinstance(client, RemoteEngineClient)
    app = SptraderApp(settings, client=client)
    shown: list[str] = []
    async with app.run_test(size=(160, 48)) as pilot:
        watchlist = app.query_one(WatchlistPane)

        def streaming() -> bool:
            shown.append(str(app.sub_title))
            return app.engine_ready and watchlist.row_values("SIM:EURUSD")["bid"] != "…"

        await wait_for(pilot, streaming, what="quotes from the daemon")
        # The header says so at once, not on the next 1 s refresh.
        assert app.sub_title.startswith(f"attached to daemon pid {pid}")
        await pilot.press("q")
        await wait_for(pilot, lambda: app.return_code is not None, what="the app to exit")
    assert shown and not [title for title in shown if "gone" in title]
