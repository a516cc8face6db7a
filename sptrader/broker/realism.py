"""Order realism shared by the paper book and the backtester: trailing stops and fills
capped by a share of the available volume. Plain arithmetic, no state: the book and the
simulation keep their own and call these, so both paths move a stop and cap a fill the
same way (``tests/broker/test_paper_realism.py`` runs one path through both).

Trailing stops. A stop that trails by a price distance (``trail``) or a percentage
(``trail_pct``) of the best price since it was placed: a long's sell stop sits at ``best -
trail`` (or ``best * (1 - trail_pct / 100)``) and only rises, a short's buy stop at ``best
+ trail`` (``best * (1 + trail_pct / 100)``) and only falls. An initial level (a fixed
stop given with the trail) is a floor for a sell stop and a ceiling for a buy stop: the
level is the better for the trader of the two. The best price is what the position
could be closed at: the bid for a long, the ask for a short (paper), the bars' highs and
lows (backtest, see :mod:`sptrader.backtest.engine`). Since ``trail_level`` only grows
with the best price, ``ratchet(level, trail_level(price))`` per price seen is the same
as the level of the best price seen: no best price needs to be stored.

Volume cap. ``[broker] max_volume_share`` (0: off): one bar or quote fills at most that
share of its volume (the bar's volume, or the size at the touch the order takes: the ask
size for a buy, the bid size for a sell). What does not fill stays working.
"""

from __future__ import annotations

import math

#: The ledger's flat threshold (``ledger.QTY_EPSILON``; not imported: the ledger imports
#: the orders module, which imports this one).
QTY_EPSILON = 1e-9

__all__ = [
    "bar_capacity",
    "quote_capacity",
    "ratchet",
    "ratchet_threshold",
    "take",
    "trail_level",
    "trail_problem",
]


def trail_problem(trail: float | None, trail_pct: float | None) -> str | None:
    """Why a trail cannot be used (one sentence), or None: each must be a positive
    number, a percentage below 100, and not both."""
    if trail is not None and trail_pct is not None:
        return "give a trailing distance or a trailing %, not both"
    if trail is not None and not (_finite(trail) and trail > 0):
        return f"the trailing distance must be a positive price difference, not {trail}"
    if trail_pct is not None and not (_finite(trail_pct) and 0 < trail_pct < 100):
        return f"the trailing % must be above 0 and below 100, not {trail_pct}"
    return None


def trail_level(side: str, best: float, trail: float | None, trail_pct: float | None) -> float:
    """The level of a ``side`` stop trailing ``best`` (a sell stop below it, a buy stop
    above it) by ``trail`` or ``trail_pct``."""
    if side == "sell":
        return best - trail if trail is not None else best * (1 - trail_pct / 100)  # type: ignore[operator]
    return best + trail if trail is not None else best * (1 + trail_pct / 100)  # type: ignore[operator]


def ratchet(side: str, level: float, candidate: float) -> float:
    """The stop's level after ``candidate``: only ever in the trader's favour (a sell
    stop up, a buy stop down). ``level`` NaN: none yet."""
    if math.isnan(level):
        return candidate
    if side == "sell":
        return candidate if candidate > level else level
    return candidate if candidate < level else level


def ratchet_threshold(
    side: str, level: float, trail: float | None, trail_pct: float | None
) -> float:
    """The price beyond which a trailing ``side`` stop at ``level`` moves (above it for a
    sell stop, below for a buy stop), a hair inside the exact value: a quote short of it
    cannot move the stop, so the book may skip it; one past it is checked exactly."""
    if side == "sell":
        exact = level + trail if trail is not None else level / (1 - trail_pct / 100)  # type: ignore[operator]
        return exact - abs(exact) * 1e-12
    exact = level - trail if trail is not None else level / (1 + trail_pct / 100)  # type: ignore[operator]
    return exact + abs(exact) * 1e-12


def bar_capacity(share: float, volume: float) -> float:
    """What one bar may fill: ``share`` of its volume (a bar without volume fills
    nothing); unlimited when the cap is off (``share`` 0)."""
    if share <= 0:
        return math.inf
    return share * volume if volume > 0 else 0.0


def quote_capacity(share: float, size: float) -> float:
    """What one quote may fill at its touch: ``share`` of the size there. A quote with no
    size (0: the feed gives none, e.g. a replay of bars) leaves the fill whole, as does
    the cap being off."""
    if share <= 0 or not size > 0:
        return math.inf
    return share * size


def take(remaining: float, room: float) -> float:
    """The quantity one fill takes: the order's remaining quantity, at most ``room``;
    dust (below the ledger's flat threshold) is nothing."""
    qty = remaining if remaining <= room else room
    return qty if qty > QTY_EPSILON else 0.0


def _finite(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
