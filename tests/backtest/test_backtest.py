"""The backtester: trades on crafted bars checked against a hand-computed list, the
semantics against a plain bar-by-bar reference, risk limits, gaps, sweeps, and the
``sptrader backtest`` command."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from conftest import CliResult

from sptrader.backtest import run_backtest
from sptrader.backtest.sweep import (
    build_strategy,
    combinations,
    parse_params,
    run_sweep,
)
from sptrader.broker.fill_model import FillModel
from sptrader.broker.performance import (
    equity_returns,
    max_drawdown,
    periods_per_year,
    round_trips,
    sharpe,
    sortino,
)
from sptrader.config import BrokerConfig, RiskConfig
from sptrader.errors import UsageError
from sptrader.models import US_PER_DAY, US_PER_MINUTE
from sptrader.strategies import registry
from sptrader.strategies.base import SIGNAL_SCHEMA, Strategy

T0 = 1_767_571_200_000_000  # 2026-01-05T00:00:00Z, a Monday
ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


class Scripted(Strategy):
    """Signals given up front: {bar index: (side, stop, target)}."""

    name = "scripted"

    def __init__(self, script: dict[int, tuple[str, float | None, float | None]]) -> None:
        super().__init__()
        self.script = script

    def evaluate(self, bars: pl.DataFrame) -> pl.DataFrame:
        ts = bars["ts"].to_list()
        rows = [
            (bars["instrument"][0], ts[i], side, 1.0, f"scripted {side}", stop, target)
            for i, (side, stop, target) in sorted(self.script.items())
        ]
        return pl.DataFrame(rows, schema=SIGNAL_SCHEMA, orient="row")


def make_bars(ohlc: list[tuple[float, float, float, float]], start: int = T0) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "ts": pl.Series([start + i * US_PER_MINUTE for i in range(len(ohlc))]).cast(
                pl.Datetime("us")
            ),
            "open": [row[0] for row in ohlc],
            "high": [row[1] for row in ohlc],
            "low": [row[2] for row in ohlc],
            "close": [row[3] for row in ohlc],
            "volume": [1.0] * len(ohlc),
            "trades": [1] * len(ohlc),
        }
    )


# --- the hand-computed trade list -------------------------------------------------------

CRAFTED = [
    (100, 101, 99, 100),  # 0
    (100, 102, 99, 101),  # 1  buy
    (102, 103, 101, 102),  # 2  long at the open 102 (+slippage)
    (103, 104, 102, 103),  # 3
    (104, 105, 103, 104),  # 4  sell, stop 110, target 95
    (105, 106, 104, 105),  # 5  reverse at the open 105: close the long, go short
    (104, 105, 100, 101),  # 6
    (99, 100, 94, 96),  # 7  low 94 reaches the target 95: bought back at 95
    (96, 97, 95, 96),  # 8  buy, stop 94, target 120
    (97, 98, 96, 97),  # 9  long at 97 (+slippage)
    (96, 97, 95, 96),  # 10
    (92, 93, 90, 91),  # 11 opens at 92, below the stop 94: sold at the worse open
    (91, 92, 90, 91),  # 12 sell (no stop: signal_notional)
    (90, 91, 89, 90),  # 13 short at 90 (-slippage)
    (89, 95, 88, 94),  # 14
    (94, 95, 93, 94),  # 15 exit
    (95, 96, 94, 95),  # 16 bought back at the open 95 (+slippage)
    (95, 96, 94, 95),  # 17 buy, stop 94.5
    (96, 97, 93, 95),  # 18 long at 96, the same bar reaches the stop 94.5
    (95, 96, 94, 95),  # 19 buy, stop 90, target 100
    (95, 96, 94, 95),  # 20 long at 95
    (95, 101, 89, 95),  # 21 reaches both: the stop is assumed first
    (95, 96, 94, 95),  # 22 buy (no stop)
    (96, 97, 95, 96),  # 23 long at 96
    (97, 98, 96, 97),  # 24 the last bar: closed at its close 97 (-slippage)
]
SCRIPT = {
    1: ("buy", None, None),
    4: ("sell", 110.0, 95.0),
    8: ("buy", 94.0, 120.0),
    12: ("sell", None, None),
    15: ("exit", None, None),
    17: ("buy", 94.5, None),
    19: ("buy", 90.0, 100.0),
    22: ("buy", None, None),
}
BROKER = BrokerConfig(
    starting_cash=10_000.0,
    slippage_bps=10.0,
    fee_bps=10.0,
    fee_per_unit=0.0,
    signal_notional=1_000.0,
)
RISK = RiskConfig(risk_per_trade_pct=1.0)


def hand_trades() -> list[dict]:
    """The trades of SCRIPT on CRAFTED, worked out step by step: slippage and fees are
    0.1% each (10 bps), sizes 1,000 / price without a stop, else 1% of equity over the
    stop distance."""
    fee = 0.001
    trades = []
    equity = 10_000.0

    def trade(side, entry_bar, entry, qty, exit_bar, exit_, why, stop=None, target=None):
        nonlocal equity
        sign = 1 if side == "long" else -1
        fees = qty * entry * fee + qty * exit_ * fee
        pnl = sign * qty * (exit_ - entry) - fees
        equity += pnl
        trades.append(
            dict(
                side=side,
                entry_bar=entry_bar,
                entry_price=entry,
                qty=qty,
                exit_bar=exit_bar,
                exit_price=exit_,
                exit_reason=why,
                pnl=pnl,
                fees=fees,
                stop=stop,
                target=target,
            )
        )

    # 1: long at 102 * 1.001 = 102.102 for 1,000; reversed at 105 * 0.999 = 104.895.
    trade("long", 2, 102.102, 1000 / 102.102, 5, 104.895, "reverse")
    # 2: short at 104.895, risk 1% of equity over 110 - 104.895; target 95 at bar 7.
    trade("short", 5, 104.895, equity * 0.01 / (110 - 104.895), 7, 95.0, "target", 110.0, 95.0)
    # 3: long at 97.097, stop 94; bar 11 opens at 92: sold at 92 * 0.999 = 91.908.
    trade("long", 9, 97.097, equity * 0.01 / (97.097 - 94), 11, 91.908, "stop", 94.0, 120.0)
    # 4: short at 90 * 0.999 = 89.91 for 1,000; exit at 95 * 1.001 = 95.095.
    trade("short", 13, 89.91, 1000 / 89.91, 16, 95.095, "signal")
    # 5: long at 96.096; the entry bar's low reaches 94.5: sold at 94.5 * 0.999.
    trade("long", 18, 96.096, equity * 0.01 / (96.096 - 94.5), 18, 94.4055, "stop", 94.5)
    # 6: long at 95.095; bar 21 reaches both 90 and 100: the stop, 90 * 0.999 = 89.91.
    trade("long", 20, 95.095, equity * 0.01 / (95.095 - 90), 21, 89.91, "stop", 90.0, 100.0)
    # 7: long at 96.096 for 1,000; closed at the last close 97 * 0.999 = 96.903.
    trade("long", 23, 96.096, 1000 / 96.096, 24, 96.903, "end")
    return trades


def hand_equity(trades: list[dict], closes: list[float], start: float) -> list[float]:
    """Equity at each bar's close: cash (realized P&L less fees) plus the open trade."""
    curve = []
    for bar, close in enumerate(closes):
        cash = start + sum(t["pnl"] for t in trades if t["exit_bar"] <= bar)
        for t in trades:
            if t["entry_bar"] <= bar < t["exit_bar"]:
                sign = 1 if t["side"] == "long" else -1
                cash += sign * t["qty"] * (close - t["entry_price"])
                cash -= t["qty"] * t["entry_price"] * 0.001  # its entry fee is paid
        curve.append(cash)
    return curve


