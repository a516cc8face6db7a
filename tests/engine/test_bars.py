"""Ticks into 1m bars: the live BarBuilder agrees with the batch polars aggregation."""

from __future__ import annotations

from datetime import UTC, datetime

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sptrader.bars import CLOSE_GRACE_US, BarBuilder, aggregate_ticks, bars_to_frame
from sptrader.clock import datetime_to_us
from sptrader.models import (
    SIDE_BUY,
    SIDE_SELL,
    SIDE_UNKNOWN,
    US_PER_MINUTE,
    US_PER_SECOND,
    Bar,
    BarClosed,
    BarUpdated,
    QuoteReceived,
    TradeReceived,
)

INSTRUMENTS = ["SIM:BTCUSD", "SIM:ETHUSD", "SIM:SPY"]
BASE_US = datetime_to_us(datetime(2026, 3, 2, 14, 0, tzinfo=UTC))
EURUSD = "SIM:EURUSD"


def builder_with(source: str) -> BarBuilder:
    return BarBuilder(lambda instrument: source)


def closed_bars(events: list[object]) -> list[Bar]:
    return [event.bar for event in events if isinstance(event, BarClosed)]


def updated_bars(events: list[object]) -> list[Bar]:
    return [event.bar for event in events if isinstance(event, BarUpdated)]


def at(minute: int, second: float = 0.0) -> int:
    return BASE_US + minute * US_PER_MINUTE + round(second * US_PER_SECOND)


# --- the property: live == batch -----------------------------------------------------

tick_steps = st.lists(
    st.tuples(
        st.sampled_from(INSTRUMENTS),
        # Mostly small steps, sometimes minutes long (empty minutes), sometimes zero.
        st.one_of(
            st.integers(0, 5 * US_PER_SECOND),
            st.integers(0, 3 * US_PER_MINUTE),
            st.just(0),
        ),
        st.floats(0.01, 100_000.0, allow_nan=False, allow_infinity=False),
        st.floats(0.0, 1_000.0, allow_nan=False, allow_infinity=False),
        st.booleans(),  # also send a quote (a trade-priced builder must ignore it)
        st.sampled_from([SIDE_BUY, SIDE_SELL, SIDE_UNKNOWN]),  # the taker's side
    ),
    min_size=1,
    max_size=120,
)


@settings(max_examples=80, deadline=None)
@given(steps=tick_steps, start_offset=st.integers(0, US_PER_MINUTE - 1), data=st.data())
def test_builder_matches_batch_aggregation(steps, start_offset, data) -> None:
    events: list[object] = []
    rows = {"instrument": [], "ts_us": [], "price": [], "size": [], "side": []}
    ts = BASE_US + start_offset
    for instrument, step, price, size, with_quote, side in steps:
        ts += step
        if with_quote:
            events.append(QuoteReceived(instrument, ts, price * 0.99, price * 1.01, 5.0, 5.0))
        events.append(TradeReceived(instrument, ts, price, size, side))
        rows["instrument"].append(instrument)
        rows["ts_us"].append(ts)
        rows["price"].append(price)
        rows["size"].append(size)
        # The batch side column may say "unknown" as 0 or as null.
        rows["side"].append(None if side == SIDE_UNKNOWN and size > 500 else side)

    # Feed the builder in arbitrary batches: batch boundaries must not matter.
    cuts = sorted(data.draw(st.lists(st.integers(0, len(events)), max_size=6)))
    builder = builder_with("trade")
    live: list[Bar] = []
    previous = 0
    for cut in [*cuts, len(events)]:
        live.extend(closed_bars(builder.process(events[previous:cut])))
        previous = cut
    live.extend(bar for name in INSTRUMENTS if (bar := builder.forming(name)) is not None)

    batch = aggregate_ticks(
        pl.DataFrame(
            rows,
            schema={
                "instrument": pl.String,
                "ts_us": pl.Int64,
                "price": pl.Float64,
                "size": pl.Float64,
                "side": pl.Int8,
            },
        )
    )
    live_frame = bars_to_frame(live).sort("instrument", "ts")

    exact = ["instrument", "ts", "open", "high", "low", "close", "trades"]
    assert live_frame.select(exact).to_dicts() == batch.select(exact).to_dicts()
    assert live_frame["volume"].to_list() == pytest.approx(batch["volume"].to_list())
    for column in ("buy_volume", "sell_volume"):
        assert_same_flow(live_frame[column].to_list(), batch[column].to_list())
    assert builder.late_ticks == 0
    assert builder.ticks == len(steps)
    # Bars are labelled by their minute's open time.
    assert all(bar.ts_us % US_PER_MINUTE == 0 for bar in live)


