"""What every live venue offers the live broker (``sptrader.broker.live``).

A venue module speaks one venue's wire protocol and nothing else: it signs requests,
maps SPtrader instruments to the venue's symbols and the venue's order states to ours,
and turns the venue's errors into one sentence. It keeps no account of its own: the
live broker records every order before it is sent, follows the venue's stream, and
reconciles. So a venue must tell the three outcomes of a request apart:

- it returned: the venue's answer (``VenueOrder``), or ``VenueRejected`` (the venue said
  no, nothing was placed);
- ``VenueUnavailable``: the request certainly never reached the venue (the connection
  was refused before anything was sent, a local filter said no first): safe to retry;
- ``VenueUncertain``: it may have reached the venue (a time-out after sending, the
  connection dropped before the answer): the broker asks the venue about the order's
  client id (``lookup``) before anything is resent.

Instruments are SPtrader names (``BINANCE:BTCUSDT``, ``OANDA:EUR_USD``, ``IBKR:AAPL``,
``ALPACA:AAPL``), times integer UTC microseconds, quantities in units of the instrument
(shares, coins, FX units), sides ``buy``/``sell``.
"""

from __future__ import annotations

import abc
import os
from collections.abc import AsyncIterator, Mapping, MutableMapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from sptrader.clock import now_us
from sptrader.errors import SptraderError

#: An order's life at a venue. ``new``: recorded here, not yet acknowledged by the venue;
#: ``accepted``: working at the venue; then partially filled, and one final state.
VenueStatus = Literal[
    "new", "accepted", "partially_filled", "filled", "cancelled", "rejected", "expired"
]
WORKING = ("new", "accepted", "partially_filled")
FINAL = ("filled", "cancelled", "rejected", "expired")
# How far each state is along the order's life: a stream event never moves an order back.
_RANK = {
    "new": 0,
    "accepted": 1,
    "partially_filled": 2,
    "filled": 3,
    "cancelled": 3,
    "rejected": 3,
    "expired": 3,
}


def advances(current: str, incoming: str) -> bool:
    """Whether a venue's report of ``incoming`` may replace ``current`` (a final state is
    never left; partial fills may repeat, each with more filled)."""
    if current in FINAL:
        return False
    return _RANK.get(incoming, -1) >= _RANK.get(current, 0)


@dataclass(slots=True)
class VenueOrderRequest:
    """An order as sent: the broker has recorded it under ``client_order_id`` already."""

    client_order_id: str
    instrument: str
    side: Literal["buy", "sell"]
    qty: float
    type: Literal["market", "limit", "stop"] = "market"
    price: float | None = None  # the limit price, or the stop's trigger price
    tif: Literal["gtc", "day"] = "gtc"
    sl: float | None = None  # attached stop-loss, where the venue has them (OANDA, IBKR, Alpaca)
    tp: float | None = None  # attached take-profit
    reduce_only: bool = False  # it only closes (some venues need to know)


@dataclass(slots=True)
class VenueOrder:
    """The venue's view of one order, from an answer, a lookup or its stream."""

    client_order_id: str
    venue_order_id: str | None
    instrument: str
    side: str
    qty: float
    type: str
    status: VenueStatus
    price: float | None = None
    filled_qty: float = 0.0
    avg_price: float | None = None
    updated_us: int = 0
    reason: str = ""  # why it was rejected, cancelled or expired (one sentence)
    tif: str = "gtc"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(slots=True)
class VenueFill:
    """One execution (a trade) at the venue; ``venue_fill_id`` is unique per venue."""

    venue_fill_id: str
    venue_order_id: str | None
    client_order_id: str | None  # None when the venue's trade does not say (the broker maps it)
    instrument: str
    side: str
    qty: float
    price: float
    fee: float
    ts_us: int
    fee_asset: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(slots=True)
class VenuePosition:
    """A holding as the venue reports it (qty signed: negative is short)."""

    instrument: str
    qty: float
    avg_price: float | None = None


@dataclass(slots=True)
class VenueAccount:
    currency: str
    equity: float  # what the account is worth, in ``currency``
    cash: float
    buying_power: float | None = None
    balances: dict[str, float] = field(default_factory=dict)  # asset -> free + locked


@dataclass(slots=True)
class StreamReady:
    """Yielded by ``Venue.stream`` once it is subscribed: from here on nothing is missed,
    so the broker reconciles what happened before (at start and after every reconnect)."""


VenueEvent = VenueOrder | VenueFill | list[VenuePosition] | StreamReady


