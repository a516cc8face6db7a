"""The paper account without a running broker: what an engine with only its store open
(``LocalEngineClient`` of a command run without a daemon) reads and changes there.

Positions are rebuilt from every stored fill and marked at each instrument's last
stored 1m close (there are no live quotes without an engine). Cancelling an order
changes its stored row; the next engine to load the account no longer works it.
Blocking DuckDB work, like ``records``.
"""

from __future__ import annotations

from typing import Any

from sptrader.broker import records
from sptrader.broker.orders import Order
from sptrader.clock import now_us
from sptrader.config import BrokerConfig
from sptrader.errors import UsageError
from sptrader.store import Store


def orders(
    store: Store, *, every: bool = False, limit: int = 100, venue: str | None = None
) -> list[dict[str, Any]]:
    """Open orders (oldest first, as the broker lists them), or with ``every`` the
    newest ``limit`` orders of any status (newest first); of ``venue`` when given."""
    if every:
        return records.orders(store, None, limit, venue)
    return sorted(
        records.orders(store, "open", 1_000_000, venue), key=lambda order: order["order_id"]
    )


def account(
    store: Store, broker: BrokerConfig, now: int | None = None
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(the account summary, the open positions) with the keys the broker's
    ``account()`` and ``positions()`` give, marked at the last stored closes. The day's
    P&L is the equity now less the equity at 00:00 UTC (the fills before then, marked
    at the closes before then)."""
    now = now_us() if now is None else now
    ledger, marks = records.offline_account(store, broker, now)
    start_equity = records.day_start_equity(
        store, records.all_fills(store), broker.starting_cash, now
    )
    open_positions = sorted(ledger.open_positions(), key=lambda p: p.instrument)
    unrealized = ledger.unrealized(marks)
    equity = ledger.cash() + unrealized
    open_orders = store.cursor().execute(
        "SELECT count(*) FROM orders WHERE status = 'open' AND venue = 'paper'"
    )
    summary = {
        "currency": broker.currency,
        "starting_cash": ledger.starting_cash,
        "cash": ledger.cash(),
        "equity": equity,
        "unrealized": unrealized,
        "realized": ledger.realized,
        "fees": ledger.fees,
        "exposure": ledger.exposure(marks),
        "day_pnl": equity - start_equity,
        "open_positions": len(open_positions),
        "open_orders": int(open_orders.fetchall()[0][0]),
    }
    return summary, [p.to_dict(marks.get(p.instrument)) for p in open_positions]


def venue_positions(
    store: Store, broker: BrokerConfig, venue: str, now: int | None = None
) -> list[dict[str, Any]]:
    """A live venue's open positions from its stored fills, marked at the last stored
    closes (no engine connected to it here)."""
    ledger, marks = records.offline_account(store, broker, now, venue)
    held = sorted(ledger.open_positions(), key=lambda p: p.instrument)
    return [{"venue": venue, **p.to_dict(marks.get(p.instrument))} for p in held]


def cancel(
    store: Store, order_id: int, now: int | None = None, reason: str = "cancelled"
) -> dict[str, Any]:
    """Cancel a stored open order; returns it as ``Order.to_dict()``. An order that is
    not open (or not there) is a one-line UsageError."""
    now = now_us() if now is None else now
    found_open = [
        row for row in records.orders(store, "open", 1_000_000) if row["order_id"] == order_id
    ]
    if not found_open:
        raise not_open(store, order_id)
    if found_open[0]["venue"] != "paper":
        venue = found_open[0]["venue"]
        raise UsageError(
            f"order {order_id} is working at {venue}: it is cancelled at the venue, by the"
            " engine that trades there (sptrader start, or the TUI)"
        )
    order = Order(**found_open[0])
    order.status = "cancelled"
    order.updated_us = now
    order.reason = reason
    records.save_changes(store, ([records.order_row(order)], []))
    return order.to_dict()


def not_open(store: Store, order_id: int) -> UsageError:
    """The error for cancelling an order that is not open: what it is, or that there
    is no such order."""
    found = (
        store.cursor()
        .execute("SELECT status FROM orders WHERE order_id = ?", [order_id])
        .fetchall()
    )
    if not found:
        return UsageError(f"no order {order_id} (see `sptrader orders --all`)")
    return UsageError(f"order {order_id} is {found[0][0]}, not open")
