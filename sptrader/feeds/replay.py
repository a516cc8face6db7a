"""``REPLAY:FEED:SYMBOL`` replays the stored bars (or ticks) of ``FEED:SYMBOL`` at a
chosen speed, as if they were arriving live; e.g. ``REPLAY:SIM:EURUSD`` at speed 60
plays one stored minute per second.

Bars are replayed as four quotes each (open, the nearer extreme, the other extreme,
close) so the bar builder rebuilds the same open, high, low and close. Timestamps stay
the original ones; the feed's clock is the replay position, not the wall clock.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import polars as pl

from sptrader.clock import datetime_to_us, parse_time
from sptrader.config import ReplayFeedConfig
from sptrader.errors import SptraderError
from sptrader.feeds.base import Feed
from sptrader.models import (
    SIDE_UNKNOWN,
    US_PER_MINUTE,
    US_PER_SECOND,
    QuoteReceived,
    TradeReceived,
)
from sptrader.supervisor import ServiceContext
from sptrader.threads import run_in_thread

log = logging.getLogger(__name__)

#: (instrument, start_us, end_us, "bars" | "ticks") -> stored rows, called in a thread.
StoredLoader = Callable[[str, int, int, str], pl.DataFrame]

CHUNK_US = 60 * US_PER_MINUTE
# Offsets of the four quotes inside a replayed 1m bar.
_QUOTE_OFFSETS_US = (0, 15 * US_PER_SECOND, 30 * US_PER_SECOND, 45 * US_PER_SECOND)


class ReplayFeed(Feed):
    # Any stored instrument can be replayed: there is no list to check against.
    open_symbols = True
    prefix = "REPLAY"
    name = "replay"
    # Replayed time keeps no market hours: it is never closed.
    market_kind = "replay"
    realtime = False

    def __init__(
        self,
        instruments: list[str],
        config: ReplayFeedConfig,
        load_stored: StoredLoader,
        first_stored: Callable[[str], int | None],
    ) -> None:
        super().__init__(instruments)
        self.config = config
        self._load_stored = load_stored
        self._first_stored = first_stored
        self._position_us = 0

    @staticmethod
    def source_of(instrument: str) -> str:
        """``REPLAY:SIM:EURUSD`` -> ``SIM:EURUSD``."""
        return instrument.split(":", 1)[1]

    def price_source(self, instrument: str) -> str:
        return self.config.price_source if self.config.source == "ticks" else "bid"

    def clock_us(self) -> int:
        return self._position_us

    def _start_us(self) -> int | None:
        if self.config.start:
            return datetime_to_us(parse_time(self.config.start))
        firsts = [self._first_stored(self.source_of(name)) for name in self.instruments]
        known = [first for first in firsts if first is not None]
        return min(known) if known else None

    async def stream(self, context: ServiceContext) -> None:
        start = await run_in_thread(self._start_us)
        if start is None:
            raise SptraderError("nothing stored to replay for " + ", ".join(self.instruments))
        context.mark_running()
        speed = self.config.speed
        wall_start = time.monotonic()
        position = start
        empty_chunks = 0
        while True:
            chunk_end = position + CHUNK_US
            events = await run_in_thread(self._events_between, position, chunk_end)
            if not events:
                empty_chunks += 1
                if empty_chunks > 24 * 60:  # a whole day with nothing: the replay is over
                    log.info("replay reached the end of the stored data")
                    return
            else:
                empty_chunks = 0
            for ts_us, batch in _group_by_time(events):
                due = wall_start + (ts_us - start) / US_PER_SECOND / speed
                delay = due - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                self._position_us = ts_us
                await context.publish(batch, ts_us)
            position = chunk_end
            self._position_us = max(self._position_us, position)

    def _events_between(self, start_us: int, end_us: int) -> list[object]:
        events: list[object] = []
        for instrument in self.instruments:
            rows = self._load_stored(
                self.source_of(instrument), start_us, end_us, self.config.source
            )
            if rows.is_empty():
                continue
            if self.config.source == "ticks":
                events.extend(_tick_events(instrument, rows))
            else:
                events.extend(_bar_events(instrument, rows))
        events.sort(key=lambda event: event.ts_us)
        return events


def _bar_events(instrument: str, bars: pl.DataFrame) -> list[object]:
    events: list[object] = []
    for ts, open_, high, low, close, volume in bars.select(
        pl.col("ts").dt.epoch("us"), "open", "high", "low", "close", "volume"
    ).iter_rows():
        # Visit the extreme nearer the open first, as a price path would.
        first, second = (low, high) if open_ - low < high - open_ else (high, low)
        size = volume / 4
        for offset, price in zip(_QUOTE_OFFSETS_US, (open_, first, second, close), strict=True):
            events.append(QuoteReceived(instrument, ts + offset, price, price, size, size))
    return events


def _tick_events(instrument: str, ticks: pl.DataFrame) -> list[object]:
    """Stored ticks as events; trades keep their taker side where the store has a
    ``side`` column (NULL or absent: unknown). Stored ticks have no venue trade id."""
    side = (
        pl.col("side").fill_null(SIDE_UNKNOWN) if "side" in ticks.columns else pl.lit(SIDE_UNKNOWN)
    )
    events: list[object] = []
    for ts, bid, ask, bid_size, ask_size, price, size, taker in ticks.select(
        pl.col("ts").dt.epoch("us"),
        "bid",
        "ask",
        "bid_size",
        "ask_size",
        "price",
        "size",
        side.cast(pl.Int64).alias("taker"),
    ).iter_rows():
        if price is None:
            events.append(QuoteReceived(instrument, ts, bid, ask, bid_size or 0.0, ask_size or 0.0))
        else:
            events.append(TradeReceived(instrument, ts, price, size or 0.0, int(taker)))
    return events


def _group_by_time(events: list[object]) -> list[tuple[int, list[object]]]:
    """Consecutive events sharing a timestamp, published together."""
    groups: list[tuple[int, list[object]]] = []
    for event in events:
        if groups and groups[-1][0] == event.ts_us:
            groups[-1][1].append(event)
        else:
            groups.append((event.ts_us, [event]))
    return groups
