"""The Feed protocol: what every market-data source provides to the engine.

A feed streams live events for its instruments (``stream``) and, where the source has
one, serves 1m bar history for any range (``history``, blocking: run it in a thread)
and its list of tradable symbols (``symbols``, blocking). ``FeedService`` runs a feed
under the supervisor, with the feeds' rules for what an ordinary disconnect is
(``sptrader.feeds.disconnects``).
"""

from __future__ import annotations

import asyncio
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

import polars as pl

from sptrader.clock import now_us
from sptrader.errors import SptraderError
from sptrader.feeds import disconnects
from sptrader.feeds.disconnects import StreamSilent
from sptrader.feeds.sequence import LostTrades, TradeSequence
from sptrader.models import US_PER_DAY, US_PER_MINUTE, SymbolInfo
from sptrader.schema import BAR_SCHEMA  # the bars history() returns: see sptrader.schema
from sptrader.supervisor import Service, ServiceContext


class Watchdog:
    """A stream's silence limit: one timer for the whole connection, pushed back as
    messages arrive (at most a few times a second). A timer per message (asyncio.timeout
    around each receive) cost a third of a feed's throughput.

        async with Watchdog(30) as watchdog:
            while True:
                raw = await websocket.recv()
                watchdog.fed()
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        # Pushing back at most this often makes the limit up to this much later.
        self._push_every = min(1.0, seconds / 4)

    async def __aenter__(self) -> Watchdog:
        self._loop = asyncio.get_running_loop()
        self._timeout = asyncio.timeout(self.seconds)
        await self._timeout.__aenter__()
        self._pushed = self._loop.time()
        return self

    async def __aexit__(self, exc_type: Any, exc: Any, traceback: Any) -> bool | None:
        try:
            return await self._timeout.__aexit__(exc_type, exc, traceback)
        except TimeoutError:
            raise StreamSilent(f"no message for {self.seconds:.0f}s") from None

    def fed(self) -> None:
        """A message arrived."""
        now = self._loop.time()
        if now - self._pushed >= self._push_every:
            self._pushed = now
            self._timeout.reschedule(now + self.seconds)


class Feed(ABC):
    #: Instrument prefix, e.g. ``SIM`` for ``SIM:EURUSD``.
    prefix: str = ""
    #: Service name shown in the services pane.
    name: str = ""
    #: False for feeds whose timestamps are not wall-clock time (replay): their bars
    #: close when their own clock passes the minute, not the machine's.
    realtime: bool = True
    #: False for history-only sources (Dukascopy): nothing to stream.
    live: bool = True
    #: Seconds without a message after which the feed and its instruments are stale
    #: (None: never, e.g. the simulator).
    stale_after_s: float | None = None
    #: A backfill asks ``history`` for ranges of this length (resumable units).
    history_chunk_us: int = US_PER_DAY
    #: How long after the fact history is complete at the source (Dukascopy publishes
    #: an hour's file after the hour): a backfill stops this far before now.
    history_delay_us: int = 0
    #: History requests a backfill may have in flight at once.
    max_concurrency: int = 4
    #: Fetch the minute a stream (re)started in again once it closed: live ticks saw
    #: only part of it. False where history is a model, not a record (the simulator).
    refetch_partial_minute: bool = True
    #: True when any symbol is valid (the simulator): nothing to validate against.
    open_symbols: bool = False
    #: True when its symbol list is built in (no network): asked directly for a price
    #: format, not through the cached list (sptrader.symbols.price_decimals).
    builtin_symbols: bool = False
    #: The kind of market its instruments trade in where its symbol list does not say
    #: ("crypto", "fx", ...: sptrader.sessions gives each kind its hours). Every feed
    #: class sets one: the feed registry refuses a class without it (no silent 24x7).
    market_kind: str

    def __init__(self, instruments: list[str]) -> None:
        self.instruments = list(instruments)

    @abstractmethod
    async def stream(self, context: ServiceContext) -> None:
        """Publish events until cancelled. Raise to be restarted with backoff."""

    def price_source(self, instrument: str) -> str:
        """``trade``, ``bid`` or ``mid``: what the bar builder makes this one's bars of."""
        return "trade"

    def history(self, instrument: str, start_us: int, end_us: int) -> pl.DataFrame | None:
        """Closed 1m bars with open time in [start, end) in ``BAR_SCHEMA``, or None when
        this feed has no history to give. Blocking: call it from a thread."""
        return None

    def history_ticks(self, instrument: str, start_us: int, end_us: int) -> pl.DataFrame | None:
        """Raw ticks in [start, end) in the store's ``ticks`` layout, for sources whose
        history is ticks (Dukascopy); None otherwise."""
        return None

    def symbols(self) -> list[SymbolInfo]:
        """Every instrument this feed can serve (blocking; raises SptraderError when
        the list cannot be fetched). Empty: the feed has no list to check against."""
        return []

    def clock_us(self) -> int:
        """The feed's notion of now (wall clock for live feeds)."""
        return now_us()


