"""The simulated market: seeded, deterministic, realistic, live continuing history."""

from __future__ import annotations

from datetime import UTC, datetime

import polars as pl
import pytest

from sptrader.clock import datetime_to_us
from sptrader.config import SimFeedConfig
from sptrader.feeds.sim import SimFeed, instrument_spec
from sptrader.models import US_PER_DAY, US_PER_MINUTE, US_PER_SECOND, QuoteReceived, TradeReceived

WATCHLIST = ["SIM:EURUSD", "SIM:USDJPY", "SIM:BTCUSD", "SIM:SPY"]
START_US = datetime_to_us(datetime(2026, 3, 2, 9, 0, tzinfo=UTC))
HOUR_US = 60 * US_PER_MINUTE


def feed(seed: int = 42, instruments: list[str] | None = None, **overrides) -> SimFeed:
    return SimFeed(
        WATCHLIST if instruments is None else instruments, SimFeedConfig(seed=seed, **overrides)
    )


def test_same_seed_gives_identical_history() -> None:
    for instrument in WATCHLIST:
        first = feed(7).history(instrument, START_US, START_US + 6 * HOUR_US)
        second = feed(7).history(instrument, START_US, START_US + 6 * HOUR_US)
        assert first.height == 360
        assert first.equals(second)


def test_different_seed_gives_different_history() -> None:
    for instrument in WATCHLIST:
        first = feed(7).history(instrument, START_US, START_US + HOUR_US)
        second = feed(8).history(instrument, START_US, START_US + HOUR_US)
        assert first["ts"].equals(second["ts"])
        assert first["close"].to_list() != second["close"].to_list()


def test_overlapping_history_ranges_agree() -> None:
    sim = feed()
    # Two ranges across a UTC midnight, overlapping by a few hours; a fresh feed for each.
    first = sim.history("SIM:BTCUSD", START_US, START_US + 20 * HOUR_US)
    second = feed().history("SIM:BTCUSD", START_US + 12 * HOUR_US, START_US + 40 * HOUR_US)
    overlap_start = pl.lit(START_US + 12 * HOUR_US).cast(pl.Datetime("us"))
    assert first.filter(pl.col("ts") >= overlap_start).equals(second.head(8 * 60))


def test_history_layout_and_range() -> None:
    bars = feed().history("SIM:SPY", START_US + 30 * US_PER_SECOND, START_US + 10 * US_PER_MINUTE)
    assert bars.columns == ["instrument", "ts", "open", "high", "low", "close", "volume", "trades"]
    assert bars.schema["ts"] == pl.Datetime("us")
    assert bars["instrument"].unique().to_list() == ["SIM:SPY"]
    epochs = bars["ts"].dt.epoch("us").to_list()
    # Open times in [start, end): the bar at START_US began before the start.
    assert epochs == [START_US + minute * US_PER_MINUTE for minute in range(1, 10)]
    empty = feed().history("SIM:SPY", START_US, START_US)
    assert empty is None or empty.is_empty()


@pytest.mark.parametrize(
    "instrument", [*WATCHLIST, "SIM:XAUUSD", "SIM:ETHUSD", "SIM:AAPL", "SIM:ZZZZ"]
)
def test_bars_are_valid_and_continuous(instrument: str) -> None:
    bars = feed().history(instrument, START_US, START_US + 2 * US_PER_DAY)
    assert bars.height == 2 * 1440
    assert bars.filter(
        (pl.col("low") > pl.min_horizontal("open", "close"))
        | (pl.col("high") < pl.max_horizontal("open", "close"))
    ).is_empty()
    assert (bars["volume"] > 0).all()
    assert (bars["trades"] >= 1).all()
    # Each minute opens where the previous closed, across midnight too: one price path.
    assert bars["open"].slice(1).to_list() == bars["close"].slice(0, bars.height - 1).to_list()
    # No minute is missing (the simulated market is always open).
    steps = bars["ts"].dt.epoch("us").diff().drop_nulls().unique().to_list()
    assert steps == [US_PER_MINUTE]


@pytest.mark.parametrize(
    ("instrument", "low", "high"),
    [
        ("SIM:EURUSD", 0.95, 1.25),
        ("SIM:GBPUSD", 1.1, 1.45),
        ("SIM:USDJPY", 100.0, 200.0),
        ("SIM:XAUUSD", 1500.0, 4000.0),
        ("SIM:BTCUSD", 10_000.0, 100_000.0),
        ("SIM:SPY", 100.0, 999.0),
        ("SIM:AAPL", 100.0, 400.0),
    ],
)
def test_price_levels_are_realistic(instrument: str, low: float, high: float) -> None:
    sim = feed()
    # A sample of days over two years.
    for day in range(0, 730, 61):
        start = START_US + day * US_PER_DAY
        bars = sim.history(instrument, start, start + HOUR_US)
        assert low <= bars["low"].min() and bars["high"].max() <= high, (instrument, day)


