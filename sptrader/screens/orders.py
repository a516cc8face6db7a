"""Orders pane: the working orders (entries, and the stop-losses and take-profits of
filled entries) with their age, and a "✕ cancel" cell per row: a click on it (or ``x``
on the selected row) cancels that order at its venue. When a venue trades live a Venue
column says where each order works (paper, or LIVE BINANCE in red).

Also the sentences the app notifies when an order fills, works, is rejected or is
cancelled (``describe_order``), shared with the order ticket.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rich.text import Text
from textual.binding import Binding
from textual.containers import Vertical
from textual.message import Message

from sptrader.clock import now_us
from sptrader.formatting import format_age
from sptrader.screens.account import Decimals, format_price, format_qty
from sptrader.screens.positions import ACTION, ActionTable, Column, venue_cell, with_venue

ORDER_COLUMNS = (
    Column("order_id", "#", 4, right=True, drop=4),
    Column("instrument", "Instrument", 10),
    Column("side", "Side", 4, drop=1),
    Column("qty", "Qty", 8, right=True, drop=2),
    Column("type", "Type", 6, drop=5),
    Column("price", "Price", 9, right=True, drop=3),
    Column("role", "Role", 5, drop=8),
    Column("tif", "TIF", 3, drop=7),
    Column("age", "Age", 4, right=True, drop=6),
    Column(ACTION, "", 8),
)
CANCEL_CELL = "✕ cancel"
ROLE_NAMES = {"sl": "stop-loss", "tp": "take-profit", "close": "close", "entry": "order"}
#: An order still working: paper's "open", a live venue's states before it is done.
WORKING = ("open", "new", "accepted", "partially_filled")


def order_cells(order: dict[str, Any], decimals: int | None, now: int) -> dict[str, Text]:
    side = str(order["side"])
    role = str(order.get("role") or "entry")
    return {
        "order_id": Text(str(order["order_id"])),
        "instrument": Text(str(order["instrument"])),
        "side": Text(side, style="green" if side == "buy" else "red"),
        "qty": Text(format_qty(float(order["qty"]))),
        # A trailing stop's price is its level now (moved by the book as the price runs).
        "type": Text("trail" if _trails(order) else str(order["type"])),
        "price": Text(format_price(order.get("price"), decimals)),
        "role": Text(role, style={"sl": "red", "tp": "green"}.get(role, "dim")),
        "tif": Text(str(order.get("tif") or "")),
        "age": Text(format_age(max(0.0, (now - int(order["created_us"])) / 1e6))),
        "venue": venue_cell(str(order.get("venue") or "paper")),
        ACTION: Text(CANCEL_CELL, style="bold red"),
    }


def _trails(order: dict[str, Any]) -> bool:
    """A trailing stop-loss (an entry's trail is only what its stop-loss will do)."""
    trail = order.get("trail") is not None or order.get("trail_pct") is not None
    return trail and order.get("role") == "sl"


def describe_order(order: dict[str, Any], decimals: int | None = None) -> str:
    """One sentence for a notification: "filled 1,000 SIM:EURUSD at 1.05617", "order 7
    working: buy 1,000 SIM:EURUSD limit 1.05000", "order 7 rejected: max quantity …"."""
    order_id = order["order_id"]
    status = order["status"]
    instrument = order["instrument"]
    side = order["side"]
    qty = format_qty(float(order.get("filled_qty") or order["qty"]))
    role = str(order.get("role") or "entry")
    if status == "filled":
        price = format_price(order.get("avg_price"), decimals)
        what = f"{ROLE_NAMES[role]} filled: " if role in ("sl", "tp") else "filled "
        side_word = f"{side} " if role in ("sl", "tp", "close") else ""
        return f"{what}{side_word}{qty} {instrument} at {price}"
    if status in WORKING:
        price = "" if order.get("price") is None else f" {format_price(order['price'], decimals)}"
        filled = float(order.get("filled_qty") or 0.0)
        part = f" ({format_qty(filled)} filled)" if filled else ""
        whole = format_qty(float(order["qty"]))
        return f"order {order_id} working: {side} {whole} {instrument} {order['type']}{price}{part}"
    reason = order.get("reason") or ""
    if status == "rejected":
        return f"order {order_id} rejected: {reason}"
    if status == "cancelled":
        return f"order {order_id} cancelled: {side} {qty} {instrument} {order['type']}"
    return f"order {order_id} {status}" + (f": {reason}" if reason else "")


class OrdersPane(Vertical):
    BINDINGS = [
        Binding("x", "cancel_selected", "Cancel order", id="order-cancel"),
    ]

    @dataclass
    class CancelRequested(Message):
        """The user asked to cancel order ``order_id``."""

        order_id: int

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.border_title = "Orders"
        self.border_subtitle = "none working"
        #: The working orders as last read (order id -> the client's order dict).
        self.orders: dict[int, dict[str, Any]] = {}

    def compose(self):
        yield ActionTable(ORDER_COLUMNS, id="orders-table")

    @property
    def table(self) -> ActionTable:
        return self.query_one(ActionTable)

    @property
    def selected(self) -> int | None:
        key = self.table.selected
        return None if key is None else int(key)

    def show(self, orders: list[dict[str, Any]], decimals: Decimals, live: bool = False) -> None:
        """The working ``orders``; ``live``: a venue trades live (the Venue column)."""
        now = now_us()
        self.orders = {int(order["order_id"]): order for order in orders}
        self.table.set_columns(with_venue(ORDER_COLUMNS, live))
        self.table.set_rows(
            {
                str(order_id): order_cells(order, decimals(str(order["instrument"])), now)
                for order_id, order in self.orders.items()
            }
        )
        self.border_subtitle = f"{len(orders)} working" if orders else "none working"

    def action_cancel_selected(self) -> None:
        order_id = self.selected
        if order_id is not None:
            self.post_message(self.CancelRequested(order_id))

    def on_action_table_action_clicked(self, event: ActionTable.ActionClicked) -> None:
        event.stop()
        self.post_message(self.CancelRequested(int(event.key)))
