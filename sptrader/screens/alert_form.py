"""The alert rule form (``n`` new, ``e`` edit on the Alerts screen): a modal to add or
change one stored rule.

It asks for the rule's kind first and then only for the fields that kind uses
(``KIND_FIELDS``, after sptrader.alerting.rules): a price level, a move in a window, a
P&L threshold, order events, a venue, a feed's delay, a scanner. Channels are
checkboxes, the cooldown a number. Save sends the rule to the client
(``add_alert_rule``), which checks it as the config is: a refusal shows in one line
above the buttons and keeps everything typed. Escape closes the form without a change.
"""

from __future__ import annotations

from typing import Any

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.suggester import SuggestFromList
from textual.widgets import Button, Checkbox, Input, Label, RadioButton, RadioSet, Select

from sptrader.config import CHANNELS, RULE_KINDS
from sptrader.errors import UsageError
from sptrader.quantities import parse_number
from sptrader.screens.inputs import OrderedInput
from sptrader.venue_names import VENUES

ORDER_EVENTS = ("filled", "rejected", "stop", "target")

#: The fields each kind of rule reads (sptrader.alerting.rules), in the form's order.
KIND_FIELDS: dict[str, tuple[str, ...]] = {
    "price_cross": ("instrument", "level"),
    "price_move": ("instrument", "pct", "window_s"),
    "pnl": ("scope", "threshold", "venue", "instrument"),
    "order": ("instrument", "venue", "events"),
    "halt": ("venue",),
    "feed": ("after_s",),
    "gap": ("instrument",),
    "daemon": (),
    "signal": ("scanner",),
}

KIND_HELP = {
    "price_cross": "the price crosses a level (either way)",
    "price_move": "the price moves a % within a window",
    "pnl": "day P&L, or a position's, crosses a threshold",
    "order": "an order is filled, rejected, or its stop / target hit",
    "halt": "a venue halts (kill switch, daily loss limit, stale data)",
    "feed": "a feed is stale or failed for longer than a delay",
    "gap": "a data gap is detected (trades lost, a backfill failed)",
    "daemon": "the daemon started, restarted or is stopping",
    "signal": "a scanner's signal",
}

#: The text fields: label, placeholder.
TEXT_FIELDS = {
    "instrument": ("Instrument", "FEED:SYMBOL"),
    "level": ("Level", "the price to cross"),
    "pct": ("Move %", "e.g. 1.5"),
    "window_s": ("Window s", "seconds, e.g. 300"),
    "threshold": ("Threshold", "P&L, e.g. -500 or 1000"),
    "venue": ("Venue", "empty: every venue"),
    "after_s": ("After s", "seconds down, e.g. 60"),
    "scanner": ("Scanner", "empty: every scanner"),
}
NUMBER_FIELDS = ("level", "pct", "window_s", "threshold", "after_s")
OPTIONAL_HINTS = {
    "instrument": {"pnl": "position scope: FEED:SYMBOL", "order": "empty: any", "gap": "empty: any"}
}