def test_price_levels_of_the_watchlist_near_their_bases() -> None:
    bars = {name: feed().history(name, START_US, START_US + HOUR_US) for name in WATCHLIST}
    assert 1.0 <= bars["SIM:EURUSD"]["close"].mean() <= 1.2
    assert 100 <= bars["SIM:USDJPY"]["close"].mean() <= 200
    assert 10_000 <= bars["SIM:BTCUSD"]["close"].mean() < 100_000
    assert 100 <= bars["SIM:SPY"]["close"].mean() < 1000


def test_fx_is_quote_only_and_others_trade() -> None:
    sim = feed()
    assert sim.price_source("SIM:EURUSD") == "bid"
    assert sim.price_source("SIM:USDJPY") == "bid"
    assert sim.price_source("SIM:BTCUSD") == "trade"
    assert sim.price_source("SIM:SPY") == "trade"
    events = sim.generate(START_US, START_US + 30 * US_PER_SECOND)
    trades = {event.instrument for event in events if isinstance(event, TradeReceived)}
    quotes = {event.instrument for event in events if isinstance(event, QuoteReceived)}
    assert quotes == set(WATCHLIST)
    assert trades == {"SIM:BTCUSD", "SIM:SPY"}
    assert feed(price_source="mid").price_source("SIM:BTCUSD") == "mid"


def test_generate_is_deterministic_for_seed_and_call_sequence() -> None:
    first, second, other = feed(3), feed(3), feed(4)
    windows = [(START_US, START_US + 500_000), (START_US + 500_000, START_US + 3 * US_PER_SECOND)]
    for start, end in windows:
        events = first.generate(start, end)
        assert events == second.generate(start, end)
        assert events
        assert events != other.generate(start, end)


def test_generated_events_are_well_formed() -> None:
    sim = feed()
    start, end = START_US, START_US + 10 * US_PER_SECOND
    events = sim.generate(start, end)
    assert sim.generate(end, end) == []
    for instrument in WATCHLIST:
        times = [event.ts_us for event in events if event.instrument == instrument]
        assert times == sorted(times)
        assert all(start < ts <= end for ts in times)
    for event in events:
        if isinstance(event, QuoteReceived):
            assert event.bid < event.ask
            assert event.bid_size > 0 and event.ask_size > 0
        else:
            assert event.size > 0


def test_tick_rate_scales_the_number_of_ticks() -> None:
    window = (START_US, START_US + 60 * US_PER_SECOND)
    slow = len(feed(tick_rate=1.0).generate(*window))
    fast = len(feed(tick_rate=5.0).generate(*window))
    assert fast > 3 * slow


@pytest.mark.parametrize("instrument", ["SIM:EURUSD", "SIM:USDJPY", "SIM:BTCUSD", "SIM:SPY"])
def test_live_prices_continue_the_history_path(instrument: str) -> None:
    live = feed(instruments=[instrument])
    spec = instrument_spec(instrument.split(":", 1)[1])
    start = START_US + 5 * HOUR_US + 17 * US_PER_SECOND
    history = live.history(instrument, start - start % US_PER_MINUTE, start + 6 * US_PER_MINUTE)
    bars = {
        row["ts"]: row
        for row in history.with_columns(pl.col("ts").dt.epoch("us")).iter_rows(named=True)
    }
    # Bid-sourced history is the mid path minus half the spread.
    shift = spec.spread / 2 if live.price_source(instrument) == "bid" else 0.0
    tolerance = 1.5 * spec.spread + 2 * spec.tick_size  # 5 sigma of the noise plus rounding

    quotes = []
    position = start
    while position < start + 5 * US_PER_MINUTE:
        quotes.extend(
            event
            for event in live.generate(position, position + US_PER_SECOND)
            if isinstance(event, QuoteReceived)
        )
        position += US_PER_SECOND
    assert len(quotes) > 50
    for quote in quotes:
        bar = bars[quote.ts_us - quote.ts_us % US_PER_MINUTE]
        mid = (quote.bid + quote.ask) / 2 - shift
        assert bar["low"] - tolerance <= mid <= bar["high"] + tolerance, (quote, bar)