def test_crafted_bars_give_the_hand_computed_trades() -> None:
    bars = make_bars(CRAFTED)
    result = run_backtest(Scripted(SCRIPT), bars, BROKER, RISK, "1m", instrument="T:X")
    expected = hand_trades()
    got = result.trades.to_dicts()
    assert len(got) == len(expected)
    for trade, want in zip(got, expected, strict=True):
        assert trade["side"] == want["side"]
        assert trade["entry_time_us"] == T0 + want["entry_bar"] * US_PER_MINUTE
        assert trade["exit_time_us"] == T0 + want["exit_bar"] * US_PER_MINUTE
        assert trade["entry_price"] == pytest.approx(want["entry_price"], rel=1e-12)
        assert trade["exit_price"] == pytest.approx(want["exit_price"], rel=1e-12)
        assert trade["qty"] == pytest.approx(want["qty"], rel=1e-12)
        assert trade["pnl"] == pytest.approx(want["pnl"], rel=1e-9)
        assert trade["fees"] == pytest.approx(want["fees"], rel=1e-9)
        assert trade["exit_reason"] == want["exit_reason"]
        assert trade["stop"] == want["stop"]
        assert trade["target"] == want["target"]
        assert trade["spans_gap"] is False
    # A few of the prices written out: 0.1% slippage against the trader.
    assert [round(t["entry_price"], 6) for t in got] == [
        102.102,
        104.895,
        97.097,
        89.91,
        96.096,
        95.095,
        96.096,
    ]
    assert [round(t["exit_price"], 6) for t in got] == [
        104.895,
        95.0,
        91.908,
        95.095,
        94.4055,
        89.91,
        96.903,
    ]
    assert result.trades["pnl"][0] == pytest.approx(
        1000 / 102.102 * (104.895 - 102.102) - 1.0 - 1000 / 102.102 * 104.895 * 0.001
    )
    # The fills are the trades' entries and exits: round_trips gives the same trades.
    again = round_trips(result.fills)
    assert again["pnl"].to_list() == pytest.approx(result.trades["pnl"].to_list(), rel=1e-9)
    assert again["entry_price"].to_list() == pytest.approx(result.trades["entry_price"].to_list())


class Seeing(Scripted):
    """Remembers the bars it was given."""

    def evaluate(self, bars: pl.DataFrame) -> pl.DataFrame:
        self.seen = bars
        return super().evaluate(bars)


def test_strategies_see_order_flow_null_unless_the_bars_have_it() -> None:
    strategy = Seeing({})
    run_backtest(strategy, make_bars(CRAFTED[:3]), BROKER, RISK, "1m", instrument="T:X")
    assert strategy.seen.columns == [
        "instrument", "ts", "open", "high", "low", "close", "volume", "trades",
        "buy_volume", "sell_volume",
    ]  # fmt: skip
    assert strategy.seen["buy_volume"].null_count() == 3
    assert strategy.seen.schema["sell_volume"] == pl.Float64

    flow = make_bars(CRAFTED[:3]).with_columns(
        pl.lit("x").alias("note"), sell_volume=pl.lit(0.25), buy_volume=pl.lit(0.5)
    )
    run_backtest(strategy, flow, BROKER, RISK, "1m", instrument="T:X")
    assert strategy.seen.columns[-3:] == ["buy_volume", "sell_volume", "note"]
    assert strategy.seen.select("buy_volume", "sell_volume").row(0) == (0.5, 0.25)


