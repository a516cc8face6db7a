"""Built-in strategies on crafted bars: each must signal where its rule fires, and only
there."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec
import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from sptrader.indicators import add_indicators
from sptrader.models import US_PER_MINUTE
from sptrader.strategies.base import SIGNAL_SCHEMA
from sptrader.strategies.builtin import Breakout, Channel, Dca, RsiReversion, SmaCross, Swing

T0 = int(datetime(2026, 11, 2, tzinfo=UTC).timestamp() * 1_000_000)


def bars_of(closes: list[float], *, spread: float = 0.5, minutes: int = 1) -> pl.DataFrame:
    """Bars with these closes; each opens at the previous close, highs and lows a
    ``spread`` around the body."""
    opens = [closes[0], *closes[:-1]]
    return pl.DataFrame(
        {
            "instrument": ["SIM:TEST"] * len(closes),
            "ts": [T0 + i * minutes * US_PER_MINUTE for i in range(len(closes))],
            "open": opens,
            "high": [max(o, c) + spread for o, c in zip(opens, closes, strict=True)],
            "low": [min(o, c) - spread for o, c in zip(opens, closes, strict=True)],
            "close": closes,
            "volume": [1.0] * len(closes),
            "trades": [1] * len(closes),
        }
    ).with_columns(pl.col("ts").cast(pl.Datetime("us")))


def run(strategy, bars: pl.DataFrame) -> pl.DataFrame:
    signals = strategy.evaluate(add_indicators(bars, strategy.indicators()))
    assert dict(signals.schema) == SIGNAL_SCHEMA
    assert signals["strength"].is_between(0, 1).all()
    return signals


def at(index: int) -> datetime:
    return datetime.fromtimestamp((T0 + index * US_PER_MINUTE) / 1e6, UTC).replace(tzinfo=None)


def test_sma_cross_buys_on_the_cross_up_and_exits_on_the_cross_down() -> None:
    closes = [100.0] * 10 + [101, 102, 103, 104, 105] + [104, 102, 100, 98, 96, 94]
    signals = run(SmaCross(SmaCross.Params(fast=2, slow=5)), bars_of(closes))
    assert signals.select("ts", "side").rows() == [(at(10), "buy"), (at(16), "exit")]
    assert signals["reason"][0] == "SMA(2) crossed above SMA(5)"


def test_sma_cross_short_reverses_instead_of_exiting() -> None:
    closes = [100.0] * 10 + [101, 102, 103, 104, 105] + [104, 102, 100, 98, 96, 94]
    signals = run(
        SmaCross(SmaCross.from_config({"fast": 2, "slow": 5, "short": True}).params),
        bars_of(closes),
    )
    assert signals["side"].to_list() == ["buy", "sell"]


def test_sma_cross_is_quiet_on_a_steady_trend_and_during_warm_up() -> None:
    assert run(
        SmaCross(SmaCross.Params(fast=2, slow=5)), bars_of([100.0 + i for i in range(40)])
    ).is_empty()
    assert run(SmaCross(), bars_of([100.0, 101.0, 99.0])).is_empty()


def test_params_are_typed_and_unknown_ones_rejected() -> None:
    with pytest.raises(msgspec.ValidationError):
        SmaCross.from_config({"fast": "ten"})
    with pytest.raises(msgspec.ValidationError):
        SmaCross.from_config({"fastest": 3})


def test_rsi_reversion_buys_when_rsi_comes_back_from_oversold_and_exits_at_50() -> None:
    closes = [100.0 + (i % 2) * 0.1 for i in range(20)]
    closes += [closes[-1] - 2 * (i + 1) for i in range(8)]  # a slide: RSI deep below 30
    closes += [closes[-1] + 1.5 * (i + 1) for i in range(12)]  # the rebound
    signals = run(RsiReversion(RsiReversion.Params(period=5)), bars_of(closes))
    # Before the slide RSI wobbles around 50 (exits only, nothing to exit); the only
    # buy is the rebound out of the slide, and the exit follows it at 50.
    assert signals.filter(pl.col("side") == "buy")["ts"].to_list() == [at(29)]
    after = signals.filter(pl.col("ts") >= at(28))
    assert after.select("ts", "side").rows() == [(at(29), "buy"), (at(31), "exit")]
    assert after["reason"][0] == "RSI(5) back above 30.0 from 18.7"


def test_rsi_reversion_is_quiet_without_an_extreme() -> None:
    closes = [100.0 + (i % 3) * 0.2 for i in range(60)]
    assert run(RsiReversion(), bars_of(closes)).filter(pl.col("side") == "buy").is_empty()


def test_breakout_buys_above_the_channel_with_an_atr_stop_and_target() -> None:
    closes = [100.0 + (i % 2) for i in range(30)] + [104.0]
    signals = run(Breakout(Breakout.Params(period=10, atr=5)), bars_of(closes))
    [signal] = signals.rows(named=True)
    assert signal["side"] == "buy" and signal["ts"] == at(30)
    assert signal["stop"] < 104.0 < signal["target"]
    assert signal["target"] - 104.0 == pytest.approx(2 * (104.0 - signal["stop"]))


def test_breakout_short_and_no_signal_inside_the_channel() -> None:
    inside = [100.0 + (i % 2) for i in range(40)]
    assert run(Breakout(Breakout.Params(period=10, atr=5, short=True)), bars_of(inside)).is_empty()
    down = [*inside, 96.0]
    [signal] = run(Breakout(Breakout.Params(period=10, atr=5, short=True)), bars_of(down)).rows(
        named=True
    )
    assert signal["side"] == "sell" and signal["stop"] > 96.0 > signal["target"]


def test_donchian_channel_touch_of_the_lower_edge_buys() -> None:
    closes = [100.0 + (i % 5) for i in range(30)]
    bars = bars_of(closes, spread=0.0)
    # Bar 30 dips to the channel's low and closes back inside.
    bars = pl.concat(
        [
            bars,
            bars_of([101.0], spread=0.0).with_columns(
                pl.lit(T0 + 30 * US_PER_MINUTE).cast(pl.Datetime("us")).alias("ts"),
                pl.lit(99.0).alias("low"),
            ),
        ]
    )
    signals = run(Channel(Channel.Params(period=10)), bars)
    assert (at(30), "buy") in signals.select("ts", "side").rows()


def test_regression_channel_touches() -> None:
    # A rising trend with an alternating ±1 wiggle: the channel is the trend ± 2 sigma.
    closes = [100.0 + 0.5 * i + (1 if i % 2 else -1) for i in range(40)]
    bars = bars_of(closes, spread=0.05)
    strategy = Channel(Channel.Params(period=10, kind="regression", deviations=2.0))
    assert run(strategy, bars).is_empty()  # every bar stays inside
    dipped = bars.with_columns(
        pl.when(pl.int_range(pl.len()) == 35)
        .then(pl.col("low") - 5)
        .otherwise(pl.col("low"))
        .alias("low")
    )
    assert run(strategy, dipped).select("ts", "side").rows() == [(at(35), "buy")]


def test_dca_buys_every_period_and_more_on_a_dip() -> None:
    # Hourly bars over three days; day three trades far below its moving average.
    closes = [100.0] * 48 + [80.0] * 24
    bars = bars_of(closes, minutes=60)
    signals = run(Dca(Dca.Params(every="1d", ma=24, dip_pct=5.0)), bars)
    assert signals.select("ts", "strength").rows() == [
        (at(0), 0.5),
        (at(24 * 60), 0.5),
        (at(48 * 60), 1.0),
    ]
    assert "below SMA(24)" in signals["reason"][2]


# --- several instruments stacked ---------------------------------------------------------


def zigzag(count: int, drift: float) -> list[float]:
    """A trend of ``drift`` a bar with a pullback every 10 bars: a triangle wave of
    amplitude 1, so each swing low (or high) is ``10 * drift`` past the one before."""
    return [100.0 + drift * i + abs((i % 10) - 5) / 5 for i in range(count)]


def test_swing_buys_each_higher_low_once_confirmed_in_an_uptrend() -> None:
    bars = bars_of(zigzag(120, 0.1), spread=0.0)
    strategy = Swing(Swing.Params(pivot=3, trend=20, atr=5))
    signals = run(strategy, bars)
    assert signals["side"].unique().to_list() == ["buy"]
    lows = bars["low"].to_list()
    for signal in signals.rows(named=True):
        index = int((signal["ts"] - at(0)).total_seconds() // 60)
        swing = index - 3  # confirmed three bars after the swing low
        assert lows[swing] == min(lows[swing - 3 : swing + 4])
        assert signal["stop"] == pytest.approx(lows[swing])
        close = bars["close"][index]
        assert signal["target"] == pytest.approx(close + 2 * (close - lows[swing]))
    # Every swing low after the first and past the EMA's warm-up: bars 25, 35, ... 115.
    assert [int((ts - at(0)).total_seconds() // 60) for ts in signals["ts"]] == list(
        range(28, 120, 10)
    )
    # No lookahead: each signal is there when its bar is the newest.
    for signal in signals.rows(named=True):
        index = int((signal["ts"] - at(0)).total_seconds() // 60)
        cut = run(strategy, bars.head(index + 1))
        assert cut.row(-1, named=True) == signal


def test_swing_sells_lower_highs_only_with_short_and_is_quiet_against_the_trend() -> None:
    down = bars_of([200 - c for c in zigzag(120, 0.1)], spread=0.0)
    assert run(Swing(Swing.Params(pivot=3, trend=20, atr=5)), down).is_empty()
    sells = run(Swing(Swing.Params(pivot=3, trend=20, atr=5, short=True)), down)
    assert sells.height > 5 and sells["side"].unique().to_list() == ["sell"]
    assert (sells["stop"] > sells["target"]).all()


def instrument_bars(name: str, closes: list[float], **options) -> pl.DataFrame:
    return bars_of(closes, **options).with_columns(pl.lit(name).alias("instrument"))


def signalling_instruments(minutes: int = 1) -> list[pl.DataFrame]:
    """Instruments whose bars make every built-in fire somewhere (the crafted series
    above, and random walks), of different lengths, one of one bar."""
    rng = np.random.default_rng(11)
    cross = [100.0] * 10 + [101, 102, 103, 104, 105] + [104, 102, 100, 98, 96, 94]
    slide = [100.0 + (i % 2) * 0.1 for i in range(20)]
    slide += [slide[-1] - 2 * (i + 1) for i in range(8)]
    slide += [slide[-1] + 1.5 * (i + 1) for i in range(12)]
    breakout = [100.0 + (i % 2) for i in range(30)] + [104.0, 96.0, 106.0]
    walks = [list(100 + np.cumsum(rng.normal(0, 1, n))) for n in (400, 250, 90)]
    series = [cross, slide, [100.0], breakout, *walks]
    return [
        instrument_bars(f"SIM:S{index}", closes, minutes=minutes)
        for index, closes in enumerate(series)
    ]


BUILTINS = [
    SmaCross(SmaCross.Params(fast=2, slow=5)),
    SmaCross(SmaCross.Params(fast=3, slow=8, short=True)),
    SmaCross(),
    RsiReversion(RsiReversion.Params(period=5)),
    RsiReversion(RsiReversion.Params(period=5, short=True, oversold=40, overbought=60)),
    Breakout(Breakout.Params(period=10, atr=5)),
    Breakout(Breakout.Params(period=10, atr=5, short=True)),
    Channel(Channel.Params(period=10)),
    Channel(Channel.Params(period=10, kind="regression", deviations=1.0)),
    Dca(Dca.Params(every="1h", ma=24, dip_pct=1.0)),
    Swing(Swing.Params(pivot=2, trend=10, atr=5, short=True)),
]


@pytest.mark.parametrize("strategy", BUILTINS, ids=lambda s: f"{s.name}:{s.params}")
def test_builtins_give_the_same_signals_stacked_as_per_instrument(strategy) -> None:
    assert strategy.stacked
    minutes = 7 if strategy.name == "dca" else 1
    parts = [
        add_indicators(part, strategy.indicators()) for part in signalling_instruments(minutes)
    ]
    alone = pl.concat([strategy.evaluate(part) for part in parts])
    # The scanner's path: indicators of all instruments at once, then one evaluate.
    bars = pl.concat(signalling_instruments(minutes))
    stacked = add_indicators(bars, strategy.indicators(), over="instrument")
    assert_frame_equal(stacked, pl.concat(parts), check_exact=True)
    together = strategy.evaluate(stacked)
    assert dict(together.schema) == SIGNAL_SCHEMA
    assert together["instrument"].n_unique() > 1  # it fires on several
    assert together["instrument"].null_count() == 0
    assert_frame_equal(together, alone, check_exact=True)
    # Nothing reaches across instruments: no signal on an instrument's first bar (it
    # has no bar before), except DCA's first-of-period buy.
    if strategy.name != "dca":
        firsts = pl.concat(part.head(1).select("instrument", "ts") for part in parts)
        assert together.join(firsts, on=["instrument", "ts"]).is_empty()


def test_user_strategies_are_per_instrument_by_default() -> None:
    from sptrader.strategies.base import Strategy

    assert Strategy.stacked is False


# --- compact signal columns and the one-instrument shortcut --------------------------------


def random_instruments(seed: int, minutes: int = 1) -> list[pl.DataFrame]:
    """Random walks of different lengths, scales and bar ranges (one of one bar, one
    shorter than most warm-ups), on which every built-in fires many times."""
    rng = np.random.default_rng(seed)
    parts = []
    for index, n in enumerate((600, 1, 35, 400)):
        scale = float(rng.choice([0.05, 1.0, 30.0]))
        closes = 100 * scale + np.cumsum(rng.normal(0, scale, n))
        opens = np.concatenate([closes[:1], closes[:-1]])
        parts.append(
            pl.DataFrame(
                {
                    "instrument": f"SIM:R{index}",
                    "ts": [T0 + i * minutes * US_PER_MINUTE for i in range(n)],
                    "open": opens,
                    "high": np.maximum(opens, closes) + rng.random(n) * scale,
                    "low": np.minimum(opens, closes) - rng.random(n) * scale,
                    "close": closes,
                    "volume": 1.0,
                    "trades": 1,
                }
            ).with_columns(pl.col("ts").cast(pl.Datetime("us")))
        )
    return parts


def evaluated(strategy, seed: int) -> tuple[list[pl.DataFrame], pl.DataFrame]:
    """Each random instrument's bars with the strategy's indicators, and all of them
    stacked (indicators computed over the stack, as the scanner does)."""
    minutes = 7 if strategy.name == "dca" else 1
    parts = random_instruments(seed, minutes)
    stacked = add_indicators(pl.concat(parts), strategy.indicators(), over="instrument")
    return [add_indicators(part, strategy.indicators()) for part in parts], stacked


SEEDS = [1, 2, 3, 4, 5]


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("strategy", BUILTINS, ids=lambda s: f"{s.name}:{s.params}")
def test_compact_signal_columns_are_those_computed_on_every_row(
    strategy, seed: int, monkeypatch
) -> None:
    from sptrader.strategies import builtin

    parts, stacked = evaluated(strategy, seed)
    frames = [stacked, *parts]
    compact = [strategy.evaluate(frame) for frame in frames]
    monkeypatch.setattr(builtin, "_COMPACT", False)
    for frame, expected in zip(frames, compact, strict=True):
        assert_frame_equal(strategy.evaluate(frame), expected, check_exact=True)
    assert compact[0].height > 10  # not vacuous: the rules fire


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("strategy", BUILTINS, ids=lambda s: f"{s.name}:{s.params}")
def test_one_instrument_frame_gives_what_it_gives_inside_a_stack(strategy, seed: int) -> None:
    from sptrader.strategies.builtin import _one_instrument

    parts, stacked = evaluated(strategy, seed)
    together = strategy.evaluate(stacked)
    assert together["instrument"].n_unique() > 1
    for part in parts:
        assert _one_instrument(part)  # the shortcut (no .over) is the one taken
        name = part["instrument"][0]
        inside = together.filter(pl.col("instrument") == name)
        assert_frame_equal(strategy.evaluate(part), inside, check_exact=True)


def test_one_instrument_needs_every_row_to_name_the_same_one() -> None:
    from sptrader.strategies.builtin import _one_instrument

    bars = bars_of([1.0, 2.0, 3.0])
    assert _one_instrument(bars)
    assert not _one_instrument(bars.head(0))
    assert not _one_instrument(bars.drop("instrument"))
    assert not _one_instrument(bars.with_columns(pl.Series("instrument", ["A", "A", "B"])))
    assert not _one_instrument(bars.with_columns(pl.Series("instrument", ["A", None, "A"])))
