"""Every number and time a feed reads passes through here: the parse boundary.

A value that is not a finite number in its sane range (``"NaN"``, ``"Infinity"``,
``"1e400"``, a megabyte of digits, ``true``, zero or negative prices, absurd sizes) or a
time far from the feed's clock raises ``BadValue``. Feeds catch it, count the message as
``invalid`` and skip it: an impossible value never becomes a trade, a quote or a bar.

The checks are plain comparisons (about 0.2 µs a value): they run for every tick.
"""

from __future__ import annotations

import math
from decimal import Decimal, InvalidOperation
from typing import Any

from sptrader.models import SIDE_BUY, SIDE_SELL, US_PER_DAY, US_PER_SECOND

#: No instrument trades above this (BTC in the weakest currencies is ~1e10).
MAX_PRICE = 1e12
#: No single trade or book level is larger than this (meme coins trade 1e10-1e12 units).
MAX_SIZE = 1e15
#: Longest numeric string accepted: real prices have at most ~30 characters.
MAX_NUMBER_CHARS = 40
#: How far ahead of the feed's clock a message may be stamped (clock skew between the
#: venue and this machine): further ahead it would open a bar in the future.
MAX_AHEAD_US = 60 * US_PER_SECOND
#: How far behind the feed's clock a live message may be (snapshots replay recent
#: trades; anything older is not live data).
MAX_BEHIND_US = 7 * US_PER_DAY
#: History bars: nothing before 2000 or in the future is market data we store.
EARLIEST_US = 946_684_800 * US_PER_SECOND


class BadValue(ValueError):
    """A number or time that cannot be market data."""


#: What reading a malformed message raises (bad JSON, bad UTF-8 and bad times are
#: ValueErrors; nesting too deep for the JSON decoder a RecursionError). Catch BadValue
#: first: it is a ValueError too.
MALFORMED = (
    ValueError,
    KeyError,
    TypeError,
    AttributeError,
    IndexError,
    RecursionError,
    OverflowError,
)


def skip_invalid(context: Any, venue: str, error: BadValue) -> None:
    """Count and skip a message (or an element of one) with an impossible value."""
    context.skipped("invalid", f"a message from {venue} with an impossible value ({error})")


def number(value: object, what: str) -> float:
    """``value`` (a JSON number or a numeric string) as a finite float, else BadValue."""
    kind = type(value)
    if kind is str:
        if len(value) > MAX_NUMBER_CHARS:  # type: ignore[arg-type]
            raise BadValue(f"{what} is {len(value)} characters long")  # type: ignore[arg-type]
        try:
            result = float(value)  # type: ignore[arg-type]
        except ValueError:
            raise BadValue(f"{what} {value!r} is not a number") from None
    elif kind is float:
        result = value  # type: ignore[assignment]
    elif kind is int:
        if not -(10**18) < value < 10**18:  # type: ignore[operator]
            raise BadValue(f"{what} {value} is out of range")
        result = float(value)  # type: ignore[arg-type]
    else:  # bool (True would read as 1.0), None, lists, objects
        raise BadValue(f"{what} {value!r} is not a number")
    if not math.isfinite(result):
        raise BadValue(f"{what} {value!r} is not finite")
    return result  # type: ignore[return-value]


def _in_range(value: object, low: float, high: float, low_open: bool, what: str) -> float:
    """``value`` as a float in (low, high] (``low_open``) or [low, high]. The common
    case, a short numeric string in range, costs one call: one range test rejects NaN
    and the infinities too (every comparison with NaN is false)."""
    if type(value) is str and len(value) <= MAX_NUMBER_CHARS:  # type: ignore[arg-type]
        try:
            result = float(value)  # type: ignore[arg-type]
        except ValueError:
            raise BadValue(f"{what} {value!r} is not a number") from None
    elif type(value) is float:
        result = value  # type: ignore[assignment]
    else:  # ints, bools, long strings, anything else: the careful path
        result = number(value, what)
    if (low < result if low_open else low <= result) and result <= high:
        return result
    raise BadValue(f"{what} {value!r} is out of range")