def test_the_summary_matches_the_hand_computation() -> None:
    bars = make_bars(CRAFTED)
    result = run_backtest(Scripted(SCRIPT), bars, BROKER, RISK, "1m", instrument="T:X")
    trades = hand_trades()
    pnl = [t["pnl"] for t in trades]
    curve = hand_equity(trades, [row[3] for row in CRAFTED], 10_000.0)
    assert result.equity["equity"].to_list() == pytest.approx(curve, rel=1e-12)
    s = result.summary
    assert s["bars"] == 25
    assert s["signals"] == 8
    assert s["trades"] == 7
    wins = [p for p in pnl if p > 0]
    losses = [p for p in pnl if p < 0]
    assert (s["wins"], s["losses"]) == (len(wins), len(losses)) == (3, 4)
    assert s["win_rate"] == pytest.approx(3 / 7)
    assert s["net_pnl"] == pytest.approx(sum(pnl))
    assert s["final_equity"] == pytest.approx(10_000 + sum(pnl))
    assert s["return_pct"] == pytest.approx(sum(pnl) / 10_000 * 100)
    assert s["profit_factor"] == pytest.approx(sum(wins) / -sum(losses))
    assert s["fees"] == pytest.approx(sum(t["fees"] for t in trades))
    amount, fraction = max_drawdown([10_000.0, *curve])
    assert s["max_drawdown"] == pytest.approx(amount)
    assert s["max_drawdown_pct"] == pytest.approx(fraction * 100)
    returns = equity_returns(curve, start=10_000.0)
    assert s["sharpe"] == pytest.approx(sharpe(returns, periods_per_year("1m")))
    assert s["sortino"] == pytest.approx(sortino(returns, periods_per_year("1m")))
    # Held at the close of bars 2-4, 5-6, 9-10, 13-15, 20 and 23: 12 of 25.
    assert s["exposure_pct"] == pytest.approx(48.0)
    assert s["rejected"] == 0


def test_a_trade_spanning_a_gap_is_marked() -> None:
    bars = make_bars(CRAFTED)
    # Minutes 3-4 and 20-21 missing (in the middle of trades 1 and 6).
    gaps = [
        (T0 + 3 * US_PER_MINUTE + 30_000_000, T0 + 4 * US_PER_MINUTE),
        (T0 + 20 * US_PER_MINUTE, T0 + 21 * US_PER_MINUTE),
    ]
    result = run_backtest(Scripted(SCRIPT), bars, BROKER, RISK, "1m", gaps=gaps)
    marked = result.trades.select("spans_gap", "gap_minutes").rows()
    assert marked == [
        (True, 1),  # half a minute counts as one
        (False, 0),
        (False, 0),
        (False, 0),
        (False, 0),
        (True, 1),
        (False, 0),
    ]
    assert result.summary["trades_spanning_gaps"] == 2


def test_warm_up_bars_only_warm_up() -> None:
    bars = make_bars(CRAFTED)
    # Trading from bar 6: the signals of bars 1 and 4 are in the warm-up.
    result = run_backtest(
        Scripted(SCRIPT), bars, BROKER, RISK, "1m", start_us=T0 + 6 * US_PER_MINUTE
    )
    assert result.summary["bars"] == 19
    assert result.trades["entry_time_us"][0] == T0 + 9 * US_PER_MINUTE
    assert result.start_us == T0 + 6 * US_PER_MINUTE
    assert result.end_us == T0 + 25 * US_PER_MINUTE


# --- a plain reference: the same rules bar by bar ----------------------------------------


def reference(ohlc: np.ndarray, script: dict, broker: BrokerConfig, risk_pct: float) -> list:
    """Bar by bar, as the engine's docstring states the rules."""
    model = FillModel(broker.slippage_bps, broker.fee_bps, broker.fee_per_unit)
    cash = broker.starting_cash
    pos = None
    trades = []

    def close(bar, price, why):
        nonlocal cash, pos
        fee = model.fee(pos["qty"], price)
        pnl = pos["dir"] * pos["qty"] * (price - pos["price"]) - pos["fee"] - fee
        cash += pnl
        trades.append((pos["bar"], bar, pos["dir"], pos["qty"], pos["price"], price, why))
        pos = None

    count = len(ohlc)
    for i in range(count):
        o, h, lo, c = (float(x) for x in ohlc[i])
        if pos is not None and pos["bar"] < i:
            stop, target, d = pos["stop"], pos["target"], pos["dir"]
            if target is not None and (o >= target if d > 0 else o <= target):
                close(i, o, "target")
            elif stop is not None and (o <= stop if d > 0 else o >= stop):
                close(i, model.slipped("sell" if d > 0 else "buy", o), "stop")
        signal = script.get(i - 1)
        if signal is not None:
            side, stop, target = signal
            d = {"buy": 1, "sell": -1, "exit": 0}[side]
            if d == 0:
                if pos is not None:
                    close(i, model.open_fill("sell" if pos["dir"] > 0 else "buy", o), "signal")
            elif pos is None or pos["dir"] != d:
                if pos is not None:
                    close(i, model.open_fill("sell" if pos["dir"] > 0 else "buy", o), "reverse")
                price = model.open_fill("buy" if d > 0 else "sell", o)
                valid = (stop is None or (stop < price if d > 0 else stop > price)) and (
                    target is None or (target > price if d > 0 else target < price)
                )
                if valid:
                    if stop is not None:
                        qty = cash * risk_pct / 100 / abs(price - stop)
                    else:
                        qty = broker.signal_notional / price
                    pos = dict(
                        bar=i,
                        dir=d,
                        qty=qty,
                        price=price,
                        fee=model.fee(qty, price),
                        stop=stop,
                        target=target,
                    )
        if pos is not None and (pos["stop"] is not None or pos["target"] is not None):
            side = "sell" if pos["dir"] > 0 else "buy"
            stop, target = pos["stop"], pos["target"]
            stop_price = None if stop is None else model.stop_fill(side, stop, o, h, lo)
            target_price = None if target is None else model.limit_fill(side, target, o, h, lo)
            beyond = target is not None and (o >= target if pos["dir"] > 0 else o <= target)
            if target_price is not None and (beyond or stop_price is None):
                close(i, target_price, "target")
            elif stop_price is not None:
                close(i, stop_price, "stop")
        if i == count - 1 and pos is not None:
            close(i, model.slipped("sell" if pos["dir"] > 0 else "buy", c), "end")
    return trades


