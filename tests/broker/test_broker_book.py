"""The paper book: each order type triggering or not on quotes, attached stop-loss and
take-profit, day orders, closing, and every risk limit with its reason."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sptrader.broker.book import PaperBook, day_start
from sptrader.broker.orders import OrderRequest, validate
from sptrader.broker.risk import size_from_risk
from sptrader.config import BrokerConfig, RiskConfig
from sptrader.errors import UsageError
from sptrader.models import US_PER_DAY, US_PER_MINUTE

EUR = "SIM:EURUSD"
BTC = "SIM:BTCUSD"
# 10:00 UTC on some day: far from midnight.
T0 = 20_000 * US_PER_DAY + 600 * US_PER_MINUTE
MIDNIGHT = day_start(T0) + US_PER_DAY


def make_book(
    *, slippage_bps: float = 0.0, fee_bps: float = 0.0, fee_per_unit: float = 0.0, **limits
) -> PaperBook:
    limits.setdefault("risk_per_trade_pct", 0.0)
    broker = BrokerConfig(
        starting_cash=100_000.0,
        slippage_bps=slippage_bps,
        fee_bps=fee_bps,
        fee_per_unit=fee_per_unit,
    )
    return PaperBook(broker, RiskConfig(**limits))


def quote(book: PaperBook, bid: float, ask: float, instrument: str = EUR, ts: int = T0):
    return book.on_quote(instrument, ts, bid, ask)


def place(book: PaperBook, *args, ts: int = T0, **kwargs):
    result, _changes = book.place(OrderRequest(*args, **kwargs), ts)
    return result


# --- market orders ---------------------------------------------------------------------


def test_market_buy_fills_at_the_ask_plus_slippage_and_pays_fees() -> None:
    book = make_book(slippage_bps=10, fee_bps=2, fee_per_unit=0.01)
    quote(book, 1.0998, 1.1000)
    result = place(book, EUR, "buy", qty=1000)
    assert result.rejection is None
    assert result.order.status == "filled"
    [fill] = result.fills
    assert fill.price == pytest.approx(1.1000 * 1.001)
    assert fill.fee == pytest.approx(1000 * (fill.price * 2 / 10_000 + 0.01))
    position = book.ledger.positions[EUR]
    assert position.qty == 1000 and position.avg_price == pytest.approx(1.1011)


def test_market_sell_fills_at_the_bid_minus_slippage() -> None:
    book = make_book(slippage_bps=10)
    quote(book, 1.0998, 1.1000)
    result = place(book, EUR, "sell", qty=1000)
    assert result.fills[0].price == pytest.approx(1.0998 * 0.999)
    assert book.ledger.positions[EUR].qty == -1000


def test_changes_carry_the_order_and_its_fill() -> None:
    book = make_book()
    quote(book, 99.0, 100.0)
    result, changes = book.place(OrderRequest(EUR, "buy", qty=1), T0)
    assert list(changes.orders) == [result.order.order_id]
    assert [fill.order_id for fill in changes.fills] == [result.order.order_id]
    assert book.next_order_id == 2 and book.next_fill_id == 2


# --- limit and stop orders ---------------------------------------------------------------


def test_buy_limit_rests_until_the_ask_reaches_it_and_fills_at_the_touch() -> None:
    book = make_book(slippage_bps=10)
    quote(book, 99.0, 100.0)
    order = place(book, EUR, "buy", qty=2, type="limit", price=98.0).order
    assert order.status == "open"
    assert quote(book, 98.0, 98.5) is None  # the bid touching is not enough for a buy
    assert order.status == "open"
    changes = quote(book, 97.0, 97.5)
    assert order.status == "filled"
    # The touch, better than the limit, and no slippage on a resting limit.
    assert changes.fills[0].price == 97.5
    assert book.open_orders() == []


def test_sell_limit_rests_until_the_bid_reaches_it() -> None:
    book = make_book()
    quote(book, 99.0, 100.0)
    order = place(book, EUR, "sell", qty=2, type="limit", price=101.0).order
    assert quote(book, 100.5, 101.5) is None
    assert order.status == "open"
    changes = quote(book, 101.0, 101.5)
    assert order.status == "filled" and changes.fills[0].price == 101.0


def test_a_limit_already_crossed_fills_at_once() -> None:
    book = make_book()
    quote(book, 99.0, 100.0)
    result = place(book, EUR, "buy", qty=1, type="limit", price=105.0)
    assert result.order.status == "filled" and result.fills[0].price == 100.0


def test_buy_stop_triggers_when_the_ask_reaches_it_with_slippage() -> None:
    book = make_book(slippage_bps=10)
    quote(book, 99.0, 100.0)
    order = place(book, EUR, "buy", qty=1, type="stop", price=102.0).order
    assert quote(book, 101.0, 101.9) is None
    assert order.status == "open"
    changes = quote(book, 102.0, 102.5)
    assert order.status == "filled"
    assert changes.fills[0].price == pytest.approx(102.5 * 1.001)


def test_sell_stop_triggers_when_the_bid_reaches_it() -> None:
    book = make_book()
    quote(book, 99.0, 100.0)
    order = place(book, EUR, "sell", qty=1, type="stop", price=97.0).order
    assert quote(book, 97.5, 97.6) is None
    assert order.status == "open"
    changes = quote(book, 96.5, 96.7)
    assert order.status == "filled" and changes.fills[0].price == 96.5


def test_quotes_of_other_instruments_do_not_trigger() -> None:
    book = make_book()
    quote(book, 99.0, 100.0)
    order = place(book, EUR, "buy", qty=1, type="limit", price=98.0).order
    assert quote(book, 1.0, 2.0, instrument=BTC) is None
    assert order.status == "open"


def test_day_orders_expire_at_midnight_and_gtc_orders_survive() -> None:
    book = make_book()
    quote(book, 99.0, 100.0)
    day = place(book, EUR, "buy", qty=1, type="limit", price=90.0, tif="day").order
    gtc = place(book, EUR, "buy", qty=1, type="limit", price=90.0).order
    assert day.expires_us == MIDNIGHT and gtc.expires_us is None
    assert quote(book, 99.0, 100.0, ts=MIDNIGHT - 1) is None
    changes = quote(book, 99.0, 100.0, ts=MIDNIGHT)
    assert day.status == "expired" and day.reason == "day order expired"
    assert list(changes.orders) == [day.order_id]
    assert gtc.status == "open"


def test_day_orders_expire_on_the_timer_without_quotes() -> None:
    book = make_book()
    quote(book, 99.0, 100.0)
    day = place(book, EUR, "buy", qty=1, type="limit", price=90.0, tif="day").order
    assert not book.expire(MIDNIGHT - 1)
    assert list(book.expire(MIDNIGHT).orders) == [day.order_id]
    assert day.status == "expired"


def test_cancel() -> None:
    book = make_book()
    quote(book, 99.0, 100.0)
    order = place(book, EUR, "buy", qty=1, type="limit", price=90.0).order
    cancelled, changes = book.cancel(order.order_id, T0 + 1)
    assert cancelled.status == "cancelled" and list(changes.orders) == [order.order_id]
    assert quote(book, 80.0, 81.0) is None
    with pytest.raises(UsageError, match="not an open order"):
        book.cancel(order.order_id, T0 + 2)


# --- stop-loss and take-profit -----------------------------------------------------------


def entry_with_protection(book: PaperBook, qty: float = 10.0):
    quote(book, 99.0, 100.0)
    result = place(book, EUR, "buy", qty=qty, sl=95.0, tp=110.0)
    assert result.order.status == "filled"
    children = {order.role: order for order in book.open_orders()}
    return children["sl"], children["tp"]


def test_attached_stop_loss_and_take_profit_are_created_on_the_fill() -> None:
    book = make_book()
    quote(book, 99.0, 100.0)
    # A resting entry has no children yet.
    entry = place(book, EUR, "buy", qty=10, type="limit", price=98.0, sl=95.0, tp=110.0).order
    assert [order.order_id for order in book.open_orders()] == [entry.order_id]
    changes = quote(book, 97.5, 98.0)
    assert entry.status == "filled"
    children = [order for order in book.open_orders()]
    assert {(o.role, o.type, o.side, o.price, o.qty, o.parent_id) for o in children} == {
        ("sl", "stop", "sell", 95.0, 10.0, entry.order_id),
        ("tp", "limit", "sell", 110.0, 10.0, entry.order_id),
    }
    assert {o.order_id for o in children} <= set(changes.orders)


def test_take_profit_fill_cancels_the_stop_loss() -> None:
    book = make_book()
    sl, tp = entry_with_protection(book)
    changes = quote(book, 110.0, 110.5)
    assert tp.status == "filled" and changes.fills[0].price == 110.0
    assert sl.status == "cancelled" and sl.reason == "take-profit filled"
    assert book.ledger.positions[EUR].is_flat
    assert book.ledger.positions[EUR].realized == pytest.approx(10 * (110.0 - 100.0))


def test_stop_loss_fill_cancels_the_take_profit() -> None:
    book = make_book()
    sl, tp = entry_with_protection(book)
    quote(book, 94.0, 94.5)
    assert sl.status == "filled" and tp.status == "cancelled"
    assert tp.reason == "stop-loss filled"
    assert book.open_orders() == []


def test_stop_loss_is_clamped_to_what_is_left_of_the_position() -> None:
    book = make_book()
    sl, tp = entry_with_protection(book, qty=10)
    place(book, EUR, "sell", qty=4)
    changes = quote(book, 94.0, 94.5)
    assert sl.status == "filled" and sl.qty == 6
    assert changes.fills[0].qty == 6
    assert tp.status == "cancelled"
    assert book.ledger.positions[EUR].is_flat


def test_protective_orders_go_when_the_position_is_closed_by_hand() -> None:
    book = make_book()
    sl, tp = entry_with_protection(book, qty=10)
    place(book, EUR, "sell", qty=10)
    assert sl.status == "cancelled" and tp.status == "cancelled"
    assert sl.reason == "position closed"
    assert book.open_orders() == []


def test_reversing_cancels_the_old_protection_and_protects_the_new_position() -> None:
    book = make_book()
    sl, tp = entry_with_protection(book, qty=10)
    result = place(book, EUR, "sell", qty=15, sl=105.0)
    assert book.ledger.positions[EUR].qty == -5
    assert sl.status == "cancelled" and sl.reason == "position reversed"
    assert tp.status == "cancelled" and tp.reason == "position reversed"
    [new_sl] = book.open_orders()
    assert new_sl.parent_id == result.order.order_id and new_sl.side == "buy"
    quote(book, 105.0, 105.5)  # the new stop-loss closes the 5 short, not 15
    assert new_sl.status == "filled" and new_sl.qty == 5
    assert book.ledger.positions[EUR].is_flat


def test_close_position_closes_at_market_and_cancels_its_protection() -> None:
    book = make_book()
    sl, tp = entry_with_protection(book, qty=10)
    quote(book, 101.0, 101.5)
    result, changes = book.close_position(EUR, T0 + 5)
    assert result.order.role == "close" and result.order.side == "sell"
    assert result.fills[0].price == 101.0 and result.fills[0].qty == 10
    assert book.ledger.positions[EUR].is_flat
    assert sl.status == "cancelled" and tp.status == "cancelled"
    assert {sl.order_id, tp.order_id, result.order.order_id} <= set(changes.orders)
    with pytest.raises(UsageError, match="no open position"):
        book.close_position(EUR, T0 + 6)


def test_a_refused_close_keeps_the_protection() -> None:
    book = make_book()
    sl, tp = entry_with_protection(book, qty=10)
    book.stale = lambda instrument: "its feed SIM is stale"
    result, _ = book.close_position(EUR, T0 + 5)
    assert result.rejection.limit == "stale_quotes"
    assert sl.is_open and tp.is_open
    assert book.ledger.positions[EUR].qty == 10


# --- validation ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("request_", "reference", "message"),
    [
        (OrderRequest(EUR, "hold", qty=1), None, "bad side"),
        (OrderRequest(EUR, "buy"), None, "quantity or a risk %"),
        (OrderRequest(EUR, "buy", qty=-1), None, "positive number"),
        (OrderRequest(EUR, "buy", qty=1, type="limit"), None, "needs a positive price"),
        (OrderRequest(EUR, "buy", qty=1, price=5.0), None, "takes no price"),
        (OrderRequest(EUR, "buy", risk_pct=1), None, "needs a stop-loss"),
        (OrderRequest(EUR, "buy", qty=1, role="sl"), None, "bad order role"),
        (OrderRequest(EUR, "buy", qty=1, sl=101.0), 100.0, "must be below the entry"),
        (OrderRequest(EUR, "sell", qty=1, tp=101.0), 100.0, "must be below the entry"),
    ],
)
def test_malformed_requests_raise_one_sentence(request_, reference, message) -> None:
    with pytest.raises(UsageError, match=message):
        validate(request_, reference)


def test_a_malformed_order_is_not_recorded() -> None:
    book = make_book()
    quote(book, 99.0, 100.0)
    with pytest.raises(UsageError):
        book.place(OrderRequest(EUR, "buy", qty=1, sl=100.5), T0)
    assert book.next_order_id == 1


# --- risk limits ---------------------------------------------------------------------------


def rejected(result, limit: str) -> str:
    assert result.order.status == "rejected"
    assert result.rejection is not None and result.rejection.limit == limit
    assert result.order.reason == result.rejection.message
    return result.rejection.message


def test_max_open_positions() -> None:
    book = make_book(max_open_positions=1)
    quote(book, 99.0, 100.0)
    quote(book, 9.0, 10.0, instrument=BTC)
    place(book, EUR, "buy", qty=1)
    message = rejected(place(book, BTC, "buy", qty=1), "max_open_positions")
    assert message == "max open positions: 1 open, the limit is 1"
    # Adding to the open position is not a new one.
    assert place(book, EUR, "buy", qty=1).order.status == "filled"


def test_max_position_notional() -> None:
    book = make_book(max_position_notional=1_000)
    quote(book, 99.0, 100.0)
    assert place(book, EUR, "buy", qty=10).order.status == "filled"
    message = rejected(place(book, EUR, "buy", qty=1), "max_position_notional")
    assert message == (
        "max notional per position: SIM:EURUSD would be 1,100.00, the limit is 1,000.00"
    )


def test_max_total_notional() -> None:
    book = make_book(max_total_notional=1_500)
    quote(book, 99.0, 100.0)
    quote(book, 9.0, 10.0, instrument=BTC)
    place(book, EUR, "buy", qty=10)  # marked at the bid: 990
    message = rejected(place(book, BTC, "buy", qty=60), "max_total_notional")
    assert message == "max total notional: open positions would be 1,590.00, the limit is 1,500.00"
    assert place(book, BTC, "buy", qty=50).order.status == "filled"


def test_max_leverage() -> None:
    book = make_book(max_leverage=2.0)
    quote(book, 99.0, 100.0)
    place(book, EUR, "buy", qty=1_000)  # 99,000 at the bid on 100,000 - 1,000 equity
    message = rejected(place(book, EUR, "buy", qty=1_000), "max_leverage")
    assert message == (
        "max leverage: open positions would be 200,000.00, 2.0x equity 99,000.00, the limit is 2x"
    )
    # Reducing is always allowed.
    assert place(book, EUR, "sell", qty=500).order.status == "filled"


def test_risk_per_trade() -> None:
    book = make_book(risk_per_trade_pct=1.0)
    quote(book, 99.0, 100.0)
    # 1% of 100,000 is 1,000: 200 units with a stop 5 away risk exactly that.
    assert place(book, EUR, "buy", qty=200, sl=95.0).order.status == "filled"
    message = rejected(place(book, EUR, "buy", qty=250, sl=95.0), "risk_per_trade")
    assert message == (
        "risk per trade: 1,250.00 to the stop is 1.25% of equity 99,800.00, the limit is 1%"
    )


def test_risk_pct_sizing_from_the_stop_distance() -> None:
    book = make_book(risk_per_trade_pct=2.0)
    quote(book, 99.0, 100.0)
    result = place(book, EUR, "buy", risk_pct=0.5, sl=96.0)
    assert result.order.status == "filled"
    assert result.order.qty == pytest.approx(100_000 * 0.005 / 4.0)
    assert size_from_risk(100_000, 0.5, 100.0, 96.0) == pytest.approx(125.0)
    assert size_from_risk(100_000, 0.5, 100.0, 100.0) == 0.0
    # Sizing by the limit itself passes despite float rounding.
    book2 = make_book(risk_per_trade_pct=1.0)
    quote(book2, 1.0999, 1.1003)
    assert place(book2, EUR, "buy", risk_pct=1.0, sl=1.0917).order.status == "filled"


def test_daily_loss_limit_blocks_entries_but_not_exits_until_the_next_day() -> None:
    book = make_book(daily_loss_limit=500)
    quote(book, 99.0, 100.0)
    quote(book, 9.0, 10.0, instrument=BTC)
    place(book, EUR, "buy", qty=100)  # day starts at 100,000 equity
    quote(book, 94.0, 94.5)  # 100 * (94 - 100) = -600
    assert book.day_pnl() == pytest.approx(-600)
    message = rejected(place(book, BTC, "buy", qty=1), "daily_loss_limit")
    assert message == (
        "daily loss limit: today's P&L -600.00 is past the -500.00 limit;"
        " new entries are blocked until 00:00 UTC"
    )
    assert rejected(place(book, EUR, "buy", qty=1), "daily_loss_limit")
    # Getting out is always allowed.
    assert place(book, EUR, "sell", qty=50).order.status == "filled"
    # The next UTC day starts from that day's equity: entries are allowed again.
    quote(book, 94.0, 94.5, ts=MIDNIGHT + 1)
    quote(book, 9.0, 10.0, instrument=BTC, ts=MIDNIGHT + 1)
    assert place(book, BTC, "buy", qty=1, ts=MIDNIGHT + 2).order.status == "filled"


def test_max_qty_per_instrument() -> None:
    book = make_book(max_qty={EUR: 1_000})
    quote(book, 99.0, 100.0)
    assert place(book, EUR, "buy", qty=1_000).order.status == "filled"
    message = rejected(place(book, EUR, "buy", qty=1), "max_qty")
    assert message == "max quantity for SIM:EURUSD: the position would be 1001, the limit is 1000"
    # A flip counts the new position: selling 2,500 would leave 1,500 short.
    assert rejected(place(book, EUR, "sell", qty=2_500), "max_qty")


def test_stale_quotes_block_every_order() -> None:
    book = make_book()
    quote(book, 99.0, 100.0)
    place(book, EUR, "buy", qty=1)
    book.stale = lambda instrument: "its feed sim is stale" if instrument == EUR else None
    message = rejected(place(book, EUR, "buy", qty=1), "stale_quotes")
    assert message == "no orders on SIM:EURUSD: its feed sim is stale"
    assert rejected(place(book, EUR, "sell", qty=1), "stale_quotes")  # exits too
    assert rejected(place(book, EUR, "buy", qty=1, type="limit", price=90.0), "stale_quotes")


def test_a_market_order_needs_a_quote() -> None:
    book = make_book()
    message = rejected(place(book, EUR, "buy", qty=1), "stale_quotes")
    assert message == "no orders on SIM:EURUSD: no quote yet"
    # A limit order may rest before the first quote.
    assert place(book, EUR, "buy", qty=1, type="limit", price=90.0).order.status == "open"


def test_reducing_orders_pass_the_limits() -> None:
    book = make_book()
    quote(book, 99.0, 100.0)
    place(book, EUR, "buy", qty=100, sl=90.0)
    book.limits = RiskConfig(
        max_open_positions=1,
        max_position_notional=1.0,
        max_total_notional=1.0,
        risk_per_trade_pct=0.001,
        daily_loss_limit=0.01,
        max_qty={EUR: 1.0},
    )
    quote(book, 90.5, 91.0)  # a loss past the daily limit
    assert rejected(place(book, EUR, "buy", qty=1), "daily_loss_limit")
    assert place(book, EUR, "sell", qty=40).order.status == "filled"
    result, _ = book.close_position(EUR, T0 + 1)
    assert result.order.status == "filled"
    assert book.ledger.positions[EUR].is_flat


def test_a_resting_order_is_checked_again_when_it_triggers() -> None:
    book = make_book(max_open_positions=1)
    quote(book, 99.0, 100.0)
    quote(book, 9.0, 10.0, instrument=BTC)
    order = place(book, EUR, "buy", qty=1, type="limit", price=98.0).order
    assert order.status == "open"
    place(book, BTC, "buy", qty=1)  # the one position allowed
    quote(book, 97.0, 97.5)
    assert order.status == "rejected"
    assert order.reason == "max open positions: 1 open, the limit is 1"


def test_the_account() -> None:
    book = make_book(fee_per_unit=0.5)
    quote(book, 99.0, 100.0)
    place(book, EUR, "buy", qty=10)
    quote(book, 104.0, 105.0)
    account = book.account()
    assert account["cash"] == pytest.approx(100_000 - 5)
    assert account["unrealized"] == pytest.approx(40.0)  # long: marked at the bid
    assert account["equity"] == pytest.approx(100_035.0)
    assert account["exposure"] == pytest.approx(1040.0)
    assert account["open_positions"] == 1 and account["open_orders"] == 0
    [position] = book.positions()
    assert position["mark"] == 104.0 and position["side"] == "long"


# --- the per-instrument trigger bounds never skip a trigger ----------------------------------

order_specs = st.lists(
    st.tuples(
        st.sampled_from(["buy", "sell"]),
        st.sampled_from(["limit", "stop"]),
        st.floats(min_value=90, max_value=110),
        st.booleans(),  # a day order
    ),
    min_size=1,
    max_size=8,
)
quote_walk = st.lists(
    st.tuples(st.floats(min_value=88, max_value=112), st.floats(min_value=0.01, max_value=1)),
    min_size=1,
    max_size=30,
)


@settings(max_examples=300, deadline=None)
@given(order_specs, quote_walk)
def test_trigger_bounds_give_the_same_fills_as_checking_every_order(specs, walk) -> None:
    def run(shortcut: bool):
        book = make_book()
        if not shortcut:
            book._bounds = AlwaysCheck()
        quote(book, 99.99, 100.01)
        orders, fills = [], []
        for side, order_type, price, day in specs:
            request = OrderRequest(
                EUR, side, qty=1, type=order_type, price=price, tif="day" if day else "gtc"
            )
            result, changes = book.place(request, T0)
            orders.append(result.order)
            fills.extend(changes.fills)
        for step, (bid, spread) in enumerate(walk):
            ts = T0 + step * US_PER_DAY // 8  # crosses midnight: day orders expire
            changes = quote(book, bid, bid + spread, ts=ts)
            if changes:
                fills.extend(changes.fills)
                orders.extend(o for o in changes.orders.values() if o not in orders)
        return (
            sorted((o.order_id, o.status, o.avg_price, o.updated_us) for o in orders),
            [(f.order_id, f.price, f.ts_us) for f in fills],
        )

    with_bounds, reference = run(True), run(False)
    assert with_bounds == reference


class AlwaysCheck(dict):
    """Bounds that never let a quote be skipped (the reference for the shortcut)."""

    def get(self, key, default=None):
        return (math.inf, -math.inf, -math.inf, math.inf, math.inf)