def price(value: object, what: str = "price") -> float:
    """A positive, finite price no larger than MAX_PRICE."""
    return _in_range(value, 0.0, MAX_PRICE, True, what)


def size(value: object, what: str = "size") -> float:
    """A positive, finite trade size no larger than MAX_SIZE."""
    return _in_range(value, 0.0, MAX_SIZE, True, what)


def book_size(value: object, what: str = "book size") -> float:
    """A quote's size: like ``size`` but zero is allowed (an emptied level)."""
    return _in_range(value, 0.0, MAX_SIZE, False, what)


def integer(value: object, what: str) -> int:
    """A JSON integer (or a string of digits), not a bool or a float, at most 18 digits."""
    kind = type(value)
    if kind is int:
        result = value
    elif kind is str and 0 < len(value) <= 18 and value.isascii() and value.isdigit():  # type: ignore[union-attr, arg-type]
        result = int(value)  # type: ignore[arg-type]
    else:
        raise BadValue(f"{what} {value!r} is not an integer")
    if not -(10**18) < result < 10**18:  # type: ignore[operator]
        raise BadValue(f"{what} {value!r} is out of range")
    return result  # type: ignore[return-value]


def epoch_ms(value: object, what: str = "time") -> int:
    """Integer milliseconds since the epoch (Binance's ``T``/``E``) to microseconds."""
    return integer(value, what) * 1000


def live_time(ts_us: int, clock_us: int, what: str = "time") -> int:
    """``ts_us`` if it is within MAX_BEHIND_US before and MAX_AHEAD_US after the feed's
    clock, else BadValue (a trade stamped 1970 or 3000 is not live data)."""
    if not clock_us - MAX_BEHIND_US <= ts_us <= clock_us + MAX_AHEAD_US:
        raise BadValue(f"{what} {ts_us} µs is not near the feed's clock {clock_us} µs")
    return ts_us


def history_time(ts_us: int, clock_us: int, what: str = "bar time") -> int:
    """A history bar's open time: after 2000 and not after the feed's clock."""
    if not EARLIEST_US <= ts_us <= clock_us + MAX_AHEAD_US:
        raise BadValue(f"{what} {ts_us} µs is not a plausible bar time")
    return ts_us


def decimal_seconds_to_us(value: object, what: str = "time") -> int:
    """Seconds since the epoch as a decimal string or number (Kraken REST's
    ``1762800000.1234567``) to integer microseconds, exactly: through float, 6% of real
    trade times land 1 µs off."""
    if type(value) is str:
        if len(value) > MAX_NUMBER_CHARS:  # type: ignore[arg-type]
            raise BadValue(f"{what} is too long")
        text = value
    elif type(value) in (int, float):
        text = repr(value)
    else:
        raise BadValue(f"{what} {value!r} is not a number")
    try:
        seconds = Decimal(text)  # type: ignore[arg-type]
    except InvalidOperation:
        raise BadValue(f"{what} {value!r} is not a number") from None
    if not seconds.is_finite():
        raise BadValue(f"{what} {value!r} is not finite")
    return int((seconds * US_PER_SECOND).to_integral_value(rounding="ROUND_HALF_EVEN"))


_SIDES = {"buy": SIDE_BUY, "BUY": SIDE_BUY, "Buy": SIDE_BUY}
_SIDES.update({"sell": SIDE_SELL, "SELL": SIDE_SELL, "Sell": SIDE_SELL})


def side_from_word(value: object, what: str = "side") -> int:
    """``buy``/``sell`` in any case (Coinbase ``BUY``, Kraken ``buy``) to SIDE_*."""
    side = _SIDES.get(value) if type(value) is str else None  # type: ignore[call-overload]
    if side is None and type(value) is str:
        side = _SIDES.get(value.lower())  # type: ignore[union-attr]
    if side is None:
        raise BadValue(f"{what} {value!r} is not buy or sell")
    return side