def random_case(seed: int, count: int = 3000) -> tuple[pl.DataFrame, dict]:
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.004, count)))
    # Opens jump now and then (gaps through stops and targets).
    jump = np.where(rng.random(count) < 0.05, rng.normal(0, 0.01, count), 0.0)
    open_ = np.concatenate(([100.0], close[:-1])) * (1 + jump)
    high = np.maximum(open_, close) * (1 + np.abs(rng.normal(0, 0.002, count)))
    low = np.minimum(open_, close) * (1 - np.abs(rng.normal(0, 0.002, count)))
    bars = pl.DataFrame(
        {
            "ts": pl.Series(T0 + np.arange(count, dtype=np.int64) * US_PER_MINUTE).cast(
                pl.Datetime("us")
            ),
            "open": open_,
            "high": high,
            "low": low,
            "close": close,
        }
    )
    script = {}
    for bar in np.flatnonzero(rng.random(count) < 0.08):
        side = str(rng.choice(["buy", "sell", "exit"]))
        ref = close[bar]
        d = 1 if side == "buy" else -1
        stop = ref * (1 - d * rng.uniform(0.001, 0.02)) if rng.random() < 0.6 else None
        target = ref * (1 + d * rng.uniform(0.001, 0.03)) if rng.random() < 0.5 else None
        script[int(bar)] = (side, stop, target)
    return bars, script


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_the_engine_agrees_with_a_bar_by_bar_reference(seed: int) -> None:
    bars, script = random_case(seed)
    broker = BrokerConfig(starting_cash=50_000, slippage_bps=2, fee_bps=1, fee_per_unit=0.001)
    result = run_backtest(Scripted(script), bars, broker, RiskConfig(risk_per_trade_pct=0.5))
    ohlc = bars.select("open", "high", "low", "close").to_numpy()
    expected = reference(ohlc, script, broker, 0.5)
    got = result.trades
    assert got.height == len(expected) > 50
    bar_of = {T0 + i * US_PER_MINUTE: i for i in range(bars.height)}
    rows = [
        (
            bar_of[t["entry_time_us"]],
            bar_of[t["exit_time_us"]],
            1 if t["side"] == "long" else -1,
            t["exit_reason"],
        )
        for t in got.to_dicts()
    ]
    assert rows == [(e[0], e[1], e[2], e[6]) for e in expected]
    assert got["qty"].to_list() == pytest.approx([e[3] for e in expected], rel=1e-9)
    assert got["entry_price"].to_list() == pytest.approx([e[4] for e in expected], rel=1e-12)
    assert got["exit_price"].to_list() == pytest.approx([e[5] for e in expected], rel=1e-12)
    # Every exit kind happens in these cases.
    assert {row[3] for row in rows} >= {"stop", "target", "signal", "reverse"}
    assert result.summary["final_equity"] == pytest.approx(
        50_000 + float(got["pnl"].sum()), rel=1e-12
    )


# --- risk limits -----------------------------------------------------------------------

FLAT = [(100, 100.5, 99.5, 100)] * 6


def test_entries_are_sized_from_the_stop_and_checked_against_the_limits() -> None:
    bars = make_bars(FLAT)
    broker = BrokerConfig(starting_cash=10_000, slippage_bps=0, fee_bps=0, signal_notional=1_000)
    script = {0: ("buy", 98.0, None)}
    # 1% of 10,000 over a 2.00 stop distance: 50 units.
    sized = run_backtest(Scripted(script), bars, broker, RiskConfig(risk_per_trade_pct=1.0))
    assert sized.trades["qty"].to_list() == [50.0]
    # Without a stop: signal_notional / price.
    plain = run_backtest(Scripted({0: ("buy", None, None)}), bars, broker, RiskConfig())
    assert plain.trades["qty"].to_list() == [10.0]

    capped = run_backtest(
        Scripted(script),
        bars,
        broker,
        RiskConfig(risk_per_trade_pct=1.0, max_qty={"T:X": 40}),
        instrument="T:X",
    )
    assert capped.trades.is_empty()
    assert capped.summary["rejected"] == 1
    (rejected,) = capped.rejected
    assert rejected["limit"] == "max_qty"
    assert rejected["ts_us"] == T0 + US_PER_MINUTE
    assert "the limit is 40" in rejected["message"]

    notional = run_backtest(
        Scripted(script),
        bars,
        broker,
        RiskConfig(risk_per_trade_pct=1.0, max_position_notional=4_000),
        instrument="T:X",
    )
    assert [r["limit"] for r in notional.rejected] == ["max_position_notional"]

    wrong = run_backtest(Scripted({0: ("buy", 101.0, None)}), bars, broker, RiskConfig())
    assert [r["limit"] for r in wrong.rejected] == ["invalid_stop"]


