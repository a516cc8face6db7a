"""Storing a broker's changes, then telling the bus: shared by the paper broker and every
live broker, so an order is in DuckDB before any screen hears of it.

``stash`` freezes a batch's changes as rows on the loop (the thread that writes must not
read an order the broker is changing); ``flush`` stores every unsaved row in one
transaction in a thread and publishes ``OrderUpdated``/``FillExecuted``. One write at a
time, in order; a failed write keeps its rows for the next. When ``flush`` returns,
everything stashed before the call is stored (a write in flight, by another caller, is
waited for).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from sptrader.broker import records
from sptrader.broker.book import Changes
from sptrader.bus import Bus
from sptrader.models import FillExecuted, OrderUpdated
from sptrader.store import Store
from sptrader.threads import run_in_thread


class Recorder:
    def __init__(self, bus: Bus, clock: Callable[[], int]) -> None:
        self.bus = bus
        self.clock = clock
        # Rows not yet stored (kept and retried if a write fails): newest state wins.
        self._orders: dict[int, tuple[Any, ...]] = {}
        self._fills: list[tuple[Any, ...]] = []
        self._lock = asyncio.Lock()

    @property
    def pending(self) -> bool:
        """Rows wait to be stored (or a write is in flight)."""
        return bool(self._orders or self._fills or self._lock.locked())

    def stash(self, changes: Changes) -> None:
        if not changes:
            return
        order_rows, fill_rows = records.snapshot(changes)
        for row in order_rows:
            self._orders[row[0]] = row
        self._fills.extend(fill_rows)

    async def flush(self, store: Store) -> None:
        if not self.pending:
            return
        async with self._lock:
            orders, self._orders = self._orders, {}
            fills, self._fills = self._fills, []
            if not (orders or fills):
                return  # a write before this one took them
            try:
                await run_in_thread(records.save_changes, store, (list(orders.values()), fills))
            except BaseException:
                for order_id, row in orders.items():
                    self._orders.setdefault(order_id, row)  # a newer state wins
                self._fills[:0] = fills
                raise
        now = self.clock()
        events: list[object] = [
            OrderUpdated(now, dict(zip(records.ORDER_FIELDS, row, strict=True)))
            for row in orders.values()
        ]
        events.extend(
            FillExecuted(now, dict(zip(records.FILL_FIELDS, row, strict=True))) for row in fills
        )
        self.bus.publish_nowait(events)
