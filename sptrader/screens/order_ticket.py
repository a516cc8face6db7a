"""The order ticket (``b`` buy, ``s`` sell): a modal to place one order.

When a venue trades live the ticket first asks where the order goes: paper (always the
default, never remembered) or a live venue; a live venue marks the ticket in red
(``LIVE BINANCE`` in its border, "Buy LIVE at BINANCE" on Submit) and sizes a risk %
from that venue's equity.

Fields: instrument (prefilled from the chart, or the selected position or order), side,
size as a quantity or as a risk % of equity (which needs a stop-loss), type (market,
limit, stop), price (limit and stop orders), stop-loss, take-profit and time in force.
Every keystroke checks the form (``check_ticket``, no widgets there): a problem shows
as a red line under its field and disables Submit; the estimated notional and the risk
to the stop show under the form. Submit (or enter in a field) places the order through
the client: the ticket closes with the broker's result (the app says what happened);
an order a risk limit rejects keeps the ticket open with the limit's reason. Escape
closes it without an order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.suggester import SuggestFromList
from textual.widgets import Button, Input, Label, RadioButton, RadioSet

from sptrader.errors import UsageError
from sptrader.models import normalize_instrument
from sptrader.quantities import parse_number
from sptrader.screens.account import (
    Decimals,
    format_price,
    format_qty,
    live_state,
    money,
    venue_name,
)
from sptrader.screens.inputs import OrderedInput

#: The newest (bid, ask) of an instrument, or None before its first quote.
QuoteOf = Callable[[str], tuple[float, float] | None]

FIELDS = ("instrument", "size", "price", "sl", "tp")


@dataclass(slots=True)
class TicketForm:
    """What the ticket's fields say (text as typed)."""

    instrument: str = ""
    side: str = "buy"
    sizing: str = "qty"  # qty or risk
    size: str = ""
    type: str = "market"
    price: str = ""
    sl: str = ""
    tp: str = ""
    tif: str = "gtc"


@dataclass(slots=True)
class TicketCheck:
    """The form checked: the problem of each field (none: the order can go), the
    request to send, and the estimate line."""

    errors: dict[str, str] = field(default_factory=dict)
    request: dict[str, Any] | None = None
    estimate: str = ""
    qty: float | None = None  # the quantity (sized from the risk % when so asked)

    @property
    def ok(self) -> bool:
        return not self.errors and self.request is not None


def check_ticket(
    form: TicketForm,
    quote: tuple[float, float] | None,
    *,
    equity: float | None = None,
    streamed: set[str] | None = None,
    currency: str = "",
    decimals: int | None = None,
) -> TicketCheck:
    """Check the form as the broker would (``sptrader.broker.orders.validate``), against
    the instrument's newest ``quote`` (bid, ask). An empty field the order needs is an
    error too (the ticket shows it once the field was touched)."""
    check = TicketCheck()
    errors = check.errors
    buy = form.side == "buy"

    instrument = ""
    if not form.instrument.strip():
        errors["instrument"] = "give an instrument (FEED:SYMBOL, e.g. SIM:EURUSD)"
    else:
        try:
            instrument = normalize_instrument(form.instrument)
        except UsageError as error:
            errors["instrument"] = str(error)
        else:
            if streamed is not None and instrument not in streamed:
                errors["instrument"] = (
                    f"{instrument} is not streamed: add it to the watchlist first (/)"
                )

    def number(name: str, what: str) -> float | None:
        try:
            value = parse_number(getattr(form, name), what)
        except UsageError as error:
            errors[name] = str(error)
            return None
        if value is not None and value <= 0:
            errors[name] = f"{what} must be above 0"
            return None
        return value

    risk_sizing = form.sizing == "risk"
    size = number("size", "risk %" if risk_sizing else "quantity")
    if size is None and "size" not in errors:
        errors["size"] = "give a risk % of equity" if risk_sizing else "give a quantity"
    if risk_sizing and size is not None and size > 100:
        errors["size"] = "risk % must be at most 100"
    price = None
    if form.type != "market":
        price = number("price", f"a {form.type} order's price")
        if price is None and "price" not in errors:
            errors["price"] = f"a {form.type} order needs a price"
    sl = number("sl", "the stop-loss")
    tp = number("tp", "the take-profit")
    if risk_sizing and sl is None and "sl" not in errors:
        errors["sl"] = "sizing by risk % needs a stop-loss"

    # Where the order would fill: its price, or the touch for a market order.
    reference = None if quote is None else (quote[1] if buy else quote[0])
    entry = price if form.type != "market" else reference
    if entry is not None:
        if sl is not None and (sl >= entry if buy else sl <= entry):
            where = "below" if buy else "above"
            errors["sl"] = (
                f"the stop-loss must be {where} the entry {format_price(entry, decimals)}"
                f" for a {form.side}"
            )
        if tp is not None and (tp <= entry if buy else tp >= entry):
            where = "above" if buy else "below"
            errors["tp"] = (
                f"the take-profit must be {where} the entry {format_price(entry, decimals)}"
                f" for a {form.side}"
            )

    # The estimate: quantity, notional and the risk to the stop.
    unit = f" {currency}" if currency else ""
    qty = None if risk_sizing else size
    if entry is None:
        check.estimate = f"no quote for {instrument} yet" if instrument and quote is None else ""
    elif risk_sizing and size is not None and sl is not None and "sl" not in errors:
        if equity is not None and equity > 0:
            qty = equity * size / 100 / abs(entry - sl)
        else:
            check.estimate = "the account's equity is not known yet"
    if entry is not None and qty is not None:
        notional = qty * entry
        parts = [
            f"≈ {format_qty(qty)} at {format_price(entry, decimals)} = {money(notional)}{unit} notional"
        ]
        if sl is not None and "sl" not in errors:
            risk = qty * abs(entry - sl)
            share = f" ({risk / equity * 100:.2f}% of equity)" if equity else ""
            parts.append(f"risk to the stop {money(risk)}{share}")
        check.estimate = " · ".join(parts)
        check.qty = qty

    if errors:
        return check
    request: dict[str, Any] = {
        "instrument": instrument,
        "side": form.side,
        "type": form.type,
        "tif": form.tif,
    }
    if risk_sizing:
        request["risk_pct"] = size
    else:
        request["qty"] = size
    for name, value in (("price", price), ("sl", sl), ("tp", tp)):
        if value is not None:
            request[name] = value
    check.request = request
    return check


