"""Stream and subject names, and message ids.

Subjects carry the event kind and the instrument, so a subscriber can filter by either:
``SPTRADER.bars.1m.BINANCE.BTCUSDT``, ``SPTRADER.forming.1m.SIM.EURUSD``,
``SPTRADER.history.1m.OANDA.EUR_USD``, ``SPTRADER.coverage.SIM``,
``SPTRADER.ticks.quote.SIM.EURUSD``, ``SPTRADER.ticks.trade.BINANCE.BTCUSDT``.

Bars, forming bars, history and coverage share one stream (``PREFIX_BARS``, long
retention), so the writer sees them in the order the collector produced them: a forming
bar never arrives after the closed one that replaces it. Ticks have their own stream
(``PREFIX_TICKS``, short retention).
"""

from __future__ import annotations

import hashlib
import struct

BARS_STREAM = "{prefix}_BARS"
TICKS_STREAM = "{prefix}_TICKS"
HOSTS_BUCKET = "{prefix}_HOSTS"
WATCHLIST_BUCKET = "{prefix}_WATCHLIST"


def symbol_token(instrument: str) -> str:
    """``FEED:SYMBOL`` as two subject tokens. A dot would split a token and ``*`` / ``>``
    are wildcards, so they become ``_`` (the payload keeps the real name)."""
    feed, _, symbol = instrument.partition(":")
    for char in ".*> ":
        symbol = symbol.replace(char, "_")
    return f"{feed}.{symbol.replace(':', '_')}"


def bar_subject(prefix: str, timeframe: str, instrument: str) -> str:
    return f"{prefix}.bars.{timeframe}.{symbol_token(instrument)}"


def forming_subject(prefix: str, timeframe: str, instrument: str) -> str:
    return f"{prefix}.forming.{timeframe}.{symbol_token(instrument)}"


def history_subject(prefix: str, instrument: str) -> str:
    return f"{prefix}.history.1m.{symbol_token(instrument)}"


def coverage_subject(prefix: str, feed: str) -> str:
    return f"{prefix}.coverage.{feed}"


def tick_subject(prefix: str, kind: str, instrument: str) -> str:
    return f"{prefix}.ticks.{kind}.{symbol_token(instrument)}"


def bar_stream_subjects(prefix: str) -> list[str]:
    return [f"{prefix}.{kind}.>" for kind in ("bars", "forming", "history", "coverage")]


def tick_stream_subjects(prefix: str) -> list[str]:
    return [f"{prefix}.ticks.>"]


def _digest(*values: float) -> str:
    """A short, stable digest of a bar's values: two versions of the same bar (a trade
    that arrived late, the venue's own bar) get different ids and both reach the writer,
    where the later one wins; the same version sent twice is one message."""
    packed = struct.pack(f"<{len(values)}d", *values)
    return hashlib.blake2b(packed, digest_size=8).hexdigest()


def bar_message_id(
    instrument: str,
    timeframe: str,
    ts_us: int,
    values: tuple[float, ...],
) -> str:
    """(instrument, timeframe, open time, version): what JetStream de-duplicates by."""
    return f"bar|{instrument}|{timeframe}|{ts_us}|{_digest(*values)}"


def content_message_id(key: str, start_us: int, end_us: int, content: bytes) -> str:
    """A message whose content is its identity (history, ticks, coverage): the same
    content for the same range, sent twice, is one message."""
    digest = hashlib.blake2b(content, digest_size=8).hexdigest()
    return f"{key}|{start_us}|{end_us}|{digest}"
