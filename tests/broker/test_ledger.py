"""P&L accounting: positions from fills (average cost, long and short, flips).

Properties (Hypothesis): for any sequence of fills, realized + unrealized at a mark is
the mark-to-market of the fills; a ledger built at once equals one built fill by fill;
closing flat leaves nothing open. Then hand-computed examples.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sptrader.broker.ledger import Ledger, Position
from sptrader.broker.orders import Fill

EUR = "SIM:EURUSD"
BTC = "SIM:BTCUSD"

quantities = st.floats(min_value=0.001, max_value=10_000, allow_nan=False, allow_infinity=False)
prices = st.floats(min_value=0.01, max_value=100_000, allow_nan=False, allow_infinity=False)
fills_strategy = st.lists(
    st.tuples(st.sampled_from([EUR, BTC]), st.sampled_from(["buy", "sell"]), quantities, prices),
    min_size=1,
    max_size=40,
)


def make_fills(rows) -> list[Fill]:
    return [
        Fill(number, number, instrument, side, qty, price, 0.0, number)
        for number, (instrument, side, qty, price) in enumerate(rows, start=1)
    ]


def mark_to_market(fills: list[Fill], instrument: str, mark: float) -> tuple[float, float]:
    """(-sum(signed qty * price) + net qty * mark, the scale of the numbers involved)."""
    cash = net = scale = 0.0
    for fill in fills:
        if fill.instrument == instrument:
            cash -= fill.signed_qty * fill.price
            net += fill.signed_qty
            scale += fill.qty * max(fill.price, mark)
    return cash + net * mark, scale


@settings(max_examples=300, deadline=None)
@given(fills_strategy, prices)
def test_realized_plus_unrealized_is_the_mark_to_market_of_the_fills(rows, mark) -> None:
    fills = make_fills(rows)
    ledger = Ledger.from_fills(fills)
    for instrument in (EUR, BTC):
        expected, scale = mark_to_market(fills, instrument, mark)
        position = ledger.positions.get(instrument, Position(instrument))
        got = position.realized + position.unrealized(mark)
        assert math.isclose(got, expected, rel_tol=1e-9, abs_tol=scale * 1e-9)
        traded = [f for f in fills if f.instrument == instrument]
        net = sum(f.signed_qty for f in traded)
        volume = sum(f.qty for f in traded)
        assert math.isclose(position.qty, net, abs_tol=1e-9 + volume * 1e-12)


@settings(max_examples=200, deadline=None)
@given(fills_strategy, prices)
def test_closing_flat_leaves_no_position(rows, close_price) -> None:
    fills = make_fills(rows)
    ledger = Ledger.from_fills(fills)
    for instrument, position in list(ledger.positions.items()):
        if position.is_flat:
            continue
        side = "sell" if position.qty > 0 else "buy"
        number = len(fills) + 1
        ledger.apply(Fill(number, number, instrument, side, abs(position.qty), close_price, 0.0, 0))
        fills.append(Fill(number, number, instrument, side, abs(position.qty), close_price, 0.0, 0))
    assert ledger.open_positions() == []
    for instrument in (EUR, BTC):
        position = ledger.positions.get(instrument, Position(instrument))
        assert position.qty == 0.0 and position.unrealized(close_price) == 0.0
        assert position.opened_us is None
        # Flat, everything is realized: the cash flows of the fills.
        expected, scale = mark_to_market(fills, instrument, close_price)
        assert math.isclose(position.realized, expected, rel_tol=1e-9, abs_tol=scale * 1e-9)


@settings(max_examples=200, deadline=None)
@given(fills_strategy, st.lists(st.floats(min_value=0, max_value=5), min_size=40, max_size=40))
def test_from_fills_equals_applying_them_one_by_one(rows, fees) -> None:
    fills = make_fills(rows)
    for fill, fee in zip(fills, fees, strict=False):
        fill.fee = fee
    incremental = Ledger(1_000.0)
    realized = 0.0
    for fill in fills:
        realized += incremental.apply(fill)
    at_once = Ledger.from_fills(fills, 1_000.0)
    assert at_once == incremental
    assert incremental.realized == pytest.approx(realized, rel=1e-12, abs=1e-9)
    assert incremental.fees == pytest.approx(sum(fees[: len(fills)]))
    assert incremental.cash() == pytest.approx(1_000.0 + realized - incremental.fees)


# --- by hand --------------------------------------------------------------------------------


def apply(position: Position, *fills: tuple[float, float]) -> list[float]:
    return [position.apply(qty, price) for qty, price in fills]


def test_average_price_of_adds() -> None:
    position = Position(EUR)
    assert apply(position, (100, 1.10), (300, 1.12)) == [0.0, 0.0]
    assert position.qty == 400
    assert position.avg_price == pytest.approx((100 * 1.10 + 300 * 1.12) / 400)  # 1.115
    assert position.unrealized(1.13) == pytest.approx(400 * (1.13 - 1.115))


def test_partial_close_realizes_against_the_average() -> None:
    position = Position(EUR)
    apply(position, (100, 10.0), (100, 20.0))  # 200 at 15
    [realized] = apply(position, (-50, 25.0))
    assert realized == pytest.approx(50 * (25.0 - 15.0))
    assert position.qty == 150 and position.avg_price == 15.0  # unchanged by a close
    assert position.realized == pytest.approx(500.0)
    assert position.unrealized(16.0) == pytest.approx(150.0)


def test_short_profits_when_the_price_falls() -> None:
    position = Position(EUR)
    apply(position, (-10, 50.0))
    assert position.side == "short"
    assert position.unrealized(45.0) == pytest.approx(50.0)
    [realized] = apply(position, (4, 40.0))
    assert realized == pytest.approx(40.0)
    assert position.qty == -6


def test_flip_realizes_the_old_side_and_opens_the_rest_at_the_fill() -> None:
    position = Position(EUR)
    position.apply(10, 100.0, ts_us=1)
    realized = position.apply(-25, 110.0, ts_us=2)
    assert realized == pytest.approx(10 * 10.0)
    assert position.qty == -15 and position.avg_price == 110.0
    assert position.opened_us == 2
    assert position.unrealized(100.0) == pytest.approx(150.0)


def test_closing_exactly_flat_resets_the_position_and_keeps_realized_and_fees() -> None:
    position = Position(EUR)
    position.apply(0.3, 10.0, fee=0.1, ts_us=1)
    position.apply(0.1, 12.0, fee=0.1, ts_us=2)
    position.apply(-0.4, 11.0, fee=0.1, ts_us=3)  # float dust: 0.3 + 0.1 - 0.4 != 0
    assert position.is_flat and position.qty == 0.0 and position.avg_price == 0.0
    assert position.realized == pytest.approx(0.3 * 1.0 - 0.1 * 1.0)
    assert position.fees == pytest.approx(0.3)


def test_ledger_equity_cash_and_exposure() -> None:
    ledger = Ledger.from_fills(
        [
            Fill(1, 1, EUR, "buy", 10, 100.0, 1.0, 1),
            Fill(2, 2, BTC, "sell", 2, 50.0, 0.5, 2),
            Fill(3, 3, EUR, "sell", 4, 110.0, 1.0, 3),
        ],
        starting_cash=1_000.0,
    )
    assert ledger.realized == pytest.approx(40.0)
    assert ledger.fees == pytest.approx(2.5)
    assert ledger.cash() == pytest.approx(1_037.5)
    marks = {EUR: 105.0, BTC: 55.0}
    assert ledger.unrealized(marks) == pytest.approx(6 * 5.0 - 2 * 5.0)
    assert ledger.equity(marks) == pytest.approx(1_057.5)
    assert ledger.exposure(marks) == pytest.approx(6 * 105.0 + 2 * 55.0)
    # No mark: unrealized counts nothing, exposure uses the average price.
    assert ledger.exposure({}) == pytest.approx(6 * 100.0 + 2 * 50.0)