class VenueError(SptraderError):
    """A venue's error as one sentence: ``Binance -2010: insufficient balance for 0.5 BTC``."""

    def __init__(self, venue: str, message: str, code: str | int | None = None) -> None:
        self.venue = venue
        self.code = code
        self.sentence = message
        label = VENUE_LABELS.get(venue, venue)
        super().__init__(
            f"{label} {code}: {message}" if code is not None else f"{label}: {message}"
        )


class VenueRejected(VenueError):
    """The venue (or a local check of its rules) refused the order: nothing was placed."""


class VenueUnavailable(VenueError):
    """The request never reached the venue (refused connection, not logged in, halted
    by the venue's own rate limit before sending): safe to try again later."""


class VenueUncertain(VenueError):
    """The request may have reached the venue: ask with ``lookup`` before resending."""


class VenueAuthError(VenueUnavailable):
    """Missing or refused credentials, a gateway not logged in: the user must act."""


VENUE_LABELS = {"binance": "Binance", "oanda": "OANDA", "ibkr": "IBKR", "alpaca": "Alpaca"}


def secret(env: Mapping[str, str], name: str, venue: str, what: str) -> str:
    """The secret in environment variable ``name``, or a VenueAuthError saying which one
    to set (the value itself is never logged or put in a message)."""
    value = env.get(name, "") if name else ""
    if not value:
        raise VenueAuthError(
            venue, f"set the environment variable {name or '(none named)'} to the {what}"
        )
    return value


class Venue(abc.ABC):
    """One venue's order routing. Built from its ``[brokers.NAME]`` section; ``env`` is
    where secrets are read from (the process environment by default); ``clock`` gives
    UTC microseconds (for signatures' timestamps); ``symbols`` is a persistent cache the
    venue may keep instrument ids in (IBKR's conids), instrument -> venue id."""

    #: The [brokers.NAME] name and the instrument prefix the venue trades ("BINANCE").
    name: str = ""
    prefix: str = ""
    #: Whether ``VenueOrderRequest.sl``/``tp`` are sent attached to the order.
    attached_protection: bool = False

    def __init__(
        self,
        config: Any,
        *,
        env: Mapping[str, str] | None = None,
        clock: Any = now_us,
        symbols: MutableMapping[str, str] | None = None,
    ) -> None:
        self.config = config
        self.env = os.environ if env is None else env
        self.clock = clock
        self.symbols: MutableMapping[str, str] = {} if symbols is None else symbols

    def trades(self, instrument: str) -> bool:
        return instrument.split(":", 1)[0] == self.prefix

    # --- the session ------------------------------------------------------------------

    @abc.abstractmethod
    async def connect(self) -> None:
        """Open the session: credentials present and accepted, the clock synced, the
        venue's trading rules loaded. Raises VenueAuthError / VenueUnavailable."""

    @abc.abstractmethod
    async def close(self) -> None: ...

    # --- orders -----------------------------------------------------------------------

    def check(self, request: VenueOrderRequest) -> None:
        """Raise VenueRejected, before sending, for an order the venue's rules refuse
        (Binance's LOT_SIZE, PRICE_FILTER, MIN_NOTIONAL / NOTIONAL)."""
        return None

    @abc.abstractmethod
    async def place(self, request: VenueOrderRequest) -> VenueOrder:
        """Send the order; its state as the venue answered (VenueRejected,
        VenueUnavailable or VenueUncertain otherwise)."""

    @abc.abstractmethod
    async def cancel(self, order: VenueOrder) -> VenueOrder | None:
        """Cancel a working order; its state after (None if the venue's answer has none:
        the stream will tell). An order that is already final raises VenueRejected."""

    @abc.abstractmethod
    async def lookup(self, client_order_id: str, instrument: str) -> VenueOrder | None:
        """The order with this client id as the venue has it; None when the venue has
        never seen it (it is then safe to send again)."""

    @abc.abstractmethod
    async def open_orders(self) -> list[VenueOrder]:
        """Every working order on the account (made here or elsewhere)."""

    @abc.abstractmethod
    async def fills_since(self, since_us: int | None, instruments: list[str]) -> list[VenueFill]:
        """Executions at or after ``since_us`` (None: as far back as the venue goes),
        oldest first; ``instruments`` are those to ask about where the venue needs a
        symbol per request (Binance's myTrades)."""

    @abc.abstractmethod
    async def positions(self) -> list[VenuePosition]:
        """Open positions (spot venues: holdings of the traded instruments' base assets)."""

    @abc.abstractmethod
    async def account(self) -> VenueAccount: ...

    @abc.abstractmethod
    def stream(self) -> AsyncIterator[VenueEvent]:
        """The venue's order stream: ``StreamReady`` once subscribed, then order updates
        and fills as they come. Ends or raises when the connection drops (the broker
        reconnects, with backoff, and reconciles)."""