class ExchangeFeed(Feed):
    """A live exchange feed: the settings every one of them shares (``LiveFeedConfig``),
    and the seams tests use (an httpx transport for history, a replaceable sleep)."""

    def __init__(
        self,
        instruments: list[str],
        config: Any,
        *,
        transport: Any = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        super().__init__(instruments)
        self.config = config
        self.stale_after_s = config.stale_after_s
        self.max_concurrency = config.max_concurrency
        self._transport = transport
        # How history waits out a 429 or a 5xx (tests replace it).
        self.sleep = sleep
        # Repeated trades dropped, holes in trade ids reported (see feeds.sequence).
        self.sequence = TradeSequence()
        #: Told of trades proven lost (set by the engine: it re-fetches those minutes).
        self.on_lost_trades: LostTrades | None = None
        #: Told the minute a connection opened in, seen only in part (the engine
        #: re-fetches it, and any minute since its gap fill ended, once closed).
        self.on_stream_joined: Callable[[int], None] | None = None

    async def pump(
        self,
        websocket: Any,
        context: ServiceContext,
        keep_going: Callable[[], bool] = lambda: True,
    ) -> None:
        """Receive, parse and publish until the connection fails, the watchdog trips, or
        ``keep_going()`` turns false. A message that cannot be parsed, whatever is wrong
        with it (bad UTF-8, nesting too deep, a number too large), is counted and
        skipped: it never costs the connection."""
        if self.on_stream_joined is not None:
            now = self.clock_us()
            self.on_stream_joined(now - now % US_PER_MINUTE)
        async with Watchdog(self.config.watchdog_s) as watchdog:
            while keep_going():
                # Undecoded: the parsers read bytes, and a frame that is not UTF-8 is one
                # malformed message, not a failed connection.
                raw = await websocket.recv(decode=False)
                watchdog.fed()
                context.touch()
                events = self.parse_safely(raw, context)
                if events:
                    await context.publish(events)

    def parse_safely(self, raw: str | bytes, context: ServiceContext) -> list[object]:
        """``parse``, with anything it lets escape counted as malformed (except the
        signals it raises on purpose: a server shutdown, or a problem for the user),
        and repeated trades dropped."""
        try:
            events = self.parse(raw, context)
        except (ConnectionResetError, SptraderError):
            raise
        except Exception as error:  # RecursionError, OverflowError, a parser bug
            context.skipped(
                "malformed", f"an unreadable {self.name} message ({type(error).__name__})"
            )
            return []
        if events:
            sequence = self.sequence
            events = sequence.check(events, self.on_lost_trades)
            if sequence.duplicates or sequence.lost:
                context.counters["duplicate_trades"] = sequence.duplicates
                context.counters["lost_trades"] = sequence.lost
        return events

    def parse(self, raw: str | bytes, context: ServiceContext) -> list[object]:
        """One message to events; anything unexpected is counted and skipped."""
        raise NotImplementedError

    def price_source(self, instrument: str) -> str:
        # Exchanges print trades: "auto" means bars of trade prices.
        source = self.config.price_source
        return "trade" if source == "auto" else source


def empty_bars() -> pl.DataFrame:
    return pl.DataFrame(schema=BAR_SCHEMA)


class FeedService(Service):
    """Runs a feed under the supervisor. ``before_stream`` (the engine's gap backfill)
    runs on every start and restart, so live bars continue the stored ones."""

    kind = "feed"
    # A feed's websocket closes, handshake refusals and httpx errors are disconnects too.
    is_disconnect = staticmethod(disconnects.is_disconnect)
    disconnect_reason = staticmethod(disconnects.disconnect_reason)

    def __init__(self, feed: Feed, before_stream: Any = None) -> None:
        super().__init__(feed.name)
        self.feed = feed
        self.before_stream = before_stream
        self.stale_after_s = feed.stale_after_s
        self.context: ServiceContext | None = None

    async def run(self, context: ServiceContext) -> None:
        # The engine reads when the feed last heard anything (live coverage).
        self.context = context
        if self.before_stream is not None:
            await self.before_stream(self.feed, context)
        await self.feed.stream(context)