def test_max_qty_applies_to_the_instrument_named() -> None:
    bars = make_bars(FLAT)
    broker = BrokerConfig(starting_cash=10_000, slippage_bps=0, fee_bps=0)
    limits = RiskConfig(risk_per_trade_pct=1.0, max_qty={"T:X": 40})
    result = run_backtest(
        Scripted({0: ("buy", 98.0, None)}), bars, broker, limits, instrument="T:OTHER"
    )
    assert result.trades.height == 1


def test_the_daily_loss_limit_blocks_entries_until_the_next_utc_day() -> None:
    # Ten bars before midnight, ten after.
    start = T0 + US_PER_DAY - 10 * US_PER_MINUTE
    prices = [(100, 100, 100, 100)] * 3 + [(99, 99, 99, 99)] * 17
    bars = make_bars(prices, start=start)
    broker = BrokerConfig(starting_cash=10_000, slippage_bps=0, fee_bps=0, signal_notional=1_000)
    limits = RiskConfig(risk_per_trade_pct=1.0, daily_loss_limit=5.0)
    script = {
        0: ("buy", None, None),  # long 10 at 100 (bar 1)
        2: ("exit", None, None),  # out at 99 (bar 3): -10, past the -5 limit
        4: ("buy", None, None),  # bar 5, the same day: refused
        10: ("buy", None, None),  # bar 11, the next day: allowed
    }
    result = run_backtest(Scripted(script), bars, broker, limits)
    assert result.trades["entry_time_us"].to_list() == [
        start + US_PER_MINUTE,
        start + 11 * US_PER_MINUTE,
    ]
    assert result.trades["pnl"][0] == pytest.approx(-10.0)
    (rejected,) = result.rejected
    assert rejected["limit"] == "daily_loss_limit"
    assert rejected["ts_us"] == start + 5 * US_PER_MINUTE


def test_an_open_loss_at_midnight_counts_toward_the_next_day() -> None:
    # Long from before midnight; the day starts with its loss already marked in, so the
    # further loss after midnight alone decides.
    start = T0 + US_PER_DAY - 3 * US_PER_MINUTE
    prices = [(100, 100, 100, 100)] * 2 + [(90, 90, 90, 90)] * 3 + [(89, 89, 89, 89)] * 5
    bars = make_bars(prices, start=start)
    broker = BrokerConfig(starting_cash=10_000, slippage_bps=0, fee_bps=0, signal_notional=1_000)
    limits = RiskConfig(daily_loss_limit=5.0)
    script = {0: ("buy", None, None), 4: ("exit", None, None), 6: ("buy", None, None)}
    result = run_backtest(Scripted(script), bars, broker, limits)
    # Long 10 from 100: -110 in all, but the day started with the long marked at 90 (the
    # 23:59 close), so today's P&L is 10 * (89 - 90) = -10: past -5, the entry is blocked.
    assert result.trades.height == 1
    assert [r["limit"] for r in result.rejected] == ["daily_loss_limit"]
    # A limit of 20 lets the entry through.
    looser = run_backtest(Scripted(script), bars, broker, RiskConfig(daily_loss_limit=20.0))
    assert looser.trades.height == 2


# --- sweeps ----------------------------------------------------------------------------


def test_sweep_values_parse() -> None:
    assert parse_params(["fast=5..30:5"]) == {"fast": ["5", "10", "15", "20", "25", "30"]}
    assert parse_params(["fast=5..29:5"]) == {"fast": ["5", "10", "15", "20", "25"]}
    assert parse_params(["fast=5..7"]) == {"fast": ["5", "6", "7"]}
    assert parse_params(["x=0.5..1.5:0.25"]) == {"x": ["0.5", "0.75", "1", "1.25", "1.5"]}
    assert parse_params(["x=0.1..0.3:0.1"]) == {"x": ["0.1", "0.2", "0.3"]}
    assert parse_params(["fast=5,10, 20", "short=true"]) == {
        "fast": ["5", "10", "20"],
        "short": ["true"],
    }
    assert combinations({"a": ["1", "2"], "b": ["x", "y"]}) == [
        {"a": "1", "b": "x"},
        {"a": "1", "b": "y"},
        {"a": "2", "b": "x"},
        {"a": "2", "b": "y"},
    ]
    assert combinations({}) == [{}]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("fast", "bad --param 'fast'"),
        ("fast=", "bad --param 'fast='"),
        ("fast=30..5", "the range ends before it starts"),
        ("fast=5..30:0", "the step must be above 0"),
        ("fast=a..b", "a range is START..STOP:STEP of numbers"),
        ("fast=1,,2", "an empty value"),
        ("fast=1..100000000", "at most 10,000"),
    ],
)
def test_bad_sweep_values_are_usage_errors(text: str, message: str) -> None:
    with pytest.raises(UsageError, match=re.escape(message)):
        parse_params([text])


def test_params_convert_to_the_strategy_types() -> None:
    cls = registry.resolve("sma_cross")
    strategy = build_strategy(cls, {"fast": "5", "slow": "20", "short": "true"})
    assert (strategy.params.fast, strategy.params.slow, strategy.params.short) == (5, 20, True)
    with pytest.raises(UsageError, match=r"bad --param for sma_cross: .*fast.*its params: fast=10"):
        build_strategy(cls, {"fast": "5.5"})
    with pytest.raises(UsageError, match="unknown field `speed`"):
        build_strategy(cls, {"speed": "5"})
    with pytest.raises(UsageError, match="given twice"):
        parse_params(["fast=5", "fast=6"])


