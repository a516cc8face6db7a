"""Order realism in the paper book: trailing stop-losses against a hand-computed table of
quotes (and the backtester on the same path), fills capped by a share of the quote's size
(partial fills, the rest working; a Hypothesis property), placing latency, validation,
the config keys, and a trailing stop's level surviving a restart."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from conftest import make_config
from hypothesis import given, settings
from hypothesis import strategies as st

from sptrader.backtest import run_backtest
from sptrader.broker import realism, records
from sptrader.broker.book import PaperBook
from sptrader.broker.ledger import QTY_EPSILON
from sptrader.broker.orders import OrderRequest, validate
from sptrader.config import BrokerConfig, RiskConfig
from sptrader.errors import ConfigError, UsageError
from sptrader.models import US_PER_DAY, US_PER_MINUTE
from sptrader.store import Store
from sptrader.strategies.base import Strategy

EUR = "SIM:EURUSD"
T0 = 20_000 * US_PER_DAY + 600 * US_PER_MINUTE  # 10:00 UTC
MS = 1_000


def make_book(**broker) -> PaperBook:
    broker.setdefault("slippage_bps", 0.0)
    config = BrokerConfig(starting_cash=100_000.0, **broker)
    return PaperBook(config, RiskConfig(risk_per_trade_pct=0.0))


def working(book: PaperBook, role: str):
    found = [o for o in book.open_orders() if o.role == role]
    return found[0] if found else None


# --- trailing stops --------------------------------------------------------------------

# (bid, ask, the stop-loss's level after the quote, its status): a long of 10 bought at
# the ask 100.1, trailing 1.0 below the best bid.
LONG_TABLE = [
    (101.0, 101.1, 100.0, "open"),  # a new best bid: 101 - 1
    (100.5, 100.6, 100.0, "open"),  # lower: stays
    (102.3, 102.4, 101.3, "open"),  # 102.3 - 1
    (101.5, 101.6, 101.3, "open"),
    (101.3, 101.4, 101.3, "filled"),  # the bid reaches 101.3: sold at the bid
]


def test_a_trailing_stop_loss_follows_the_best_bid() -> None:
    book = make_book()
    book.on_quote(EUR, T0, 100.0, 100.1)
    result, changes = book.place(OrderRequest(EUR, "buy", qty=10, trail=1.0), T0)
    assert result.order.status == "filled" and result.order.trail == 1.0
    stop = working(book, "sl")
    assert (stop.type, stop.side, stop.qty, stop.price, stop.trail) == (
        "stop",
        "sell",
        10,
        99.0,
        1.0,
    )
    for step, (bid, ask, level, status) in enumerate(LONG_TABLE, start=1):
        changes = book.on_quote(EUR, T0 + step * MS, bid, ask)
        assert (stop.price, stop.status) == (level, status), step
        if step in (1, 3):  # a moved level is a change to store
            assert stop.order_id in changes.orders
        if step == 2:
            assert changes is None  # nothing moved, nothing filled: the fast path
    assert stop.avg_price == 101.3
    assert book.ledger.positions[EUR].is_flat


def test_a_short_trails_the_best_ask_by_a_percentage_above_its_floor() -> None:
    book = make_book()
    book.on_quote(EUR, T0, 99.9, 100.0)
    book.place(OrderRequest(EUR, "sell", qty=5, sl=101.5, trail_pct=2.0), T0)
    stop = working(book, "sl")
    # max(ask * 1.02 = 102, floor 101.5): the buy stop's ceiling is the given stop.
    assert stop.side == "buy" and stop.price == 101.5
    book.on_quote(EUR, T0 + MS, 98.9, 99.0)
    assert stop.price == 99.0 * 1.02
    book.on_quote(EUR, T0 + 2 * MS, 99.9, 100.0)  # higher: stays
    assert stop.price == 99.0 * 1.02
    book.on_quote(EUR, T0 + 3 * MS, 100.9, 101.0)  # ask 101 >= 100.98: bought back
    assert stop.status == "filled" and stop.avg_price == 101.0


class Scripted(Strategy):
    name = "scripted"

    def __init__(self, bar: int, side: str, trail: float | None, pct: float | None) -> None:
        super().__init__()
        self.row = (bar, side, trail, pct)

    def evaluate(self, bars: pl.DataFrame) -> pl.DataFrame:
        bar, side, trail, pct = self.row
        return pl.DataFrame(
            {
                "instrument": [bars["instrument"][0]],
                "ts": [bars["ts"][bar]],
                "side": [side],
                "trail": pl.Series([trail], dtype=pl.Float64),
                "trail_pct": pl.Series([pct], dtype=pl.Float64),
            }
        )


def both_paths(prices: list[float], side: str, trail: float | None, pct: float | None):
    """The same path as one-price bars (backtest) and as quotes with bid = ask (paper):
    the entry at the open of bar 1 (the quote of bar 1), then a trailing stop. Returns
    each path's (exit index, exit price, stop level at the exit), None if still open."""
    broker = BrokerConfig(starting_cash=100_000, slippage_bps=10, fee_bps=2, signal_notional=1_000)
    prices = [float(price) for price in prices]
    bars = pl.DataFrame(
        {
            "ts": pl.Series([T0 + i * US_PER_MINUTE for i in range(len(prices))]).cast(
                pl.Datetime("us")
            ),
            "open": prices,
            "high": prices,
            "low": prices,
            "close": prices,
        }
    )
    result = run_backtest(Scripted(0, side, trail, pct), bars, broker, RiskConfig())
    (trade,) = result.trades.to_dicts()
    backtest = None
    if trade["exit_reason"] == "stop":
        index = (trade["exit_time_us"] - T0) // US_PER_MINUTE
        backtest = (index, trade["exit_price"], trade["stop"])

    book = PaperBook(broker, RiskConfig(risk_per_trade_pct=0))
    book.on_quote(EUR, T0 + US_PER_MINUTE, prices[1], prices[1])
    request = OrderRequest(EUR, side, qty=trade["qty"], trail=trail, trail_pct=pct)
    result, _ = book.place(request, T0 + US_PER_MINUTE)
    assert result.fills[0].price == trade["entry_price"]
    stop = working(book, "sl")
    paper = None
    for index in range(2, len(prices)):
        level = stop.price
        book.on_quote(EUR, T0 + index * US_PER_MINUTE, prices[index], prices[index])
        if stop.status == "filled":
            paper = (index, stop.avg_price, level)
            break
    return backtest, paper


