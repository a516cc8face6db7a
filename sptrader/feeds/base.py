"""The Feed protocol: what every market-data source provides to the engine.

A feed streams live events for its instruments (``stream``) and, where the source has
one, serves 1m bar history for any range (``history``, blocking: run it in a thread).
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import polars as pl

from sptrader.clock import now_us
from sptrader.supervisor import Service, ServiceContext


class Feed(ABC):
    #: Instrument prefix, e.g. ``SIM`` for ``SIM:EURUSD``.
    prefix: str = ""
    #: Service name shown in the services pane.
    name: str = ""
    #: False for feeds whose timestamps are not wall-clock time (replay): their bars
    #: close when their own clock passes the minute, not the machine's.
    realtime: bool = True

    def __init__(self, instruments: list[str]) -> None:
        self.instruments = list(instruments)

    @abstractmethod
    async def stream(self, context: ServiceContext) -> None:
        """Publish events until cancelled. Raise to be restarted with backoff."""

    def price_source(self, instrument: str) -> str:
        """``trade``, ``bid`` or ``mid``: what the bar builder makes this one's bars of."""
        return "trade"

    def history(self, instrument: str, start_us: int, end_us: int) -> pl.DataFrame | None:
        """1m bars with open time in [start, end) in the store's layout, or None when
        this feed has no history to give."""
        return None

    def clock_us(self) -> int:
        """The feed's notion of now (wall clock for live feeds)."""
        return now_us()


class FeedService(Service):
    """Runs a feed under the supervisor."""

    kind = "feed"

    def __init__(self, feed: Feed) -> None:
        super().__init__(feed.name)
        self.feed = feed

    async def run(self, context: ServiceContext) -> None:
        await self.feed.stream(context)