def synthetic(count: int, seed: int = 7) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    close = 1.1 * np.exp(np.cumsum(rng.normal(0, 0.0005, count)))
    open_ = np.concatenate(([1.1], close[:-1]))
    return pl.DataFrame(
        {
            "instrument": ["SIM:EURUSD"] * count,
            "ts": pl.Series(T0 + np.arange(count, dtype=np.int64) * US_PER_MINUTE).cast(
                pl.Datetime("us")
            ),
            "open": open_,
            "high": np.maximum(open_, close) * 1.0002,
            "low": np.minimum(open_, close) * 0.9998,
            "close": close,
            "volume": np.ones(count),
            "trades": np.ones(count, dtype=np.int64),
        }
    )


def test_a_sweep_equals_the_individual_runs() -> None:
    bars = synthetic(4000)
    cls = registry.resolve("sma_cross")
    combos = combinations(parse_params(["fast=5,10", "slow=20..30:10", "short=true"]))
    strategies = [build_strategy(cls, combo) for combo in combos]
    broker, limits = BrokerConfig(), RiskConfig()
    rows = run_sweep(
        strategies, bars, broker, limits, "1m", start_us=T0 + 100 * US_PER_MINUTE, workers=2
    )
    assert len(rows) == 4
    timing = ("elapsed_s", "bars_per_s")
    for strategy in strategies:
        alone = run_backtest(
            strategy, bars, broker, limits, "1m", start_us=T0 + 100 * US_PER_MINUTE
        ).summary
        (row,) = [
            r
            for r in rows
            if r.params["fast"] == strategy.params.fast and r.params["slow"] == strategy.params.slow
        ]
        assert row.error is None
        assert {k: v for k, v in row.summary.items() if k not in timing} == {
            k: v for k, v in alone.items() if k not in timing
        }
    net = [row.summary["net_pnl"] for row in rows]
    assert net == sorted(net, reverse=True)


class Broken(Strategy):
    name = "broken"

    def evaluate(self, bars: pl.DataFrame) -> pl.DataFrame:
        raise RuntimeError("no good\nsecond line")


def test_a_failing_combination_shows_its_error() -> None:
    bars = synthetic(200)
    rows = run_sweep(
        [Broken(), registry.build("sma_cross", {})],
        bars,
        BrokerConfig(),
        RiskConfig(),
        "1m",
        workers=1,
    )
    assert rows[0].summary is not None
    assert rows[1].error == "RuntimeError: no good"


# --- the command -------------------------------------------------------------------------

WINDOW = ("--from", "2026-11-02", "--to", "2026-11-03")


def assert_one_line_error(result: CliResult, code: int) -> str:
    assert result.code == code, result
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result.err
    assert lines[0].startswith("sptrader: ")
    assert "Traceback" not in result.err + result.out
    return lines[0]


def backfilled(run, *ranges: tuple[str, str]) -> None:
    for start, end in ranges:
        result = run("backfill", "SIM:EURUSD", "--from", start, "--to", end)
        assert result.code == 0, result.err


def stored_bars(home: Path, start: str, end: str) -> pl.DataFrame:
    from sptrader.clock import datetime_to_us, parse_time
    from sptrader.store import Store, queries

    store = Store(home / "sptrader.duckdb")
    try:
        return queries.bars_between(
            store,
            "SIM:EURUSD",
            "1m",
            datetime_to_us(parse_time(start)),
            datetime_to_us(parse_time(end)),
        )
    finally:
        store.close()


def test_the_command_prints_a_report_and_a_chart(run, cli_home: Path) -> None:
    backfilled(run, ("2026-11-02", "2026-11-03"))
    result = run("backtest", "sma_cross", "SIM:EURUSD", *WINDOW, "--plot")
    assert result.code == 0, result.err
    out = result.out
    assert out.startswith("sma_cross SIM:EURUSD 1m  2026-11-02T00:00:00Z → 2026-11-03T00:00:00Z")
    assert "fast=10 slow=30 short=false" in out.splitlines()[0]
    assert "data: 100.0% of open market time covered, no gaps" in out
    for label in ("trades", "net P&L", "return", "win rate", "profit factor", "max drawdown"):
        assert label in out
    for label in ("Sharpe", "Sortino", "exposure", "bars", "1,440", "bars/s"):
        assert label in out
    assert "last 20 of" in out
    assert "equity, SIM:EURUSD 1m sma_cross" in out  # the chart's title
    assert "\x1b[" not in out  # no colour codes when not on a terminal