def assert_same_flow(live: list[float | None], batch: list[float | None]) -> None:
    """Order-flow volumes agree: None in the same bars, sums approximately elsewhere."""
    assert [value is None for value in live] == [value is None for value in batch]
    assert [value for value in live if value is not None] == pytest.approx(
        [value for value in batch if value is not None]
    )


# --- single behaviours -----------------------------------------------------------------


def test_minute_boundary_splits_bars() -> None:
    builder = builder_with("trade")
    last_microsecond = at(0, 59.999999)
    next_minute = at(1)
    assert next_minute - last_microsecond == 1
    first = builder.process([TradeReceived("SIM:BTCUSD", last_microsecond, 100.0, 1.0)])
    assert closed_bars(first) == []
    second = builder.process([TradeReceived("SIM:BTCUSD", next_minute, 101.0, 2.0)])
    assert closed_bars(second) == [
        Bar("SIM:BTCUSD", "1m", at(0), 100.0, 100.0, 100.0, 100.0, 1.0, 1)
    ]
    assert builder.forming("SIM:BTCUSD") == Bar(
        "SIM:BTCUSD", "1m", at(1), 101.0, 101.0, 101.0, 101.0, 2.0, 1
    )


def test_empty_minutes_produce_no_bar() -> None:
    builder = builder_with("trade")
    out = builder.process(
        [
            TradeReceived("SIM:BTCUSD", at(0, 10), 100.0, 1.0),
            TradeReceived("SIM:BTCUSD", at(0, 50), 102.0, 1.0),
            TradeReceived("SIM:BTCUSD", at(4, 5), 99.0, 1.0),  # minutes 1-3 had no ticks
        ]
    )
    assert [bar.ts_us for bar in closed_bars(out)] == [at(0)]
    assert builder.forming("SIM:BTCUSD").ts_us == at(4)
    assert builder.close_all() == [
        BarClosed(Bar("SIM:BTCUSD", "1m", at(4), 99.0, 99.0, 99.0, 99.0, 1.0, 1))
    ]
    assert builder.forming("SIM:BTCUSD") is None


def test_process_returns_closed_then_one_update_per_instrument() -> None:
    builder = builder_with("trade")
    out = builder.process(
        [
            TradeReceived("SIM:BTCUSD", at(0, 1), 100.0, 1.0),
            TradeReceived("SIM:ETHUSD", at(0, 2), 10.0, 1.0),
            TradeReceived("SIM:BTCUSD", at(1, 1), 101.0, 1.0),
            TradeReceived("SIM:BTCUSD", at(1, 2), 103.0, 1.0),
            TradeReceived("SIM:BTCUSD", at(1, 3), 102.0, 1.0),
        ]
    )
    assert [type(event) for event in out] == [BarClosed, BarUpdated, BarUpdated]
    assert closed_bars(out)[0].instrument == "SIM:BTCUSD"
    updates = {bar.instrument: bar for bar in updated_bars(out)}
    assert updates["SIM:BTCUSD"] == Bar(
        "SIM:BTCUSD", "1m", at(1), 101.0, 103.0, 101.0, 102.0, 3.0, 3
    )
    assert updates["SIM:ETHUSD"] == Bar("SIM:ETHUSD", "1m", at(0), 10.0, 10.0, 10.0, 10.0, 1.0, 1)


