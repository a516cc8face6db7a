"""Informative bars: a higher timeframe rolled up from the base bars and aligned without
lookahead, the same stacked and alone, in a backtest and in a scanner run."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_scanners import make_engine, make_scanner, scanner_table, step_rows, store_bars

from sptrader.backtest import run_backtest
from sptrader.errors import UsageError
from sptrader.models import US_PER_MINUTE
from sptrader.strategies import registry
from sptrader.strategies.base import Strategy
from sptrader.strategies.informative import (
    add_informative,
    informative_warmup,
    parse_informative,
    with_informative,
)

__all__ = ["make_engine"]  # the fixture, imported for the scanner tests

T9 = 1_767_603_600_000_000  # 2026-01-05T09:00:00Z


def minute_bars(count: int, start: int = T9, seed: int = 1, instrument: str = "SIM:A"):
    rng = np.random.default_rng(seed)
    close = 100 + np.cumsum(rng.normal(0, 0.2, count))
    open_ = np.concatenate(([100.0], close[:-1]))
    return pl.DataFrame(
        {
            "instrument": [instrument] * count,
            "ts": pl.Series(start + np.arange(count, dtype=np.int64) * US_PER_MINUTE).cast(
                pl.Datetime("us")
            ),
            "open": open_,
            "high": np.maximum(open_, close) + rng.random(count),
            "low": np.minimum(open_, close) - rng.random(count),
            "close": close,
            "volume": rng.random(count) * 10,
            "trades": rng.integers(1, 9, count),
        }
    )


def hourly(bars: pl.DataFrame, items: list[str]) -> pl.DataFrame:
    return add_informative(bars, parse_informative({"1h": items}, "1m"), "1m")


def test_an_hour_is_seen_on_the_bar_that_closes_it_and_not_before() -> None:
    bars = minute_bars(180)  # 09:00 to 11:59
    out = hourly(bars, ["open", "high", "low", "close", "volume"])
    closes = bars["close"].to_list()
    seen = out["1h_close"].to_list()
    assert seen[:59] == [None] * 59  # 09:00 .. 09:58: no hour has closed yet
    assert seen[59:119] == [closes[59]] * 60  # 09:59 (closing 10:00) .. 10:58
    assert seen[119:179] == [closes[119]] * 60
    assert seen[179] == closes[179]
    first = bars.slice(0, 60)
    assert out["1h_open"][59] == first["open"][0]
    assert out["1h_high"][59] == first["high"].max()
    assert out["1h_low"][100] == first["low"].min()
    assert out["1h_volume"][59] == pytest.approx(first["volume"].sum())
    assert out.columns[: bars.width] == bars.columns and out.height == bars.height


def test_a_frame_starting_inside_an_hour_drops_that_partial_hour() -> None:
    bars = minute_bars(150, start=T9 + 30 * US_PER_MINUTE)  # 09:30 to 11:59
    out = hourly(bars, ["high"])
    # The 09:00 hour would have only its last 30 minutes: it is never shown.
    assert out["1h_high"].to_list()[:89] == [None] * 89  # until 10:59
    assert out["1h_high"][89] == bars.slice(30, 60)["high"].max()


def test_higher_bar_indicators_are_computed_on_the_higher_bars() -> None:
    bars = minute_bars(600)
    out = hourly(bars, ["sma3", "close"])
    hour_closes = [bars["close"][i] for i in range(59, 600, 60)]
    # On 11:59 (closing 12:00) the 9, 10 and 11 hours are in: their mean.
    assert out["1h_sma3"][179] == pytest.approx(sum(hour_closes[:3]) / 3)
    assert out["1h_sma3"][178] is None
    assert out["1h_sma3"][599] == pytest.approx(sum(hour_closes[-3:]) / 3)


@given(cut=st.integers(1, 599), items=st.sampled_from([["close"], ["high", "ema5"], ["rsi3"]]))
@settings(max_examples=40, deadline=None)
def test_removing_later_bars_never_changes_an_earlier_value(cut: int, items: list[str]) -> None:
    bars = minute_bars(600, seed=4)
    full = hourly(bars, items)
    truncated = hourly(bars.head(cut), items)
    assert truncated.equals(full.head(cut))


def test_a_missing_bar_never_brings_an_hour_forward() -> None:
    bars = minute_bars(180)
    holed = bars.filter(pl.int_range(pl.len()) != 119)  # 10:59 missing
    out = hourly(holed, ["close"])
    at_11 = out.filter(pl.col("ts") == pl.lit(T9 + 120 * US_PER_MINUTE).cast(pl.Datetime("us")))
    # The 10:00 hour shows up on the next stored bar (11:00), with what was stored of it.
    assert at_11["1h_close"][0] == bars["close"][118]
    before = out.filter(pl.col("ts") < pl.lit(T9 + 119 * US_PER_MINUTE).cast(pl.Datetime("us")))
    assert before["1h_close"].drop_nulls().unique().to_list() == [bars["close"][59]]


def test_stacked_instruments_get_what_they_get_alone() -> None:
    a, b = minute_bars(300, seed=1), minute_bars(240, seed=2, instrument="SIM:B")
    b = b.with_columns(pl.col("ts") + pl.duration(minutes=17))  # starts inside an hour
    info = parse_informative({"1h": ["close", "sma2"], "15m": ["high"]}, "1m")
    stacked = add_informative(pl.concat([a, b]), info, "1m", over="instrument")
    for alone in (a, b):
        name = alone["instrument"][0]
        assert stacked.filter(pl.col("instrument") == name).equals(
            add_informative(alone, info, "1m")
        )


@pytest.mark.parametrize(
    ("asked", "message"),
    [
        ({"1m": ["close"]}, "must be a whole multiple of the 5m bars"),
        ({"7m": ["close"]}, "must be a whole multiple of the 5m bars"),
        ({"1h": "close"}, "needs a list of fields or indicators"),
        ({"1h": ["closing"]}, "'closing' is neither a bar field"),
        (["1h"], "must return a dict"),
    ],
)
def test_mistakes_name_what_is_wrong(asked, message: str) -> None:
    with pytest.raises(UsageError) as raised:
        parse_informative(asked, "5m")
    assert message in str(raised.value)


@registry.register
class HourTrend(Strategy):
    """Long on each 1m bar above the last closed hour's close (and sma2 of hours)."""

    name = "test_hour_trend"
    stacked = True

    def informative(self) -> dict[str, list[str]]:
        return {"1h": ["close", "sma2"]}

    def evaluate(self, bars: pl.DataFrame) -> pl.DataFrame:
        above = pl.col("close") > pl.col("1h_close")
        return bars.filter(above.fill_null(False)).select(
            "instrument",
            "ts",
            pl.lit("buy").alias("side"),
            pl.lit(0.5).alias("strength"),
            pl.format("above the hour's {}", pl.col("1h_close")).alias("reason"),
            pl.lit(None, pl.Float64).alias("stop"),
            pl.lit(None, pl.Float64).alias("target"),
        )


