"""Account strip: equity, cash, exposure, day P&L (green/red), open positions and
orders, on one line of the main screen; when a venue trades live, each such venue follows
marked ``LIVE <VENUE>`` in red (HALTED, not connected) with its equity and day P&L.
Also the money, quantity and price formats and the venue marks the trading panes, the
order ticket and the journal share (no widgets in those)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rich.text import Text
from textual.widgets import Static

# The price format is shared with the commands; the panes import it from here too.
from sptrader.formatting import format_price, guess_decimals

__all__ = [
    "LIVE_STYLE",
    "Decimals",
    "format_price",
    "format_qty",
    "guess_decimals",
    "live_state",
    "money",
    "pnl_style",
    "venue_name",
]

#: How many decimals an instrument's prices show (sptrader.formatting.price_decimals:
#: its feed's metadata, else its quotes), None when not known yet.
Decimals = Callable[[str], int | None]


#: How a live venue is marked wherever it shows: real money is at stake there.
LIVE_STYLE = "bold red"


def venue_name(venue: str) -> str:
    """ "paper", or "LIVE BINANCE" for a venue that trades live."""
    return "paper" if venue == "paper" else f"LIVE {venue.upper()}"


def live_state(row: dict[str, Any]) -> Text:
    """A venue's mark: ``LIVE BINANCE``, then HALTED when its kill switch is on and "not
    connected" when it is not; paper is marked only when halted ("PAPER HALTED")."""
    venue = str(row.get("venue", "paper"))
    words = [] if venue == "paper" else [(venue_name(venue), LIVE_STYLE)]
    if row.get("halted"):
        words.append(("PAPER HALTED" if venue == "paper" else "HALTED", "bold reverse red"))
    if venue != "paper" and row.get("connected") is False:
        words.append(("not connected", "red"))
    text = Text()
    for index, (word, style) in enumerate(words):
        text.append(" " if index else "")
        text.append(word, style)
    return text


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


#: The account strip's parts in the order a narrow strip leaves them out (then each live
#: venue's day P&L, its equity's label, its equity: its mark always stays).
ACCOUNT_PART_PRIORITY = ("realized", "unrealized", "counts", "exposure", "cash")
#: Between the paper account and each live venue on the strip.
VENUE_GAP = "  │ "


class AccountBar(Static):
    """The paper account at the newest quotes, and each live venue's (the app refreshes
    it at about 2 Hz)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(Text("account: loading…", style="dim"), **kwargs)
        self.account: dict[str, Any] | None = None
        self.problem = ""
        #: The live venues' accounts (each with its trading_venues status), in order.
        self.live: list[dict[str, Any]] = []
        #: Why the paper account is halted (None: it is not).
        self.paper_halted: str | None = None

    @property
    def accounts(self) -> dict[str, dict[str, Any]]:
        """Every venue's account as last read (paper when it could be read)."""
        paper = {} if self.account is None else {"paper": self.account}
        return paper | {str(row["venue"]): row for row in self.live}

    def show(
        self,
        account: dict[str, Any] | None,
        live: list[dict[str, Any]] | None = None,
        paper_halted: str | None = None,
        problem: str = "",
    ) -> None:
        """The paper ``account`` (None with the ``problem`` it has when a live venue is
        shown anyway) and the ``live`` venues' accounts."""
        self.account = account
        self.problem = problem
        self.live = list(live or [])
        self.paper_halted = paper_halted
        self._paint()

    def _paint(self) -> None:
        if self.account is None and not self.live:
            return
        width = self.content_size.width
        text = self._text()
        # A narrow strip drops the least needed figures first; equity and day P&L stay.
        for drop in range(1, len(self._priority()) + 1):
            if not width or text.cell_len <= width:
                break
            text = self._text(drop)
        self.update(text)

    def _priority(self) -> tuple[str, ...]:
        venues = [str(row["venue"]) for row in self.live]
        return (
            ACCOUNT_PART_PRIORITY
            + tuple(f"{venue}:day" for venue in venues)
            + tuple(f"{venue}:equity-label" for venue in venues)
            + tuple(f"{venue}:equity" for venue in venues)
        )

    def _text(self, drop: int = 0) -> Text:
        dropped = set(self._priority()[:drop])
        if not self.live:
            assert self.account is not None
            text = self.summary(self.account, drop=drop)
            if self.paper_halted:
                text = Text.assemble(live_state({"halted": self.paper_halted}), "   ", text)
            return text
        text = Text(no_wrap=True, overflow="ellipsis")
        text.append("paper ", "dim")
        if self.paper_halted:
            text.append("HALTED", "bold reverse red")
            text.append(" ")
        if self.account is not None:
            text.append_text(self.summary(self.account, drop=min(drop, 5)))
        else:
            text.append(self.problem or "not read yet", "dim")
        for row in self.live:
            venue = str(row["venue"])
            text.append(VENUE_GAP, "dim")
            text.append_text(live_state(row))
            if row.get("equity") is not None and f"{venue}:equity" not in dropped:
                currency = row.get("currency") or ""
                labelled = f"{venue}:equity-label" not in dropped
                text.append("  Equity " if labelled else " ", "dim")
                text.append(f"{money(row['equity'])} {currency}".rstrip(), "bold")
            if row.get("day_pnl") is not None and f"{venue}:day" not in dropped:
                day = float(row["day_pnl"])
                text.append("  Day P&L ", "dim")
                text.append(money(day, signed=True), f"bold {pnl_style(day)}".strip())
        return text

    def on_resize(self) -> None:
        self._paint()

    def show_problem(self, message: str) -> None:
        """The account cannot be read (the broker is disabled, the daemon went away)."""
        self.live = []
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