def test_close_due_waits_for_minute_end_plus_grace() -> None:
    builder = builder_with("trade")
    builder.process(
        [
            TradeReceived("SIM:BTCUSD", at(0, 30), 100.0, 1.0),
            TradeReceived("SIM:ETHUSD", at(1, 30), 10.0, 1.0),
        ]
    )
    minute_end = at(1)
    assert builder.close_due(minute_end) == []
    assert builder.close_due(minute_end + CLOSE_GRACE_US - 1) == []
    # A tick stamped before the boundary that arrives within the grace still counts.
    builder.process([TradeReceived("SIM:BTCUSD", at(0, 59.9), 105.0, 1.0)])
    # Only the named instruments are considered.
    assert builder.close_due(minute_end + CLOSE_GRACE_US, ["SIM:ETHUSD"]) == []

    closed = builder.close_due(minute_end + CLOSE_GRACE_US)
    assert closed == [BarClosed(Bar("SIM:BTCUSD", "1m", at(0), 100.0, 105.0, 100.0, 105.0, 2.0, 2))]
    assert builder.forming("SIM:BTCUSD") is None
    assert builder.forming("SIM:ETHUSD") is not None  # its minute has not ended
    assert builder.close_due(minute_end + CLOSE_GRACE_US) == []  # closed once only


def test_an_out_of_order_trade_corrects_the_closed_bar() -> None:
    builder = builder_with("trade")
    builder.process(
        [
            TradeReceived("SIM:BTCUSD", at(0, 10), 100.0, 1.0),
            TradeReceived("SIM:BTCUSD", at(1, 10), 101.0, 1.0),
        ]
    )
    before = builder.forming("SIM:BTCUSD")
    out = builder.process([TradeReceived("SIM:BTCUSD", at(0, 20), 500.0, 9.0)])
    # Re-published closed, so the writer upserts the corrected version over the stored one.
    assert out == [BarClosed(Bar("SIM:BTCUSD", "1m", at(0), 100.0, 500.0, 100.0, 500.0, 10.0, 2))]
    assert builder.late_applied == 1
    assert builder.forming("SIM:BTCUSD") == before


def test_a_late_trade_earlier_than_the_first_becomes_the_open() -> None:
    builder = builder_with("trade")
    builder.process([TradeReceived("SIM:BTCUSD", at(0, 30), 100.0, 1.0)])
    builder.close_due(at(1) + CLOSE_GRACE_US)
    [closed] = builder.process([TradeReceived("SIM:BTCUSD", at(0, 5), 90.0, 1.0)])
    assert closed == BarClosed(Bar("SIM:BTCUSD", "1m", at(0), 90.0, 100.0, 90.0, 100.0, 2.0, 2))


def test_trades_too_old_to_place_are_counted_and_ignored() -> None:
    builder = builder_with("trade")
    builder.process(
        [TradeReceived("SIM:BTCUSD", at(minute, 1), 100.0, 1.0) for minute in range(30)]
    )
    out = builder.process([TradeReceived("SIM:BTCUSD", at(2, 59), 90.0, 1.0)])
    assert out == []
    assert builder.late_ticks == 1


