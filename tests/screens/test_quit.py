"""`q` in the TUI that hosts the engine: it says it is stopping at once (while the
engine stops, the screen still paints), then exits with the store closed and the
home given back (no pid file, no socket)."""

from __future__ import annotations

from pathlib import Path

from conftest import make_settings, wait_for

from sptrader.app import SptraderApp
from sptrader.client import paths


async def test_q_says_stopping_at_once_and_gives_the_home_back(tmp_path: Path) -> None:
    home = tmp_path / "home"
    settings = make_settings(
        home, watchlist=["SIM:EURUSD"], store={"seed_days": 0.05}, feeds={"sim": {"tick_rate": 5.0}}
    )
    app = SptraderApp(settings)
    async with app.run_test(size=(160, 48)) as pilot:
        await wait_for(pilot, lambda: app.engine_ready, what="the engine to start")
        assert paths.pid_path(home).exists() and paths.socket_path(home).exists()
        await pilot.press("q")
        # Said before the engine has stopped (it stopped inside the key's handler, and
        # the header never said so).
        assert app.sub_title == "stopping…"
        await wait_for(pilot, lambda: app.return_code is not None, what="the app to exit")
    assert app.engine is not None and app.engine.store is None  # flushed and closed
    assert not paths.pid_path(home).exists()
    assert not paths.socket_path(home).exists()
