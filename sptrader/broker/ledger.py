"""Positions and P&L derived from fills (average cost; long and short).

A position is a signed quantity and the average price it was opened at. A fill in the
position's direction (or on a flat book) adds to it at a new average; a fill against it
closes up to its quantity, realizing ``(fill - average) * closed`` for a long (the
opposite for a short), and any rest opens the other way at the fill price.

Realized P&L is gross of fees; fees are kept apart, so that for any fills
``realized + unrealized(mark) == -sum(signed qty * price) + quantity * mark``: the
mark-to-market of the ledger (a property test checks it). Equity is the starting cash
plus realized minus fees plus unrealized.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sptrader.broker.orders import Fill

# Quantities this close to zero are flat (float sums of fills leave dust).
QTY_EPSILON = 1e-9


@dataclass(slots=True)
class Position:
    instrument: str
    qty: float = 0.0  # signed: > 0 long, < 0 short
    avg_price: float = 0.0
    realized: float = 0.0
    fees: float = 0.0
    opened_us: int | None = None  # when the current position was opened

    @property
    def side(self) -> str:
        return "long" if self.qty > 0 else "short" if self.qty < 0 else "flat"

    @property
    def is_flat(self) -> bool:
        return abs(self.qty) <= QTY_EPSILON

    def unrealized(self, mark: float | None) -> float:
        if self.is_flat or mark is None:
            return 0.0
        return (mark - self.avg_price) * self.qty

    def notional(self, mark: float | None) -> float:
        return abs(self.qty) * (mark if mark is not None else self.avg_price)

    def apply(self, signed_qty: float, price: float, fee: float = 0.0, ts_us: int = 0) -> float:
        """Book one fill; returns the P&L it realized."""
        self.fees += fee
        if self.is_flat:
            self.qty, self.avg_price, self.opened_us = signed_qty, price, ts_us
            return 0.0
        if (self.qty > 0) == (signed_qty > 0):
            total = self.qty + signed_qty
            self.avg_price = (self.avg_price * self.qty + price * signed_qty) / total
            self.qty = total
            return 0.0
        closing = min(abs(signed_qty), abs(self.qty))
        direction = 1.0 if self.qty > 0 else -1.0
        realized = (price - self.avg_price) * closing * direction
        self.realized += realized
        rest = abs(signed_qty) - closing
        if abs(self.qty) - closing <= QTY_EPSILON and rest > QTY_EPSILON:
            # Flipped: the rest opens the other way at the fill price.
            self.qty = -direction * rest
            self.avg_price = price
            self.opened_us = ts_us
        else:
            self.qty -= direction * closing
            if self.is_flat:
                self.qty, self.avg_price, self.opened_us = 0.0, 0.0, None
        return realized

    def to_dict(self, mark: float | None = None) -> dict[str, Any]:
        return {
            "instrument": self.instrument,
            "side": self.side,
            "qty": self.qty,
            "avg_price": self.avg_price,
            "mark": mark,
            "unrealized": self.unrealized(mark),
            "realized": self.realized,
            "fees": self.fees,
            "notional": self.notional(mark),
            "opened_us": self.opened_us,
        }


@dataclass
class Ledger:
    """Every instrument's position, built from fills in order."""

    starting_cash: float = 0.0
    positions: dict[str, Position] = field(default_factory=dict)

    @classmethod
    def from_fills(cls, fills: Iterable[Fill], starting_cash: float = 0.0) -> Ledger:
        ledger = cls(starting_cash)
        for fill in fills:
            ledger.apply(fill)
        return ledger

    def position(self, instrument: str) -> Position:
        position = self.positions.get(instrument)
        if position is None:
            position = self.positions[instrument] = Position(instrument)
        return position

    def apply(self, fill: Fill) -> float:
        return self.position(fill.instrument).apply(
            fill.signed_qty, fill.price, fill.fee, fill.ts_us
        )

    def open_positions(self) -> list[Position]:
        return [p for p in self.positions.values() if not p.is_flat]

    @property
    def realized(self) -> float:
        return sum(p.realized for p in self.positions.values())

    @property
    def fees(self) -> float:
        return sum(p.fees for p in self.positions.values())

    def unrealized(self, marks: Mapping[str, float | None]) -> float:
        return sum(p.unrealized(marks.get(p.instrument)) for p in self.open_positions())

    def cash(self) -> float:
        """Starting cash plus realized P&L minus fees (positions are margined, not paid
        for in full: cash moves only when P&L is realized)."""
        return self.starting_cash + self.realized - self.fees

    def equity(self, marks: Mapping[str, float | None]) -> float:
        return self.cash() + self.unrealized(marks)

    def exposure(self, marks: Mapping[str, float | None]) -> float:
        """Gross notional of the open positions at their marks."""
        return sum(p.notional(marks.get(p.instrument)) for p in self.open_positions())