def test_fetched_history_owns_its_minutes() -> None:
    builder = builder_with("trade")
    builder.process([TradeReceived("SIM:BTCUSD", at(0, 10), 100.0, 1.0)])
    builder.process([TradeReceived("SIM:BTCUSD", at(1, 10), 100.0, 1.0)])
    builder.accept_history("SIM:BTCUSD", at(0), at(2))
    assert builder.forming("SIM:BTCUSD") is None  # a partly seen minute is dropped
    # Ticks for the fetched minutes (a reconnect's snapshot) cannot double count.
    assert builder.process([TradeReceived("SIM:BTCUSD", at(1, 20), 100.0, 1.0)]) == []
    assert builder.late_ticks == 1
    [update] = builder.process([TradeReceived("SIM:BTCUSD", at(2, 1), 101.0, 1.0)])
    assert update.bar.ts_us == at(2)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 5 * 60_000),
            st.floats(1, 1000),
            st.floats(0.01, 10),
            st.sampled_from([SIDE_BUY, SIDE_SELL, SIDE_UNKNOWN]),
        ),
        min_size=1,
        max_size=80,
        unique_by=lambda tick: tick[0],
    ),
    st.randoms(use_true_random=False),
)
def test_out_of_order_arrival_gives_the_bars_of_the_sorted_ticks(ticks, rng) -> None:
    """Ticks arriving shuffled within a few minutes end as the same bars as in order."""
    in_order = sorted(ticks)
    arrival = list(in_order)
    # Swap neighbours only: lateness stays within the builder's memory of closed bars.
    for index in range(len(arrival) - 1):
        if rng.random() < 0.3:
            arrival[index], arrival[index + 1] = arrival[index + 1], arrival[index]
    builder = builder_with("trade")
    latest: dict[int, Bar] = {}
    events = [
        TradeReceived("SIM:BTCUSD", at(0) + ms * 1000, p, q, side) for ms, p, q, side in arrival
    ]
    for event in events:
        for out in builder.process([event]):
            latest[out.bar.ts_us] = out.bar
    for out in builder.close_all():
        latest[out.bar.ts_us] = out.bar
    expected = aggregate_ticks(
        pl.DataFrame(
            {
                "instrument": ["SIM:BTCUSD"] * len(in_order),
                "ts_us": [at(0) + ms * 1000 for ms, _, _, _ in in_order],
                "price": [p for _, p, _, _ in in_order],
                "size": [q for _, _, q, _ in in_order],
                "side": [side for _, _, _, side in in_order],
            }
        )
    )
    got = sorted(latest.values(), key=lambda bar: bar.ts_us)
    assert [bar.ts_us for bar in got] == [
        ts.timestamp() * 1e6 for ts in expected["ts"].dt.replace_time_zone("UTC")
    ]
    for bar, row in zip(got, expected.iter_rows(named=True), strict=True):
        assert (bar.open, bar.high, bar.low, bar.close, bar.trades) == (
            row["open"],
            row["high"],
            row["low"],
            row["close"],
            row["trades"],
        )
        assert bar.volume == pytest.approx(row["volume"])
        assert_same_flow([bar.buy_volume, bar.sell_volume], [row["buy_volume"], row["sell_volume"]])


def test_bid_price_source_uses_quote_bids() -> None:
    builder = builder_with("bid")
    out = builder.process(
        [
            QuoteReceived(EURUSD, at(0, 1), 1.1000, 1.1002, 2.0, 3.0),
            TradeReceived(EURUSD, at(0, 2), 5.0, 100.0),  # ignored: bars come from bids
            QuoteReceived(EURUSD, at(0, 3), 1.1005, 1.1007, 1.5, 3.0),
            QuoteReceived(EURUSD, at(0, 4), 1.0995, 1.0997, 1.0, 3.0),
        ]
    )
    bar = updated_bars(out)[0]
    assert (bar.open, bar.high, bar.low, bar.close) == (1.1000, 1.1005, 1.0995, 1.0995)
    assert bar.volume == pytest.approx(4.5)  # bid sizes
    assert bar.trades == 3  # counts ticks
    assert builder.ticks == 3


def test_mid_price_source_uses_quote_mids() -> None:
    builder = builder_with("mid")
    builder.process(
        [
            QuoteReceived("SIM:SPY", at(0, 1), 100.0, 100.2, 10.0, 1.0),
            QuoteReceived("SIM:SPY", at(0, 2), 101.0, 101.4, 20.0, 1.0),
            TradeReceived("SIM:SPY", at(0, 3), 150.0, 1.0),
        ]
    )
    bar = builder.forming("SIM:SPY")
    assert bar.open == pytest.approx(100.1)
    assert bar.high == pytest.approx(101.2)
    assert bar.low == pytest.approx(100.1)
    assert bar.close == pytest.approx(101.2)
    assert bar.volume == pytest.approx(30.0)
    assert bar.trades == 2


