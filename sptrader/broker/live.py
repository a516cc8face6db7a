"""A live venue's account on the bus: orders routed to the venue (``sptrader.venues``),
its stream followed, its state reconciled. One ``LiveBroker`` per ``[brokers.NAME]`` with
``trading = "live"``; the order ticket, the CLI, scanners, risk limits, positions and the
journal reach it through the same client methods as the paper broker.

What makes it safe to leave running:

- Every order is recorded (status ``new``, with its client order id) and stored before
  it is sent; a killed process finds it at the next start, and reconciliation asks the
  venue what became of it.
- No duplicate orders: when a placement's answer is lost (``VenueUncertain``: a
  time-out, a dropped connection) the venue is asked about the client id (``lookup``)
  before anything is resent; an order whose fate cannot be learnt stays ``new`` and is
  resolved by the next reconciliation, never sent twice.
- The venue's stream feeds an order state machine (``sptrader.venues.base.advances``: a
  final state is never left, filled quantities only grow); every execution is a fill,
  stored once (``venue_fill_id``), partial fills included.
- Reconciliation at start, after every reconnect of the stream and on demand: working
  orders, fills since the last one seen, positions and the account are fetched and
  compared with the store; orders and trades made elsewhere are adopted (and shown);
  every difference is logged and kept in ``reconciliations``, never silently overwritten.
- Every entry passes the same limits as paper (``sptrader.broker.risk``) with the
  venue's equity; the kill switch (``sptrader.broker.halts``), the daily loss limit and
  stale data halt the venue: working orders cancelled, entries refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import secrets
import time
from collections.abc import Callable
from typing import Any

from sptrader.broker import records, risk
from sptrader.broker.book import Changes, day_start
from sptrader.broker.halts import Halts
from sptrader.broker.ids import Ids
from sptrader.broker.ledger import QTY_EPSILON, Ledger
from sptrader.broker.orders import (
    Fill,
    Order,
    OrderRequest,
    OrderResult,
    Rejection,
    side_sign,
    validate,
)
from sptrader.broker.recorder import Recorder
from sptrader.bus import Bus
from sptrader.clock import now_us
from sptrader.config import RiskConfig
from sptrader.errors import SptraderError, UsageError
from sptrader.feeds import disconnects
from sptrader.models import QuoteReceived, SignalRaised, normalize_instrument
from sptrader.store import Store
from sptrader.supervisor import Service, ServiceContext
from sptrader.threads import run_in_thread
from sptrader.venues.base import (
    FINAL,
    StreamReady,
    Venue,
    VenueAccount,
    VenueAuthError,
    VenueError,
    VenueFill,
    VenueOrder,
    VenueOrderRequest,
    VenuePosition,
    VenueRejected,
    VenueUnavailable,
    VenueUncertain,
    advances,
)

log = logging.getLogger(__name__)

# Asking the venue about an order whose answer was lost: this many times, this far apart.
LOOKUP_ATTEMPTS = 3
LOOKUP_DELAY_S = 0.5
# A market order's result waits this long for the stream to report its fills.
FILL_WAIT_S = 2.0
# Re-read the venue's account (equity for the limits) this often.
ACCOUNT_EVERY_S = 30.0
# Fills are asked for from this long before the newest one stored (a late report of an
# execution is still found; a fill seen twice is stored once).
FILL_OVERLAP_US = 3_600_000_000
TICK_S = 1.0


class Disconnected(ConnectionError):
    """The venue or its stream went away: an ordinary disconnect, retried with backoff
    (a VenueError is an SptraderError, which the supervisor would not restart)."""


def new_client_order_id(order_id: int) -> str:
    """Ours, unique across installs (the random part) and within the venues' limits
    (Binance: 36 characters of [.A-Z:/a-z0-9_-])."""
    return f"sp{order_id}-{secrets.token_hex(4)}"


class LiveBroker(Service):
    kind = "broker"
    stoppable = False

    def __init__(
        self,
        bus: Bus,
        venue: Venue,
        limits: RiskConfig,
        *,
        halts: Halts,
        feeds: Any = None,
        clock: Callable[[], int] = now_us,
        instruments: Callable[[], list[str]] = list,
    ) -> None:
        super().__init__(f"{venue.name}.orders")
        self.bus = bus
        self.venue = venue
        self.limits = limits
        self.halts = halts
        self.feeds = feeds
        self.clock = clock
        #: More instruments to ask the venue about (the watchlist's of this venue).
        self.watched = instruments
        self.store: Store | None = None
        self.ids: Ids | None = None
        self.orders: dict[int, Order] = {}  # working orders by our id
        self._by_client: dict[str, Order] = {}
        self._by_venue_id: dict[str, Order] = {}
        self.ledger = Ledger(0.0)
        self.day_start_us = 0
        self.day_start_equity = 0.0
        self._fill_ids: set[str] = set()
        self._last_fill_us: int | None = None
        # Fills since start by our order id (a placement's result lists its own).
        self._order_fills: dict[int, list[Fill]] = {}
        self._saved_symbols: dict[str, str] = {}
        # Every instrument this venue's orders were ever in (the venues that ask per
        # symbol for fills, Binance's myTrades, are asked about each).
        self._traded: set[str] = set()
        self.quotes: dict[str, tuple[float, float]] = {}
        self.venue_account: VenueAccount | None = None
        self._account_at = 0.0
        self.venue_positions: list[VenuePosition] = []
        self.connected = False
        self.last_error = ""
        self.last_reconcile: dict[str, Any] | None = None
        self._known_differences: set[tuple[str, str]] = set()
        self._ready = asyncio.Event()
        self._recorder = Recorder(bus, clock)
        self._lock = asyncio.Lock()  # one placement / reconciliation at a time
        self._signals: list[SignalRaised] = []
        self._wake = asyncio.Event()
        self._prefix = f"{venue.prefix}:"  # the tap runs per quote: no string built there
        self.subscription = bus.subscribe(self.name, maxsize=1, accepts=self._tap)

    # --- the bus tap: quotes for marks, this venue's scanner signals -------------------

    def _tap(self, event: object) -> bool:
        kind = type(event)
        if kind is QuoteReceived:
            if event.instrument.startswith(self._prefix):
                self.quotes[event.instrument] = (event.bid, event.ask)
        elif kind is SignalRaised and getattr(event, "broker", "") == self.venue.name:
            self._signals.append(event)
            self._wake.set()
        return False

    # --- lifecycle --------------------------------------------------------------------

    async def open(self, store: Store, ids: Ids) -> None:
        """Load this venue's working orders and fills (the positions) from the store."""
        self.store = store
        self.ids = ids
        await run_in_thread(self._load, store)
        log.info(
            "%s trades LIVE: %d working orders, %d open positions on record",
            self.venue.name,
            len(self.orders),
            len(self.ledger.open_positions()),
            extra={"source": self.name},
        )

    def _load(self, store: Store) -> None:
        # Every order of this venue: the working ones are followed; the venue's ids of the
        # final ones are kept for late reports of their fills; all name the instruments
        # to ask the venue about.
        every = [Order(**row) for row in records.orders(store, None, 10**9, self.venue.name)]
        self._traded = {order.instrument for order in every}
        for order in every:
            if order.is_open:
                self._remember(order)
            elif order.venue_order_id:
                self._by_venue_id[order.venue_order_id] = order
        fills = records.all_fills(store, self.venue.name)
        self.ledger = Ledger.from_fills(fills, 0.0)
        self._fill_ids = {f.venue_fill_id for f in fills if f.venue_fill_id}
        self._last_fill_us = max((f.ts_us for f in fills), default=None)
        now = self.clock()
        self.day_start_us = day_start(now)
        self.day_start_equity = records.day_start_equity(store, fills, 0.0, now)
        rows = (
            store.cursor()
            .execute(
                "SELECT instrument, venue_id FROM venue_symbols WHERE venue = ?",
                [self.venue.name],
            )
            .fetchall()
        )
        self.venue.symbols.update(dict(rows))
        self._saved_symbols = dict(rows)

    async def run(self, context: ServiceContext) -> None:
        """Connect, follow the stream, reconcile on every (re)subscription. A lost
        connection ends the run as ``Disconnected`` (the supervisor reconnects with
        backoff); refused credentials or a gateway not logged in fail the service with
        the venue's sentence (the user must act, then restart it)."""
        try:
            await self._run(context)
        except VenueAuthError as error:
            self.last_error = str(error)
            raise
        except VenueError as error:
            self.last_error = str(error)
            raise Disconnected(str(error)) from error

    async def _run(self, context: ServiceContext) -> None:
        await self.venue.connect()
        self.connected = True
        self.last_error = ""
        ticker = asyncio.create_task(self._ticker(context))
        try:
            async for event in self.venue.stream():
                if isinstance(event, StreamReady):
                    await self.reconcile(why="reconnect" if self.last_reconcile else "start")
                    if self.halted() and self.orders:
                        # Halted while no engine was connected here: the switch holds.
                        await self._cancel_all()
                    self._ready.set()
                    context.mark_running()
                elif isinstance(event, VenueOrder):
                    self._stash(self._apply_order(event))
                elif isinstance(event, VenueFill):
                    self._stash(self._apply_fill(event))
                elif isinstance(event, list):
                    self.venue_positions = event
                await self._flush()
                context.events += 1
                context.last_event_us = self.clock()
            raise VenueUnavailable(self.venue.name, "the order stream closed")
        finally:
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker
            self.connected = False
            self._ready.clear()
            with contextlib.suppress(Exception):
                await self.venue.close()
            with contextlib.suppress(Exception):
                await self._flush()

    async def wait_ready(self, timeout: float) -> None:
        """Wait until the venue is connected and reconciled (a one-shot CLI order)."""
        try:
            async with asyncio.timeout(timeout):
                await self._ready.wait()
        except TimeoutError:
            why = f": {self.last_error}" if self.last_error else ""
            raise SptraderError(
                f"{self.venue.name} is not connected after {timeout:g}s{why}"
            ) from None

    async def drain(self) -> None:
        with contextlib.suppress(Exception):
            await self._flush()

    @staticmethod
    def is_disconnect(error: BaseException) -> bool:
        return isinstance(error, Disconnected) or disconnects.is_disconnect(error)

    @staticmethod
    def disconnect_reason(error: BaseException) -> str:
        if isinstance(error, Disconnected):
            return str(error)
        return disconnects.disconnect_reason(error)

    async def _ticker(self, context: ServiceContext) -> None:
        """Once a second: scanner signals, the day's roll, the loss limit and stale data
        (each halts the venue); the account now and then."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), TICK_S)
            self._wake.clear()
            signals, self._signals = self._signals, []
            for signal in signals:
                await self._on_signal(signal)
            now = self.clock()
            midnight = day_start(now)
            if midnight != self.day_start_us:
                self.day_start_us, self.day_start_equity = midnight, self._ledger_equity()
            limit = self.limits.daily_loss_limit
            if limit > 0 and self.day_pnl() <= -limit and not self.halted():
                await self.halt(f"daily loss limit: today's P&L {self.day_pnl():,.2f}")
            stale = self._stale_working()
            if stale and not self.halted():
                await self.halt(f"stale data: {stale}")
            if time.monotonic() - self._account_at > ACCOUNT_EVERY_S:
                with contextlib.suppress(VenueError):
                    await self._refresh_account()

    # --- orders -----------------------------------------------------------------------

    async def place(self, request: OrderRequest | dict) -> OrderResult:
        """Check, record, send. A malformed request raises a UsageError; one a limit or
        the venue refuses comes back rejected, with why."""
        if isinstance(request, dict):
            request = OrderRequest.from_dict(request)
        request = dataclasses.replace(
            request, instrument=normalize_instrument(request.instrument), venue=self.venue.name
        )
        if not self.venue.trades(request.instrument):
            raise UsageError(
                f"{self.venue.name} trades {self.venue.prefix}: instruments, not {request.instrument}"
            )
        if (
            request.sl is not None or request.tp is not None
        ) and not self.venue.attached_protection:
            raise UsageError(
                f"{self.venue.name} takes no attached stop-loss or take-profit:"
                " place them as their own orders"
            )
        quote = self.quotes.get(request.instrument)
        reference = None if quote is None else (quote[1] if request.side == "buy" else quote[0])
        validate(request, reference)
        async with self._lock:
            return await self._place(request, reference)

    async def _place(self, request: OrderRequest, reference: float | None) -> OrderResult:
        now = self.clock()
        expected = request.price if request.type != "market" else reference
        qty = request.qty
        if request.risk_pct is not None:
            assert request.sl is not None
            if expected is None:
                raise UsageError(f"no quote for {request.instrument} yet to size the order from")
            qty = risk.size_from_risk(self.equity(), request.risk_pct, expected, request.sl)
            if qty <= 0:
                raise UsageError("no size can be computed (no equity or the stop at the entry)")
        assert qty is not None
        order = Order(
            order_id=self._require_ids().order(),
            instrument=request.instrument,
            side=request.side,
            qty=float(qty),
            type=request.type,
            price=request.price,
            tif=request.tif,
            created_us=now,
            updated_us=now,
            sl=request.sl,
            tp=request.tp,
            role=request.role,
            source=request.source,
            status="new",
            venue=self.venue.name,
        )
        order.client_order_id = new_client_order_id(order.order_id)
        rejection = self._check(order, expected)
        wire = self._wire(order)
        if rejection is None:
            try:
                self.venue.check(wire)
            except VenueRejected as error:
                rejection = Rejection("venue", str(error))
        if rejection is not None:
            return await self._refused(order, rejection)
        if not self.connected:
            why = f" ({self.last_error})" if self.last_error else ""
            return await self._refused(
                order, Rejection("not_connected", f"{self.venue.name} is not connected{why}")
            )
        # Recorded and stored before it is sent: a crash from here on leaves it `new`,
        # and the next start asks the venue about it.
        self._remember(order)
        self._stash(Changes({order.order_id: order}))
        await self._flush()
        rejection = await self._send(order, wire)
        await self._flush()
        if order.type == "market" and order.status not in FINAL and rejection is None:
            await self._wait_filled(order)
        await self._flush()  # what the stream reported meanwhile is stored before we answer
        fills = self._fills_of(order)
        if rejection is None and order.status == "rejected":
            rejection = Rejection("venue", order.reason)
        if rejection is not None:
            self._log_rejection(order, rejection)
        return OrderResult(order, fills, rejection)

    async def _send(self, order: Order, wire: VenueOrderRequest) -> Rejection | None:
        """Send the recorded order once; after a lost answer ask before resending."""
        for attempt in (1, 2):
            try:
                answer = await self.venue.place(wire)
            except VenueRejected as error:
                self._finish(order, "rejected", str(error))
                return Rejection("venue", str(error))
            except VenueUnavailable as error:
                self._finish(order, "rejected", f"not sent: {error}")
                return Rejection("not_connected", f"not sent: {error}")
            except VenueUncertain as error:
                log.warning(
                    "%s order %d (%s): %s; asking the venue about it before anything is resent",
                    self.venue.name,
                    order.order_id,
                    order.client_order_id,
                    error,
                    extra={"source": self.name},
                )
                found, known = await self._ask(order)
                if found is not None:
                    self._stash(self._apply_order(found))
                    return None
                if not known or attempt == 2:
                    # The venue could not be asked (or said nothing twice): the order
                    # stays `new` until reconciliation learns its fate. Never sent again.
                    order.reason = "sent; the venue's answer was lost: reconciliation will tell"
                    self._stash(Changes({order.order_id: order}))
                    return None
                continue  # the venue has never seen it: safe to send (same client id)
            self._stash(self._apply_order(answer))
            return None
        return None

    async def _ask(self, order: Order) -> tuple[VenueOrder | None, bool]:
        """(the venue's view of the order, whether the venue answered at all)."""
        for attempt in range(LOOKUP_ATTEMPTS):
            try:
                return await self.venue.lookup(order.client_order_id, order.instrument), True
            except VenueError as error:
                log.info("%s lookup of %s: %s", self.venue.name, order.client_order_id, error)
                if attempt + 1 < LOOKUP_ATTEMPTS:
                    await asyncio.sleep(LOOKUP_DELAY_S)
        return None, False

    async def _refused(self, order: Order, rejection: Rejection) -> OrderResult:
        """An order refused before sending: recorded as rejected (it shows in the history
        with its reason), never sent."""
        order.status, order.reason = "rejected", rejection.message
        self._stash(Changes({order.order_id: order}))
        await self._flush()
        self._log_rejection(order, rejection)
        return OrderResult(order, [], rejection)

    async def _wait_filled(self, order: Order) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + FILL_WAIT_S
        while order.status not in FINAL and loop.time() < deadline:
            await asyncio.sleep(0.02)

    async def cancel(self, order_id: int) -> Order:
        order = self.orders.get(int(order_id))
        if order is None:
            raise UsageError(f"order {order_id} is not a working {self.venue.name} order")
        await self._cancel_at_venue(order)
        await self._flush()
        return order

    async def _cancel_at_venue(self, order: Order) -> None:
        try:
            answer = await self.venue.cancel(self._venue_view(order))
        except VenueRejected as error:
            # Already final at the venue (filled meanwhile?): its stream or a lookup tells.
            found, _ = await self._ask(order)
            if found is not None:
                self._stash(self._apply_order(found))
            if order.is_open:
                raise SptraderError(f"cancel of order {order.order_id} refused: {error}") from None
            return
        if answer is not None:
            self._stash(self._apply_order(answer))

    async def close_position(self, instrument: str) -> OrderResult:
        name = normalize_instrument(instrument)
        position = self.ledger.positions.get(name)
        if position is None or position.is_flat:
            raise UsageError(f"no open {self.venue.name} position in {name}")
        return await self.place(
            OrderRequest(
                name,
                "sell" if position.qty > 0 else "buy",
                qty=abs(position.qty),
                role="close",
                source="close",
            )
        )

    # --- the kill switch --------------------------------------------------------------

    def halted(self) -> str | None:
        return self.halts.reason(self.venue.name)

    async def halt(self, reason: str) -> list[Order]:
        """Refuse entries until resumed, and cancel every working order (those the venue
        cannot cancel now are reported in the log)."""
        store = self._require_store()
        await run_in_thread(self.halts.set, store, self.venue.name, self.clock(), reason)
        log.warning(
            "%s HALTED (%s): cancelling %d working orders; entries refused until"
            " `sptrader resume %s`",
            self.venue.name,
            reason,
            len(self.orders),
            self.venue.name,
            extra={"source": self.name},
        )
        return await self._cancel_all()

    async def _cancel_all(self) -> list[Order]:
        cancelled = []
        for order in list(self.orders.values()):
            try:
                await self._cancel_at_venue(order)
                cancelled.append(order)
            except (SptraderError, VenueError) as error:
                log.error(
                    "%s: order %d not cancelled: %s",
                    self.venue.name,
                    order.order_id,
                    error,
                    extra={"source": self.name},
                )
        await self._flush()
        return cancelled

    async def resume(self) -> bool:
        return await run_in_thread(self.halts.clear, self._require_store(), self.venue.name)

    # --- reconciliation ---------------------------------------------------------------

    async def reconcile(self, why: str = "asked") -> dict[str, Any]:
        """Compare the venue with the store; adopt what was made elsewhere; log and keep
        every difference. The report: counts, the differences, the time it took."""
        async with self._lock:
            started = time.perf_counter()
            differences: list[tuple[str, str]] = []
            adopted_orders = adopted_fills = changed = 0
            venue_open = await self.venue.open_orders()
            seen: set[str] = set()
            for found in venue_open:
                seen.add(found.client_order_id)
                known = self._find(found)
                before = None if known is None else (known.status, known.filled_qty)
                changes = self._apply_order(found)
                self._stash(changes)
                if known is None:
                    adopted_orders += 1
                    differences.append(("adopted_order", _describe(found, "made elsewhere")))
                elif before != (known.status, known.filled_qty):
                    changed += 1
            for order in [o for o in list(self.orders.values()) if o.client_order_id not in seen]:
                found, answered = await self._ask(order)
                if found is not None:
                    self._stash(self._apply_order(found))
                    changed += 1
                elif answered and order.status == "new":
                    self._finish(order, "rejected", "never reached the venue")
                    changed += 1
                    differences.append(
                        ("order_missing", f"order {order.order_id} never reached the venue")
                    )
                elif answered:
                    differences.append(
                        (
                            "order_missing",
                            f"order {order.order_id} ({order.client_order_id}) is {order.status}"
                            " here but unknown to the venue: left as it is",
                        )
                    )
            since = None if self._last_fill_us is None else self._last_fill_us - FILL_OVERLAP_US
            fills = await self.venue.fills_since(since, self._instruments())
            for fill in fills:
                if fill.venue_fill_id in self._fill_ids:
                    continue
                adopted_fills += 1
                self._stash(self._apply_fill(fill))
            await self._flush()
            positions = await self.venue.positions()
            self.venue_positions = positions
            differences.extend(self._position_differences(positions))
            await self._refresh_account()
            report = {
                "venue": self.venue.name,
                "why": why,
                "at_us": self.clock(),
                "open_orders": len(venue_open),
                "fills_checked": len(fills),
                "adopted_orders": adopted_orders,
                "new_fills": adopted_fills,
                "changed": changed,
                "differences": [{"kind": kind, "detail": detail} for kind, detail in differences],
                "duration_ms": (time.perf_counter() - started) * 1000,
            }
            self.last_reconcile = report
            # Each difference is kept (and warned about) once while it lasts: a holding
            # the fills do not explain is not news at every reconnect.
            fresh = [d for d in differences if d not in self._known_differences]
            self._known_differences = set(differences)
            if fresh:
                await run_in_thread(self._save_differences, fresh)
            for kind, detail in fresh:
                log.warning(
                    "%s reconcile: %s: %s",
                    self.venue.name,
                    kind,
                    detail,
                    extra={"source": self.name},
                )
            log.info(
                "%s reconciled (%s): %d working at the venue, %d new fills, %d adopted,"
                " %d changed, %d differences in %.0f ms",
                self.venue.name,
                why,
                len(venue_open),
                adopted_fills,
                adopted_orders,
                changed,
                len(differences),
                report["duration_ms"],
                extra={"source": self.name},
            )
            return report

    def _position_differences(self, positions: list[VenuePosition]) -> list[tuple[str, str]]:
        theirs = {p.instrument: p.qty for p in positions if abs(p.qty) > QTY_EPSILON}
        ours = {p.instrument: p.qty for p in self.ledger.open_positions()}
        found = []
        for instrument in sorted(set(theirs) | set(ours)):
            venue_qty, our_qty = theirs.get(instrument, 0.0), ours.get(instrument, 0.0)
            if abs(venue_qty - our_qty) > max(QTY_EPSILON, 1e-9 * abs(venue_qty)):
                found.append(
                    (
                        "position_mismatch",
                        f"{instrument}: the venue holds {venue_qty:g}, the fills on record"
                        f" make {our_qty:g} (kept as recorded)",
                    )
                )
        return found

    def _save_differences(self, differences: list[tuple[str, str]]) -> None:
        store = self._require_store()
        now = self.clock()
        with store._write_lock:
            store.cursor().executemany(
                "INSERT INTO reconciliations VALUES (?, make_timestamp(?), ?, ?)",
                [(self.venue.name, now, kind, detail) for kind, detail in differences],
            )

    def _instruments(self) -> list[str]:
        names = set(self._traded)
        names.update(o.instrument for o in self.orders.values())
        names.update(p.instrument for p in self.ledger.open_positions())
        names.update(self.ledger.positions)
        names.update(n for n in self.watched() if self.venue.trades(n))
        return sorted(names)

    async def _refresh_account(self) -> None:
        self._account_at = time.monotonic()
        self.venue_account = await self.venue.account()

    # --- applying the venue's reports -------------------------------------------------

    def _find(self, report: VenueOrder) -> Order | None:
        order = self._by_client.get(report.client_order_id)
        if order is None and report.venue_order_id:
            order = self._by_venue_id.get(report.venue_order_id)
        return order

    def _apply_order(self, report: VenueOrder) -> Changes:
        """The venue's view of an order into ours (adopting one made elsewhere)."""
        changes = Changes()
        order = self._find(report)
        if order is None:
            order = self._adopt(report)
        elif not advances(order.status, report.status) or report.filled_qty + QTY_EPSILON < (
            order.filled_qty
        ):
            return changes  # an older report than what we know
        order.status = report.status
        order.filled_qty = max(order.filled_qty, report.filled_qty)
        if report.avg_price is not None:
            order.avg_price = report.avg_price
        if report.venue_order_id:
            order.venue_order_id = report.venue_order_id
            self._by_venue_id[report.venue_order_id] = order
        if report.reason:
            order.reason = report.reason
        elif order.reason.startswith("sent; the venue's answer was lost"):
            order.reason = ""
        order.updated_us = report.updated_us or self.clock()
        if order.status in FINAL:
            self._forget(order)
        changes.orders[order.order_id] = order
        return changes

    def _adopt(self, report: VenueOrder) -> Order:
        now = self.clock()
        order = Order(
            order_id=self._require_ids().order(),
            instrument=report.instrument,
            side=report.side,  # type: ignore[arg-type]
            qty=report.qty,
            type=report.type if report.type in ("market", "limit", "stop") else "limit",  # type: ignore[arg-type]
            price=report.price,
            tif=report.tif if report.tif in ("gtc", "day") else "gtc",  # type: ignore[arg-type]
            created_us=report.updated_us or now,
            updated_us=now,
            source="venue",  # made outside SPtrader (the venue's website, another app)
            status="accepted",
            venue=self.venue.name,
            client_order_id=report.client_order_id or f"venue-{report.venue_order_id}",
            venue_order_id=report.venue_order_id,
        )
        self._remember(order)
        log.warning(
            "%s: adopted order %d made elsewhere: %s",
            self.venue.name,
            order.order_id,
            _describe(report, report.status),
            extra={"source": self.name},
        )
        return order

    def _apply_fill(self, report: VenueFill) -> Changes:
        changes = Changes()
        if report.venue_fill_id in self._fill_ids:
            return changes
        order = None
        if report.client_order_id:
            order = self._by_client.get(report.client_order_id)
        if order is None and report.venue_order_id:
            order = self._by_venue_id.get(report.venue_order_id)
        if order is None:
            # A trade of an order we never saw (made and done elsewhere): adopt it done.
            order = self._adopt(
                VenueOrder(
                    client_order_id=report.client_order_id or "",
                    venue_order_id=report.venue_order_id,
                    instrument=report.instrument,
                    side=report.side,
                    qty=report.qty,
                    type="market",
                    status="filled",
                    filled_qty=report.qty,
                    avg_price=report.price,
                    updated_us=report.ts_us,
                )
            )
            order.status, order.filled_qty, order.avg_price = "filled", report.qty, report.price
            self._forget(order)
            changes.orders[order.order_id] = order
        fill = Fill(
            self._require_ids().fill(),
            order.order_id,
            report.instrument,
            report.side,  # type: ignore[arg-type]
            report.qty,
            report.price,
            report.fee,
            report.ts_us,
            venue=self.venue.name,
            venue_fill_id=report.venue_fill_id,
        )
        self._fill_ids.add(report.venue_fill_id)
        self._last_fill_us = max(self._last_fill_us or 0, report.ts_us)
        self.ledger.apply(fill)
        self._held_moved(report.instrument, fill.signed_qty)
        changes.fills.append(fill)
        filled = sum(f.qty for f in self._fills_of(order)) + report.qty
        if order.is_open and filled > order.filled_qty + QTY_EPSILON:
            # The execution came before the order's own update: the fills say how much.
            order.filled_qty = min(filled, order.qty)
            order.status = (
                "filled" if order.filled_qty >= order.qty - QTY_EPSILON else "partially_filled"
            )
            order.updated_us = report.ts_us
            if order.status in FINAL:
                self._forget(order)
            changes.orders[order.order_id] = order
        self._order_fills.setdefault(order.order_id, []).append(fill)
        return changes

    # --- reads ------------------------------------------------------------------------

    def marks(self) -> dict[str, float | None]:
        marks: dict[str, float | None] = {}
        for position in self.ledger.open_positions():
            quote = self.quotes.get(position.instrument)
            marks[position.instrument] = (
                None if quote is None else (quote[1] if position.qty < 0 else quote[0])
            )
        return marks

    def _ledger_equity(self) -> float:
        return self.ledger.equity(self.marks())

    def day_pnl(self) -> float:
        return self._ledger_equity() - self.day_start_equity

    def equity(self) -> float:
        account = self.venue_account
        return 0.0 if account is None else account.equity

    def account(self) -> dict[str, Any]:
        marks = self.marks()
        account = self.venue_account
        return {
            "venue": self.venue.name,
            "live": True,
            "connected": self.connected,
            "halted": self.halted(),
            "currency": "" if account is None else account.currency,
            "equity": None if account is None else account.equity,
            "cash": None if account is None else account.cash,
            "buying_power": None if account is None else account.buying_power,
            "unrealized": self.ledger.unrealized(marks),
            "realized": self.ledger.realized,
            "fees": self.ledger.fees,
            "exposure": self.ledger.exposure(marks),
            "day_pnl": self.day_pnl(),
            "open_positions": len(self.ledger.open_positions()),
            "open_orders": len(self.orders),
            "last_error": self.last_error,
        }

    def positions(self) -> list[dict[str, Any]]:
        marks = self.marks()
        rows = []
        for position in sorted(self.ledger.open_positions(), key=lambda p: p.instrument):
            row = position.to_dict(marks.get(position.instrument))
            row["venue"] = self.venue.name
            rows.append(row)
        return rows

    def open_orders(self) -> list[dict[str, Any]]:
        return [o.to_dict() for o in sorted(self.orders.values(), key=lambda o: o.order_id)]

    def status(self) -> dict[str, Any]:
        return {
            "venue": self.venue.name,
            "live": True,
            "connected": self.connected,
            "halted": self.halted(),
            "last_error": self.last_error,
            "working_orders": len(self.orders),
            "last_reconcile": self.last_reconcile,
        }

    # --- scanner signals --------------------------------------------------------------

    async def _on_signal(self, signal: SignalRaised) -> None:
        """A scanner's signal routed here (``broker = "<venue>"``): ``buy``/``sell`` go
        long/short by the risk-sized or notional quantity, ``exit`` closes."""
        source = f"scanner:{signal.scanner}"
        position = self.ledger.positions.get(signal.instrument)
        current = position.qty if position is not None and not position.is_flat else 0.0
        try:
            if signal.side == "exit":
                if current:
                    await self.close_position(signal.instrument)
                return
            direction = 1 if signal.side == "buy" else -1
            if current * direction > QTY_EPSILON:
                return  # already on that side
            quote = self.quotes.get(signal.instrument)
            price = None if quote is None else (quote[1] if direction > 0 else quote[0])
            if not price:
                log.warning(
                    "%s: %s signal on %s: no quote to size the order from",
                    source,
                    signal.side,
                    signal.instrument,
                    extra={"source": self.name},
                )
                return
            size = 0.0
            if signal.stop is not None and self.limits.risk_per_trade_pct > 0:
                size = risk.size_from_risk(
                    self.equity(), self.limits.risk_per_trade_pct, price, signal.stop
                )
            if size <= 0:
                size = getattr(signal, "notional", 0.0) or 0.0
            if size <= 0:
                log.warning(
                    "%s: %s signal on %s: no stop to size a live order from (live signals"
                    " are sized by risk_per_trade_pct and the signal's stop)",
                    source,
                    signal.side,
                    signal.instrument,
                    extra={"source": self.name},
                )
                return
            sl, tp = (
                (signal.stop, signal.target) if self.venue.attached_protection else (None, None)
            )
            await self.place(
                OrderRequest(
                    signal.instrument,
                    signal.side,
                    qty=abs(current) + size,
                    sl=sl,
                    tp=tp,
                    source=source,
                    # A venue takes no trail from us: validate refuses it, and the
                    # signal is not traded (a fixed stop is not what the strategy asked).
                    trail=signal.trail,
                    trail_pct=signal.trail_pct,
                )
            )
        except (UsageError, SptraderError) as error:
            log.warning(
                "%s: %s signal on %s not traded: %s",
                source,
                signal.side,
                signal.instrument,
                error,
                extra={"source": self.name},
            )

    # --- inside -----------------------------------------------------------------------

    def _held_moved(self, instrument: str, signed_qty: float) -> None:
        """Keep the venue's last reported positions current with the fills since (the
        next report or reconciliation replaces them)."""
        if not self.venue_positions:
            return
        for held in self.venue_positions:
            if held.instrument == instrument:
                held.qty += signed_qty
                return
        self.venue_positions.append(VenuePosition(instrument, signed_qty))

    def _risk_ledger(self) -> Ledger:
        """The positions the limits judge: the venue's own (from the last reconciliation
        or its stream) when it has reported them, else those the fills on record make."""
        if not self.venue_positions:
            return self.ledger
        ledger = Ledger(0.0)
        marks = self.marks()
        for held in self.venue_positions:
            price = held.avg_price or marks.get(held.instrument) or 0.0
            ledger.position(held.instrument).apply(held.qty, price)
        return ledger

    def _check(self, order: Order, expected: float | None) -> Rejection | None:
        stale = self._stale(order.instrument)
        signed = order.qty * side_sign(order.side)
        ledger = self._risk_ledger()
        position = ledger.positions.get(order.instrument)
        current = position.qty if position is not None else 0.0
        reducing = risk.is_reducing(current, signed)
        if not reducing and self.venue_account is None:
            return Rejection(
                "no_account", f"no account figures from {self.venue.name} yet to check the limits"
            )
        if expected is None:
            if not reducing:
                return Rejection(
                    "no_quote",
                    f"no quote for {order.instrument} to check the limits against"
                    " (watch it, or give a limit price)",
                )
            expected = 0.0
        return risk.check(
            risk.Proposal(order.instrument, signed, expected, order.sl),
            self.limits,
            ledger,
            self.marks(),
            equity=self.equity(),
            day_pnl=self.day_pnl(),
            stale=stale,
            halted=self.halted(),
        )

    def _stale(self, instrument: str) -> str | None:
        """Why the instrument's quotes cannot be trusted: its feed is not running (an
        instrument no feed streams has no quotes to judge and passes)."""
        feeds = self.feeds
        if feeds is None or feeds.streaming_feed(instrument) is None:
            return None
        if feeds.is_stale(instrument):
            feed = feeds.streaming_feed(instrument)
            state = feeds.states().get(feed.name)
            return f"its feed {feed.name} is {state.value if state else 'not running'}"
        return None

    def _stale_working(self) -> str | None:
        held = {o.instrument for o in self.orders.values()}
        held.update(p.instrument for p in self.ledger.open_positions())
        for instrument in sorted(held):
            why = self._stale(instrument)
            if why:
                return f"{instrument}: {why}"
        return None

    def _wire(self, order: Order) -> VenueOrderRequest:
        position = self.ledger.positions.get(order.instrument)
        current = position.qty if position is not None else 0.0
        return VenueOrderRequest(
            client_order_id=order.client_order_id,
            instrument=order.instrument,
            side=order.side,
            qty=order.qty,
            type=order.type,
            price=order.price,
            tif=order.tif,
            sl=order.sl,
            tp=order.tp,
            reduce_only=risk.is_reducing(current, order.qty * side_sign(order.side)),
        )

    def _venue_view(self, order: Order) -> VenueOrder:
        return VenueOrder(
            client_order_id=order.client_order_id,
            venue_order_id=order.venue_order_id,
            instrument=order.instrument,
            side=order.side,
            qty=order.qty,
            type=order.type,
            status=order.status,  # type: ignore[arg-type]
            price=order.price,
            filled_qty=order.filled_qty,
            avg_price=order.avg_price,
            tif=order.tif,
        )

    def _remember(self, order: Order) -> None:
        self._traded.add(order.instrument)
        self.orders[order.order_id] = order
        self._by_client[order.client_order_id] = order
        if order.venue_order_id:
            self._by_venue_id[order.venue_order_id] = order

    def _forget(self, order: Order) -> None:
        """A final order leaves the working set (its ids stay known for late reports)."""
        self.orders.pop(order.order_id, None)

    def _finish(self, order: Order, status: str, reason: str) -> None:
        order.status, order.reason, order.updated_us = status, reason, self.clock()
        self._forget(order)
        self._stash(Changes({order.order_id: order}))

    def _fills_of(self, order: Order) -> list[Fill]:
        return list(self._order_fills.get(order.order_id, ()))

    def _log_rejection(self, order: Order, rejection: Rejection) -> None:
        log.warning(
            "%s %s %s %s rejected (%s): %s",
            self.venue.name,
            order.source,
            order.side,
            order.instrument,
            rejection.limit,
            rejection.message,
            extra={"source": self.name},
        )

    def _stash(self, changes: Changes) -> None:
        self._recorder.stash(changes)

    async def _flush(self) -> None:
        if self._recorder.pending:
            await self._recorder.flush(self._require_store())
        symbols = dict(self.venue.symbols)
        if symbols != self._saved_symbols:
            self._saved_symbols = symbols
            await run_in_thread(self._save_symbols, symbols)

    def _save_symbols(self, symbols: dict[str, str]) -> None:
        store = self._require_store()
        with store._write_lock:
            store.cursor().executemany(
                "INSERT OR REPLACE INTO venue_symbols VALUES (?, ?, ?)",
                [(self.venue.name, name, str(value)) for name, value in symbols.items()],
            )

    def _require_store(self) -> Store:
        if self.store is None:
            raise SptraderError(f"the {self.venue.name} broker is not running")
        return self.store

    def _require_ids(self) -> Ids:
        if self.ids is None:
            raise SptraderError(f"the {self.venue.name} broker is not running")
        return self.ids


def _describe(report: VenueOrder, what: str) -> str:
    price = "" if report.price is None else f" at {report.price:g}"
    return (
        f"{report.side} {report.qty:g} {report.instrument} {report.type}{price}"
        f" ({report.client_order_id or report.venue_order_id}): {what}"
    )