def test_paper_and_backtest_trail_the_same_path_alike() -> None:
    path = [100, 100, 101, 103, 102.5, 104, 103.2, 102.9, 103.5, 101]
    # Long, trail 1.0: the best 104 (index 5) puts the stop at 103; 102.9 (index 7) hits.
    backtest, paper = both_paths(path, "buy", 1.0, None)
    assert backtest == paper
    assert backtest[0] == 7 and backtest[2] == 103.0
    assert backtest[1] == pytest.approx(102.9 * 0.999)
    # Short, trail 1%: from 100 (never beaten) the stop sits at 100 * 1.01; 103 (index 3)
    # crosses it, bought back at 103 plus slippage.
    backtest, paper = both_paths(path, "sell", None, 1.0)
    assert backtest == paper
    assert backtest[0] == (2 if 101 >= 100 * 1.01 else 3)
    assert backtest[2] == 100 * 1.01


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 100_000),
    short=st.booleans(),
    by_pct=st.booleans(),
    size=st.floats(0.05, 3.0),
)
def test_paper_and_backtest_agree_on_random_paths(
    seed: int, short: bool, by_pct: bool, size: float
) -> None:
    rng = np.random.default_rng(seed)
    prices = (100 * np.exp(np.cumsum(rng.normal(0, 0.01, 60)))).round(4).tolist()
    trail, pct = (None, size) if by_pct else (size, None)
    backtest, paper = both_paths(prices, "sell" if short else "buy", trail, pct)
    assert backtest == paper


# --- the volume cap --------------------------------------------------------------------