def test_trade_price_source_ignores_quotes_and_sources_are_per_instrument() -> None:
    asked: list[str] = []

    def source_for(instrument: str) -> str:
        asked.append(instrument)
        return "bid" if instrument == EURUSD else "trade"

    builder = BarBuilder(source_for)
    builder.process(
        [
            QuoteReceived("SIM:BTCUSD", at(0, 1), 99.0, 101.0, 1.0, 1.0),
            QuoteReceived(EURUSD, at(0, 1), 1.1, 1.2, 1.0, 1.0),
            TradeReceived("SIM:BTCUSD", at(0, 2), 100.5, 0.25),
            QuoteReceived("SIM:BTCUSD", at(0, 3), 99.0, 101.0, 1.0, 1.0),
        ]
    )
    assert builder.forming("SIM:BTCUSD") == Bar(
        "SIM:BTCUSD", "1m", at(0), 100.5, 100.5, 100.5, 100.5, 0.25, 1
    )
    assert builder.forming(EURUSD).open == 1.1
    assert sorted(asked) == ["SIM:BTCUSD", EURUSD]  # resolved once per instrument


def test_aggregate_ticks_keeps_arrival_order_for_open_and_close() -> None:
    ticks = pl.DataFrame(
        {
            "instrument": ["SIM:SPY", "SIM:SPY", "SIM:SPY", "SIM:AAPL"],
            "ts_us": [at(0, 5), at(0, 5), at(0, 5), at(2, 0)],
            "price": [3.0, 1.0, 2.0, 7.0],
            "size": [1.0, 2.0, 3.0, 4.0],
        }
    )
    bars = aggregate_ticks(ticks)
    assert bars.columns == ["instrument", "ts", "open", "high", "low", "close", "volume", "trades"]
    assert bars.schema["ts"] == pl.Datetime("us")
    assert bars.rows() == [
        ("SIM:AAPL", datetime(2026, 3, 2, 14, 2), 7.0, 7.0, 7.0, 7.0, 4.0, 1),
        ("SIM:SPY", datetime(2026, 3, 2, 14, 0), 3.0, 3.0, 1.0, 2.0, 6.0, 3),
    ]


# --- order flow: the taker's side ------------------------------------------------------


def test_trade_sides_sum_into_buy_and_sell_volume() -> None:
    builder = builder_with("trade")
    builder.process(
        [
            TradeReceived("SIM:BTCUSD", at(0, 1), 100.0, 1.5, SIDE_BUY),
            TradeReceived("SIM:BTCUSD", at(0, 2), 99.0, 2.0, SIDE_SELL),
            TradeReceived("SIM:BTCUSD", at(0, 3), 99.5, 4.0, SIDE_UNKNOWN),  # in neither
            TradeReceived("SIM:BTCUSD", at(0, 4), 100.5, 0.25, SIDE_BUY),
        ]
    )
    bar = builder.forming("SIM:BTCUSD")
    assert (bar.volume, bar.buy_volume, bar.sell_volume) == (7.75, 1.75, 2.0)
    assert builder.bar_at("SIM:BTCUSD", at(0)) == bar


def test_a_bar_without_a_known_side_has_no_flow_not_zero() -> None:
    builder = builder_with("trade")
    builder.process(
        [
            TradeReceived("SIM:BTCUSD", at(0, 1), 100.0, 1.0),  # side unknown (the default)
            TradeReceived("SIM:BTCUSD", at(0, 2), 100.0, 2.0, SIDE_UNKNOWN),
            # One side only: the other is a known 0.0, also when the size is 0.
            TradeReceived("SIM:ETHUSD", at(0, 1), 10.0, 0.0, SIDE_SELL),
            TradeReceived("SIM:SPY", at(0, 1), 10.0, 3.0, SIDE_UNKNOWN),
            TradeReceived("SIM:SPY", at(0, 2), 10.0, 0.5, SIDE_BUY),
        ]
    )
    unknown = builder.forming("SIM:BTCUSD")
    assert (unknown.volume, unknown.buy_volume, unknown.sell_volume) == (3.0, None, None)
    zero = builder.forming("SIM:ETHUSD")
    assert (zero.buy_volume, zero.sell_volume) == (0.0, 0.0)
    assert str(zero.buy_volume) == "0.0" and str(zero.sell_volume) == "0.0"  # not -0.0
    mixed = builder.forming("SIM:SPY")
    assert (mixed.volume, mixed.buy_volume, mixed.sell_volume) == (3.5, 0.5, 0.0)


