"""Where orders fill: one model for the paper broker (quotes) and the backtester (bars).

From quotes (live):
- market: a buy pays the ask, a sell gets the bid, each moved against the trader by
  ``slippage_bps``;
- limit: triggers when the touch crosses the limit (ask <= limit for a buy, bid >= limit
  for a sell) and fills at the touch, which is the limit or better; no slippage, since a
  resting limit never pays more than its price;
- stop: triggers when the touch crosses the stop (ask >= stop for a buy, bid <= stop for
  a sell) and then fills like a market order at that touch, with slippage.

From bars (backtests, which have no bid/ask): an order decided on bar t fills at the open
of bar t+1 with slippage. A stop inside a bar fills at the stop price, or at the open when
the bar opened beyond it (a gap: the worse price), with slippage; a limit inside a bar
fills at the limit, or at the open when it opened beyond it (the better price).

Fees: ``fee_bps`` of the notional plus ``fee_per_unit`` per unit, on every fill.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class FillModel:
    slippage_bps: float = 0.0
    fee_bps: float = 0.0
    fee_per_unit: float = 0.0

    def slipped(self, side: str, price: float) -> float:
        """``price`` moved against a ``side`` trader by the slippage."""
        move = self.slippage_bps / 10_000
        return price * (1 + move) if side == "buy" else price * (1 - move)

    def fee(self, qty: float, price: float) -> float:
        return abs(qty) * (abs(price) * self.fee_bps / 10_000 + self.fee_per_unit)

    # --- quotes -----------------------------------------------------------------------

    def quote_fill(
        self, side: str, order_type: str, price: float | None, bid: float, ask: float
    ) -> float | None:
        """The fill price of an order on this quote, or None if it does not trigger."""
        buy = side == "buy"
        touch = ask if buy else bid
        if order_type == "market":
            return self.slipped(side, touch)
        assert price is not None, order_type
        if order_type == "limit":
            if buy and ask <= price:
                return min(ask, price)
            if not buy and bid >= price:
                return max(bid, price)
            return None
        if (buy and ask >= price) or (not buy and bid <= price):
            return self.slipped(side, touch)
        return None

    # --- bars -------------------------------------------------------------------------

    def open_fill(self, side: str, open_: float) -> float:
        """A market order decided on the previous bar, filled at this bar's open."""
        return self.slipped(side, open_)

    def stop_fill(
        self, side: str, stop: float, open_: float, high: float, low: float
    ) -> float | None:
        """A ``side`` stop at ``stop`` during a bar: its fill price, or None."""
        if side == "sell":
            if open_ <= stop:
                return self.slipped(side, open_)
            return self.slipped(side, stop) if low <= stop else None
        if open_ >= stop:
            return self.slipped(side, open_)
        return self.slipped(side, stop) if high >= stop else None

    def limit_fill(
        self, side: str, limit: float, open_: float, high: float, low: float
    ) -> float | None:
        """A ``side`` limit at ``limit`` during a bar: its fill price, or None."""
        if side == "sell":
            if open_ >= limit:
                return open_
            return limit if high >= limit else None
        if open_ <= limit:
            return open_
        return limit if low <= limit else None
