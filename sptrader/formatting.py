"""Small text helpers shared by the panes and the commands (no widgets here), among
them the one price rule (``price_decimals``) and format (``format_price``)."""

from __future__ import annotations

from collections.abc import Sequence

SPARK_CHARS = "▁▂▃▄▅▆▇█"


def sparkline(values: Sequence[float]) -> str:
    if not values:
        return ""
    low, high = min(values), max(values)
    if high == low:
        return SPARK_CHARS[3] * len(values)
    scale = (len(SPARK_CHARS) - 1) / (high - low)
    return "".join(SPARK_CHARS[round((value - low) * scale)] for value in values)


def decimals_of(values: Sequence[float], at_most: int = 8) -> int:
    """The display precision the data itself uses (1.05574 -> 5, 528.1 -> 1)."""
    found = 0
    for value in values:
        text = f"{value:.{at_most}f}".rstrip("0")
        found = max(found, len(text) - text.index(".") - 1)
    return found


def decimals_of_tick(tick: str | float) -> int:
    """The decimals a tick size implies: "0.01000000" -> 2, "0.00005" -> 5, "1" -> 0
    (read from its text, so 0.1 is not 0.1000000000000000055...)."""
    text = f"{tick:.10f}" if isinstance(tick, float) else str(tick).strip()
    if "e" in text.lower():
        text = f"{float(text):.10f}"
    if "." not in text:
        return 0
    return len(text.rstrip("0").split(".", 1)[1])


def guess_decimals(price: float) -> int:
    """A price's display precision when nothing better is known, by its size."""
    size = abs(price)
    return 2 if size >= 100 else 4 if size >= 10 else 5


def price_decimals(known: int | None, prices: Sequence[float] = ()) -> int | None:
    """How many decimals an instrument's prices show: its feed's metadata (``known``)
    first, else what its prices themselves use (quotes, stored closes), else a guess by
    their size; None when there is nothing to go on (format_price then guesses per
    value). The one rule every pane and command follows."""
    if known is not None:
        return known
    values = [value for value in prices if value is not None and value == value]  # no NaN
    if not values:
        return None
    # Whole numbers say nothing of the precision: then guess by size.
    return decimals_of(values) or guess_decimals(values[-1])


def format_price(price: float | None, decimals: int | None = None, missing: str = "-") -> str:
    """A price with thousands separators and fixed decimals: 48,109.96 · 1.06685 ·
    150.123. ``decimals`` None guesses by the price's size; ``missing`` for no price."""
    if price is None or price != price:
        return missing
    places = guess_decimals(price) if decimals is None else decimals
    return f"{price:,.{places}f}"


def format_age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 1:
        return "<1s"
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.0f}h"


# Counters that say something went wrong come first in a service's notes; routine ones
# (heartbeats, flushes) are left out.
PROBLEM_COUNTERS = (
    "malformed",
    "unexpected",
    "out_of_order",
    "sequence_gaps",
    "rejected",
    "error_messages",
    "gap_fill_errors",
    "late_ticks",
)
QUIET_COUNTERS = frozenset(
    {"heartbeats", "klines", "flushes", "subscriptions", "status", "ticker", "market_trades"}
)


def one_line(text: str, limit: int = 120) -> str:
    """The first non-blank line of ``text`` (a polars error runs to a dozen lines), marked
    `` …`` when lines were left out and cut to ``limit`` characters: what a table cell or
    a pane shows of an error. The full text belongs in the log file."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return ""
    first = lines[0] + (" …" if len(lines) > 1 else "")
    return first if len(first) <= limit else first[: limit - 1].rstrip() + "…"


def disconnect_note(reason: str) -> str:
    """What a service shows after an ordinary disconnect (not an error)."""
    return f"disconnected ({reason})"


def is_disconnect_note(text: str) -> bool:
    return text.startswith("disconnected (")


def service_notes(counters: dict[str, int], last_error: str = "") -> str:
    """One line for a service: its last error (its first line), then its non-zero
    counters."""
    parts = [one_line(last_error)] if last_error.strip() else []
    ordered = [name for name in PROBLEM_COUNTERS if counters.get(name)]
    ordered += sorted(
        name
        for name, value in counters.items()
        if value and name not in PROBLEM_COUNTERS and name not in QUIET_COUNTERS
    )
    parts += [f"{name.replace('_', ' ')} {counters[name]:,}" for name in ordered]
    return " · ".join(parts)
