"""``sptrader order`` reads quantities and prices as the order ticket does (``10k``,
``1.5m``, ``1,000``): one parser for both (sptrader.quantities)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sptrader.quantities import parse_number
from sptrader.screens.order_ticket import TicketForm, check_ticket

CONFIG = """\
watchlist = ["SIM:GBPUSD"]

[store]
seed_days = 0.05
flush_interval_ms = 50

[feeds.sim]
tick_rate = 5.0
"""


@pytest.fixture
def home(cli_home: Path) -> Path:
    cli_home.mkdir(parents=True)
    (cli_home / "config.toml").write_text(CONFIG)
    return cli_home


@pytest.mark.parametrize(
    ("typed", "qty"), [("10k", 10_000), ("1.5m", 1_500_000), ("1,000", 1000), ("2.5K", 2500)]
)
def test_the_cli_and_the_ticket_read_a_quantity_alike(typed: str, qty: float) -> None:
    from sptrader.commands.trading import number

    ticket = check_ticket(TicketForm(instrument="SIM:EURUSD", size=typed), (1.0, 1.0001))
    assert ticket.request is not None and ticket.request["qty"] == qty
    assert number(typed, "the quantity") == qty == parse_number(typed, "quantity")


def test_order_takes_a_suffixed_quantity_and_price(run, home: Path) -> None:
    result = run("order", "buy", "SIM:EURUSD", "10k", "--json")
    assert result.code == 0, result
    [fill] = json.loads(result.out)["fills"]
    assert fill["qty"] == 10_000

    resting = run("order", "buy", "SIM:EURUSD", "0.1m", "--limit", "0.5", "--json")
    assert resting.code == 0, resting
    order = json.loads(resting.out)["order"]
    assert order["qty"] == 100_000 and order["status"] == "open"

    priced = run("order", "buy", "SIM:BTCUSD", "1", "--limit", "1.5k", "--json")
    assert priced.code == 0, priced
    assert json.loads(priced.out)["order"]["price"] == 1500


@pytest.mark.parametrize("typed", ["10x", "k", "0k", "1.5q"])
def test_a_quantity_that_is_no_positive_number_is_one_line(run, home: Path, typed: str) -> None:
    result = run("order", "buy", "SIM:EURUSD", typed)
    assert result.code == 2, result
    assert result.err.strip().startswith("sptrader: the quantity must be")
    assert "Traceback" not in result.err
