"""Informative bars: higher timeframes of the same instrument on each base bar.

A strategy asks for them with :meth:`~sptrader.strategies.base.Strategy.informative`,
e.g. ``{"1h": ["close", "sma20"]}``, and ``evaluate`` then sees the columns ``1h_close``
and ``1h_sma20`` on every base bar. Items are bar fields (``open high low close volume
trades``) or indicator specs (:mod:`sptrader.indicators`; a spec with several outputs
gives them all, e.g. ``1h_bb20_upper``, ``1h_bb20_middle``, ``1h_bb20_lower``).

How they are built (:func:`add_informative`), from the base bars themselves, so a
backtest and a scanner get the same values without another read:

- The higher bars are rolled up from the base bars in the frame, in buckets aligned to
  the Unix epoch as the store's own rollups are (1h at each hour, 4h at 00:00, 04:00 …,
  1d at 00:00 UTC): open = the first open, high = max, low = min, close = the last close,
  volume and trades summed. An instrument's first bucket is dropped when the frame starts
  inside it (it would be a partial bar with the wrong open, high and low).
- The higher bars' indicators are computed on those higher bars.
- **No lookahead.** A higher bar's values become visible on the first base bar whose
  close is at or after the higher bar's close: the 10:00 1h bar (10:00-11:00) is first
  seen on the 1m bar 10:59 (closing 11:00), and base bars before it see the 09:00 one.
  A missing base bar never brings a bucket forward: the bucket shows up on the first
  stored bar at or after that point. So cutting off later base bars never changes an
  earlier row's informative values (``sptrader backtest --check-bias`` checks it).
- Before a frame's first visible higher bar the columns are null.

Warm-up: :func:`informative_warmup` is the base bars to read before the first traded
one so that its informative indicators are warmed up: (the spec's lookback + 2) higher
bars (one for a partial first bucket, one for the bar not yet closed) in base bars.
``sptrader backtest`` adds it to what it reads before ``--from``; a scanner's ``bars``
must cover it itself (e.g. ``1h: sma20`` on 1m bars: at least 22 x 60 = 1,320 bars).

Several instruments stacked (sorted by instrument, ts): pass ``over="instrument"`` and
every instrument's columns are exactly those of its bars alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import polars as pl

from sptrader.errors import UsageError
from sptrader.indicators import Spec, add_indicators, max_lookback, parse_spec
from sptrader.models import US_PER_MINUTE, timeframe_minutes

if TYPE_CHECKING:
    from sptrader.strategies.base import Strategy

__all__ = [
    "FIELDS",
    "Informative",
    "add_informative",
    "informative_columns",
    "informative_warmup",
    "parse_informative",
    "with_informative",
]

#: The bar fields a strategy may take from a higher timeframe.
FIELDS = ("open", "high", "low", "close", "volume", "trades")

_TS_US = "__informative_ts_us"
_VISIBLE = "__informative_visible_us"


@dataclass(frozen=True)
class Informative:
    """One higher timeframe a strategy reads: its bar ``fields`` and indicator ``specs``."""

    timeframe: str
    width_us: int
    fields: tuple[str, ...]
    specs: tuple[Spec, ...]

    @property
    def sources(self) -> tuple[str, ...]:
        """The higher bars' column names (fields, then each spec's outputs)."""
        return self.fields + tuple(name for spec in self.specs for name in spec.columns)

    @property
    def columns(self) -> tuple[str, ...]:
        """The names on the base bars: ``<timeframe>_<column>``."""
        return tuple(f"{self.timeframe}_{name}" for name in self.sources)

    def lookback(self) -> int:
        """Higher bars to read before the first wanted one (see the module doc)."""
        return max_lookback(list(self.specs)) + 2


def parse_informative(asked: dict[str, list[str]] | None, timeframe: str) -> list[Informative]:
    """Check what a strategy's ``informative()`` returned against the base ``timeframe``;
    a mistake is a UsageError naming it."""
    if not asked:
        return []
    if not isinstance(asked, dict):
        raise UsageError(
            f"informative() must return a dict of timeframe to columns, not {type(asked).__name__}"
        )
    base = timeframe_minutes(timeframe)
    parsed: list[Informative] = []
    for higher, items in asked.items():
        minutes = timeframe_minutes(str(higher))
        if minutes <= base or minutes % base:
            raise UsageError(
                f"informative timeframe {higher!r} must be a whole multiple of the {timeframe}"
                " bars it is read on, and longer"
            )
        if isinstance(items, str) or not items:
            raise UsageError(
                f"informative timeframe {higher!r} needs a list of fields or indicators,"
                f" e.g. ['close', 'sma20'], not {items!r}"
            )
        fields: list[str] = []
        specs: dict[str, Spec] = {}
        for item in items:
            text = str(item).strip().lower()
            if text in FIELDS:
                if text not in fields:
                    fields.append(text)
                continue
            try:
                spec = parse_spec(text)
            except UsageError as error:
                raise UsageError(
                    f"informative {higher}: {item!r} is neither a bar field"
                    f" ({', '.join(FIELDS)}) nor an indicator ({error})"
                ) from None
            specs.setdefault(spec.text, spec)
        parsed.append(
            Informative(str(higher), minutes * US_PER_MINUTE, tuple(fields), tuple(specs.values()))
        )
    return parsed


def informative_columns(strategy: Strategy, timeframe: str) -> list[str]:
    """The informative column names ``strategy`` gets on ``timeframe`` bars."""
    return [
        c for info in parse_informative(strategy.informative(), timeframe) for c in info.columns
    ]


def informative_warmup(strategy: Strategy, timeframe: str) -> int:
    """Base bars to read before the first traded bar so that the informative columns
    are there and warmed up on it (0 when the strategy asks for none)."""
    base = timeframe_minutes(timeframe) * US_PER_MINUTE
    return max(
        (
            info.lookback() * (info.width_us // base)
            for info in parse_informative(strategy.informative(), timeframe)
        ),
        default=0,
    )


def with_informative(
    strategy: Strategy, bars: pl.DataFrame, timeframe: str, *, over: str | None = None
) -> pl.DataFrame:
    """``bars`` with the informative columns ``strategy`` asks for (unchanged if none)."""
    asked = strategy.informative()
    if not asked:
        return bars
    return add_informative(bars, parse_informative(asked, timeframe), timeframe, over=over)


def add_informative(
    bars: pl.DataFrame,
    informative: list[Informative],
    timeframe: str,
    *,
    over: str | None = None,
) -> pl.DataFrame:
    """``bars`` (one instrument oldest first, or several stacked with ``over``) with the
    columns of each :class:`Informative`, aligned as the module doc says."""
    if not informative:
        return bars
    needed = ["ts", "open", "high", "low", "close"]
    missing = [c for c in needed if c not in bars.columns]
    if over is not None and over not in bars.columns:
        missing.append(over)
    if missing:
        raise UsageError(f"the bars have no {', '.join(missing)} column")
    base_us = timeframe_minutes(timeframe) * US_PER_MINUTE
    keys = [over] if over is not None else []
    ts_us = pl.col("ts").dt.epoch("us") if bars.schema["ts"].is_temporal() else pl.col("ts")
    base = bars.select(
        *keys,
        ts_us.cast(pl.Int64).alias(_TS_US),
        *[pl.col(c) for c in ("open", "high", "low", "close")],
        (pl.col("volume") if "volume" in bars.columns else pl.lit(0.0)).alias("volume"),
        (pl.col("trades") if "trades" in bars.columns else pl.lit(0)).alias("trades"),
    )
    left = bars.with_columns(base[_TS_US])
    for info in informative:
        higher = _higher_bars(base, info.width_us, keys)
        if info.specs:
            higher = add_indicators(higher, list(info.specs), over=over)
        right = higher.select(
            *keys,
            (pl.col(_TS_US) + (info.width_us - base_us)).alias(_VISIBLE),
            *[pl.col(name).alias(f"{info.timeframe}_{name}") for name in info.sources],
        )
        taken = [c for c in right.columns if c in left.columns and c not in keys]
        if taken:
            raise UsageError(f"the bars already have the column(s) {', '.join(taken)}")
        left = left.join_asof(
            right,
            left_on=_TS_US,
            right_on=_VISIBLE,
            by=keys or None,
            strategy="backward",
            check_sortedness=not keys,
        )
        if _VISIBLE in left.columns:
            left = left.drop(_VISIBLE)
    return left.drop(_TS_US)


def _higher_bars(base: pl.DataFrame, width_us: int, keys: list[str]) -> pl.DataFrame:
    """The ``width_us`` buckets of ``base`` (one row each, oldest first per key), an
    instrument's first bucket dropped when its first bar is not at the bucket's start.
    ``ts`` is the bucket's open time; ``_TS_US`` the same in µs."""
    bucket = (pl.col(_TS_US) // width_us) * width_us
    rolled = (
        base.lazy()
        .with_columns(bucket.alias("__bucket"))
        .group_by(*keys, "__bucket", maintain_order=True)
        .agg(
            pl.col(_TS_US).min().alias("__first"),
            pl.col("open").first(),
            pl.col("high").max(),
            pl.col("low").min(),
            pl.col("close").last(),
            pl.col("volume").sum(),
            pl.col("trades").sum(),
        )
    )
    first_row = pl.int_range(pl.len()) == 0
    if keys:
        first_row = first_row.over(keys)
    return (
        rolled.filter(~(first_row & (pl.col("__first") > pl.col("__bucket"))))
        .select(
            *keys,
            pl.col("__bucket").alias(_TS_US),
            pl.col("__bucket").cast(pl.Datetime("us")).alias("ts"),
            "open",
            "high",
            "low",
            "close",
            "volume",
            "trades",
        )
        .collect(engine="in-memory")
    )
