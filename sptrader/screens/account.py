"""Account strip: equity, cash, exposure, day P&L (green/red), open positions and
orders, on one line of the main screen. Also the money, quantity and price formats the
trading panes, the order ticket and the journal share (no widgets in those)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rich.text import Text
from textual.widgets import Static

# The price format is shared with the commands; the panes import it from here too.
from sptrader.formatting import format_price, guess_decimals

__all__ = ["Decimals", "format_price", "format_qty", "guess_decimals", "money", "pnl_style"]

#: How many decimals an instrument's prices show (sptrader.formatting.price_decimals:
#: its feed's metadata, else its quotes), None when not known yet.
Decimals = Callable[[str], int | None]


def pnl_style(value: float | None) -> str:
    """Green for a gain, red for a loss, plain for zero (or nothing)."""
    if value is None:
        return ""
    return "green" if value > 0 else "red" if value < 0 else ""


def money(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "-"
    if signed and abs(value) < 0.005:
        return "0.00"
    return f"{value:+,.2f}" if signed else f"{value:,.2f}"


def format_qty(qty: float | None) -> str:
    """1,000 · 0.5 · 33,333.33 · 0.00125 (no trailing zeros)."""
    if qty is None:
        return "-"
    size = abs(qty)
    if size >= 1000:
        decimals = 2
    elif size >= 1:
        decimals = 4
    else:
        decimals = 8
    text = f"{qty:,.{decimals}f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


#: The account strip's parts in the order a narrow strip leaves them out.
ACCOUNT_PART_PRIORITY = ("realized", "unrealized", "counts", "exposure", "cash")


class AccountBar(Static):
    """The paper account at the newest quotes (the app refreshes it at about 2 Hz)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(Text("account: loading…", style="dim"), **kwargs)
        self.account: dict[str, Any] | None = None
        self.problem = ""

    def show(self, account: dict[str, Any]) -> None:
        self.account = account
        self.problem = ""
        self._paint()

    def _paint(self) -> None:
        if self.account is None or self.problem:
            return
        width = self.content_size.width
        text = self.summary(self.account)
        # A narrow strip drops the least needed figures first; equity and day P&L stay.
        for drop in range(1, len(ACCOUNT_PART_PRIORITY) + 1):
            if not width or text.cell_len <= width:
                break
            text = self.summary(self.account, drop=drop)
        self.update(text)

    def on_resize(self) -> None:
        self._paint()

    def show_problem(self, message: str) -> None:
        """The account cannot be read (the broker is disabled, the daemon went away)."""
        if message != self.problem:
            self.problem = message
            self.update(Text(f"account: {message}", style="dim"))

    @staticmethod
    def summary(account: dict[str, Any], drop: int = 0) -> Text:
        """The strip's text; ``drop`` leaves out that many parts, least needed first
        (ACCOUNT_PART_PRIORITY)."""
        currency = account.get("currency", "")
        day = float(account.get("day_pnl", 0.0))
        unrealized = float(account.get("unrealized", 0.0))
        positions = int(account.get("open_positions", 0))
        orders = int(account.get("open_orders", 0))
        realized = account.get("realized")
        parts: dict[str, tuple[tuple[str, str], ...]] = {
            "equity": (("Equity ", "dim"), (f"{money(account.get('equity'))} {currency}", "bold")),
            "cash": (("Cash ", "dim"), (money(account.get("cash")), "")),
            "exposure": (("Exposure ", "dim"), (money(account.get("exposure")), "")),
            "day": (
                ("Day P&L ", "dim"),
                (money(day, signed=True), f"bold {pnl_style(day)}".strip()),
            ),
            "unrealized": (
                ("Unrealized ", "dim"),
                (money(unrealized, signed=True), pnl_style(unrealized)),
            ),
            "realized": (
                ("Realized ", "dim"),
                (money(realized, signed=True), pnl_style(realized)),
            ),
            "counts": (
                (
                    f"{positions} position{'' if positions == 1 else 's'}",
                    "bold" if positions else "",
                ),
                (" · ", "dim"),
                (f"{orders} open order{'' if orders == 1 else 's'}", "bold" if orders else ""),
            ),
        }
        for name in ACCOUNT_PART_PRIORITY[:drop]:
            del parts[name]
        text = Text(no_wrap=True, overflow="ellipsis")
        for index, pieces in enumerate(parts.values()):
            if index:
                text.append("   ")
            for piece, style in pieces:
                text.append(piece, style)
        return text