def test_a_market_order_fills_a_share_of_each_quote_until_done() -> None:
    book = make_book(max_volume_share=0.5, fee_bps=10)
    book.on_quote(EUR, T0, 99.9, 100.0, 50.0, 8.0)
    result, _ = book.place(OrderRequest(EUR, "buy", qty=10), T0)
    order = result.order
    assert [(f.qty, f.price) for f in result.fills] == [(4.0, 100.0)]
    assert (order.status, order.filled_qty, order.avg_price) == ("open", 4.0, 100.0)
    # The same quote seen again (the broker re-checks after falling behind): no new size.
    book.on_quote(EUR, T0, 99.9, 100.0, 50.0, 8.0)
    assert order.filled_qty == 4
    # A sell quote's size is the bid's, not for this buy.
    changes = book.on_quote(EUR, T0 + MS, 100.9, 101.0, 1_000.0, 6.0)
    assert [(f.qty, f.price) for f in changes.fills] == [(3.0, 101.0)]
    changes = book.on_quote(EUR, T0 + 2 * MS, 101.9, 102.0, 1.0, 10.0)
    assert [(f.qty, f.price) for f in changes.fills] == [(3.0, 102.0)]
    assert order.status == "filled" and order.filled_qty == 10.0
    assert order.avg_price == pytest.approx((4 * 100 + 3 * 101 + 3 * 102) / 10)
    position = book.ledger.positions[EUR]
    assert position.qty == 10.0 and position.avg_price == pytest.approx(order.avg_price)
    assert book.ledger.fees == pytest.approx(0.001 * (400 + 303 + 306))


def test_orders_on_one_quote_share_its_size_and_a_quote_without_size_fills_whole() -> None:
    book = make_book(max_volume_share=0.5)
    book.on_quote(EUR, T0, 99.0, 100.0, 10.0, 10.0)
    first, _ = book.place(OrderRequest(EUR, "buy", qty=4), T0)
    second, _ = book.place(OrderRequest(EUR, "buy", qty=4), T0)
    assert first.order.filled_qty == 4 and second.order.filled_qty == 1  # 5 in all
    # No size given (0): the quote fills whole.
    book.on_quote(EUR, T0 + MS, 99.0, 100.0, 0.0, 0.0)
    assert second.order.status == "filled"


def test_a_partly_filled_entry_is_protected_as_it_fills_and_a_stop_fill_ends_it() -> None:
    book = make_book(max_volume_share=0.5)
    book.on_quote(EUR, T0, 99.9, 100.0, 10.0, 4.0)
    result, _ = book.place(OrderRequest(EUR, "buy", qty=10, sl=95.0, tp=110.0), T0)
    entry = result.order
    sl, tp = working(book, "sl"), working(book, "tp")
    assert entry.filled_qty == 2 and sl.qty == 2 and tp.qty == 2
    book.on_quote(EUR, T0 + MS, 99.9, 100.0, 10.0, 6.0)
    assert entry.filled_qty == 5 and sl.qty == 5 and tp.qty == 5
    # The entry, working first, buys 1 more (ask size 2); then the stop triggers: 2 of 6
    # sold (bid size 4), the take-profit and the entry's unfilled 4 cancelled.
    changes = book.on_quote(EUR, T0 + 2 * MS, 94.9, 95.0, 4.0, 2.0)
    assert [(f.side, f.qty, f.price) for f in changes.fills] == [
        ("buy", 1.0, 95.0),
        ("sell", 2.0, 94.9),
    ]
    assert (tp.status, tp.reason) == ("cancelled", "stop-loss filled")
    assert (entry.status, entry.reason, entry.filled_qty) == ("cancelled", "stop-loss filled", 6)
    assert sl.status == "open" and (sl.qty, sl.filled_qty) == (6, 2)
    # Triggered, it sells at the bid even above its price: 2 more, then the last 2.
    changes = book.on_quote(EUR, T0 + 3 * MS, 96.0, 96.1, 4.0, 100.0)
    assert [(f.qty, f.price) for f in changes.fills] == [(2.0, 96.0)]
    changes = book.on_quote(EUR, T0 + 4 * MS, 97.0, 97.1, 4.0, 100.0)
    assert [(f.qty, f.price) for f in changes.fills] == [(2.0, 97.0)]
    assert sl.status == "filled" and book.ledger.positions[EUR].is_flat
    assert sl.avg_price == pytest.approx((2 * 94.9 + 2 * 96 + 2 * 97) / 6)


