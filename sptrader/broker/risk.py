"""Risk limits (``[risk]`` in the config) and position sizing from a stop distance.

Every order is checked when it is placed and again when a resting order triggers (the
account may have moved since). An order that only reduces a position passes every
limit except the stale-quote rule: getting out must always be possible while prices are
live. Entries (an order that opens, adds to or flips a position) must pass them all. A
rejection names the limit and gives the numbers.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from sptrader.broker.ledger import QTY_EPSILON, Ledger
from sptrader.broker.orders import Rejection
from sptrader.config import RiskConfig

# A risk-sized order computes to exactly the limit; float rounding must not reject it.
RISK_TOLERANCE = 1e-6


@dataclass(frozen=True, slots=True)
class Proposal:
    """An order as the limits see it."""

    instrument: str
    signed_qty: float
    price: float  # the expected fill (the touch for market orders, else its price)
    sl: float | None = None


def size_from_risk(equity: float, risk_pct: float, entry: float, stop: float) -> float:
    """The quantity whose loss at ``stop`` is ``risk_pct`` % of ``equity``."""
    distance = abs(entry - stop)
    if distance <= 0 or equity <= 0:
        return 0.0
    return equity * risk_pct / 100 / distance


def is_reducing(current_qty: float, signed_qty: float) -> bool:
    """Whether the order only closes part or all of the position (never flips it)."""
    if abs(current_qty) <= QTY_EPSILON or (current_qty > 0) == (signed_qty > 0):
        return False
    return abs(signed_qty) <= abs(current_qty) + QTY_EPSILON


def check(
    proposal: Proposal,
    limits: RiskConfig,
    ledger: Ledger,
    marks: Mapping[str, float | None],
    *,
    equity: float,
    day_pnl: float,
    stale: str | None = None,
    halted: str | None = None,
) -> Rejection | None:
    """None if the order may go ahead, else which limit refuses it and why. ``stale`` is
    the reason the instrument's quotes cannot be trusted (None when they are live);
    ``halted`` why trading is halted (``sptrader halt``: only reducing orders pass)."""
    instrument = proposal.instrument
    if stale:
        return Rejection("stale_quotes", f"no orders on {instrument}: {stale}")
    position = ledger.positions.get(instrument)
    current = position.qty if position is not None else 0.0
    if is_reducing(current, proposal.signed_qty):
        return None
    if halted:
        return Rejection(
            "halted",
            f"trading is halted ({halted}): only orders that reduce a position pass"
            " until `sptrader resume`",
        )
    if limits.daily_loss_limit > 0 and day_pnl <= -limits.daily_loss_limit:
        return _daily_loss(limits, day_pnl)
    return _entry_limits(
        proposal,
        limits,
        current,
        lambda: len(ledger.open_positions()),
        lambda: (
            ledger.exposure(marks) - (position.notional(marks.get(instrument)) if position else 0)
        ),
        equity,
    )


def check_flat_entry(
    proposal: Proposal, limits: RiskConfig, *, equity: float, day_pnl: float
) -> Rejection | None:
    """``check`` for an account with no open position, no stale quotes and no halt (a
    backtest's entries: one instrument, one position at a time, entered flat): the same
    limits and messages without a ledger to walk."""
    if limits.daily_loss_limit > 0 and day_pnl <= -limits.daily_loss_limit:
        return _daily_loss(limits, day_pnl)
    return _entry_limits(proposal, limits, 0.0, lambda: 0, lambda: 0.0, equity)


def _daily_loss(limits: RiskConfig, day_pnl: float) -> Rejection:
    return Rejection(
        "daily_loss_limit",
        f"daily loss limit: today's P&L {day_pnl:,.2f} is past the"
        f" -{limits.daily_loss_limit:,.2f} limit; new entries are blocked until 00:00 UTC",
    )


def _entry_limits(
    proposal: Proposal,
    limits: RiskConfig,
    current: float,
    open_count: Callable[[], int],
    others: Callable[[], float],
    equity: float,
) -> Rejection | None:
    """The limits an entry passes after the daily loss limit: ``current`` is the
    position's signed quantity, ``open_count()`` the open positions and ``others()`` the
    other positions' notional (asked only when a limit needs them)."""
    instrument = proposal.instrument
    if limits.max_open_positions > 0 and abs(current) <= QTY_EPSILON:
        count = open_count()
        if count >= limits.max_open_positions:
            return Rejection(
                "max_open_positions",
                f"max open positions: {count} open, the limit is {limits.max_open_positions}",
            )
    new_qty = current + proposal.signed_qty
    max_qty = limits.max_qty.get(instrument)
    if max_qty is not None and abs(new_qty) > max_qty + QTY_EPSILON:
        return Rejection(
            "max_qty",
            f"max quantity for {instrument}: the position would be {abs(new_qty):g},"
            f" the limit is {max_qty:g}",
        )
    notional = abs(new_qty) * proposal.price
    if limits.max_position_notional > 0 and notional > limits.max_position_notional:
        return Rejection(
            "max_position_notional",
            f"max notional per position: {instrument} would be {notional:,.2f},"
            f" the limit is {limits.max_position_notional:,.2f}",
        )
    if limits.max_total_notional > 0 or limits.max_leverage > 0:
        total = others() + notional
        if limits.max_leverage > 0 and total > limits.max_leverage * max(equity, 0.0):
            return Rejection(
                "max_leverage",
                f"max leverage: open positions would be {total:,.2f},"
                f" {total / equity if equity > 0 else float('inf'):.1f}x equity {equity:,.2f},"
                f" the limit is {limits.max_leverage:g}x",
            )
        if limits.max_total_notional > 0 and total > limits.max_total_notional:
            return Rejection(
                "max_total_notional",
                f"max total notional: open positions would be {total:,.2f},"
                f" the limit is {limits.max_total_notional:,.2f}",
            )
    if limits.risk_per_trade_pct > 0 and proposal.sl is not None and equity > 0:
        added = abs(new_qty) - abs(current) if (new_qty > 0) == (current > 0) else abs(new_qty)
        risk = max(added, 0.0) * abs(proposal.price - proposal.sl)
        pct = risk / equity * 100
        if pct > limits.risk_per_trade_pct * (1 + RISK_TOLERANCE):
            return Rejection(
                "risk_per_trade",
                f"risk per trade: {risk:,.2f} to the stop is {pct:.2f}% of equity"
                f" {equity:,.2f}, the limit is {limits.risk_per_trade_pct:g}%",
            )
    return None