def test_json_output_is_the_engine_s_result(run, cli_home: Path) -> None:
    backfilled(run, ("2026-11-02", "2026-11-03"))
    result = run(
        "backtest",
        "sma_cross",
        "SIM:EURUSD",
        *WINDOW,
        "--param",
        "fast=5",
        "--param",
        "slow=20",
        "--format",
        "json",
    )
    assert result.code == 0, result.err
    data = json.loads(result.out)
    assert set(data) == {"summary", "trades", "rejected", "coverage"}
    summary = data["summary"]
    assert summary["params"] == {"fast": 5, "slow": 20, "short": False}
    assert (summary["from"], summary["to"]) == ("2026-11-02T00:00:00Z", "2026-11-03T00:00:00Z")
    assert data["coverage"] == {
        "from": "2026-11-02T00:00:00Z",
        "to": "2026-11-03T00:00:00Z",
        "coverage_pct": 100.0,
        "gaps": 0,
        "missing_minutes": 0,
        "first_gap": None,
        "allow_gaps": False,
    }
    # The same as the engine on the stored bars, with the configured broker and limits.
    bars = stored_bars(cli_home, "2026-11-02", "2026-11-03")
    strategy = registry.build("sma_cross", {"fast": 5, "slow": 20})
    expected = run_backtest(
        strategy, bars, BrokerConfig(), RiskConfig(), "1m", instrument="SIM:EURUSD"
    )
    assert summary["trades"] == expected.summary["trades"] == len(data["trades"]) > 10
    assert summary["net_pnl"] == pytest.approx(expected.summary["net_pnl"])
    assert summary["sharpe"] == pytest.approx(expected.summary["sharpe"])
    first = data["trades"][0]
    for key in (
        "entry_time",
        "entry_price",
        "exit_time",
        "exit_price",
        "side",
        "qty",
        "pnl",
        "fees",
    ):
        assert key in first
    assert ISO_Z.match(first["entry_time"]) and ISO_Z.match(first["exit_time"])
    assert first["pnl"] == pytest.approx(expected.trades["pnl"][0])
    assert first["spans_gap"] is False


def test_missing_history_is_fetched_before_the_run(run, cli_home: Path) -> None:
    backfilled(run, ("2026-11-02", "2026-11-02T06:00Z"), ("2026-11-02T12:00Z", "2026-11-03"))
    result = run("backtest", "sma_cross", "SIM:EURUSD", *WINDOW, "--format", "json")
    assert result.code == 0, result.err
    assert "fetching missing history" in result.err
    data = json.loads(result.out)
    assert data["coverage"]["gaps"] == 0
    assert data["summary"]["bars"] == 1440


def no_sim_config(home: Path) -> Path:
    path = home / "nosim.toml"
    path.write_text(
        'watchlist = ["BINANCE:BTCUSDT"]\n'
        "[feeds.sim]\nenabled = false\n"
        '[feeds.binance]\nenabled = true\nrest_url = "http://127.0.0.1:9"\n'
        'ws_url = "ws://127.0.0.1:9"\n',
        "utf-8",
    )
    return path


def test_gaps_refuse_the_run_unless_allowed_and_trades_across_them_are_marked(
    run, cli_home: Path
) -> None:
    backfilled(run, ("2026-11-02", "2026-11-02T06:00Z"), ("2026-11-02T12:00Z", "2026-11-03"))
    config = str(no_sim_config(cli_home))
    refused = run("--config", config, "backtest", "sma_cross", "SIM:EURUSD", *WINDOW)
    line = assert_one_line_error(refused, 1)
    assert line == (
        "sptrader: SIM:EURUSD: 360 minutes of open market time in the window are not stored"
        " (1 gap, the first 2026-11-02T06:00:00Z → 2026-11-02T12:00:00Z); fetch them with"
        " `sptrader data ensure SIM:EURUSD --from 2026-11-02T00:00:00Z --to"
        " 2026-11-03T00:00:00Z` or run with --allow-gaps"
    )
    allowed = run(
        "--config",
        config,
        "backtest",
        "sma_cross",
        "SIM:EURUSD",
        *WINDOW,
        "--allow-gaps",
        "--format",
        "json",
    )
    assert allowed.code == 0, allowed.err
    data = json.loads(allowed.out)
    assert data["coverage"]["gaps"] == 1
    assert data["coverage"]["missing_minutes"] == 360
    assert data["coverage"]["coverage_pct"] == pytest.approx(75.0)
    assert data["summary"]["bars"] == 1080
    hole = ("2026-11-02T06:00:00Z", "2026-11-02T12:00:00Z")
    across = [t for t in data["trades"] if t["entry_time"] < hole[1] and t["exit_time"] > hole[0]]
    assert across, "a trade is held across the hole"
    for trade in data["trades"]:
        spans = trade in across
        assert trade["spans_gap"] == spans
        assert trade["gap_minutes"] == (360 if spans else 0)
    assert data["summary"]["trades_spanning_gaps"] == len(across)

    table = run(
        "--config",
        config,
        "backtest",
        "sma_cross",
        "SIM:EURUSD",
        *WINDOW,
        "--allow-gaps",
    )
    assert table.code == 0, table.err
    assert "data: 75.0% of open market time covered, 1 gap (360 min missing;" in table.out
    assert "span a gap in the data" in table.out


