"""``sptrader divergence``: a scanner's paper trades against a backtest of the same window,
on an account built from the backtest's own trades with known differences (slippage, a
rejected order, a stopped daemon, a revised bar, an extra trade)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_backtest import WINDOW, assert_one_line_error, backfilled, stored_bars

from sptrader.backtest import run_backtest
from sptrader.backtest.divergence import account_trades
from sptrader.broker import records
from sptrader.broker.orders import Fill, Order
from sptrader.clock import datetime_to_us, parse_time
from sptrader.config import BrokerConfig, RiskConfig
from sptrader.models import US_PER_MINUTE
from sptrader.store import Store
from sptrader.strategies import registry

START = datetime_to_us(parse_time("2026-11-02"))
SECOND = 1_000_000
CONFIG = """
[[scanners]]
name = "cross"
strategy = "sma_cross"
params = { fast = 5, slow = 20 }
instruments = ["SIM:EURUSD"]
broker = "paper"
[[scanners]]
name = "quiet"
strategy = "sma_cross"
instruments = ["SIM:EURUSD"]
"""


class Account:
    """Orders and fills written as the paper broker would have, for scanner ``cross``."""

    def __init__(self) -> None:
        self.orders: list[Order] = []
        self.fills: list[Fill] = []

    def order(self, side: str, qty: float, at_us: int, role: str = "entry", **fields) -> Order:
        fields = {"status": "filled", "filled_qty": qty, **fields}
        order = Order(
            len(self.orders) + 1, "SIM:EURUSD", side, qty, "market", None, "gtc", at_us,
            role=role, source="scanner:cross", updated_us=at_us, **fields,
        )  # fmt: skip
        self.orders.append(order)
        return order

    def trade(self, long: bool, qty: float, entry: tuple[int, float], exit_: tuple[int, float]):
        for (at_us, price), side, role in (
            (entry, "buy" if long else "sell", "entry"),
            (exit_, "sell" if long else "buy", "close"),
        ):
            order = self.order(side, qty, at_us, role, avg_price=price)
            self.fills.append(
                Fill(
                    len(self.fills) + 1, order.order_id, "SIM:EURUSD", side, qty, price, 0.0, at_us
                )
            )

    def save(self, store: Store) -> None:
        records.save_changes(
            store,
            (
                [records.order_row(o) for o in self.orders],
                [records.fill_row(f) for f in self.fills],
            ),
        )


def add_run(store: Store, run_id: int, at_us: int, signal_ts: int | None = None) -> None:
    cursor = store.cursor()
    cursor.execute(
        "INSERT INTO scan_runs VALUES (?, 'cross', 'schedule', make_timestamp(?),"
        " make_timestamp(?), 5.0, 'ok', NULL, 1, 0, ?)",
        [run_id, at_us, at_us, 0 if signal_ts is None else 1],
    )
    if signal_ts is not None:
        cursor.execute(
            "INSERT INTO signals (run_id, scanner, instrument, ts, side, strength, reason, stop, target, created) VALUES (?, 'cross', 'SIM:EURUSD', make_timestamp(?), 'buy',"
            " 1.0, 'cross up', NULL, NULL, make_timestamp(?))",
            [run_id, signal_ts, at_us],
        )


@pytest.fixture
def scenario(run, cli_home: Path):
    """The window backfilled, the backtest's trades, and an account made from them:
    trade 0 as the backtest, trade 1 with slippage, trade 2 rejected, trade 3 while the
    daemon was stopped, trade 4 with a run that raised no signal, and one extra long
    trade on a signal the backtest does not have (between trades 5 and 6)."""
    backfilled(run, ("2026-11-02", "2026-11-03"))
    config = cli_home.parent / "divergence.toml"
    config.write_text(CONFIG)
    bars = stored_bars(cli_home, "2026-11-02", "2026-11-03")
    strategy = registry.build("sma_cross", {"fast": 5, "slow": 20})
    trades = run_backtest(
        strategy, bars, BrokerConfig(), RiskConfig(), "1m", instrument="SIM:EURUSD",
        start_us=START,
    ).trades.to_dicts()  # fmt: skip
    assert len(trades) > 8 and all(t["side"] == "long" for t in trades)
    account = Account()
    t0, t1 = trades[0], trades[1]
    account.trade(True, t0["qty"], (t0["entry_time_us"] + 5 * SECOND, t0["entry_price"]),
                  (t0["exit_time_us"] + 5 * SECOND, t0["exit_price"]))  # fmt: skip
    account.trade(
        True,
        t1["qty"],
        (t1["entry_time_us"] + 3 * SECOND, t1["entry_price"] * 1.0002),  # 2 bps worse
        (t1["exit_time_us"] + 3 * SECOND, t1["exit_price"] * (1 - 0.0003)),  # 3 bps worse
    )
    account.order(
        "buy", t1["qty"], trades[2]["entry_time_us"] + 2 * SECOND, status="rejected",
        filled_qty=0.0, reason="max open positions: 5 open, the limit is 5",
    )  # fmt: skip
    t5, t6 = trades[5], trades[6]
    extra_at = (t5["exit_time_us"] + t6["entry_time_us"]) // 2
    extra_at -= extra_at % US_PER_MINUTE
    account.trade(True, 1000.0, (extra_at + 4 * SECOND, 1.1), (extra_at + 61 * SECOND, 1.1001))
    store = Store(cli_home / "sptrader.duckdb")
    try:
        account.save(store)
        for index, trade in enumerate(trades):
            if index in (3,):
                continue  # the daemon was stopped: no run then
            signal_bar = trade["entry_time_us"] - US_PER_MINUTE
            add_run(store, index + 1, trade["entry_time_us"] + SECOND,
                    None if index == 4 else signal_bar)  # fmt: skip
        add_run(store, 100, extra_at + SECOND, extra_at - US_PER_MINUTE)
    finally:
        store.close()
    return str(config), trades, extra_at


def test_each_difference_is_found_and_explained(run, scenario) -> None:
    config, trades, extra_at = scenario
    result = run("--config", config, "divergence", "cross", *WINDOW, "--format", "json")
    assert result.code == 0, result.err
    data = json.loads(result.out)
    assert (data["scanner"], data["strategy"], data["venue"]) == ("cross", "sma_cross", "paper")
    pairs = data["trades"]
    by_entry = {p["backtest"]["entry_time_us"]: p for p in pairs if p["backtest"]}
    first, second = by_entry[trades[0]["entry_time_us"]], by_entry[trades[1]["entry_time_us"]]
    assert first["status"] == second["status"] == "matched"
    assert first["entry_slippage_bps"] == pytest.approx(0.0, abs=1e-9)
    assert first["causes"] == [] and first["pnl_difference"] == pytest.approx(0.0, abs=1e-6)
    assert second["entry_slippage_bps"] == pytest.approx(2.0, rel=1e-6)
    assert second["exit_slippage_bps"] == pytest.approx(3.0, rel=1e-6)
    assert second["pnl_difference"] < 0
    rejected = by_entry[trades[2]["entry_time_us"]]
    assert rejected["status"] == "missed"
    assert rejected["causes"] == [
        "the order was rejected: max open positions: 5 open, the limit is 5"
    ]
    stopped = by_entry[trades[3]["entry_time_us"]]
    assert stopped["causes"] == [
        "no scanner run then (the daemon was stopped or the scanner paused)"
    ]
    unseen = by_entry[trades[4]["entry_time_us"]]
    assert unseen["causes"][0].startswith("the scanner raised no signal on that bar")
    (extra,) = [p for p in pairs if p["status"] == "extra"]
    assert extra["account"]["entry_time_us"] == extra_at + 4 * SECOND
    assert extra["causes"][0].startswith("the scanner's signal on the")
    assert "is not in a backtest of the stored bars" in extra["causes"][0]
    totals = data["totals"]
    assert totals["matched"] == 2 and totals["extra"] == 1
    assert totals["missed"] == len(trades) - 2
    assert totals["difference"] == pytest.approx(
        totals["from_matched"] + totals["from_missed"] + totals["from_extra"]
    )
    assert totals["backtest_pnl"] == pytest.approx(sum(t["pnl"] for t in trades))

    table = run("--config", config, "divergence", "cross", *WINDOW)
    assert table.code == 0, table.err
    lines = table.out.splitlines()
    assert lines[0].startswith("cross (sma_cross 1m, paper) 2026-11-02T00:00:00Z →")
    assert f"2 matched, {len(trades) - 2} missed, 1 extra trades" in lines[0]
    assert "mean slippage entry +1.0 bps, exit +1.5 bps" in lines[1]
    assert "the order was rejected: max open positions" in table.out
    assert "missed: no scanner run then (the daemon was stopped" in table.out


def test_account_trades_come_from_the_fills_with_their_exit_and_open_state() -> None:
    account = Account()
    account.trade(True, 10.0, (1_000, 100.0), (2_000, 101.0))
    entry = account.order("sell", 5.0, 3_000, avg_price=99.0)
    account.fills.append(Fill(9, entry.order_id, "SIM:EURUSD", "sell", 5.0, 99.0, 0.0, 3_000))
    orders = [
        {**o.to_dict(), "fills": [f.to_dict() for f in account.fills if f.order_id == o.order_id]}
        for o in account.orders
    ]
    trades = account_trades(orders, "SIM:EURUSD")
    assert [(t["side"], t["exit_reason"], t["pnl"]) for t in trades] == [
        ("long", "signal", pytest.approx(10.0)),
        ("short", "open", pytest.approx(0.0)),
    ]
    assert account_trades(orders, "SIM:GBPUSD") == []


def test_mistakes_are_one_line(run, cli_home: Path) -> None:
    config = cli_home.parent / "divergence.toml"
    config.write_text(CONFIG)
    line = assert_one_line_error(run("--config", str(config), "divergence", "nope", *WINDOW), 2)
    assert "unknown scanner 'nope' (scanners: cross, quiet)" in line
    line = assert_one_line_error(run("--config", str(config), "divergence", "quiet", *WINDOW), 2)
    assert "scanner quiet places no orders" in line
    args = ("--config", str(config), "divergence", "cross", "--from", "2026-11-03", "--to")
    line = assert_one_line_error(run(*args, "2026-11-02"), 2)
    assert "--to must be later than --from" in line