class TicketChoice(RadioSet):
    """A choice of the ticket (side, sizing, type, time in force): space or a click
    picks the option, and enter places the order as it does in every field."""

    BINDINGS = [Binding("enter", "screen.place_order", "Place", show=False)]


class OrderTicket(ModalScreen[dict | None]):
    """Dismissed with the broker's result (``OrderResult`` as a dict) once an order was
    placed and not rejected; None when closed without one."""

    BINDINGS = [
        Binding("escape", "close", "Cancel", key_display="esc", id="ticket-close"),
    ]

    def __init__(
        self,
        client: Any,
        *,
        instrument: str = "",
        side: str = "buy",
        streamed: list[str] | None = None,
        quote: QuoteOf = lambda instrument: None,
        account: dict[str, Any] | None = None,
        decimals: Decimals = lambda instrument: None,
        size: str = "",
        sizing: str = "qty",
        told: Callable[[dict[str, Any]], None] = lambda result: None,
        live: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__()
        self.client = client
        self.form = TicketForm(instrument=instrument, side=side, size=size, sizing=sizing)
        self.streamed = list(streamed or [])
        self.quote_of = quote
        #: Each venue's account: paper's, and each live venue's (``live``: its account
        #: with its trading_venues status) in the order the choice offers them.
        self.accounts: dict[str, dict[str, Any]] = {"paper": account or {}} | {
            str(row["venue"]): row for row in live or []
        }
        #: Where the order goes: paper unless a live venue is chosen in this ticket.
        self.venue = "paper"
        self.decimals = decimals
        # Called with every result the ticket shows or returns (the app then does not
        # notify the same order's update again).
        self.told = told
        self.check = TicketCheck()
        self.touched: set[str] = {name for name in FIELDS if getattr(self.form, name)}
        self.placing = False
        self.rejection = ""

    # --- layout -----------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        form = self.form
        with Vertical(id="ticket-body"):
            if len(self.accounts) > 1:
                with Horizontal(classes="ticket-row", id="ticket-venue-row"):
                    yield Label("Venue", classes="ticket-label")
                    with TicketChoice(id="ticket-venue", compact=True):
                        yield RadioButton("Paper", value=True, id="venue-paper")
                        for venue, row in self.accounts.items():
                            if venue != "paper":
                                yield RadioButton(live_state(row), id=f"venue-{venue}")
            with Horizontal(classes="ticket-row"):
                yield Label("Instrument", classes="ticket-label")
                yield OrderedInput(
                    form.instrument,
                    placeholder="FEED:SYMBOL",
                    id="ticket-instrument",
                    compact=True,
                    suggester=SuggestFromList(self.streamed, case_sensitive=False),
                )
            yield Label("", id="ticket-quote")
            yield Label("", id="error-instrument", classes="field-error")
            with Horizontal(classes="ticket-row"):
                yield Label("Side", classes="ticket-label")
                with TicketChoice(id="ticket-side", compact=True):
                    yield RadioButton("Buy", value=form.side == "buy", id="side-buy")
                    yield RadioButton("Sell", value=form.side == "sell", id="side-sell")
            with Horizontal(classes="ticket-row"):
                yield Label("Size by", classes="ticket-label")
                with TicketChoice(id="ticket-sizing", compact=True):
                    yield RadioButton("Quantity", value=form.sizing == "qty", id="sizing-qty")
                    yield RadioButton(
                        "Risk % of equity", value=form.sizing == "risk", id="sizing-risk"
                    )
            with Horizontal(classes="ticket-row"):
                yield Label(self._size_label(), id="ticket-size-label", classes="ticket-label")
                yield OrderedInput(
                    form.size, placeholder=self._size_hint(), id="ticket-size", compact=True
                )
            yield Label("", id="error-size", classes="field-error")
            with Horizontal(classes="ticket-row"):
                yield Label("Type", classes="ticket-label")
                with TicketChoice(id="ticket-type", compact=True):
                    for name in ("market", "limit", "stop"):
                        yield RadioButton(
                            name.capitalize(), value=form.type == name, id=f"type-{name}"
                        )
            with Horizontal(classes="ticket-row"):
                yield Label("Price", classes="ticket-label")
                yield OrderedInput(
                    placeholder="limit or stop price",
                    id="ticket-price",
                    compact=True,
                    disabled=form.type == "market",
                )
            yield Label("", id="error-price", classes="field-error")
            with Horizontal(classes="ticket-row"):
                yield Label("Stop-loss", classes="ticket-label")
                yield OrderedInput(placeholder="optional", id="ticket-sl", compact=True)
            yield Label("", id="error-sl", classes="field-error")
            with Horizontal(classes="ticket-row"):
                yield Label("Take-profit", classes="ticket-label")
                yield OrderedInput(placeholder="optional", id="ticket-tp", compact=True)
            yield Label("", id="error-tp", classes="field-error")
            with Horizontal(classes="ticket-row"):
                yield Label("Time in force", classes="ticket-label")
                with TicketChoice(id="ticket-tif", compact=True):
                    yield RadioButton("GTC", value=form.tif == "gtc", id="tif-gtc")
                    yield RadioButton("Day", value=form.tif == "day", id="tif-day")
            yield Label("", id="ticket-estimate")
            yield Label("", id="ticket-rejection")
            with Horizontal(id="ticket-buttons"):
                yield Button("Buy", id="ticket-submit", compact=True)
                yield Button("Cancel", id="ticket-cancel", compact=True)

    def on_mount(self) -> None:
        self._title()
        self._validate()
        self.set_interval(0.5, self._tick, name="ticket-quote")
        focus = "#ticket-size" if self.form.instrument else "#ticket-instrument"
        self.query_one(focus, Input).focus()

    def _size_label(self) -> str:
        return "Risk %" if self.form.sizing == "risk" else "Quantity"

    def _size_hint(self) -> str:
        return "e.g. 0.5 (needs a stop-loss)" if self.form.sizing == "risk" else "e.g. 1000, 10k"

    @property
    def account(self) -> dict[str, Any]:
        """The account of the venue the order goes to."""
        return self.accounts.get(self.venue) or {}

    @property
    def live(self) -> bool:
        """The order goes to a live venue (real money)."""
        return self.venue != "paper"

    def _title(self) -> None:
        body = self.query_one("#ticket-body")
        buy = self.form.side == "buy"
        action = "Buy" if buy else "Sell"
        where = f" · [bold]{venue_name(self.venue)}[/]" if self.live else ""
        body.border_title = f"{action} order{where}"
        body.set_class(buy, "-buy")
        body.set_class(not buy, "-sell")
        body.set_class(self.live, "-live")
        submit = self.query_one("#ticket-submit", Button)
        label = f"{action} LIVE at {self.venue.upper()}" if self.live else action
        if str(submit.label) != label:
            submit.label = label
            submit.refresh(layout=True)  # a label of another width (not a layout reactive)
        submit.variant = "success" if buy else "error"

    # --- checking ---------------------------------------------------------------------

    def _instrument(self) -> str | None:
        try:
            return normalize_instrument(self.form.instrument)
        except UsageError:
            return None

    def _quote(self) -> tuple[float, float] | None:
        instrument = self._instrument()
        return None if instrument is None else self.quote_of(instrument)

    def _tick(self) -> None:
        """The quote moves: the estimate (and a market order's stop checks) follow."""
        self._validate()

    def _validate(self) -> None:
        instrument = self._instrument()
        decimals = None if instrument is None else self.decimals(instrument)
        quote = self._quote()
        equity = self.account.get("equity")
        self.check = check_ticket(
            self.form,
            quote,
            equity=None if equity is None else float(equity),
            streamed=set(self.streamed) if self.streamed else None,
            currency=str(self.account.get("currency", "")),
            decimals=decimals,
        )
        for name in FIELDS:
            problem = self.check.errors.get(name, "")
            label = self.query_one(f"#error-{name}", Label)
            shown = problem if name in self.touched else ""
            label.update(f"↑ {shown}" if shown else "")
            label.set_class(bool(shown), "-shown")
        quote_label = self.query_one("#ticket-quote", Label)
        if quote is None:
            quote_label.update(Text("no quote yet" if instrument else "", style="dim"))
        else:
            bid, ask = quote
            quote_label.update(
                Text.assemble(
                    ("bid ", "dim"),
                    format_price(bid, decimals),
                    ("   ask ", "dim"),
                    format_price(ask, decimals),
                )
            )
        estimate = self.check.estimate
        if not estimate and self.check.errors:
            # Why Submit is disabled, when the field at fault was not touched yet.
            untouched = [name for name in FIELDS if name in self.check.errors]
            estimate = self.check.errors[untouched[0]] if untouched else ""
        self.query_one("#ticket-estimate", Label).update(Text(estimate, style="dim"))
        self.query_one("#ticket-submit", Button).disabled = not self.check.ok or self.placing

    @property
    def errors_shown(self) -> dict[str, str]:
        """The problems shown under the fields (for tests and the help line)."""
        return {
            name: problem for name, problem in self.check.errors.items() if name in self.touched
        }

    @on(Input.Changed)
    def _field_changed(self, event: Input.Changed) -> None:
        name = (event.input.id or "").removeprefix("ticket-")
        if name not in FIELDS:
            return
        setattr(self.form, name, event.value)
        if event.value:
            self.touched.add(name)
        self._say_rejection("")
        self._validate()

    @on(RadioSet.Changed)
    def _choice_changed(self, event: RadioSet.Changed) -> None:
        chosen = event.pressed.id or ""
        group, _, value = chosen.partition("-")
        if group == "venue":
            self.venue = value
            self._title()
        elif group == "side":
            self.form.side = value
            self._title()
        elif group == "sizing":
            self.form.sizing = value
            self.query_one("#ticket-size-label", Label).update(self._size_label())
            self.query_one("#ticket-size", Input).placeholder = self._size_hint()
        elif group == "type":
            self.form.type = value
            price = self.query_one("#ticket-price", Input)
            price.disabled = value == "market"
            if value == "market":
                self.touched.discard("price")
        elif group == "tif":
            self.form.tif = value
        else:
            return
        self._say_rejection("")
        self._validate()

    # --- placing ----------------------------------------------------------------------

    def _say_rejection(self, message: str) -> None:
        self.rejection = message
        label = self.query_one("#ticket-rejection", Label)
        label.update(Text(message, style="bold red") if message else "")
        label.set_class(bool(message), "-shown")

    @on(Input.Submitted)
    def _enter(self, event: Input.Submitted) -> None:
        event.stop()
        self.submit()

    @on(Button.Pressed, "#ticket-submit")
    def _submit_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.submit()

    @on(Button.Pressed, "#ticket-cancel")
    def _cancel_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.dismiss(None)

    def action_place_order(self) -> None:
        self.submit()

    def submit(self) -> None:
        """Place the order if the form is right (else show every field's problem)."""
        self.touched.update(FIELDS)
        self._validate()
        if self.check.ok and not self.placing:
            assert self.check.request is not None
            request = dict(self.check.request)
            if len(self.accounts) > 1:
                request["venue"] = self.venue
            self._place(request)

    @work(exclusive=True, group="ticket-place", exit_on_error=False)
    async def _place(self, request: dict[str, Any]) -> None:
        self.placing = True
        self.query_one("#ticket-submit", Button).disabled = True
        self._say_rejection("")
        try:
            result = await self.client.place_order(request)
        except Exception as error:  # malformed, no quote, broker disabled: said here
            self._say_rejection(f"not placed: {error}")
            return
        finally:
            self.placing = False
            self._validate()
        self.told(result)
        rejected = result.get("rejected")
        if rejected:
            self._say_rejection(f"rejected: {rejected['message']}")
            return
        self.dismiss(result)

    def action_close(self) -> None:
        self.dismiss(None)