def test_a_sweep_from_the_command(run, cli_home: Path) -> None:
    backfilled(run, ("2026-11-02", "2026-11-03"))
    result = run(
        "backtest",
        "sma_cross",
        "SIM:EURUSD",
        *WINDOW,
        "--param",
        "fast=5..10:5",
        "--param",
        "slow=20,30",
        "--format",
        "json",
    )
    assert result.code == 0, result.err
    data = json.loads(result.out)
    assert data["combinations"] == 4
    assert sorted((r["params"]["fast"], r["params"]["slow"]) for r in data["results"]) == [
        (5, 20),
        (5, 30),
        (10, 20),
        (10, 30),
    ]
    sharpe = [r["summary"]["sharpe"] for r in data["results"]]
    assert sharpe == sorted(sharpe, reverse=True)  # the default --objective
    bars = stored_bars(cli_home, "2026-11-02", "2026-11-03")
    for row in data["results"]:
        alone = run_backtest(
            registry.build("sma_cross", row["params"]), bars, instrument="SIM:EURUSD"
        )
        assert row["summary"]["net_pnl"] == pytest.approx(alone.summary["net_pnl"])

    table = run(
        "backtest",
        "sma_cross",
        "SIM:EURUSD",
        *WINDOW,
        "--param",
        "fast=5,10",
        "--param",
        "slow=10",
    )
    assert table.code == 0, table.err
    lines = table.out.splitlines()
    assert lines[0].startswith("sma_cross SIM:EURUSD 1m: 2 combinations in")
    header = lines[2].split()
    assert header[:2] == ["fast", "trades"] or header[:3] == ["fast", "slow", "trades"]
    assert "net P&L" in lines[2] and "Sharpe" in lines[2]


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["nope", "SIM:EURUSD", *WINDOW], 1, "unknown strategy 'nope'"),
        (["sma_cross", "FOO:BAR", *WINDOW], 2, "unknown instrument FOO:BAR"),
        (
            ["sma_cross", "SIM:EURUSD", *WINDOW, "--param", "fast=abc"],
            2,
            "bad --param for sma_cross",
        ),
        (["sma_cross", "SIM:EURUSD", *WINDOW, "--param", "speed=5"], 2, "unknown field `speed`"),
        (["sma_cross", "SIM:EURUSD", *WINDOW, "--param", "fast=30..5"], 2, "ends before it starts"),
        (["sma_cross", "SIM:EURUSD", *WINDOW, "--tf", "7x"], 2, "7x"),
        (
            ["sma_cross", "SIM:EURUSD", *WINDOW, "--param", "fast=0..10:5"],
            2,
            "strategy sma_cross cannot run with fast=0: period 0 out of range",
        ),
        (
            ["sma_cross", "SIM:EURUSD", "--from", "2026-11-03", "--to", "2026-11-02"],
            2,
            "--to must be later",
        ),
        (["sma_cross", "SIM:EURUSD", "--from", "soon"], 2, "bad --from time"),
        (["sma_cross", "SIM:EURUSD", *WINDOW, "--plot", "--format", "json"], 2, "--plot"),
    ],
)
def test_mistakes_are_one_line(run, args: list[str], code: int, message: str) -> None:
    line = assert_one_line_error(run("backtest", *args), code)
    assert message in line


def test_the_entry_point_runs_it(cli_home: Path) -> None:
    import subprocess
    import sys

    command = [sys.executable, "-m", "sptrader.cli", "--home", str(cli_home), "backtest"]
    made = subprocess.run(
        [
            sys.executable,
            "-m",
            "sptrader.cli",
            "--home",
            str(cli_home),
            "backfill",
            "SIM:EURUSD",
            "--from",
            "2026-11-02",
            "--to",
            "2026-11-02T06:00Z",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert made.returncode == 0, made.stderr
    done = subprocess.run(
        [
            *command,
            "rsi_reversion",
            "SIM:EURUSD",
            "--from",
            "2026-11-02",
            "--to",
            "2026-11-02T06:00Z",
            "--param",
            "period=7,14",
            "--format",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["combinations"] == 2
    missing = subprocess.run(
        [*command, "sma_cross", "SIM:EURUSD"], capture_output=True, text=True, timeout=60
    )
    assert missing.returncode == 2
    assert "--from" in missing.stderr


def test_the_report_shows_the_drawdown_as_a_positive_fall(run, cli_home: Path) -> None:
    """The text report writes the max drawdown as its JSON has it: a positive amount
    and percentage (one sign everywhere, as the journal writes it)."""
    backfilled(run, ("2026-11-02", "2026-11-03"))
    args = ("backtest", "sma_cross", "SIM:EURUSD", *WINDOW, "--param", "fast=5")
    summary = json.loads(run(*args, "--format", "json").out)["summary"]
    amount, pct = summary["max_drawdown"], summary["max_drawdown_pct"]
    assert amount > 0 and pct > 0
    text = run(*args).out
    (line,) = [line for line in text.splitlines() if "max drawdown" in line]
    assert f"{amount:,.2f} ({pct:.2f}%)" in line, line
    assert f"-{amount:,.2f}" not in line and f"-{pct:.2f}" not in line


def test_a_strategy_that_asks_for_no_indicators_can_be_backtested(
    run, cli_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 17, seen while trying it: the base class's ``indicators()`` is ``[]``, and
    `backtest` refused such a strategy ("no indicator given: '[]'")."""
    import sys

    from sptrader.strategies import registry

    modules = tmp_path / "modules"
    modules.mkdir()
    (modules / "bare_strategies.py").write_text(
        "import polars as pl\n"
        "from sptrader.strategies.base import SIGNAL_SCHEMA, Strategy\n"
        "class UpBar(Strategy):\n"
        "    name = 'up_bar'\n"
        "    def evaluate(self, bars):\n"
        "        up = bars.filter(pl.col('close') > pl.col('open')).head(3)\n"
        "        return up.select(\n"
        "            'instrument', 'ts', pl.lit('buy').alias('side'),\n"
        "            pl.lit(1.0).alias('strength'), pl.lit('an up bar').alias('reason'),\n"
        "            pl.lit(None).alias('stop'), pl.lit(None).alias('target'),\n"
        "        ).cast(SIGNAL_SCHEMA)\n"
    )
    monkeypatch.syspath_prepend(str(modules))
    config = cli_home.parent / "bare.toml"
    config.write_text('[strategies]\nmodules = ["bare_strategies"]\n')
    backfilled(run, ("2026-11-02", "2026-11-03"))
    try:
        result = run(
            "--config", str(config), "backtest", "up_bar", "SIM:EURUSD", *WINDOW, "--format", "json"
        )
        assert result.code == 0, result.err
        assert json.loads(result.out)["summary"]["trades"] >= 1
    finally:
        registry.unregister("up_bar")
        sys.modules.pop("bare_strategies", None)
