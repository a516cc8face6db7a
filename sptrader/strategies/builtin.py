"""The built-in strategies. Each reads the indicator columns it asks for (see
``sptrader.indicators``) and compares each bar with the one before it, in polars: no loop
per bar. A signal is on a closed bar; its ``ts`` is that bar's open time.

Strength is 0..1 and says how far past the trigger the bar went, so a scanner can rank
signals; its scale is described per strategy.

All of them are ``stacked``: every window op (shift, rolling sums, row numbers) runs
``.over("instrument")``, so one call evaluates a frame of many instruments stacked
(sorted by instrument, ts) and gives, per instrument, exactly what a call on that
instrument's bars alone gives. A frame of one instrument (a backtest, a scanner's
fallback) skips the ``.over``: it is a group-by that costs 4-5x the window op itself,
and with one group the values are the same (``_each``, ``_evaluates``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from contextvars import ContextVar
from typing import Literal

import msgspec
import polars as pl

from sptrader.strategies.base import SIGNAL_SCHEMA, Strategy, empty_signals
from sptrader.strategies.registry import register


class _Params(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    pass


# Whether the frame being evaluated may hold several instruments (set per call by
# ``_evaluates``; outside an evaluate the safe answer, yes).
_STACKED: ContextVar[bool] = ContextVar("stacked", default=True)


def _each(expr: pl.Expr) -> pl.Expr:
    """``expr`` computed within each instrument's rows (a window op must never reach
    into the instrument stacked before it); as it is when the frame holds one."""
    return expr.over("instrument") if _STACKED.get() else expr


def _one_instrument(bars: pl.DataFrame) -> bool:
    """True when every row names the same instrument (no nulls): a string compare with
    a scalar, ~3 ms per 1M rows where ``n_unique`` takes 10-20."""
    if "instrument" not in bars.columns or bars.height == 0:
        return False
    names = bars["instrument"]
    return names.null_count() == 0 and bool((names == names[0]).all())


_Evaluate = Callable[[Strategy, pl.DataFrame], pl.DataFrame]


def _evaluates(method: _Evaluate) -> _Evaluate:
    """Wrap a built-in ``evaluate`` so that the expressions it builds group by
    instrument (``_each``) only when ``bars`` holds more than one."""

    @functools.wraps(method)
    def evaluate(self: Strategy, bars: pl.DataFrame) -> pl.DataFrame:
        token = _STACKED.set(not _one_instrument(bars))
        try:
            return method(self, bars)
        finally:
            _STACKED.reset(token)

    return evaluate


# Build the signal columns only on the rows that matter (see ``_signals``); tests turn
# it off to check that the result is the same as computing them on every row.
_COMPACT = True


def _signals(bars: pl.DataFrame, rows: list[tuple[pl.Expr, str, pl.Expr, pl.Expr]]) -> pl.DataFrame:
    """One frame of signals from (condition, side, strength, reason) rules; stop and
    target columns, when the rules set them, come from ``_stop``/``_target``.

    The conditions are computed on every row. Strength, reason, stop and target only on
    the rows where a rule fires and the row before each (a frame of a few % of the
    bars: formatting a reason on every bar would dominate the evaluation), so they may
    look back one bar (``_prev``) and no further: with the bar before each firing row
    kept, ``shift(1)`` there reads the same bar as on the whole frame (and an
    instrument's first bar still has none before it)."""
    if not rows:
        return empty_signals()
    has_stop, has_target = "_stop" in bars.columns, "_target" in bars.columns
    columns = [
        (
            strength.clip(0.0, 1.0).cast(pl.Float64).alias("strength"),
            reason.alias("reason"),
            (pl.col("_stop") if has_stop else pl.lit(None)).cast(pl.Float64).alias("stop"),
            (pl.col("_target") if has_target else pl.lit(None)).cast(pl.Float64).alias("target"),
        )
        for _, _, strength, reason in rows
    ]
    fires = [f"_fires{index}" for index in range(len(rows))]
    frame = bars
    if _COMPACT:
        needed = {"instrument", "ts"}
        for expressions in columns:
            for expr in expressions:
                needed.update(expr.meta.root_names())
        frame = bars.select(
            *[c for c in bars.columns if c in needed],
            *[
                condition.fill_null(False).alias(name)
                for (condition, *_), name in zip(rows, fires, strict=True)
            ],
        )
        any_fires = pl.any_horizontal(fires)
        # One chunk: polars 2.1's pl.format panics on some multi-chunk string inputs.
        frame = frame.filter(any_fires | any_fires.shift(-1, fill_value=False)).rechunk()
    else:
        frame = bars.with_columns(
            condition.fill_null(False).alias(name)
            for (condition, *_), name in zip(rows, fires, strict=True)
        )
    parts = [
        frame.select(
            pl.col(name).alias("_fires"),
            pl.col("instrument"),
            pl.col("ts"),
            pl.lit(side).alias("side"),
            *expressions,
        )
        .filter(pl.col("_fires"))
        .drop("_fires")
        for (_, side, _, _), expressions, name in zip(rows, columns, fires, strict=True)
    ]
    return _in_order(pl.concat(parts).cast(SIGNAL_SCHEMA))


def _in_order(signals: pl.DataFrame) -> pl.DataFrame:
    return signals.sort("instrument", "ts", maintain_order=True)


def _prev(value: pl.Expr) -> pl.Expr:
    """The value on the instrument's bar before (null on its first bar)."""
    return _each(value.shift(1))


def _previous(value: pl.Expr | float) -> pl.Expr | float:
    # A level (a number) is the same on the bar before; shifting a literal gives null.
    return _prev(value) if isinstance(value, pl.Expr) else value


def _crossed_above(a: pl.Expr, b: pl.Expr | float) -> pl.Expr:
    return (a > b) & (_prev(a) <= _previous(b))


def _crossed_below(a: pl.Expr, b: pl.Expr | float) -> pl.Expr:
    return (a < b) & (_prev(a) >= _previous(b))


@register
class SmaCross(Strategy):
    """Long when SMA(fast) of closes crosses above SMA(slow); exit when it crosses back
    below (with ``short``: go short there instead). Strength: the gap between the two
    averages as a share of 1% of the price."""

    name = "sma_cross"
    stacked = True

    class Params(_Params):
        fast: int = 10
        slow: int = 30
        short: bool = False

    def indicators(self) -> list[str]:
        return [f"sma{self.params.fast}", f"sma{self.params.slow}"]

    def warmup_bars(self) -> int:
        return self.params.slow + 1

    @_evaluates
    def evaluate(self, bars: pl.DataFrame) -> pl.DataFrame:
        fast, slow = self.params.fast, self.params.slow
        a, b = pl.col(f"sma{fast}"), pl.col(f"sma{slow}")
        strength = (a - b).abs() / (pl.col("close") * 0.01)
        up = pl.format("SMA({}) crossed above SMA({})", pl.lit(fast), pl.lit(slow))
        down = pl.format("SMA({}) crossed below SMA({})", pl.lit(fast), pl.lit(slow))
        return _signals(
            bars,
            [
                (_crossed_above(a, b), "buy", strength, up),
                (_crossed_below(a, b), "sell" if self.params.short else "exit", strength, down),
            ],
        )


@register
class RsiReversion(Strategy):
    """Mean reversion on RSI (Wilder): long when RSI climbs back above ``oversold``,
    exit when it reaches ``exit_level``; with ``short``, short when it falls back below
    ``overbought`` (exit when it falls to ``exit_level``, also an ``exit``). Strength:
    how deep the RSI had gone past the level on the previous bar, over 20 points."""

    name = "rsi_reversion"
    stacked = True

    class Params(_Params):
        period: int = 14
        oversold: float = 30.0
        overbought: float = 70.0
        exit_level: float = 50.0
        short: bool = False

    def indicators(self) -> list[str]:
        return [f"rsi{self.params.period}"]

    def warmup_bars(self) -> int:
        return self.params.period + 1

    @_evaluates
    def evaluate(self, bars: pl.DataFrame) -> pl.DataFrame:
        p = self.params
        rsi = pl.col(f"rsi{p.period}")
        low, high, mid = p.oversold, p.overbought, p.exit_level
        rules = [
            (
                _crossed_above(rsi, low),
                "buy",
                (low - _prev(rsi)) / 20 + 0.5,
                pl.format(
                    "RSI({}) back above {} from {}", pl.lit(p.period), low, _prev(rsi).round(1)
                ),
            ),
            (
                _crossed_above(rsi, mid),
                "exit",
                pl.lit(0.5),
                pl.format("RSI({}) reached {}", pl.lit(p.period), pl.lit(mid)),
            ),
        ]
        if p.short:
            rules += [
                (
                    _crossed_below(rsi, high),
                    "sell",
                    (_prev(rsi) - high) / 20 + 0.5,
                    pl.format(
                        "RSI({}) back below {} from {}",
                        pl.lit(p.period),
                        high,
                        _prev(rsi).round(1),
                    ),
                ),
                (
                    _crossed_below(rsi, mid),
                    "exit",
                    pl.lit(0.5),
                    pl.format("RSI({}) fell to {}", pl.lit(p.period), pl.lit(mid)),
                ),
            ]
        return _signals(bars, rules)


@register
class Breakout(Strategy):
    """Swing breakout: long when the close breaks above the highest high of the
    ``period`` bars before it (Donchian), with a stop ``stop_atr`` ATRs below the close
    and a target ``target_r`` times that risk above; with ``short``, the mirror image
    below the lowest low. Strength: how far past the channel, in ATRs."""

    name = "breakout"
    stacked = True

    class Params(_Params):
        period: int = 20
        atr: int = 14
        stop_atr: float = 2.0
        target_r: float = 2.0
        short: bool = False

    def indicators(self) -> list[str]:
        return [f"donchian{self.params.period}", f"atr{self.params.atr}"]

    def warmup_bars(self) -> int:
        return max(self.params.period + 1, self.params.atr + 1)

    @_evaluates
    def evaluate(self, bars: pl.DataFrame) -> pl.DataFrame:
        p = self.params
        upper = _prev(pl.col(f"donchian{p.period}_upper"))
        lower = _prev(pl.col(f"donchian{p.period}_lower"))
        atr = pl.col(f"atr{p.atr}")
        close = pl.col("close")
        risk = atr * p.stop_atr
        longs = bars.with_columns(
            (close - risk).alias("_stop"), (close + risk * p.target_r).alias("_target")
        )
        signals = [
            _signals(
                longs,
                [
                    (
                        close > upper,
                        "buy",
                        (close - upper) / atr,
                        pl.format(
                            "close {} broke the {}-bar high {}", close, pl.lit(p.period), upper
                        ),
                    )
                ],
            )
        ]
        if p.short:
            shorts = bars.with_columns(
                (close + risk).alias("_stop"), (close - risk * p.target_r).alias("_target")
            )
            signals.append(
                _signals(
                    shorts,
                    [
                        (
                            close < lower,
                            "sell",
                            (lower - close) / atr,
                            pl.format(
                                "close {} broke the {}-bar low {}", close, pl.lit(p.period), lower
                            ),
                        )
                    ],
                )
            )
        return _in_order(pl.concat(signals))


@register
class Channel(Strategy):
    """Channel touches: long when the low touches the channel's lower edge and the bar
    closes back inside, exit when the high touches the upper edge. The channel is the
    Donchian channel of the ``period`` bars before, or (``kind = "regression"``) the
    least-squares line of the last ``period`` closes ± ``deviations`` standard deviations
    of their residuals. Strength: how far inside the close came back, over the width."""

    name = "channel"
    stacked = True

    class Params(_Params):
        period: int = 20
        kind: Literal["donchian", "regression"] = "donchian"
        deviations: float = 2.0

    def indicators(self) -> list[str]:
        return [f"donchian{self.params.period}"] if self.params.kind == "donchian" else []

    def warmup_bars(self) -> int:
        return self.params.period + 1

    @_evaluates
    def evaluate(self, bars: pl.DataFrame) -> pl.DataFrame:
        p = self.params
        if p.kind == "donchian":
            bars = bars.with_columns(
                _prev(pl.col(f"donchian{p.period}_upper")).alias("_upper"),
                _prev(pl.col(f"donchian{p.period}_lower")).alias("_lower"),
            )
        else:
            bars = _regression_channel(bars, p.period, p.deviations)
        upper, lower = pl.col("_upper"), pl.col("_lower")
        width = upper - lower
        return _signals(
            bars,
            [
                (
                    (pl.col("low") <= lower) & (pl.col("close") > lower),
                    "buy",
                    (pl.col("close") - lower) / width,
                    pl.format(
                        "low touched the lower {} channel at {}", pl.lit(p.kind), lower.round(6)
                    ),
                ),
                (
                    (pl.col("high") >= upper) & (pl.col("close") < upper),
                    "exit",
                    (upper - pl.col("close")) / width,
                    pl.format(
                        "high touched the upper {} channel at {}", pl.lit(p.kind), upper.round(6)
                    ),
                ),
            ],
        )


@register
class Swing(Strategy):
    """Swing structure, as the crypto tracker traded it: a swing low is a bar whose low
    no bar within ``pivot`` bars either side undercuts, known only ``pivot`` bars later
    (no lookahead: the signal is on the bar that confirms it). Long when a newly
    confirmed swing low is above the one before (a higher low) while the close is above
    its EMA(``trend``); stop at that low, target ``target_r`` times the risk above. With
    ``short``, the mirror image: a lower high below the EMA. Strength: how far the new
    swing point cleared the one before, in ATRs (1 at one ATR or more)."""

    name = "swing"
    stacked = True

    class Params(_Params):
        pivot: int = 3
        trend: int = 50
        atr: int = 14
        target_r: float = 2.0
        short: bool = False

    def indicators(self) -> list[str]:
        return [f"ema{self.params.trend}", f"atr{self.params.atr}"]

    def warmup_bars(self) -> int:
        p = self.params
        return max(p.trend, 2 * p.pivot + 1, p.atr + 1)

    @_evaluates
    def evaluate(self, bars: pl.DataFrame) -> pl.DataFrame:
        p = self.params
        window = 2 * p.pivot + 1
        ema, atr, close = pl.col(f"ema{p.trend}"), pl.col(f"atr{p.atr}"), pl.col("close")
        low_at = _each(pl.col("low").shift(p.pivot))
        high_at = _each(pl.col("high").shift(p.pivot))
        bars = bars.with_columns(
            pl.when(low_at == _each(pl.col("low").rolling_min(window)))
            .then(low_at)
            .alias("_swing_low"),
            pl.when(high_at == _each(pl.col("high").rolling_max(window)))
            .then(high_at)
            .alias("_swing_high"),
        ).with_columns(
            # The swing point confirmed before this bar's (null before the second).
            _each(pl.col("_swing_low").forward_fill().shift(1)).alias("_prior_low"),
            _each(pl.col("_swing_high").forward_fill().shift(1)).alias("_prior_high"),
        )
        new_low, prior_low = pl.col("_swing_low"), pl.col("_prior_low")
        new_high, prior_high = pl.col("_swing_high"), pl.col("_prior_high")
        longs = bars.with_columns(
            new_low.alias("_stop"), (close + (close - new_low) * p.target_r).alias("_target")
        )
        signals = [
            _signals(
                longs,
                [
                    (
                        (new_low > prior_low) & (close > ema),
                        "buy",
                        (new_low - prior_low) / atr,
                        pl.format("higher low {} above {}, close over EMA", new_low, prior_low),
                    )
                ],
            )
        ]
        if p.short:
            shorts = bars.with_columns(
                new_high.alias("_stop"),
                (close - (new_high - close) * p.target_r).alias("_target"),
            )
            signals.append(
                _signals(
                    shorts,
                    [
                        (
                            (new_high < prior_high) & (close < ema),
                            "sell",
                            (prior_high - new_high) / atr,
                            pl.format(
                                "lower high {} below {}, close under EMA", new_high, prior_high
                            ),
                        )
                    ],
                )
            )
        return _in_order(pl.concat(signals))


def _regression_channel(bars: pl.DataFrame, period: int, deviations: float) -> pl.DataFrame:
    """``bars`` with ``_upper``/``_lower``: the least-squares line through the ``period``
    closes before each bar, at that bar, ± ``deviations`` residual standard deviations;
    from rolling sums (vectorised; x counts each instrument's bars from 0)."""
    n = float(period)
    bars = bars.with_columns(
        _each(pl.int_range(pl.len())).cast(pl.Float64).alias("_x"),
        _prev(pl.col("close")).alias("_y"),
    )
    x, y = pl.col("_x"), pl.col("_y")
    bars = bars.with_columns(
        _each((x - 1).rolling_sum(period)).alias("_xs"),
        _each(y.rolling_sum(period)).alias("_ys"),
        _each(((x - 1) * y).rolling_sum(period)).alias("_xy"),
        _each(((x - 1) ** 2).rolling_sum(period)).alias("_xx"),
        _each((y**2).rolling_sum(period)).alias("_yy"),
    )
    xs, ys, xy, xx, yy = (pl.col(name) for name in ("_xs", "_ys", "_xy", "_xx", "_yy"))
    slope = (n * xy - xs * ys) / (n * xx - xs**2)
    intercept = (ys - slope * xs) / n
    sse = (
        yy
        + n * intercept**2
        + slope**2 * xx
        - 2 * intercept * ys
        - 2 * slope * xy
        + 2 * intercept * slope * xs
    )
    spread = (sse.clip(lower_bound=0) / n).sqrt() * deviations
    line = intercept + slope * x
    return bars.with_columns((line + spread).alias("_upper"), (line - spread).alias("_lower"))


@register
class Dca(Strategy):
    """Dollar-cost averaging: a buy on the first bar of every ``every`` period
    (strength 0.5 = one unit), and a bigger one (strength 1.0 = ``dip_multiplier``
    units, capped) when the close is below its SMA(``ma``) by at least ``dip_pct`` %."""

    name = "dca"
    stacked = True

    class Params(_Params):
        every: str = "1d"
        ma: int = 200
        dip_pct: float = 0.0
        dip_multiplier: float = 2.0

    def indicators(self) -> list[str]:
        return [f"sma{self.params.ma}"]

    @_evaluates
    def evaluate(self, bars: pl.DataFrame) -> pl.DataFrame:
        from sptrader.models import US_PER_MINUTE, timeframe_minutes

        p = self.params
        width = timeframe_minutes(p.every) * US_PER_MINUTE
        bucket = pl.col("ts").dt.epoch("us") // width
        first_of_period = (bucket != _prev(bucket)).fill_null(True)
        sma = pl.col(f"sma{p.ma}")
        below = (sma - pl.col("close")) / sma * 100
        dip = below >= max(p.dip_pct, 1e-12)
        return _signals(
            bars,
            [
                (
                    first_of_period & ~dip.fill_null(False),
                    "buy",
                    pl.lit(0.5),
                    pl.format("scheduled buy ({})", pl.lit(p.every)),
                ),
                (
                    first_of_period & dip,
                    "buy",
                    pl.lit(min(1.0, 0.5 * p.dip_multiplier)),
                    pl.format(
                        "scheduled buy on a dip: {}% below SMA({})", below.round(2), pl.lit(p.ma)
                    ),
                ),
            ],
        )
