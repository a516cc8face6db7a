"""sptrader.broker.performance: trades from fills and the statistics, against values computed
by hand."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest

from sptrader.broker.performance import (
    TRADE_SCHEMA,
    equity_returns,
    max_drawdown,
    periods_per_year,
    round_trips,
    sharpe,
    sortino,
    trade_stats,
)


def fills(*rows: tuple) -> pl.DataFrame:
    """Rows of (instrument, side, qty, price, fee, ts_us); ids are numbered."""
    return pl.DataFrame(
        [(i + 1, i + 1, *row) for i, row in enumerate(rows)],
        schema={
            "fill_id": pl.Int64,
            "order_id": pl.Int64,
            "instrument": pl.String,
            "side": pl.String,
            "qty": pl.Float64,
            "price": pl.Float64,
            "fee": pl.Float64,
            "ts_us": pl.Int64,
        },
        orient="row",
    )


def test_a_long_round_trip_is_one_trade_net_of_fees() -> None:
    trades = round_trips(fills(("X", "buy", 10, 100.0, 1.0, 1), ("X", "sell", 10, 110.0, 1.0, 2)))
    assert trades.schema == pl.Schema(TRADE_SCHEMA)
    assert trades.to_dicts() == [
        {
            "instrument": "X",
            "side": "long",
            "qty": 10.0,
            "entry_time_us": 1,
            "entry_price": 100.0,
            "exit_time_us": 2,
            "exit_price": 110.0,
            "pnl": 98.0,  # 10 * (110 - 100) - 2 fees
            "fees": 2.0,
            "open": False,
        }
    ]


def test_adding_and_closing_in_parts_averages_both_sides() -> None:
    trades = round_trips(
        fills(
            ("X", "buy", 10, 100.0, 0.0, 1),
            ("X", "buy", 10, 110.0, 0.0, 2),  # average cost 105
            ("X", "sell", 5, 120.0, 0.5, 3),  # realizes 5 * 15 = 75
            ("X", "sell", 15, 100.0, 0.5, 4),  # realizes 15 * -5 = -75
        )
    )
    (trade,) = trades.to_dicts()
    assert trade["qty"] == 20.0
    assert trade["entry_price"] == 105.0
    assert trade["exit_price"] == pytest.approx((5 * 120 + 15 * 100) / 20)  # 105
    assert trade["entry_time_us"] == 1
    assert trade["exit_time_us"] == 4
    assert trade["pnl"] == pytest.approx(-1.0)  # 75 - 75 - 1 of fees
    assert trade["fees"] == pytest.approx(1.0)


def test_a_flip_closes_one_trade_and_opens_the_next_splitting_the_fee() -> None:
    trades = round_trips(
        fills(
            ("X", "buy", 10, 100.0, 1.0, 1),
            ("X", "sell", 30, 90.0, 3.0, 2),  # closes 10 (fee 1 of 3), opens 20 short
            ("X", "buy", 20, 80.0, 2.0, 3),
        )
    ).to_dicts()
    assert [t["side"] for t in trades] == ["long", "short"]
    long, short = trades
    assert long["pnl"] == pytest.approx(10 * (90 - 100) - 1.0 - 1.0)  # -102
    assert long["fees"] == pytest.approx(2.0)
    assert long["exit_time_us"] == 2
    assert short["entry_time_us"] == 2
    assert short["entry_price"] == 90.0
    assert short["qty"] == 20.0
    assert short["exit_price"] == 80.0
    assert short["pnl"] == pytest.approx(20 * (90 - 80) - 2.0 - 2.0)  # 196
    assert short["fees"] == pytest.approx(4.0)


def test_instruments_are_separate_and_trades_come_in_the_order_they_closed() -> None:
    trades = round_trips(
        fills(
            ("A", "buy", 1, 10.0, 0.0, 1),
            ("B", "sell", 2, 50.0, 0.0, 2),
            ("B", "buy", 2, 45.0, 0.0, 3),
            ("A", "sell", 1, 12.0, 0.0, 4),
        )
    ).to_dicts()
    assert [(t["instrument"], t["side"], t["pnl"]) for t in trades] == [
        ("B", "short", 10.0),
        ("A", "long", 2.0),
    ]


def test_an_open_trade_is_left_out_unless_asked_for() -> None:
    rows = fills(
        ("X", "buy", 10, 100.0, 0.0, 1),
        ("X", "sell", 10, 101.0, 0.0, 2),
        ("X", "sell", 4, 102.0, 0.4, 3),  # a short still open
    )
    assert round_trips(rows).height == 1
    trades = round_trips(rows, include_open=True).to_dicts()
    assert len(trades) == 2
    assert trades[1]["open"] is True
    assert trades[1]["side"] == "short"
    assert trades[1]["exit_time_us"] is None
    assert trades[1]["exit_price"] is None
    assert trades[1]["pnl"] == pytest.approx(-0.4)
    assert trades[0]["open"] is False


def test_fills_are_booked_in_time_order_and_datetimes_work() -> None:
    rows = fills(("X", "sell", 1, 110.0, 0.0, 20), ("X", "buy", 1, 100.0, 0.0, 10))
    trades = round_trips(rows.with_columns(pl.col("ts_us").cast(pl.Datetime("us")))).to_dicts()
    assert trades[0]["side"] == "long"
    assert trades[0]["pnl"] == 10.0
    assert round_trips(fills()).is_empty()


def test_trade_stats_by_hand() -> None:
    stats = trade_stats([100.0, -50.0, 30.0, 0.0, -20.0])
    assert stats == {
        "trades": 5,
        "wins": 2,
        "losses": 2,
        "breakeven": 1,
        "win_rate": 0.4,
        "avg_win": 65.0,
        "avg_loss": -35.0,
        "gross_profit": 130.0,
        "gross_loss": -70.0,
        "profit_factor": pytest.approx(130 / 70),
        "expectancy": 12.0,
        "net_pnl": 60.0,
        "largest_win": 100.0,
        "largest_loss": -50.0,
    }
    assert trade_stats(pl.Series([1.0, 2.0]))["profit_factor"] == math.inf
    empty = trade_stats([])
    assert empty["trades"] == 0
    assert empty["win_rate"] is None
    assert empty["profit_factor"] is None
    assert empty["expectancy"] is None
    assert empty["net_pnl"] == 0.0
    only_losses = trade_stats(np.array([-1.0, -3.0]))
    assert only_losses["profit_factor"] == 0.0
    assert only_losses["avg_win"] is None
    assert only_losses["largest_loss"] == -3.0


def test_max_drawdown_by_hand() -> None:
    assert max_drawdown([100, 120, 90, 130, 100, 140]) == (30.0, 0.25)
    # The largest amount (100 -> 60) and the largest share (10 -> 5) differ.
    assert max_drawdown([10, 5, 100, 60]) == (40.0, 0.5)
    assert max_drawdown([1, 2, 3]) == (0.0, 0.0)
    assert max_drawdown([]) == (0.0, 0.0)


def test_sharpe_and_sortino_by_hand() -> None:
    returns = [0.01, -0.02, 0.03, 0.0]
    # mean 0.005; squared deviations 0.000025 + 0.000625 + 0.000625 + 0.000025 = 0.0013
    sample_std = math.sqrt(0.0013 / 3)
    assert sharpe(returns, 252) == pytest.approx(0.005 / sample_std * math.sqrt(252))
    assert sharpe(returns, 252) == pytest.approx(3.8130, abs=1e-4)
    # downside deviation: sqrt((0.02 ** 2) / 4) = 0.01
    assert sortino(returns, 252) == pytest.approx(0.005 / 0.01 * math.sqrt(252))
    assert sharpe([0.01], 252) is None
    assert sharpe([0.01, 0.01], 252) is None
    assert sortino([0.01, 0.02], 252) is None
    assert sortino([], 252) is None


def test_equity_returns_and_periods_per_year() -> None:
    assert equity_returns([110.0, 99.0], start=100.0) == pytest.approx([0.1, -0.1])
    assert equity_returns([100.0, 100.0, 50.0]) == pytest.approx([0.0, -0.5])
    assert periods_per_year("1m") == 525_600
    assert periods_per_year("5m") == 105_120
    assert periods_per_year("1h") == 8_760
    assert periods_per_year("1d") == 365