def test_a_partly_filled_take_profit_leaves_the_stop_on_the_rest() -> None:
    book = make_book(max_volume_share=0.5)
    book.on_quote(EUR, T0, 99.9, 100.0, 100.0, 100.0)
    book.place(OrderRequest(EUR, "buy", qty=10, sl=95.0, tp=110.0), T0)
    sl, tp = working(book, "sl"), working(book, "tp")
    book.on_quote(EUR, T0 + MS, 110.0, 110.1, 8.0, 100.0)
    assert tp.filled_qty == 4 and tp.status == "open" and sl.status == "open"
    book.on_quote(EUR, T0 + 2 * MS, 94.0, 94.1, 100.0, 100.0)  # the stop takes the rest
    assert sl.status == "filled" and sl.filled_qty == 6
    assert tp.status == "cancelled" and tp.filled_qty == 4
    assert book.ledger.positions[EUR].is_flat


@settings(max_examples=80, deadline=None)
@given(
    share=st.floats(0.01, 1.0),
    orders=st.lists(
        st.tuples(
            st.integers(0, 29),  # placed before this quote
            st.sampled_from(["buy", "sell"]),
            st.sampled_from(["market", "limit"]),
            st.floats(0.5, 50.0),
            st.floats(-1.0, 1.0),  # the limit's distance from the touch
        ),
        min_size=1,
        max_size=8,
    ),
    quotes=st.lists(
        st.tuples(st.floats(95.0, 105.0), st.floats(0.0, 20.0), st.floats(0.0, 20.0)),
        min_size=30,
        max_size=30,
    ),
)
def test_fills_never_exceed_the_order_or_the_quote_s_share(share, orders, quotes) -> None:
    book = make_book(max_volume_share=share)
    placed = []
    fills = []
    for index, (mid, bid_size, ask_size) in enumerate(quotes):
        ts = T0 + index * MS
        bid, ask = round(mid - 0.05, 4), round(mid + 0.05, 4)
        changes = book.on_quote(EUR, ts, bid, ask, bid_size, ask_size)
        found = [] if changes is None else list(changes.fills)
        for at, side, kind, qty, away in orders:
            if at == index:
                touch = ask if side == "buy" else bid
                price = None if kind == "market" else round(touch - away, 4)
                result, more = book.place(
                    OrderRequest(EUR, side, qty=qty, type=kind, price=price), ts
                )
                placed.append(result.order)
                found += more.fills
        for side, size in (("buy", ask_size), ("sell", bid_size)):
            taken = sum(f.qty for f in found if f.side == side)
            if size > 0:
                assert taken <= share * size * (1 + 1e-12) + QTY_EPSILON
        fills += found
    for order in placed:
        mine = [f.qty for f in fills if f.order_id == order.order_id]
        assert sum(mine) == pytest.approx(order.filled_qty, abs=1e-9)
        assert order.filled_qty <= order.qty + QTY_EPSILON
        assert (order.status == "filled") == (order.qty - order.filled_qty <= QTY_EPSILON)
    assert sum(f.signed_qty for f in fills) == pytest.approx(book.ledger.position(EUR).qty)


# --- latency ---------------------------------------------------------------------------


def test_an_order_fills_only_on_quotes_past_the_latency() -> None:
    book = make_book(latency_ms=500)
    book.on_quote(EUR, T0, 99.9, 100.0)
    result, changes = book.place(OrderRequest(EUR, "buy", qty=1, sl=95.0), T0)
    assert result.order.status == "open" and not changes.fills  # the quote at hand is too early
    assert book.on_quote(EUR, T0 + 499 * MS, 100.9, 101.0) is None or not result.order.filled_qty
    changes = book.on_quote(EUR, T0 + 500 * MS, 101.9, 102.0)
    assert [(f.qty, f.price) for f in changes.fills] == [(1.0, 102.0)]
    # Its stop-loss, placed by the book at the fill, has none: it triggers at once.
    book.on_quote(EUR, T0 + 501 * MS, 94.9, 95.0)
    assert working(book, "sl") is None and book.ledger.positions[EUR].is_flat


