"""The Strategy interface.

A strategy is a class with typed parameters (a msgspec Struct with defaults, validated
when the config is loaded) and one vectorised method, ``evaluate``, from a bars frame
(one instrument's closed bars, oldest first, with the indicator columns it asked for)
to a frame of signals. The same code serves scanners, paper trading and backtests.

Stacked evaluation: a strategy whose class sets ``stacked = True`` promises that
``evaluate`` also handles a frame of several instruments stacked (sorted by
``instrument, ts``) and returns, for each instrument, exactly the signals a call on that
instrument's bars alone returns, each row with its ``instrument`` filled in. That holds
when every window op (``shift``, ``diff``, ``rolling_*``, ``cum_*``, ``ewm_*``,
``int_range(pl.len())``, ...) runs per instrument with ``.over("instrument")``, e.g.
``pl.col("close").shift(1).over("instrument")``; elementwise ops need nothing. A scanner
then evaluates all its instruments in one call (much faster than one call each). The
default is False: ``evaluate`` gets one instrument at a time, as written above. If a
stacked call raises, the scanner records the error and evaluates instrument by
instrument, so one bad instrument fails only itself.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import msgspec
import polars as pl

#: Signal sides: enter long, enter short, and leave whatever position is open.
SIDES = ("buy", "sell", "exit")

SIGNAL_SCHEMA: dict[str, Any] = {
    "instrument": pl.String,
    "ts": pl.Datetime("us"),  # the closed bar the signal was computed on (its open time)
    "side": pl.String,
    "strength": pl.Float64,  # 0..1, how strongly the rule fired
    "reason": pl.String,  # one line a trader reads, e.g. "SMA(10) crossed above SMA(30)"
    "stop": pl.Float64,  # optional protective stop price (null: none)
    "target": pl.Float64,  # optional take-profit price (null: none)
}
#: Columns a strategy may add to its signals (absent or null: none); not in SIGNAL_SCHEMA,
#: so strategies that build their rows from it stay as they are. Read by the backtester.
OPTIONAL_SIGNAL_SCHEMA: dict[str, Any] = {
    "trail": pl.Float64,  # the stop trails the best price by this distance ...
    "trail_pct": pl.Float64,  # ... or by this % of it (one of the two; with ``stop``: its floor)
}


def empty_signals() -> pl.DataFrame:
    return pl.DataFrame(schema=SIGNAL_SCHEMA)


class NoParams(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    pass


class Strategy(ABC):
    #: Name used in the config (``strategy = "sma_cross"``).
    name: ClassVar[str] = ""
    #: Typed parameters with defaults; unknown or mistyped ones are config errors.
    Params: ClassVar[type[msgspec.Struct]] = NoParams
    #: True when ``evaluate`` handles several instruments stacked (sorted by instrument,
    #: ts) because its window ops use ``.over("instrument")`` (see the module doc);
    #: False (the default): it is called with one instrument's bars at a time.
    stacked: ClassVar[bool] = False

    def __init__(self, params: msgspec.Struct | None = None) -> None:
        self.params = params if params is not None else self.Params()

    @classmethod
    def from_config(cls, params: dict[str, Any]) -> Strategy:
        """Build from a config table; raises msgspec.ValidationError naming the key."""
        return cls(msgspec.convert(params, cls.Params, strict=True))

    def indicators(self) -> list[str]:
        """Indicator specs (``sptrader.indicators``) the bars must carry, e.g. ["sma10"]."""
        return []

    def warmup_bars(self) -> int:
        """Closed bars needed before the first signal can be trusted."""
        return 0

    def informative(self) -> dict[str, list[str]]:
        """Higher timeframes of the same instrument to read on each bar (informative
        bars), e.g. ``{"1h": ["close", "sma20"]}``: bar fields (open high low close
        volume trades) or indicator specs, given to ``evaluate`` as the columns
        ``1h_close``, ``1h_sma20``. Rolled up from the bars themselves and aligned
        without lookahead: an hour's values appear on the bar that closes the hour, not
        before (:mod:`sptrader.strategies.informative`). A backtest reads the extra
        warm-up they need; a scanner's ``bars`` must cover it. Default: none."""
        return {}

    @abstractmethod
    def evaluate(self, bars: pl.DataFrame) -> pl.DataFrame:
        """Signals (SIGNAL_SCHEMA) for one instrument's bars: columns ``instrument, ts,
        open, high, low, close, volume, trades`` plus the indicator columns, oldest
        first, closed bars only. One row per bar that signals; vectorised, no loop per
        bar. With ``stacked = True``: the bars of several instruments, sorted by
        instrument, ts, and the signals of all of them (``instrument`` filled in)."""
