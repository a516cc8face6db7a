"""The backtest's entry check (``risk.check_flat_entry``) is the full ``risk.check`` of a
flat account: the same verdict and the same words, for any limits and any proposal."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from sptrader.broker import risk
from sptrader.broker.ledger import Ledger
from sptrader.config import RiskConfig

limits_values = st.builds(
    RiskConfig,
    max_open_positions=st.sampled_from([0, 1, 3]),
    max_position_notional=st.sampled_from([0.0, 5_000.0, 50_000.0]),
    max_total_notional=st.sampled_from([0.0, 8_000.0, 80_000.0]),
    max_leverage=st.sampled_from([0.0, 0.5, 10.0]),
    risk_per_trade_pct=st.sampled_from([0.0, 0.5, 1.0]),
    daily_loss_limit=st.sampled_from([0.0, 100.0]),
    max_qty=st.sampled_from([{}, {"SIM:EURUSD": 5_000.0}, {"SIM:GBPUSD": 1.0}]),
)


@given(
    limits=limits_values,
    qty=st.floats(1, 100_000),
    long=st.booleans(),
    price=st.floats(0.5, 200.0),
    stop_distance=st.one_of(st.none(), st.floats(0.0001, 5.0)),
    equity=st.floats(-1_000, 200_000),
    day_pnl=st.floats(-500, 500),
)
@settings(max_examples=400, deadline=None)
def test_a_flat_entry_is_checked_as_the_full_check_would(
    limits, qty, long, price, stop_distance, equity, day_pnl
) -> None:
    sign = 1.0 if long else -1.0
    stop = None if stop_distance is None else price - sign * stop_distance
    proposal = risk.Proposal("SIM:EURUSD", sign * qty, price, stop)
    full = risk.check(
        proposal,
        limits,
        Ledger(100_000.0),
        {"SIM:EURUSD": price},
        equity=equity,
        day_pnl=day_pnl,
    )
    flat = risk.check_flat_entry(proposal, limits, equity=equity, day_pnl=day_pnl)
    assert (flat is None) == (full is None)
    if full is not None:
        assert (flat.limit, flat.message) == (full.limit, full.message)