class HourTrendEach(HourTrend):
    name = "test_hour_trend_each"
    stacked = False


registry.register(HourTrendEach)


def test_a_backtest_gives_the_strategy_its_hours_and_reads_their_warm_up() -> None:
    strategy = HourTrend()
    # sma2 of hours looks back 1 hour, + 2 (a partial first hour, the hour not closed).
    assert informative_warmup(strategy, "1m") == 3 * 60
    assert informative_warmup(registry.build("sma_cross", {}), "1m") == 0
    bars = minute_bars(24 * 60, seed=8)
    start = T9 + 4 * 60 * US_PER_MINUTE
    result = run_backtest(strategy, bars, instrument="SIM:A", start_us=start)
    assert result.summary["signals"] > 0
    # The signals are those of the strategy on the enriched bars, from the start on.
    expected = strategy.evaluate(with_informative(strategy, bars, "1m"))
    traded = expected.filter(pl.col("ts") >= pl.lit(start).cast(pl.Datetime("us")))
    assert result.summary["signals"] == traded.height


def test_a_scanner_run_adds_the_informative_step(make_engine) -> None:
    instruments = ["SIM:BTCUSD", "SIM:ETHUSD"]
    engine = make_engine(
        scanner_table("stacked", "test_hour_trend", instruments=instruments, bars=300),
        scanner_table("each", "test_hour_trend_each", instruments=instruments, bars=300),
    )
    for name in instruments:
        store_bars(engine, name, minutes=300)
    stacked = make_scanner(engine, 0).scan("manual")
    each = make_scanner(engine, 1).scan("manual")
    assert stacked.status == each.status == "ok"
    # Added once for the run's instruments together, as the indicators are.
    for result in (stacked, each):
        steps = step_rows(engine, result.run_id)
        assert [row for row in steps if row[1] == "informative"] == [(None, "informative")]
    # store_bars closes every bar at 101 above its open of 100: no bar is above the hour,
    # so neither raises a signal, and both agree.
    assert stacked.signals == each.signals == []
