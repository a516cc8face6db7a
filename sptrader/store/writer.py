"""The batched store writer: a bus subscriber that never drops (it applies backpressure)
and flushes at most every ``flush_interval_ms`` or ``flush_rows`` rows, in a thread so
DuckDB work stays off the event loop.

Closed bars are upserted; the newest version of each forming bar is upserted too (at
most every FORMING_WRITE_S seconds, and on shutdown), so
the CLI sees the current minute and a later, complete version replaces it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import polars as pl

from sptrader.bars import bars_to_frame
from sptrader.bus import Bus, Subscription
from sptrader.config import StoreConfig
from sptrader.models import (
    Bar,
    BarClosed,
    BarUpdated,
    EngineLogged,
    HistoryBarsReady,
    HistoryStored,
    QuoteReceived,
    TradeReceived,
)
from sptrader.schema import STORED_TICK_SCHEMA, stored_bars
from sptrader.store.database import Store
from sptrader.supervisor import Service, ServiceContext

log = logging.getLogger(__name__)

FORMING_WRITE_S = 2.0


class StoreWriter(Service):
    kind = "store"
    stoppable = False

    def __init__(self, store: Store, bus: Bus, config: StoreConfig) -> None:
        super().__init__("store")
        self.store = store
        self.bus = bus
        self.config = config
        keep = set(config.keep_ticks)
        self._keep_all_ticks = "*" in keep
        self._keep_ticks = keep
        self.subscription: Subscription = bus.subscribe(
            "store", maxsize=config.writer_queue, policy="block", accepts=self._wanted
        )
        self._ticks: list[object] = []
        # Closed bars and fetched history, in bus order: later versions win.
        self._bars: list[Bar | HistoryBarsReady] = []
        self._forming: dict[str, Bar] = {}
        self._logs: list[EngineLogged] = []
        self.rows_written = 0
        self.flushes = 0
        self.last_flush_ms = 0.0
        self._flush_lock = asyncio.Lock()
        self._in_flight: asyncio.Future[int] | None = None
        self._forming_written_at = 0.0

    def _wanted(self, event: object) -> bool:
        kind = type(event)
        if kind is QuoteReceived or kind is TradeReceived:
            return self._keep_all_ticks or event.instrument in self._keep_ticks
        return (
            kind is BarClosed
            or kind is BarUpdated
            or kind is EngineLogged
            or kind is HistoryBarsReady
        )

    def _take(self, events: list[object]) -> None:
        for event in events:
            kind = type(event)
            if kind is BarUpdated:
                self._forming[event.bar.instrument] = event.bar
            elif kind is BarClosed:
                self._bars.append(event.bar)
                forming = self._forming.get(event.bar.instrument)
                if forming is not None and forming.ts_us <= event.bar.ts_us:
                    del self._forming[event.bar.instrument]
            elif kind is EngineLogged:
                self._logs.append(event)
            elif kind is HistoryBarsReady:
                self._bars.append(event)
                fetched = event.fetched
                forming = self._forming.get(fetched.instrument)
                if forming is not None and forming.ts_us < fetched.end_us:
                    del self._forming[fetched.instrument]
            else:
                self._ticks.append(event)

    def pending(self) -> int:
        return len(self._ticks) + len(self._bars) + len(self._forming) + len(self._logs)

    async def run(self, context: ServiceContext) -> None:
        interval = self.config.flush_interval_ms / 1000
        context.mark_running()
        next_flush = time.monotonic() + interval
        while True:
            timeout = max(0.0, next_flush - time.monotonic())
            events = await self.subscription.get_within(timeout)
            self._take(events)
            if self.pending() >= self.config.flush_rows or time.monotonic() >= next_flush:
                written = await self.flush()
                if written:
                    context.events += written
                    context.last_event_us = time.time_ns() // 1000
                context.counters["flushes"] = self.flushes
                next_flush = time.monotonic() + interval

    async def store_queued(self) -> int:
        """Take everything queued so far and write it now (the NATS consumer acks its
        messages after this; forming bars keep their own pace)."""
        self._take(self.subscription.get_nowait())
        return await self.flush()

    async def drain(self) -> int:
        """Take everything queued and write it (on shutdown)."""
        self._take(self.subscription.get_nowait())
        return await self.flush(final=True)

    async def flush(self, *, final: bool = False) -> int:
        async with self._flush_lock:
            # A write cancelled mid-way (shutdown) keeps running in its thread: let it
            # finish first, or an older forming bar could overwrite a newer one.
            if self._in_flight is not None and not self._in_flight.done():
                await asyncio.wait([self._in_flight])
            ticks, bars, logs = self._ticks, self._bars, self._logs
            # Forming bars are rewritten at most every FORMING_WRITE_S: each flush would
            # otherwise rewrite every instrument's current bar 4 times a second.
            now = time.monotonic()
            forming: dict[str, Bar] = {}
            if final or now - self._forming_written_at >= FORMING_WRITE_S:
                forming, self._forming = self._forming, {}
                self._forming_written_at = now
            if not (ticks or bars or forming or logs):
                return 0
            self._ticks, self._bars, self._logs = [], [], []
            # Forming bars go last so a closed version in the same batch is not undone.
            all_bars = bars + [bar for bar in forming.values()]
            started = time.perf_counter()
            self._in_flight = asyncio.ensure_future(
                asyncio.to_thread(self._write, ticks, all_bars, logs)
            )
            written = await asyncio.shield(self._in_flight)
            stored = [
                HistoryStored(
                    time.time_ns() // 1000,
                    item.fetched.instrument,
                    item.fetched.start_us,
                    item.fetched.end_us,
                    item.fetched.bars.height,
                )
                for item in bars
                if type(item) is HistoryBarsReady
            ]
            if stored:
                self.bus.publish_nowait(stored)
            self.last_flush_ms = (time.perf_counter() - started) * 1000
            self.flushes += 1
            self.rows_written += written
            return written

    def _write(
        self, ticks: list[object], bars: list[Bar | HistoryBarsReady], logs: list[EngineLogged]
    ) -> int:
        written = 0
        if bars:
            written += self.store.upsert_bars(_ordered_bar_frame(bars))
            # Fetched history is complete for its range, bars or not (a closed market).
            self.store.add_coverage_many(
                [
                    (
                        item.fetched.instrument,
                        "1m",
                        item.fetched.instrument.split(":", 1)[0].lower(),
                        item.fetched.start_us,
                        item.fetched.end_us,
                    )
                    for item in bars
                    if type(item) is HistoryBarsReady
                ]
            )
        if ticks:
            written += self.store.append_ticks(ticks_to_frame(ticks))
        if logs:
            written += self.store.append_service_events(
                pl.DataFrame(
                    {
                        "ts": pl.Series([entry.ts_us for entry in logs], dtype=pl.Int64).cast(
                            pl.Datetime("us")
                        ),
                        "source": [entry.source for entry in logs],
                        "level": [entry.level for entry in logs],
                        "message": [entry.message for entry in logs],
                    }
                )
            )
        return written


def _ordered_bar_frame(items: list[Bar | HistoryBarsReady]) -> pl.DataFrame:
    """One frame of live bars and fetched history in arrival order (the upsert keeps
    the last version of each bar), in the store's layout: history without order-flow
    columns gets NULL buy/sell volume."""
    frames: list[pl.DataFrame] = []
    run: list[Bar] = []
    for item in items:
        if type(item) is HistoryBarsReady:
            if run:
                frames.append(bars_to_frame(run))
                run = []
            frames.append(item.fetched.bars)
        else:
            run.append(item)
    if run:
        frames.append(bars_to_frame(run))
    return pl.concat([stored_bars(frame) for frame in frames])


def ticks_to_frame(events: list[object]) -> pl.DataFrame:
    """Quotes and trades to the ticks table's layout (columns built in one pass each);
    a trade keeps its taker side (NULL when unknown, and for quotes)."""
    is_quote = [type(event) is QuoteReceived for event in events]

    def column(getter: Callable[[object], float], quotes: bool) -> list[float | None]:
        return [
            getter(event) if flag is quotes else None
            for event, flag in zip(events, is_quote, strict=True)
        ]

    return pl.DataFrame(
        {
            "instrument": [event.instrument for event in events],
            "ts": pl.Series([event.ts_us for event in events], dtype=pl.Int64).cast(
                pl.Datetime("us")
            ),
            "bid": column(lambda event: event.bid, True),
            "ask": column(lambda event: event.ask, True),
            "bid_size": column(lambda event: event.bid_size, True),
            "ask_size": column(lambda event: event.ask_size, True),
            "price": column(lambda event: event.price, False),
            "size": column(lambda event: event.size, False),
            "side": column(lambda event: event.side or None, False),
        },
        schema=STORED_TICK_SCHEMA,
    )
