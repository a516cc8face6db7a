"""An alert rule with the "tui" channel as the trader sees it: a notification in the
control center when the price moves, and the notice in the alert history."""

from __future__ import annotations

import dataclasses

import msgspec
from test_app_trading import WATCHLIST, app_settings, notifications, trading, wait_for

from sptrader.app import SptraderApp
from sptrader.config import AlertsConfig


async def test_a_price_alert_shows_in_the_tui(home) -> None:
    instrument = WATCHLIST[0]
    # A move the simulated market makes within seconds.
    rules = [
        {
            "name": "move",
            "kind": "price_move",
            "instrument": instrument,
            "pct": 0.0001,
            "window_s": 60,
            "cooldown_s": 3600,
            "channels": ["tui"],
        }
    ]
    alerts = msgspec.convert({"rules": rules}, AlertsConfig)
    base = app_settings(home)
    settings = dataclasses.replace(base, config=msgspec.structs.replace(base.config, alerts=alerts))
    app = SptraderApp(settings)
    async with trading(app) as pilot:
        await wait_for(
            pilot,
            lambda: any(
                text.startswith(f"{instrument} +") or text.startswith(f"{instrument} -")
                for text in notifications(app)
            ),
            timeout=30,
            what="the alert's notification",
        )
        (row,) = await app.client.alert_history(10)
        assert row["rule"] == "move" and row["channels"] == ["tui"]
