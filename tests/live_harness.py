"""A live broker on a store with its run() as a task, restarted by hand as the
supervisor would after a drop (test support for tests/broker/test_live_*.py and bench/)."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from sptrader.broker import records
from sptrader.broker.halts import Halts
from sptrader.broker.ids import Ids
from sptrader.broker.live import LiveBroker
from sptrader.bus import Bus
from sptrader.config import RiskConfig
from sptrader.store import Store
from sptrader.supervisor import ServiceContext
from sptrader.venues.base import Venue


class Running:
    def __init__(
        self,
        path: Path,
        venue: Venue,
        limits: RiskConfig | None = None,
        quotes: dict[str, tuple[float, float]] | None = None,
    ) -> None:
        self.path, self.venue = path, venue
        self.limits = limits or RiskConfig(max_leverage=0, risk_per_trade_pct=0)
        self.quotes = quotes or {}
        self.task: asyncio.Task | None = None

    async def start(self) -> LiveBroker:
        self.store = Store(self.path)
        self.store.migrate()
        halts = Halts()
        halts.load(self.store)
        self.bus = Bus()
        self.broker = LiveBroker(self.bus, self.venue, self.limits, halts=halts)
        await self.broker.open(self.store, Ids(*records.next_ids(self.store)))
        self.broker.quotes.update(self.quotes)
        await self.run()
        return self.broker

    async def run(self, timeout: float = 10) -> None:
        self.broker._ready.clear()
        self.task = asyncio.create_task(self.broker.run(ServiceContext(self.broker.name, self.bus)))
        await self.broker.wait_ready(timeout)

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.task
        await self.broker.drain()
        self.store.close()

    def rows(self, query: str) -> list[tuple]:
        return self.store.cursor().execute(query).fetchall()