def test_quote_built_bars_have_no_flow() -> None:
    builder = builder_with("bid")
    builder.process(
        [
            QuoteReceived(EURUSD, at(0, 1), 1.1, 1.2, 2.0, 3.0),
            TradeReceived(EURUSD, at(0, 2), 1.15, 100.0, SIDE_BUY),  # ignored: bid-priced
        ]
    )
    bar = builder.forming(EURUSD)
    assert (bar.volume, bar.buy_volume, bar.sell_volume) == (2.0, None, None)


def test_a_late_trade_corrects_the_closed_bars_flow() -> None:
    builder = builder_with("trade")
    builder.process(
        [
            TradeReceived("SIM:BTCUSD", at(0, 10), 100.0, 1.0, SIDE_UNKNOWN),
            TradeReceived("SIM:BTCUSD", at(1, 10), 101.0, 1.0, SIDE_BUY),
        ]
    )
    assert builder.bar_at("SIM:BTCUSD", at(0)).buy_volume is None
    [late] = builder.process([TradeReceived("SIM:BTCUSD", at(0, 20), 100.0, 2.5, SIDE_SELL)])
    assert (late.bar.buy_volume, late.bar.sell_volume) == (0.0, 2.5)
    [later] = builder.process([TradeReceived("SIM:BTCUSD", at(0, 30), 100.0, 1.0, SIDE_BUY)])
    assert (later.bar.volume, later.bar.buy_volume, later.bar.sell_volume) == (4.5, 1.0, 2.5)
    assert builder.bar_at("SIM:BTCUSD", at(0)) == later.bar
    # A late trade for a minute never seen makes its bar, with its side.
    builder.process([TradeReceived("SIM:BTCUSD", at(3, 1), 102.0, 1.0)])
    [fresh] = builder.process([TradeReceived("SIM:BTCUSD", at(2, 30), 99.0, 3.0, SIDE_SELL)])
    assert (fresh.bar.ts_us, fresh.bar.trades) == (at(2), 1)
    assert (fresh.bar.buy_volume, fresh.bar.sell_volume) == (0.0, 3.0)


def test_bars_to_frame_keeps_flow_and_its_nulls() -> None:
    frame = bars_to_frame(
        [
            Bar("SIM:BTCUSD", "1m", at(0), 1.0, 2.0, 0.5, 1.5, 10.0, 3, 6.0, 4.0),
            Bar("SIM:BTCUSD", "1m", at(1), 1.0, 2.0, 0.5, 1.5, 10.0, 3),
        ]
    )
    assert frame.columns[-2:] == ["buy_volume", "sell_volume"]
    assert frame.schema["buy_volume"] == pl.Float64
    assert frame.select("buy_volume", "sell_volume").rows() == [(6.0, 4.0), (None, None)]


def test_aggregate_ticks_sums_known_sides() -> None:
    ticks = pl.DataFrame(
        {
            "instrument": ["SIM:SPY"] * 4 + ["SIM:AAPL"] * 2,
            "ts_us": [at(0, 1), at(0, 2), at(0, 3), at(1, 0), at(0, 1), at(0, 2)],
            "price": [1.0] * 6,
            "size": [1.0, 2.0, 4.0, 8.0, 16.0, 32.0],
            "side": [SIDE_BUY, SIDE_SELL, SIDE_UNKNOWN, SIDE_BUY, SIDE_UNKNOWN, None],
        },
        schema_overrides={"side": pl.Int8},
    )
    bars = aggregate_ticks(ticks)
    assert bars.columns[-2:] == ["buy_volume", "sell_volume"]
    assert bars.select("instrument", "volume", "buy_volume", "sell_volume").rows() == [
        ("SIM:AAPL", 48.0, None, None),
        ("SIM:SPY", 7.0, 1.0, 2.0),
        ("SIM:SPY", 8.0, 8.0, 0.0),
    ]
