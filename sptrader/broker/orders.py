"""Orders and fills of the paper broker.

An order request (``OrderRequest``) is what a trader, the CLI or a scanner asks for; it is
checked (``validate``) before the risk limits see it. An accepted request becomes an
``Order``; an entry with ``sl``/``tp`` gets its protective orders when it fills: a stop
(``role="sl"``) and a limit (``role="tp"``) on the other side for the filled quantity,
one-cancels-the-other (their ``parent_id`` is the entry's id). An entry with ``trail`` or
``trail_pct`` gets a trailing stop-loss instead: its ``price`` is the stop's current level,
ratcheted by the book from the best price since it was placed (``sl``, if given too, is
its initial floor; :mod:`sptrader.broker.realism`). Trailing stops are paper-only.

Partial fills (``[broker] max_volume_share``): an order's ``filled_qty`` and ``avg_price``
grow fill by fill while its status stays ``open``; a stop that has filled part is
triggered, and the rest fills like a market order.

Statuses: ``open`` (working), ``filled``, ``cancelled``, ``rejected`` (a limit or the
validation said no; ``reason`` says why), ``expired`` (a day order at the UTC day's end).
A live venue's orders (``venue`` other than ``paper``) follow the venue's life instead:
``new`` (recorded, not yet acknowledged), ``accepted``, ``partially_filled``, then one of
the final states (``sptrader.venues.base``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from sptrader.broker.realism import trail_problem
from sptrader.errors import UsageError

Side = Literal["buy", "sell"]
OrderType = Literal["market", "limit", "stop"]
TimeInForce = Literal["gtc", "day"]
Role = Literal["entry", "sl", "tp", "close"]

SIDES = ("buy", "sell")
ORDER_TYPES = ("market", "limit", "stop")
TIME_IN_FORCE = ("gtc", "day")
OPEN = "open"
FINAL_STATUSES = ("filled", "cancelled", "rejected", "expired")
#: Every status of an order still working (paper's ``open`` and a live venue's three).
WORKING_STATUSES = (OPEN, "new", "accepted", "partially_filled")


def side_sign(side: str) -> int:
    return 1 if side == "buy" else -1


def opposite(side: str) -> Side:
    return "sell" if side == "buy" else "buy"


@dataclass(slots=True)
class OrderRequest:
    instrument: str
    side: Side
    qty: float | None = None  # None: sized from risk_pct and the stop distance
    type: OrderType = "market"
    price: float | None = None  # the limit price, or the stop's trigger price
    tif: TimeInForce = "gtc"
    sl: float | None = None  # attached stop-loss (entries only)
    tp: float | None = None  # attached take-profit (entries only)
    risk_pct: float | None = None  # size the order so hitting `sl` loses this % of equity
    source: str = "manual"  # manual, close, scanner:NAME
    role: Role = "entry"
    venue: str = "paper"  # paper, or a live venue of [brokers] (sptrader.config.VENUES)
    trail: float | None = None  # the attached stop-loss trails by this price distance
    trail_pct: float | None = None  # ... or by this % of the best price (entries only)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> OrderRequest:
        known = set(cls.__slots__)  # type: ignore[attr-defined]
        unknown = sorted(set(data) - known)
        if unknown:
            raise UsageError(f"unknown order field(s): {', '.join(unknown)}")
        return cls(**data)


def validate(request: OrderRequest, reference: float | None = None) -> None:
    """Raise a UsageError (one sentence) for a request no broker could accept.

    ``reference`` is the price the order would fill near (the ask for a buy, the bid for
    a sell); with it, stops and targets on the wrong side of the entry are rejected.
    """
    if request.side not in SIDES:
        raise UsageError(f"bad side {request.side!r}: use buy or sell")
    if request.type not in ORDER_TYPES:
        raise UsageError(f"bad order type {request.type!r}: use market, limit or stop")
    if request.tif not in TIME_IN_FORCE:
        raise UsageError(f"bad time in force {request.tif!r}: use gtc or day")
    if request.role not in ("entry", "close"):
        # Stop-loss and take-profit orders are made by the book when an entry fills.
        raise UsageError(f"bad order role {request.role!r}: use entry or close")
    if request.qty is None and request.risk_pct is None:
        raise UsageError("give a quantity or a risk %")
    if request.qty is not None and request.risk_pct is not None:
        raise UsageError("give a quantity or a risk %, not both")
    if request.qty is not None and not (_finite(request.qty) and request.qty > 0):
        raise UsageError(f"quantity must be a positive number, not {request.qty}")
    if request.risk_pct is not None:
        if not (_finite(request.risk_pct) and 0 < request.risk_pct <= 100):
            raise UsageError(f"risk % must be above 0 and at most 100, not {request.risk_pct}")
        if request.sl is None:
            raise UsageError("sizing by risk % needs a stop-loss (--sl)")
    if request.type == "market":
        if request.price is not None:
            raise UsageError("a market order takes no price (use --limit or --stop)")
    elif request.price is None or not (_finite(request.price) and request.price > 0):
        raise UsageError(f"a {request.type} order needs a positive price")
    for name in ("sl", "tp"):
        value = getattr(request, name)
        if value is not None and not (_finite(value) and value > 0):
            raise UsageError(f"{name} must be a positive price, not {value}")
    if request.trail is not None or request.trail_pct is not None:
        problem = trail_problem(request.trail, request.trail_pct)
        if problem:
            raise UsageError(problem)
        if request.role != "entry":
            raise UsageError("a trailing stop-loss is attached to an entry")
        if request.venue != "paper":
            raise UsageError(f"trailing stops are paper-only: {request.venue} takes none from us")
    entry = request.price if request.type != "market" else reference
    if entry is None:
        return
    long = request.side == "buy"
    if request.sl is not None and (request.sl >= entry if long else request.sl <= entry):
        where = "below" if long else "above"
        raise UsageError(
            f"the stop-loss {request.sl:g} must be {where} the entry price {entry:g}"
            f" for a {request.side}"
        )
    if request.tp is not None and (request.tp <= entry if long else request.tp >= entry):
        where = "above" if long else "below"
        raise UsageError(
            f"the take-profit {request.tp:g} must be {where} the entry price {entry:g}"
            f" for a {request.side}"
        )


def _finite(value: float) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


@dataclass(slots=True)
class Order:
    order_id: int
    instrument: str
    side: Side
    qty: float
    type: OrderType
    price: float | None
    tif: TimeInForce
    created_us: int
    sl: float | None = None
    tp: float | None = None
    role: Role = "entry"
    parent_id: int | None = None
    source: str = "manual"
    status: str = OPEN
    filled_qty: float = 0.0
    avg_price: float | None = None
    updated_us: int = 0
    reason: str = ""
    # A day order's end (the next UTC midnight); None for good-till-cancel.
    expires_us: int | None = None
    venue: str = "paper"
    # Ours, sent with a live order (``paper-<id>`` for paper orders); the venue's own id.
    client_order_id: str = ""
    venue_order_id: str | None = None
    # A trailing stop-loss (or, on an entry, the one it gets): by a distance or a %.
    trail: float | None = None
    trail_pct: float | None = None

    def __post_init__(self) -> None:
        if not self.client_order_id and self.venue == "paper":
            self.client_order_id = f"paper-{self.order_id}"

    @property
    def is_open(self) -> bool:
        return self.status in WORKING_STATUSES

    @property
    def remaining(self) -> float:
        return self.qty - self.filled_qty

    @property
    def trailing(self) -> bool:
        return self.trail is not None or self.trail_pct is not None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(slots=True)
class Fill:
    fill_id: int
    order_id: int
    instrument: str
    side: Side
    qty: float
    price: float
    fee: float
    ts_us: int
    venue: str = "paper"
    venue_fill_id: str | None = None  # the venue's trade or transaction id (live fills)

    @property
    def signed_qty(self) -> float:
        return self.qty if self.side == "buy" else -self.qty

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(slots=True)
class Rejection:
    """Why an order was refused: the limit's name and a sentence with the numbers."""

    limit: str
    message: str

    def __str__(self) -> str:
        return self.message


@dataclass(slots=True)
class OrderResult:
    """What placing an order did: the order (None if the request was invalid), its
    fills so far, and the rejection if any."""

    order: Order | None
    fills: list[Fill] = field(default_factory=list)
    rejection: Rejection | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "order": self.order.to_dict() if self.order else None,
            "fills": [fill.to_dict() for fill in self.fills],
            "rejected": None
            if self.rejection is None
            else {"limit": self.rejection.limit, "message": self.rejection.message},
        }
