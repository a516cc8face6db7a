"""The numpy path for signals alone gives the event loop's account to the bit: the same
trades, fills, equity curve and refusals, for any signal sequence, fill model and limits
(and it steps aside whenever a limit could refuse an entry)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import sptrader.backtest.simulation as simulation
from sptrader.backtest.simulation import Simulation
from sptrader.config import BrokerConfig, RiskConfig

COUNT = 400


def bars(seed: int) -> tuple[tuple[np.ndarray, ...], np.ndarray]:
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.003, COUNT)))
    open_ = np.concatenate(([100.0], close[:-1])) * (1 + rng.normal(0, 0.001, COUNT))
    high = np.maximum(open_, close) * 1.001
    low = np.minimum(open_, close) * 0.999
    ts = 1_767_571_200_000_000 + np.arange(COUNT, dtype=np.int64) * 60_000_000
    return (open_, high, low, close), ts


def events(draw_sides: list[int], gaps: list[int]):
    at, bars_, sides = 5, [], []
    for side, gap in zip(draw_sides, gaps, strict=False):
        at += gap
        if at + 1 >= COUNT:
            break
        bars_.append(at)
        sides.append(side)
    n = len(bars_)
    return (bars_, sides, [float("nan")] * n, [float("nan")] * n, [f"r{i}" for i in range(n)])


def run(arrays, ts, broker, limits, evs, fast: bool, monkeypatch) -> Simulation:
    with monkeypatch.context() as patch:
        if not fast:
            patch.setattr(simulation, "run_signals_only", lambda sim, events: False)
        sim = Simulation("SIM:X", arrays, ts, 3, broker, limits)
        sim.run(evs)
    return sim


@given(
    seed=st.integers(0, 50),
    sides=st.lists(st.sampled_from([1, -1, 0]), min_size=0, max_size=80),
    gaps=st.lists(st.integers(1, 12), min_size=80, max_size=80),
    slippage=st.sampled_from([0.0, 1.0, 7.5]),
    fee_bps=st.sampled_from([0.0, 2.0]),
    fee_per_unit=st.sampled_from([0.0, 0.001]),
    notional=st.sampled_from([1_000.0, 10_000.0, 250_000.0]),
    leverage=st.sampled_from([0.0, 1.0, 10.0]),
    max_notional=st.sampled_from([0.0, 20_000.0]),
    max_qty=st.sampled_from([{}, {"SIM:X": 150.0}]),
)
@settings(max_examples=150, deadline=None)
def test_the_numpy_path_is_the_loop(
    seed, sides, gaps, slippage, fee_bps, fee_per_unit, notional, leverage, max_notional,
    max_qty,
) -> None:  # fmt: skip
    monkeypatch = pytest.MonkeyPatch()
    arrays, ts = bars(seed)
    broker = BrokerConfig(
        starting_cash=100_000.0,
        slippage_bps=slippage,
        fee_bps=fee_bps,
        fee_per_unit=fee_per_unit,
        signal_notional=notional,
    )
    limits = RiskConfig(max_leverage=leverage, max_position_notional=max_notional, max_qty=max_qty)
    evs = events(sides, gaps)
    fast = run(arrays, ts, broker, limits, evs, True, monkeypatch)
    loop = run(arrays, ts, broker, limits, evs, False, monkeypatch)
    assert loop.vectorised is None
    assert fast.trades_frame(()).equals(loop.trades_frame(()))
    assert fast.fills_frame().equals(loop.fills_frame())
    fast_equity, fast_position = fast.equity_curve()
    loop_equity, loop_position = loop.equity_curve()
    assert np.array_equal(fast_equity, loop_equity)
    assert np.array_equal(fast_position, loop_position)
    assert fast.rejected == loop.rejected


def test_it_takes_the_simple_case_and_steps_aside_for_a_limit(monkeypatch) -> None:
    arrays, ts = bars(1)
    evs = events([1, -1, 0, 1, 0, -1], [3] * 6)
    simple = run(arrays, ts, BrokerConfig(), RiskConfig(), evs, True, monkeypatch)
    assert simple.vectorised is not None and simple.trades_frame(()).height == 4
    # 10,000 notional on 1x leverage of 5,000 equity: refused, so the loop decides.
    tight = BrokerConfig(starting_cash=5_000.0)
    refused = run(arrays, ts, tight, RiskConfig(max_leverage=1.0), evs, True, monkeypatch)
    assert refused.vectorised is None and refused.rejected
    # A stop on one signal: the loop (it has protective orders to watch).
    stopped = (evs[0], evs[1], [90.0, *evs[2][1:]], evs[3], evs[4])
    assert (
        run(arrays, ts, BrokerConfig(), RiskConfig(), stopped, True, monkeypatch).vectorised is None
    )
