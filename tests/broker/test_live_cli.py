"""Live trading as a user runs it from the shell, without a daemon: ``sptrader order
--venue binance`` against the Binance fake (a one-shot engine connects, reconciles,
places, stops), ``orders``/``positions`` showing the venue, ``reconcile``, ``halt`` and
``resume``; and live off by default."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fake_binance_trading import FakeBinanceTrading

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


@pytest.fixture
def binance(cli_home: Path, monkeypatch: pytest.MonkeyPatch):
    with FakeBinanceTrading(timeout_s=1.0) as fake:
        for name, value in fake.env.items():
            monkeypatch.setenv(name, value)
        section = fake.config_toml()
        cli_home.mkdir(parents=True)
        (cli_home / "config.toml").write_text(CONFIG.format(section=section))
        yield fake


def as_json(result) -> object:
    assert result.code == 0, result.err
    return json.loads(result.out)


def test_a_live_limit_order_from_the_shell(run, binance: FakeBinanceTrading) -> None:
    placed = run(
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
    order = as_json(placed)["order"]
    assert order["venue"] == "binance" and order["status"] == "accepted"
    assert order["client_order_id"] in binance.orders and order["venue_order_id"]
    assert order["filled_qty"] == 0
    assert binance.placed == 1 and binance.auth_failures == 0
    table = run("orders")
    assert table.code == 0 and "BINANCE LIVE" in table.out and "accepted" in table.out
    (listed,) = as_json(run("orders", "--venue", "binance", "--format", "json"))
    assert listed["client_order_id"] == order["client_order_id"]
    assert as_json(run("orders", "--venue", "paper", "--format", "json")) == []
    # The venue fills it while no engine runs; connecting to reconcile finds the fill.
    binance.fill(order["client_order_id"])
    (report,) = as_json(run("reconcile", "binance", "--json"))
    # Spot positions are holdings: the 1 BTC the account had before is a difference.
    assert report["venue"] == "binance"
    assert [d["kind"] for d in report["differences"]] == ["position_mismatch"]
    (position,) = as_json(run("positions", "--venue", "binance", "--format", "json"))["positions"]
    assert position["venue"] == "binance" and position["qty"] == 0.01
    # Its equity curve: the P&L of its fills on record, from 0 (paper's has no fill): the
    # commission, 0.1% taken in BTC, booked in USDT (0.00001 BTC at 40,000).
    points = as_json(run("journal", "equity", "--venue", "binance", "--format", "json"))
    assert points and points[-1]["cash"] == pytest.approx(-0.4)
    assert as_json(run("journal", "equity", "--format", "json")) == []
    (row,) = as_json(run("orders", "--all", "--venue", "binance", "--format", "json"))
    assert row["status"] == "filled" and row["filled_qty"] == 0.01


def test_halt_then_resume_from_the_shell(run, binance: FakeBinanceTrading) -> None:
    order = as_json(
        run(
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
    halted = run("halt", "binance")
    assert halted.code == 0 and "binance: HALTED" in halted.out, halted.err
    refused = run(
        "order", "buy", "BINANCE:BTCUSDT", "0.01", "--limit", "40000", "--venue", "binance"
    )
    assert refused.code == 1 and "halted" in refused.err
    # Connecting again cancelled the working order (the switch holds with no engine).
    assert binance.orders[order["client_order_id"]]["status"] == "CANCELED"
    assert run("resume", "binance").out == "binance: trading resumed\n"
    again = run("order", "buy", "BINANCE:BTCUSDT", "0.01", "--limit", "40000", "--venue", "binance")
    assert again.code == 0, again.err


def test_live_is_off_until_the_config_says_so(run, cli_home: Path) -> None:
    cli_home.mkdir(parents=True)
    (cli_home / "config.toml").write_text('watchlist = ["SIM:EURUSD"]\n')
    refused = run("order", "buy", "BINANCE:BTCUSDT", "0.01", "--limit", "1", "--venue", "binance")
    assert refused.code != 0
    assert 'binance does not trade live ([brokers.binance] trading = "live"' in refused.err
    assert (
        run("reconcile")
        .err.strip()
        .endswith('no venue trades live ([brokers.NAME] trading = "live")')
    )