def _shown(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return "" if value is None else str(value)


def build_rule(
    kind: str,
    texts: dict[str, str],
    *,
    scope: str = "day",
    events: list[str] | None = None,
    channels: list[str] | None = None,
) -> dict[str, Any]:
    """The rule the form describes, as ``add_alert_rule`` takes it: name, kind, channels,
    cooldown_s and the fields ``kind`` uses. A number that is not one is a UsageError
    (the client checks the rest as the config is)."""
    name = texts.get("name", "").strip()
    if not name:
        raise UsageError("give the rule a name")
    rule: dict[str, Any] = {"name": name, "kind": kind, "channels": list(channels or [])}
    cooldown = parse_number(texts.get("cooldown_s", ""), "the cooldown")
    rule["cooldown_s"] = 0.0 if cooldown is None else cooldown
    for field in KIND_FIELDS.get(kind, ()):
        if field == "scope":
            rule["scope"] = scope
        elif field == "events":
            rule["events"] = list(events or [])
        elif field in NUMBER_FIELDS:
            value = parse_number(texts.get(field, ""), TEXT_FIELDS[field][0].lower())
            if value is not None:
                rule[field] = value
        else:
            text = texts.get(field, "").strip()
            rule[field] = text.upper() if field == "instrument" else text
    return rule


class AlertRuleForm(ModalScreen[dict | None]):
    """Dismissed with the rule as ``alert_rules`` lists it once saved; None when closed.
    ``rule``: the stored rule to edit (its ``rule`` fields), or None for a new one."""

    BINDINGS = [Binding("escape", "close", "Cancel", key_display="esc", id="alert-form-close")]

    DEFAULT_CSS = """
    AlertRuleForm { align: center middle; }
    #alert-form-body {
        width: 76; max-width: 100%; height: auto; max-height: 100%;
        border: round $accent; border-title-style: bold; background: $surface;
        padding: 0 1;
    }
    #alert-form-fields { height: auto; max-height: 1fr; }
    .alert-row { height: 1; margin-bottom: 1; }
    .alert-label { width: 12; color: $text-muted; }
    .alert-row Input { width: 1fr; }
    .alert-row Select { width: 1fr; }
    .alert-row RadioSet { layout: horizontal; width: auto; height: 1; }
    .alert-row RadioButton, .alert-row Checkbox { width: auto; margin-right: 2; }
    #alert-form-kind-help { color: $text-muted; height: 1; padding-left: 12; }
    #alert-form-error { color: $text-error; height: 1; width: 1fr; }
    #alert-form-buttons { height: 1; align-horizontal: right; }
    #alert-form-buttons Button { margin-left: 2; min-width: 10; }
    """

    def __init__(self, client: Any, rule: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.client = client
        self.editing = rule is not None
        self.rule: dict[str, Any] = dict(rule or {"kind": "price_cross"})
        self.saving = False

    # --- layout -----------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        rule = self.rule
        kind = rule.get("kind", "price_cross")
        with Vertical(id="alert-form-body"):
            with VerticalScroll(id="alert-form-fields"):
                with Horizontal(classes="alert-row"):
                    yield Label("Name", classes="alert-label")
                    yield OrderedInput(
                        _shown(rule.get("name")),
                        placeholder="a short name, e.g. eurusd-1.10",
                        id="alert-name",
                        compact=True,
                        disabled=self.editing,  # the name is the rule's key
                    )
                with Horizontal(classes="alert-row", id="row-kind"):
                    yield Label("Kind", classes="alert-label")
                    yield Select(
                        [(name, name) for name in RULE_KINDS],
                        value=kind,
                        allow_blank=False,
                        id="alert-kind",
                        compact=True,
                    )
                yield Label(KIND_HELP.get(kind, ""), id="alert-form-kind-help")
                with Horizontal(classes="alert-row", id="row-scope"):
                    yield Label("Scope", classes="alert-label")
                    with RadioSet(id="alert-scope", compact=True):
                        scope = rule.get("scope", "day")
                        yield RadioButton("Day P&L", value=scope == "day", id="scope-day")
                        yield RadioButton(
                            "A position's", value=scope == "position", id="scope-position"
                        )
                for field, (label, placeholder) in TEXT_FIELDS.items():
                    with Horizontal(classes="alert-row", id=f"row-{field}"):
                        yield Label(label, classes="alert-label")
                        yield OrderedInput(
                            _shown(rule.get(field)),
                            placeholder=placeholder,
                            id=f"alert-{field}",
                            compact=True,
                            suggester=(
                                SuggestFromList(VENUES, case_sensitive=False)
                                if field == "venue"
                                else None
                            ),
                        )
                with Horizontal(classes="alert-row", id="row-events"):
                    yield Label("Events", classes="alert-label")
                    events = rule.get("events", ORDER_EVENTS)
                    for event in ORDER_EVENTS:
                        yield Checkbox(event, event in events, id=f"event-{event}", compact=True)
                with Horizontal(classes="alert-row", id="row-channels"):
                    yield Label("Channels", classes="alert-label")
                    channels = rule.get("channels", ["tui", "webhooks"])
                    for channel in CHANNELS:
                        yield Checkbox(
                            channel, channel in channels, id=f"channel-{channel}", compact=True
                        )
                with Horizontal(classes="alert-row", id="row-cooldown_s"):
                    yield Label("Cooldown s", classes="alert-label")
                    yield OrderedInput(
                        _shown(float(rule.get("cooldown_s", 300.0))),
                        placeholder="at most one notice per this many seconds",
                        id="alert-cooldown_s",
                        compact=True,
                    )
            yield Label("", id="alert-form-error")
            with Horizontal(id="alert-form-buttons"):
                yield Button("Save", id="alert-form-save", variant="primary", compact=True)
                yield Button("Cancel", id="alert-form-cancel", compact=True)

    def on_mount(self) -> None:
        name = self.rule.get("name")
        body = self.query_one("#alert-form-body")
        body.border_title = f"Edit alert {name}" if self.editing else "New alert rule"
        self._show_fields(self.kind)
        self.query_one("#alert-kind" if self.editing else "#alert-name").focus()

    @property
    def kind(self) -> str:
        value = self.query_one("#alert-kind", Select).value
        return value if isinstance(value, str) else "price_cross"

    def _show_fields(self, kind: str) -> None:
        used = KIND_FIELDS.get(kind, ())
        for field in (*TEXT_FIELDS, "scope", "events"):
            self.query_one(f"#row-{field}").display = field in used
        hint = OPTIONAL_HINTS["instrument"].get(kind, TEXT_FIELDS["instrument"][1])
        self.query_one("#alert-instrument", Input).placeholder = hint
        self.query_one("#alert-form-kind-help", Label).update(KIND_HELP.get(kind, ""))

    @on(Select.Changed, "#alert-kind")
    def _kind_changed(self) -> None:
        self._show_fields(self.kind)
        self._say("")

    # --- saving -----------------------------------------------------------------------

    def _say(self, message: str) -> None:
        # One line: the first of the client's message.
        self.query_one("#alert-form-error", Label).update(
            message.splitlines()[0] if message else ""
        )

    def current_rule(self) -> dict[str, Any]:
        """The rule as the fields say now (a UsageError for a number that is not one)."""
        texts = {
            field: self.query_one(f"#alert-{field}", Input).value
            for field in ("name", *TEXT_FIELDS, "cooldown_s")
        }
        scope = "position" if self.query_one("#scope-position", RadioButton).value else "day"
        events = [e for e in ORDER_EVENTS if self.query_one(f"#event-{e}", Checkbox).value]
        channels = [c for c in CHANNELS if self.query_one(f"#channel-{c}", Checkbox).value]
        rule = build_rule(self.kind, texts, scope=scope, events=events, channels=channels)
        if self.editing and "enabled" in self.rule:
            rule["enabled"] = self.rule["enabled"]
        return rule

    @on(Input.Submitted)
    @on(Button.Pressed, "#alert-form-save")
    def _save_pressed(self, event: Input.Submitted | Button.Pressed) -> None:
        event.stop()
        if self.saving:
            return
        try:
            rule = self.current_rule()
        except UsageError as error:
            self._say(str(error))
            return
        self._save(rule)

    @work(group="alert-form-save", exit_on_error=False)
    async def _save(self, rule: dict[str, Any]) -> None:
        self.saving = True
        self._say("saving…")
        try:
            saved = await self.client.add_alert_rule(rule)
        except Exception as error:  # the client's refusal: said, the form kept
            self._say(str(error) or type(error).__name__)
            return
        finally:
            self.saving = False
        self.dismiss(saved)

    @on(Button.Pressed, "#alert-form-cancel")
    def _cancel_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.dismiss(None)

    def action_close(self) -> None:
        self.dismiss(None)
