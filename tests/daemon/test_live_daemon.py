"""Live trading through a real daemon (``sptrader start``) and the Binance fake: the start
says the venue trades live, an order goes through the daemon's API, the venue's stream
reports a partial fill, ``halt`` cancels at the venue and refuses entries, ``reconcile``
and ``resume`` answer."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fake_binance_trading import FakeBinanceTrading
from test_daemon import daemon_home, describe, poll

CONFIG = """\
watchlist = ["SIM:EURUSD"]

[store]
seed_days = 0.01
flush_interval_ms = 50

[risk]
max_leverage = 0
risk_per_trade_pct = 0

[brokers.binance]
{section}
"""


def as_json(result: Any) -> Any:
    assert result.returncode == 0, describe(result)
    return json.loads(result.stdout)


def test_live_orders_through_the_daemon(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with FakeBinanceTrading(timeout_s=2.0) as fake:
        for name, value in fake.env.items():
            monkeypatch.setenv(name, value)  # the daemon inherits them; never in the config
        section = fake.config_toml()
        with daemon_home(tmp_path, CONFIG.format(section=section)) as daemon:
            started = daemon.run("start")
            assert started.returncode == 0, describe(started)
            assert "LIVE trading (real orders): binance at http://127.0.0.1" in started.stdout
            assert fake.api_secret not in started.stdout + started.stderr

            def connected() -> bool:
                services = daemon.status()["services"]
                return any(
                    s["name"] == "binance.orders" and s["state"] == "running" for s in services
                )

            poll(connected, 30, "the binance broker to connect")
            order = as_json(
                daemon.run(
                    "order",
                    "buy",
                    "BINANCE:BTCUSDT",
                    "0.01",
                    "--limit",
                    "40000",
                    "--venue",
                    "binance",
                    "--json",
                )
            )["order"]
            assert order["venue"] == "binance" and order["status"] == "accepted"
            fake.fill(order["client_order_id"], 0.004, 40_000.0)

            def partially_filled() -> dict | None:
                rows = as_json(daemon.run("orders", "--venue", "binance", "--format", "json"))
                return next((r for r in rows if r["status"] == "partially_filled"), None)

            seen = poll(partially_filled, 15, "the stream's partial fill")
            assert seen["filled_qty"] == pytest.approx(0.004)
            halted = daemon.run("halt", "--reason", "test")
            assert halted.returncode == 0, describe(halted)
            assert "paper: HALTED" in halted.stdout and "binance: HALTED" in halted.stdout
            assert fake.orders[order["client_order_id"]]["status"] == "CANCELED"
            refused = daemon.run(
                "order", "buy", "BINANCE:BTCUSDT", "0.01", "--limit", "40000", "--venue", "binance"
            )
            assert refused.returncode == 1 and "trading is halted (test)" in refused.stderr
            (report,) = as_json(daemon.run("reconcile", "binance", "--json"))
            assert report["venue"] == "binance" and report["fills_checked"] >= 1
            resumed = daemon.run("resume")
            assert sorted(resumed.stdout.splitlines()) == [
                "binance: trading resumed",
                "paper: trading resumed",
            ]
            assert daemon.run("stop").returncode == 0
