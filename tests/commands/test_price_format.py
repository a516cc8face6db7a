"""Prices in the CLI's tables at each instrument's own precision, every digit shown and
grouped (``48,109.96``, not ``48110``; a EURUSD fill at ``1.06685``, not
``1.06684667``), as a user runs the commands (``sptrader.cli.main`` in-process)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from conftest import CliResult, run_cli, running_daemon

CONFIG = """\
watchlist = ["SIM:EURUSD"]

[store]
seed_days = 0.05
flush_interval_ms = 50

[feeds.sim]
tick_rate = 5.0

[broker]
# Slippage makes fill prices with more digits than EURUSD quotes (1.06684667).
slippage_bps = 0.7
fee_bps = 1.0
"""


@pytest.fixture
def home(cli_home: Path) -> Path:
    cli_home.mkdir(parents=True)
    (cli_home / "config.toml").write_text(CONFIG)
    return cli_home


def ok(result: CliResult) -> str:
    assert result.code == 0, result
    return result.out


def test_candles_print_every_digit_of_a_price(run, home: Path, tmp_path: Path) -> None:
    # Bars of an instrument no enabled feed lists: its own closes give the precision.
    rows = [
        ("2024-03-01T10:00:00Z", 48109.96),
        ("2024-03-01T10:01:00Z", 48110.0),
        ("2024-03-01T10:02:00Z", 48109.5),
    ]
    csv = "ts,open,high,low,close,volume\n" + "".join(
        f"{ts},{price},{price},{price},{price},1.5\n" for ts, price in rows
    )
    (tmp_path / "bars.csv").write_text(csv)
    ok(run("import", str(tmp_path / "bars.csv"), "--instrument", "KRAKEN:BTC/USD"))
    out = ok(
        run(
            "candles",
            "KRAKEN:BTC/USD",
            "--from",
            "2024-03-01T10:00",
            "--to",
            "2024-03-01T10:03",
        )
    )
    lines = [line.split() for line in out.splitlines() if line.lstrip().startswith("2024-")]
    assert [line[1:5] for line in lines] == [
        ["48,109.96"] * 4,
        ["48,110.00"] * 4,
        ["48,109.50"] * 4,
    ]
    assert "48110 " not in out


def test_a_jpy_pair_shows_three_decimals(run, home: Path) -> None:
    out = ok(run("candles", "SIM:USDJPY", "--last", "30"))
    prices = [
        cell
        for line in out.splitlines()
        if re.match(r"\s*\d{4}-\d\d-\d\dT", line)
        for cell in line.split()[1:5]
    ]
    assert len(prices) == 120
    assert all(re.fullmatch(r"\d{3}\.\d{3}", cell) for cell in prices), prices


def test_fills_show_the_instruments_decimals(run, home: Path) -> None:
    text = ok(run("order", "buy", "SIM:EURUSD", "1000"))
    [order] = json.loads(ok(run("orders", "--all", "--format", "json")))
    price = order["avg_price"]
    assert len(repr(price).split(".")[1]) > 5  # slippage: more digits than a quote
    match = re.search(r"filled 1,000 at (\S+) ", text)
    assert match is not None, text
    assert match.group(1) == f"{price:.5f}"  # e.g. 1.06684667 -> 1.06685
    table = ok(run("orders", "--all"))
    assert f" {price:.5f} " in table and repr(price) not in table
    positions = ok(run("positions"))
    assert f" {price:.5f} " in positions


def test_through_a_daemon_the_same_decimals(tmp_path: Path) -> None:
    # The remote client asks the daemon (its price_decimals API row).
    config = 'watchlist = ["SIM:USDJPY"]\n[feeds.sim]\ntick_rate = 5.0\n[store]\nseed_days = 0.02\n'
    with running_daemon(tmp_path, config, "daemon-home") as (home, config_path):
        result = run_cli(home, config_path, "candles", "SIM:USDJPY", "--last", "20")
    assert result.returncode == 0, result.stderr
    prices = [
        cell
        for line in result.stdout.splitlines()
        if re.match(r"\s*\d{4}-\d\d-\d\dT", line)
        for cell in line.split()[1:5]
    ]
    assert len(prices) == 80
    assert all(re.fullmatch(r"\d{3}\.\d{3}", cell) for cell in prices), prices
