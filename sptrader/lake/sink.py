"""The lake sink: a writer-side service that appends closed 1m bars (and fetched
history, and the ticks ``store.keep_ticks`` names) to the lake every
``lake.flush_interval_s`` and compacts it every ``lake.compact_every_h``.

It subscribes to the bus with the ``block`` policy (nothing is dropped) and takes every
event off its queue at once, so a slow or unreachable lake never slows the feeds: rows
it could not append are held and sent again with the next flush (appends are
idempotent, so a commit that did land before an error is not doubled). An outage is
logged once when it starts and once when it ends.

Ticks: an append replaces each instrument's span of the batch, so a tick older than
the newest one already appended for its instrument cannot join the lake (it would
replace the stored ticks of its span); such late ticks are counted (``late_ticks``)
and left to the store.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import polars as pl

from sptrader.bars import bars_to_frame
from sptrader.bus import Bus, Subscription
from sptrader.config import Config
from sptrader.lake.append import append_bars, append_ticks
from sptrader.lake.location import Lake, lake_of
from sptrader.lake.maintain import compact
from sptrader.models import (
    Bar,
    BarClosed,
    HistoryBarsReady,
    QuoteReceived,
    TradeReceived,
)
from sptrader.schema import stored_bars
from sptrader.store.writer import ticks_to_frame
from sptrader.supervisor import Service, ServiceContext

log = logging.getLogger(__name__)

QUEUE = 500_000


class LakeSink(Service):
    kind = "lake"

    def __init__(
        self,
        lake: Lake,
        bus: Bus,
        flush_interval_s: float,
        compact_every_h: float,
        keep_ticks: list[str],
        *,
        queue: int = QUEUE,
    ) -> None:
        super().__init__("lake")
        self.lake = lake
        self.flush_interval_s = flush_interval_s
        self.compact_every_s = compact_every_h * 3600
        keep = set(keep_ticks)
        self._all_ticks = "*" in keep
        self._keep_ticks = keep
        self.subscription: Subscription = bus.subscribe(
            "lake", maxsize=queue, policy="block", accepts=self._wanted
        )
        self._bars: list[Bar | HistoryBarsReady] = []
        self._ticks: list[object] = []
        # Built but not yet appended (the lake was unreachable): sent first next time.
        self._held_bars: list[pl.DataFrame] = []
        self._held_ticks: list[pl.DataFrame] = []
        self._tick_high: dict[str, int] = {}  # newest appended tick per instrument
        self._outage_since: float | None = None
        self._compacted_at = time.monotonic()
        self._lock = asyncio.Lock()
        self.rows_written = 0
        self.failures = 0
        self.late_ticks = 0

    def _wanted(self, event: object) -> bool:
        kind = type(event)
        if kind is BarClosed:
            return event.bar.timeframe == "1m"
        if kind is HistoryBarsReady:
            return True
        if kind is QuoteReceived or kind is TradeReceived:
            return self._all_ticks or event.instrument in self._keep_ticks
        return False

    def _take(self, events: list[object]) -> None:
        for event in events:
            kind = type(event)
            if kind is BarClosed:
                self._bars.append(event.bar)
            elif kind is HistoryBarsReady:
                self._bars.append(event)
            else:
                self._ticks.append(event)

    def held_rows(self) -> int:
        """Rows waiting for the lake (taken, built or held through an outage)."""
        return (
            len(self._bars)
            + len(self._ticks)
            + sum(frame.height for frame in (*self._held_bars, *self._held_ticks))
        )

    async def run(self, context: ServiceContext) -> None:
        context.mark_running()
        next_flush = time.monotonic() + self.flush_interval_s
        while True:
            timeout = max(0.0, next_flush - time.monotonic())
            self._take(await self.subscription.get_within(timeout))
            if time.monotonic() < next_flush:
                continue
            written = await self.flush()
            if written:
                context.events += written
                context.last_event_us = time.time_ns() // 1000
            context.counters.update(
                {"held": self.held_rows(), "failures": self.failures, "late_ticks": self.late_ticks}
            )
            if (
                self.compact_every_s
                and time.monotonic() - self._compacted_at >= self.compact_every_s
            ):
                await self.compact()
            next_flush = time.monotonic() + self.flush_interval_s

    async def drain(self) -> int:
        """Take everything queued and append it (on shutdown)."""
        self._take(self.subscription.get_nowait())
        written = await self.flush()
        if self.held_rows():
            log.warning(
                "%d rows were not appended to lake %s (unreachable); the store has the bars:"
                " `sptrader export --format delta` sends them later",
                self.held_rows(),
                self.lake,
                extra={"source": self.name},
            )
        return written

    async def flush(self) -> int:
        """Append what was taken and what is held; the rows appended (0 on a failure:
        they stay held)."""
        async with self._lock:
            if self._bars:
                self._held_bars.append(_ordered_bars(self._bars))
                self._bars = []
            if self._ticks:
                self._held_ticks.append(self._new_ticks(ticks_to_frame(self._ticks)))
                self._ticks = []
            if not (self._held_bars or self._held_ticks):
                return 0
            bars = pl.concat(self._held_bars) if self._held_bars else None
            ticks = pl.concat(self._held_ticks) if self._held_ticks else None
            try:
                written = await asyncio.to_thread(self._append, bars, ticks)
            except Exception as error:
                self.failures += 1
                if self._outage_since is None:
                    self._outage_since = time.monotonic()
                    log.warning(
                        "%s; holding %d rows and retrying every %gs",
                        error,
                        self.held_rows(),
                        self.flush_interval_s,
                        extra={"source": self.name},
                    )
                return 0
            self._held_bars, self._held_ticks = [], []
            if ticks is not None and not ticks.is_empty():
                newest = ticks.group_by("instrument").agg(pl.col("ts").max().dt.epoch("us"))
                self._tick_high.update(dict(newest.iter_rows()))
            if self._outage_since is not None:
                log.info(
                    "lake %s reachable again after %.0fs; %d rows appended",
                    self.lake,
                    time.monotonic() - self._outage_since,
                    written,
                    extra={"source": self.name},
                )
                self._outage_since = None
            self.rows_written += written
            return written

    def _append(self, bars: pl.DataFrame | None, ticks: pl.DataFrame | None) -> int:
        written = 0
        # Bars go first; a tick failure after them resends the bars too (idempotent).
        if bars is not None:
            written += append_bars(self.lake, bars)
        if ticks is not None and not ticks.is_empty():
            written += append_ticks(self.lake, ticks)
        return written

    def _new_ticks(self, ticks: pl.DataFrame) -> pl.DataFrame:
        if not self._tick_high:
            return ticks
        high = pl.DataFrame(
            {"instrument": list(self._tick_high), "high": list(self._tick_high.values())},
            schema={"instrument": pl.String, "high": pl.Int64},
        )
        joined = ticks.join(high, on="instrument", how="left")
        late = pl.col("high").is_not_null() & (pl.col("ts").dt.epoch("us") <= pl.col("high"))
        self.late_ticks += joined.filter(late).height
        return joined.filter(~late).drop("high")

    async def compact(self) -> None:
        self._compacted_at = time.monotonic()
        try:
            done = await asyncio.to_thread(compact, self.lake)
        except Exception as error:
            log.warning("%s", error, extra={"source": self.name})
            return
        for table in done:
            log.info(
                "lake %s compacted: %d files into %d, %d old files vacuumed",
                table.table,
                table.files_removed,
                table.files_added,
                table.vacuumed,
                extra={"source": self.name},
            )


def _ordered_bars(items: list[Bar | HistoryBarsReady]) -> pl.DataFrame:
    """Live bars and fetched history as one frame in arrival order (the append keeps
    the last version of each bar)."""
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


def lake_service(engine_bus: Bus, config: Config, home: Path | None = None) -> LakeSink | None:
    """The lake sink for an engine whose ``[lake] uri`` is set (None when it is not);
    a relative path is relative to ``home``."""
    if not config.lake.uri.strip():
        return None
    return LakeSink(
        lake_of(config.lake, home),
        engine_bus,
        config.lake.flush_interval_s,
        config.lake.compact_every_h,
        list(config.store.keep_ticks),
        queue=config.store.writer_queue,
    )
