"""The paper broker on the bus: quotes fill orders, scanners' signals become orders, and
every change is stored in DuckDB before the UI hears of it.

How it listens. Quotes arrive thousands a second and the broker must never slow the bus
down, yet a stop must trigger if *any* quote crossed it and a scanner's signal must
never be lost. No bus queue policy gives all three (``drop_oldest`` may drop a signal,
``block`` stalls the feeds when the broker is busy), so the broker taps the bus: its
subscription's ``accepts`` hook sees every event as it is published and queues nothing
on the bus itself. Per quote it does O(1) work:

- it keeps the newest quote per instrument (``_fresh``: marks need only that);
- only for an instrument with working orders (a dict lookup in the book's ``working``)
  is the quote also appended to ``_pending``, in order, so the next batch checks every
  one of them against the triggers; that buffer is bounded (``max_pending``) and, if the
  broker ever falls that far behind, drops its oldest quotes (counted) while the newest
  of each instrument is still checked from ``_fresh``;
- paper signals go to their own list, never bounded, never dropped (they are rare).

The service's loop wakes when there is something to check, handles the whole batch on
the loop (the book is not thread-safe: quotes, orders placed through the API and
signals are all serialised there), then stores the batch's changes in one transaction
in a thread and publishes ``OrderUpdated``/``FillExecuted``. Once a second it also
expires day orders and rolls the day's P&L at 00:00 UTC, quotes or not.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections import deque
from typing import Any

from sptrader.broker import records
from sptrader.broker.book import Changes, PaperBook
from sptrader.broker.halts import Halts
from sptrader.broker.ids import Ids
from sptrader.broker.ledger import QTY_EPSILON, Ledger
from sptrader.broker.orders import Order, OrderRequest, OrderResult
from sptrader.broker.recorder import Recorder
from sptrader.broker.risk import size_from_risk
from sptrader.bus import Bus
from sptrader.clock import now_us
from sptrader.config import BrokerConfig, RiskConfig
from sptrader.errors import SptraderError, UsageError
from sptrader.feeds.registry import FeedRegistry
from sptrader.models import (
    QuoteReceived,
    SignalRaised,
    normalize_instrument,
)
from sptrader.store import Store
from sptrader.supervisor import Service, ServiceContext
from sptrader.threads import run_in_thread

log = logging.getLogger(__name__)

# How often day orders are expired and the day rolled when no quote comes.
TICK_S = 1.0
# Quotes of instruments with working orders waiting to be checked, at most.
MAX_PENDING = 200_000


class PaperBroker(Service):
    """The paper account as a service (``engine.broker``).

    ``open(store)`` loads it (blocking work in a thread); the async API below is what
    the CLI, the daemon's API and the TUI use. Order dicts carry ``Order``'s fields,
    fill dicts ``Fill``'s, times in UTC microseconds.
    """

    kind = "broker"
    stoppable = False

    def __init__(
        self,
        bus: Bus,
        broker: BrokerConfig,
        limits: RiskConfig,
        *,
        feeds: FeedRegistry | None = None,
        clock: Any = now_us,
        max_pending: int = MAX_PENDING,
    ) -> None:
        super().__init__("broker")
        self.bus = bus
        self.config = broker
        self.limits = limits
        self.feeds = feeds  # for the stale-quote rule (None: quotes are never stale)
        self.clock = clock
        self.max_pending = max_pending
        self.store: Store | None = None
        self.book: PaperBook | None = None
        self._working: dict[str, dict[int, Order]] = {}
        self._fresh: dict[str, QuoteReceived] = {}
        self._pending: deque[QuoteReceived] = deque()
        self._signals: list[SignalRaised] = []
        self._wake = asyncio.Event()
        self._dropped_since_batch = False
        self.quotes_seen = 0
        self.quotes_checked = 0
        self.quotes_dropped = 0
        self.signals_seen = 0
        self._recorder = Recorder(bus, clock)
        #: Which venues are halted (``sptrader halt``); set by the engine.
        self.halts: Halts | None = None
        self.subscription = bus.subscribe("broker", maxsize=1, accepts=self._tap)

    # --- the bus tap (runs inside every publish: keep it tiny) ------------------------

    def _tap(self, event: object) -> bool:
        kind = type(event)
        if kind is QuoteReceived:
            self.quotes_seen += 1
            instrument = event.instrument
            self._fresh[instrument] = event
            if self._working.get(instrument):
                pending = self._pending
                if len(pending) >= self.max_pending:
                    pending.popleft()
                    self.quotes_dropped += 1
                    self._dropped_since_batch = True
                pending.append(event)
                self._wake.set()
        elif kind is SignalRaised and event.paper:
            self.signals_seen += 1
            self._signals.append(event)
            self._wake.set()
        return False  # nothing is queued on the bus: see the module's docstring

    # --- lifecycle --------------------------------------------------------------------

    async def open(self, store: Store, ids: Ids | None = None) -> None:
        """Load the account from the store: open orders, every fill (the positions),
        the next ids (``ids``, shared with the live brokers, when given), and the day's
        starting equity (the equity at 00:00 UTC rebuilt from the fills before it,
        marked at the last closes before it)."""
        self.store = store
        self.book = await run_in_thread(self._load, store, ids)
        self._working = self.book.working
        changes = self.book.expire(self.clock())  # day orders of a day that has passed
        self._stash(changes)
        await self._flush()
        book = self.book
        log.info(
            "paper account loaded: %d open positions, %d open orders, equity %.2f %s",
            len(book.ledger.open_positions()),
            len(book.orders),
            book.equity(),
            self.config.currency,
            extra={"source": "broker"},
        )

    def _load(self, store: Store, ids: Ids | None) -> PaperBook:
        open_orders, fills, next_order_id, next_fill_id = records.load_state(store)
        starting_cash = self.config.starting_cash
        ledger = Ledger.from_fills(fills, starting_cash)
        now = self.clock()
        held = [p.instrument for p in ledger.open_positions()]
        start_equity = records.day_start_equity(store, fills, starting_cash, now)
        book = PaperBook(
            self.config,
            self.limits,
            ledger=ledger,
            open_orders=open_orders,
            ids=ids if ids is not None else Ids(next_order_id, next_fill_id),
            stale=self._stale,
            halted=self._halted,
        )
        book.fallback_marks = records.last_closes(store, held, now)
        book.roll_day(now, start_equity)
        return book

    async def run(self, context: ServiceContext) -> None:
        self._require_book()
        context.mark_running()
        loop = asyncio.get_running_loop()
        next_tick = loop.time()
        reported_drops = self.quotes_dropped
        while True:
            timeout = next_tick - loop.time()
            if timeout > 0 and not self._wake.is_set():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(timeout):
                        await self._wake.wait()
            self._wake.clear()
            changes = self._batch()
            if loop.time() >= next_tick:
                next_tick = loop.time() + TICK_S
                changes.add(self._on_tick(self.clock()))
            self._stash(changes)
            await self._flush()
            context.events = self.quotes_seen + self.signals_seen
            context.last_event_us = self.clock()
            context.counters.update(
                quotes_checked=self.quotes_checked,
                quotes_dropped=self.quotes_dropped,
                signals=self.signals_seen,
            )
            if self.quotes_dropped > reported_drops:
                log.warning(
                    "fell behind: %d quotes skipped (the newest of each instrument was checked)",
                    self.quotes_dropped - reported_drops,
                    extra={"source": "broker"},
                )
                reported_drops = self.quotes_dropped

    async def drain(self) -> None:
        """Handle what is queued and store everything not yet stored (on shutdown,
        before the store closes)."""
        if self.book is None:
            return
        self._stash(self._batch())
        try:
            await self._flush()
        except Exception:
            log.exception("could not store the paper broker's last changes")

    # --- the async API ----------------------------------------------------------------

    async def place(self, request: OrderRequest) -> OrderResult:
        """Place an order (stored before this returns). A malformed request raises a
        UsageError; one a limit refuses comes back rejected, with the limit and why."""
        book = self._require_book()
        if isinstance(request, dict):
            request = OrderRequest.from_dict(request)
        request = dataclasses.replace(request, instrument=normalize_instrument(request.instrument))
        self._stash(self._batch_quotes())  # the order sees the newest quote
        try:
            result, changes = book.place(request, self.clock())
        except UsageError:
            self._wake.set()  # the loop stores what the quotes above changed
            raise
        self._stash(changes)
        await self._flush()
        if result.rejection is not None:
            self._log_rejection(result)
        return result

    async def cancel(self, order_id: int) -> Order:
        book = self._require_book()
        self._stash(self._batch_quotes())  # it may have filled meanwhile
        try:
            order, changes = book.cancel(int(order_id), self.clock())
        except UsageError:
            self._wake.set()
            raise
        self._stash(changes)
        await self._flush()
        return order

    async def close_position(self, instrument: str) -> OrderResult:
        """A market order closing the whole position (its stop-loss and take-profit go
        once it fills)."""
        book = self._require_book()
        name = normalize_instrument(instrument)
        self._stash(self._batch_quotes())
        try:
            result, changes = book.close_position(name, self.clock())
        except UsageError:
            self._wake.set()
            raise
        self._stash(changes)
        await self._flush()
        if result.rejection is not None:
            self._log_rejection(result)
        return result

    async def wait_for_quote(self, instrument: str, timeout: float = 10.0) -> bool:
        """Wait until ``instrument`` has a live quote (a one-shot engine, e.g. the CLI
        placing a market order, has none when it starts); False after ``timeout`` s."""
        name = normalize_instrument(instrument)
        book = self._require_book()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while name not in self._fresh and name not in book.quotes:
            if loop.time() >= deadline:
                return False
            await asyncio.sleep(0.02)
        return True

    def account(self) -> dict[str, Any]:
        """Equity, cash, exposure, day P&L … at the newest quotes."""
        book = self._require_book()
        self._sync_marks()
        return book.account()

    def positions(self) -> list[dict[str, Any]]:
        book = self._require_book()
        self._sync_marks()
        return book.positions()

    def open_orders(self) -> list[dict[str, Any]]:
        return [order.to_dict() for order in self._require_book().open_orders()]

    async def order_history(self, limit: int = 100, *, status: str | None = None) -> list[dict]:
        """Stored orders, newest first (every status, or only ``status``)."""
        store = self._require_store()
        await self._flush()
        return await run_in_thread(records.orders, store, status, limit)

    async def fills(self, since_us: int | None = None, limit: int | None = None) -> list[dict]:
        """Stored fills, oldest first (see ``records.fills``)."""
        store = self._require_store()
        await self._flush()
        return await run_in_thread(records.fills, store, since_us, limit)

    # --- batches ----------------------------------------------------------------------

    def _batch(self) -> Changes:
        """Check the queued quotes, then turn the queued signals into orders."""
        changes = self._batch_quotes()
        if self._signals:
            signals, self._signals = self._signals, []
            for signal in signals:
                try:
                    changes.add(self._on_signal(signal))
                except Exception:
                    log.exception(
                        "signal of %s on %s not handled", signal.scanner, signal.instrument
                    )
        return changes

    def _batch_quotes(self) -> Changes:
        """Every queued quote against the triggers, in order; then the newest quote of
        every instrument for the marks."""
        book = self._require_book()
        changes = Changes()
        if self._pending:
            pending, self._pending = self._pending, deque()
            on_quote = book.on_quote
            for quote in pending:
                found = on_quote(
                    quote.instrument,
                    quote.ts_us,
                    quote.bid,
                    quote.ask,
                    quote.bid_size,
                    quote.ask_size,
                )
                if found:
                    changes.add(found)
            self.quotes_checked += len(pending)
        self._sync_marks()
        if self._dropped_since_batch:
            # Quotes were skipped: the newest of each working instrument is checked all
            # the same (checking a quote twice changes nothing).
            self._dropped_since_batch = False
            for instrument in [name for name, orders in self._working.items() if orders]:
                quote = book.quotes.get(instrument)
                if quote is not None:
                    found = book.on_quote(
                        instrument,
                        quote.ts_us,
                        quote.bid,
                        quote.ask,
                        quote.bid_size,
                        quote.ask_size,
                    )
                    if found:
                        changes.add(found)
        return changes

    def _sync_marks(self) -> None:
        if self._fresh:
            fresh, self._fresh = self._fresh, {}
            set_quote = self._require_book().set_quote
            for instrument, quote in fresh.items():
                set_quote(
                    instrument, quote.ts_us, quote.bid, quote.ask, quote.bid_size, quote.ask_size
                )

    def _on_tick(self, now: int) -> Changes:
        book = self._require_book()
        changes = book.expire(now)
        book.roll_day(now)
        return changes

    # --- signals ----------------------------------------------------------------------

    def _on_signal(self, signal: SignalRaised) -> Changes:
        """A paper signal as an order: ``buy`` goes long (covering a short first),
        ``sell`` goes short likewise, ``exit`` closes the position."""
        book = self._require_book()
        now = self.clock()
        source = f"scanner:{signal.scanner}"
        instrument = signal.instrument
        position = book.ledger.positions.get(instrument)
        current = position.qty if position is not None and not position.is_flat else 0.0
        # This scanner's orders still working (partly filled under the volume cap, or
        # waiting out the latency) go first, a new signal replaces them; one already
        # doing what the signal asks is left to finish.
        changes = Changes()
        for order in list(book.working.get(instrument, {}).values()):
            if order.source != source or order.role not in ("entry", "close") or not order.is_open:
                continue
            if signal.side == "exit":
                same = order.role == "close"
            else:
                same = order.role == "entry" and order.side == signal.side
            if same:
                log.info(
                    "%s: %s signal on %s, order %d still working: nothing to do",
                    source,
                    signal.side,
                    instrument,
                    order.order_id,
                    extra={"source": "broker"},
                )
                return changes
            changes.add(book.cancel(order.order_id, now, "replaced by a new signal")[1])
        if signal.side == "exit":
            if current == 0:
                log.info(
                    "%s: exit signal on %s, no position to close",
                    source,
                    instrument,
                    extra={"source": "broker"},
                )
                return changes
            result, closing = book.close_position(instrument, now, source=source)
            self._report_signal_order(source, result)
            changes.add(closing)
            return changes
        if signal.side not in ("buy", "sell"):
            log.warning(
                "%s: unknown signal side %r on %s, ignored",
                source,
                signal.side,
                instrument,
                extra={"source": "broker"},
            )
            return changes
        direction = 1 if signal.side == "buy" else -1
        if current * direction > QTY_EPSILON:
            log.info(
                "%s: %s signal on %s, already %s %g: nothing to do",
                source,
                signal.side,
                instrument,
                "long" if direction > 0 else "short",
                abs(current),
                extra={"source": "broker"},
            )
            return changes
        request = OrderRequest(
            instrument,
            signal.side,
            sl=signal.stop,
            tp=signal.target,
            source=source,
            trail=signal.trail,
            trail_pct=signal.trail_pct,
        )
        quote = book.quotes.get(instrument)
        price = None if quote is None else (quote.ask if direction > 0 else quote.bid)
        if price is None or not price > 0:
            result, refused = book.refuse(
                request, now, "no_quote", f"no quote for {instrument} yet to size the order from"
            )
            self._report_signal_order(source, result)
            changes.add(refused)
            return changes
        size = 0.0
        if signal.stop is not None and self.limits.risk_per_trade_pct > 0:
            size = size_from_risk(book.equity(), self.limits.risk_per_trade_pct, price, signal.stop)
        if size <= 0:
            size = self.config.signal_notional / price
        request.qty = abs(current) + size
        try:
            result, placed = book.place(request, now)
        except UsageError as error:
            result, placed = book.refuse(request, now, "invalid", str(error))
        self._report_signal_order(source, result)
        changes.add(placed)
        return changes

    def _report_signal_order(self, source: str, result: OrderResult) -> None:
        order = result.order
        if result.rejection is not None:
            self._log_rejection(result)
        elif order is not None:
            done = f"filled at {order.avg_price:g}" if order.status == "filled" else order.status
            log.info(
                "%s: %s %g %s, order %d %s",
                source,
                order.side,
                order.qty,
                order.instrument,
                order.order_id,
                done,
                extra={"source": "broker"},
            )

    def _log_rejection(self, result: OrderResult) -> None:
        order, rejection = result.order, result.rejection
        assert rejection is not None
        what = "order" if order is None else f"{order.source} {order.side} {order.instrument}"
        log.warning(
            "%s rejected (%s): %s",
            what,
            rejection.limit,
            rejection.message,
            extra={"source": "broker"},
        )

    # --- the kill switch --------------------------------------------------------------

    def _halted(self) -> str | None:
        return None if self.halts is None else self.halts.reason("paper")

    async def cancel_all(self, reason: str) -> list[Order]:
        """Cancel every working order (the kill switch); the cancelled orders."""
        book = self._require_book()
        self._stash(self._batch_quotes())
        now = self.clock()
        cancelled = []
        for order in book.open_orders():
            order, changes = book.cancel(order.order_id, now, reason)
            self._stash(changes)
            cancelled.append(order)
        await self._flush()
        return cancelled

    # --- the stale-quote rule ---------------------------------------------------------

    def _stale(self, instrument: str) -> str | None:
        """Why ``instrument``'s quotes cannot be trusted now, or None. From the feeds:
        its feed is not running (stale, reconnecting, stopped), or its newest quote is
        older than the feed's ``stale_after_s``; an instrument no feed streams has no
        quotes to trust."""
        feeds = self.feeds
        if feeds is None:
            return None
        feed = feeds.streaming_feed(instrument)
        if feed is None:
            return "it is not streamed (add it to the watchlist)"
        if feeds.is_stale(instrument):
            state = feeds.states().get(feed.name)
            return f"its feed {feed.name} is {state.value if state else 'not running'}"
        limit = feed.stale_after_s
        quote = self.book.quotes.get(instrument) if self.book is not None else None
        if limit and feed.realtime and quote is not None:
            age_s = (self.clock() - quote.ts_us) / 1e6
            if age_s > limit:
                return f"its last quote is {age_s:.0f}s old (stale after {limit:g}s)"
        return None

    # --- storing (sptrader.broker.recorder) ------------------------------------------

    def _stash(self, changes: Changes) -> None:
        self._recorder.stash(changes)

    async def _flush(self) -> None:
        if self._recorder.pending:
            await self._recorder.flush(self._require_store())

    # --- helpers ----------------------------------------------------------------------

    def _require_book(self) -> PaperBook:
        if self.book is None:
            raise SptraderError("the paper broker is not running")
        return self.book

    def _require_store(self) -> Store:
        if self.store is None:
            raise SptraderError("the paper broker is not running")
        return self.store