# --- validation and the config ---------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"trail": -1.0}, "positive price difference"),
        ({"trail": math.inf}, "positive price difference"),
        ({"trail_pct": 0.0}, "above 0 and below 100"),
        ({"trail_pct": 100.0}, "above 0 and below 100"),
        ({"trail": 1.0, "trail_pct": 1.0}, "not both"),
        ({"trail": 1.0, "role": "close"}, "attached to an entry"),
        ({"trail": 1.0, "venue": "binance"}, "paper-only"),
    ],
)
def test_bad_trails_are_refused(fields: dict, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        validate(OrderRequest(EUR, "buy", qty=1, **fields), 100.0)


@pytest.mark.parametrize(
    ("broker", "message"),
    [
        ({"max_volume_share": -0.1}, "broker.max_volume_share: a share from 0 (off) to 1"),
        ({"max_volume_share": 1.5}, "broker.max_volume_share: a share from 0 (off) to 1"),
        ({"latency_bars": -1}, "broker.latency_bars: must be 0 or more"),
        ({"latency_ms": -5.0}, "broker.latency_ms: must be 0 or more"),
    ],
)
def test_config_errors_name_the_key(broker: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        make_config(broker=broker)


def test_the_defaults_change_nothing() -> None:
    config = make_config().broker
    assert (config.max_volume_share, config.latency_bars, config.latency_ms) == (0.0, 0, 0.0)
    assert realism.QTY_EPSILON == QTY_EPSILON


def test_a_trailing_stop_s_level_survives_a_restart(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.duckdb")
    store.migrate()
    try:
        book = make_book()
        book.on_quote(EUR, T0, 100.0, 100.1)
        _, changes = book.place(OrderRequest(EUR, "buy", qty=10, trail_pct=1.0), T0)
        records.save_changes(store, changes)
        records.save_changes(store, book.on_quote(EUR, T0 + MS, 102.0, 102.1))
        open_orders, fills, _, _ = records.load_state(store)
        (stop,) = open_orders
        assert (stop.role, stop.price, stop.trail, stop.trail_pct) == (
            "sl",
            102.0 * 0.99,
            None,
            1.0,
        )
        again = PaperBook(
            BrokerConfig(slippage_bps=0), RiskConfig(), open_orders=open_orders,
        )  # fmt: skip
        again.ledger.apply(fills[0])
        again.on_quote(EUR, T0 + 2 * MS, 101.5, 101.6)  # above the level: stays
        assert again.orders[stop.order_id].price == 102.0 * 0.99
        again.on_quote(EUR, T0 + 3 * MS, 100.9, 101.0)
        assert stop.status == "filled"  # at the restored level
    finally:
        store.close()


def test_listings_show_a_trailing_stop_and_its_level(capsys: pytest.CaptureFixture) -> None:
    from sptrader.commands.trading import describe_order, write_orders
    from sptrader.screens.orders import order_cells

    book = make_book()
    book.on_quote(EUR, T0, 1.1000, 1.1002)
    result, _ = book.place(OrderRequest(EUR, "buy", qty=1000, trail=0.005), T0)
    book.on_quote(EUR, T0 + MS, 1.1100, 1.1102)
    stop = working(book, "sl").to_dict()
    assert describe_order(result.order.to_dict(), 5).endswith(", trailing 0.00500")
    cells = order_cells(stop, 5, T0 + MS)
    assert (cells["type"].plain, cells["price"].plain) == ("trail", "1.10500")
    assert order_cells(result.order.to_dict(), 5, T0)["type"].plain == "market"
    write_orders([stop], "table", every=False, decimals={EUR: 5})
    table = capsys.readouterr().out
    assert "1.10500" in table and "trailing 0.00500" in table


def test_a_close_still_working_never_flips_the_position() -> None:
    # With latency the close waits; the stop-loss fills first: the close has nothing left.
    book = make_book(latency_ms=100)
    book.on_quote(EUR, T0, 99.9, 100.0)
    book.place(OrderRequest(EUR, "buy", qty=10, sl=95.0), T0)
    book.on_quote(EUR, T0 + 100 * MS, 99.9, 100.0)
    assert book.ledger.positions[EUR].qty == 10
    result, _ = book.close_position(EUR, T0 + 101 * MS)
    book.on_quote(EUR, T0 + 150 * MS, 94.9, 95.0)  # the stop: flat, the close goes
    assert (result.order.status, result.order.reason) == ("cancelled", "position closed")
    book.on_quote(EUR, T0 + 250 * MS, 94.9, 95.0)
    assert book.ledger.positions[EUR].is_flat


def test_a_scanner_s_trailing_signal_gets_a_trailing_stop_loss() -> None:
    # As in a backtest of the same strategy: the stop given is the floor, the trail moves it.
    from sptrader.broker.service import PaperBroker
    from sptrader.bus import Bus
    from sptrader.models import SignalRaised

    config = BrokerConfig(starting_cash=100_000, slippage_bps=0)
    broker = PaperBroker(Bus(), config, RiskConfig(risk_per_trade_pct=0), clock=lambda: T0)
    book = broker.book = PaperBook(config, RiskConfig(risk_per_trade_pct=0))
    book.on_quote(EUR, T0, 99.9, 100.0)
    raised = SignalRaised(T0, "s", 1, EUR, T0, "buy", 1.0, "", 98.0, None, True, trail_pct=1.0)
    broker._on_signal(raised)
    stop = working(book, "sl")
    # It starts 1% below the bid it bought at (above the 98 floor).
    assert (stop.side, stop.trail, stop.trail_pct) == ("sell", None, 1.0)
    assert stop.price == pytest.approx(99.9 * 0.99)
    book.on_quote(EUR, T0 + MS, 101.9, 102.0)  # best bid 101.9: 1% below is 100.881
    assert stop.price == pytest.approx(101.9 * 0.99)
    book.on_quote(EUR, T0 + 2 * MS, 100.8, 100.9)  # the bid reaches it: sold
    assert stop.status == "filled" and book.ledger.positions[EUR].is_flat


def test_a_scanner_s_new_signal_replaces_its_orders_still_working() -> None:
    from sptrader.broker.service import PaperBroker
    from sptrader.bus import Bus
    from sptrader.models import SignalRaised

    config = BrokerConfig(starting_cash=100_000, slippage_bps=0, max_volume_share=0.5)
    broker = PaperBroker(Bus(), config, RiskConfig(risk_per_trade_pct=0), clock=lambda: T0)
    book = broker.book = PaperBook(config, RiskConfig(risk_per_trade_pct=0))

    def signal(side: str) -> None:
        broker._on_signal(SignalRaised(T0, "s", 1, EUR, T0, side, 1.0, "", None, None, True))

    book.on_quote(EUR, T0, 99.9, 100.0, 20.0, 20.0)
    signal("buy")  # 10,000 / 100 = 100 units; 10 fill (ask size 20)
    (entry,) = book.open_orders()
    assert entry.filled_qty == 10
    signal("buy")  # the same side still working: nothing new
    assert book.open_orders() == [entry]
    signal("exit")  # the entry's rest goes; the 10 held are closed (10 of the bid's 20)
    assert (entry.status, entry.reason) == ("cancelled", "replaced by a new signal")
    assert book.ledger.positions[EUR].is_flat
    book.on_quote(EUR, T0 + MS, 99.9, 100.0, 4.0, 20.0)
    signal("sell")  # short about 100: 2 fill (bid size 4), then 2 on the next quote
    book.on_quote(EUR, T0 + 2 * MS, 99.9, 100.0, 4.0, 20.0)
    assert book.ledger.positions[EUR].qty == -4
    signal("exit")  # the sell's rest cancelled, the 4 held bought back
    assert book.ledger.positions[EUR].is_flat
    assert book.open_orders() == []
