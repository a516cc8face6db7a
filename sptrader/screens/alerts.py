"""The ``A`` Alerts screen: the alert rules, and the notices they sent.

The rules table lists every rule, from ``[[alerts.rules]]`` in the config file and those
added here (stored): kind, what it watches, channels, cooldown, on or paused, how often
it fired since the engine started and when it last sent. Below it, the alert history
(newest first) of every rule, or of the selected one only (``h`` toggles).

Keys act on the selected rule: ``n`` a new rule, ``e`` edits it, ``p`` pauses or resumes
it, ``t`` sends a test notice through its channels, ``x`` removes it (after a
confirmation); a rule of the config file is edited or removed there, which the screen
says. Rows are read again after each action and every few seconds.
"""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen, Screen
from textual.widgets import Button, DataTable, Footer, Header, Label

from sptrader.client.protocol import EngineClient
from sptrader.clock import format_us
from sptrader.screens.alert_form import AlertRuleForm

RULE_COLUMNS = (
    ("name", "Rule"),
    ("kind", "Kind"),
    ("subject", "Watches"),
    ("channels", "Channels"),
    ("cooldown", "Cooldown"),
    ("state", "State"),
    ("fired", "Fired"),
    ("last", "Last sent"),
)
HISTORY_COLUMNS = (
    ("time", "Sent"),
    ("rule", "Rule"),
    ("title", "Notice"),
    ("channels", "Channels"),
)
# Under NARROW_BELOW columns the tables' columns have fixed widths and their cells wrap
# (None: the width left over), so nothing is cut or scrolled sideways at 80 columns.
NARROW_BELOW = 120
NARROW_RULE_COLUMNS = (
    ("name", "Rule / kind", 14),
    ("subject", "Watches", None),
    ("channels", "Channels", 14),
    ("state", "State", 8),
    ("fired", "Fired", 8),
)
NARROW_HISTORY_COLUMNS = (
    ("time", "Sent", 14),
    ("rule", "Rule", 12),
    ("title", "Notice", None),
    ("channels", "Channels", 14),
)
HISTORY_SHOWN = 100
# The tables are read again at least this often (seconds).
RELOAD_EVERY_S = 5
IN_CONFIG = "is defined in the config file: edit it there"


def _when(ts_us: int | None) -> str:
    return format_us(ts_us)[:19].replace("T", " ") if ts_us else "-"


def _seconds(value: float) -> str:
    value = float(value)
    if value >= 3600 and value % 3600 == 0:
        return f"{value / 3600:g}h"
    if value >= 60 and value % 60 == 0:
        return f"{value / 60:g}m"
    return f"{value:g}s"


def subject(rule: dict[str, Any]) -> str:
    """What a rule watches, in a few words (its kind's own fields)."""
    kind = rule.get("kind")
    spec = rule.get("rule") or {}
    instrument = spec.get("instrument") or ""
    venue = spec.get("venue") or ""
    if kind == "price_cross":
        return f"{instrument} crosses {spec.get('level', 0):g}"
    if kind == "price_move":
        return f"{instrument} ±{spec.get('pct', 0):g}% in {_seconds(spec.get('window_s', 0))}"
    if kind == "pnl":
        what = (instrument or "a position") if spec.get("scope") == "position" else "day P&L"
        where = f" ({venue})" if venue else ""
        return f"{what} crosses {spec.get('threshold', 0):g}{where}"
    if kind == "order":
        events = ", ".join(spec.get("events") or [])
        return " ".join(part for part in (instrument or "any", venue, events) if part)
    if kind == "halt":
        return venue or "every venue"
    if kind == "feed":
        return f"down > {_seconds(spec.get('after_s', 0))}"
    if kind == "gap":
        return instrument or "any instrument"
    if kind == "signal":
        return spec.get("scanner") or "every scanner"
    return ""


def _state(rule: dict[str, Any]) -> Text:
    if rule.get("paused"):
        return Text("paused", style="yellow")
    if not rule.get("enabled", True):
        return Text("off", style="dim")  # enabled = false in the config
    return Text("on", style="green")


def _name(rule: dict[str, Any]) -> Text:
    name = Text(rule["name"])
    if rule.get("source") == "config":
        name.append(" ⚙", style="dim")  # from the config file
    return name


def _rule_cells(rule: dict[str, Any], narrow: bool = False) -> list[object]:
    channels = ", ".join(rule.get("channels") or []) or "-"
    cooldown = _seconds(rule.get("cooldown_s", 0))
    fired = str(rule.get("fired", 0))
    last = _when(rule.get("last_sent_us"))
    if narrow:  # two lines a row: kind under the name, cooldown under the state...
        return [
            _name(rule).append(f"\n{rule['kind']}", style="dim"),
            Text(subject(rule)),
            Text(channels),
            _state(rule).append(f"\n{cooldown}", style="default"),
            Text(f"{fired}\n{last[11:] if last != '-' else last}"),
        ]
    return [
        _name(rule),
        rule["kind"],
        subject(rule),
        channels,
        cooldown,
        _state(rule),
        Text(fired, justify="right"),
        last,
    ]


def _history_cells(notice: dict[str, Any], narrow: bool = False) -> list[object]:
    title = Text(str(notice.get("title") or ""))
    if (notice.get("data") or {}).get("test"):
        title.stylize("italic")
    channels = ", ".join(notice.get("channels") or [])
    when = _when(notice.get("ts_us"))
    return [
        Text(when[5:] if narrow else when),
        Text(notice.get("rule") or ""),
        title,
        Text(channels) if channels else Text("none", style="red"),
    ]


class ConfirmRemove(ModalScreen[bool]):
    """Remove rule ``name``? Remove (focused: enter confirms) or Cancel / escape."""

    BINDINGS = [Binding("escape", "cancel", "Cancel", key_display="esc", id="alert-remove-cancel")]

    DEFAULT_CSS = """
    ConfirmRemove { align: center middle; }
    #alert-remove-body {
        width: 56; max-width: 100%; height: auto; max-height: 100%;
        border: heavy $error; background: $surface; padding: 1 2;
    }
    #alert-remove-body Label { width: 1fr; }
    #alert-remove-buttons { height: 1; margin-top: 1; align-horizontal: right; }
    #alert-remove-buttons Button { margin-left: 2; min-width: 10; }
    """

    def __init__(self, name: str) -> None:
        super().__init__()
        self.rule_name = name

    def compose(self) -> ComposeResult:
        with Vertical(id="alert-remove-body"):
            yield Label(f"Remove the alert rule {self.rule_name}?", id="alert-remove-question")
            yield Label("Its history is kept.", classes="dim")
            with Horizontal(id="alert-remove-buttons"):
                yield Button("Remove", id="alert-remove-confirm", variant="error", compact=True)
                yield Button("Cancel", id="alert-remove-dismiss", compact=True)

    def on_mount(self) -> None:
        self.query_one("#alert-remove-body").border_title = "Remove alert"
        self.query_one("#alert-remove-confirm", Button).focus()

    @on(Button.Pressed, "#alert-remove-confirm")
    def _confirm(self, event: Button.Pressed) -> None:
        event.stop()
        self.dismiss(True)

    @on(Button.Pressed, "#alert-remove-dismiss")
    def _dismiss(self, event: Button.Pressed) -> None:
        event.stop()
        self.dismiss(False)

    def action_cancel(self) -> None:
        self.dismiss(False)


class AlertsScreen(Screen[None]):
    BINDINGS = [
        Binding("escape,A", "close", "Back", key_display="esc", id="alerts-close"),
        Binding("n", "new_rule", "New", id="alerts-new"),
        Binding("e", "edit_rule", "Edit", id="alerts-edit"),
        Binding("p", "toggle_pause", "Pause/resume", id="alerts-pause"),
        Binding("t", "test_rule", "Test", id="alerts-test"),
        Binding("x", "remove_rule", "Remove", id="alerts-remove"),
        Binding("h", "toggle_history", "History", id="alerts-history"),
    ]

    DEFAULT_CSS = """
    #alerts-body { height: 1fr; padding: 0 1; }
    #alerts-title { color: $text-muted; height: auto; width: 1fr; }
    #alert-rules-table { height: 1fr; border: round $primary-darken-2; }
    #alert-history-table { height: 1fr; border: round $primary-darken-2; }
    #alert-rules-table:focus, #alert-history-table:focus { border: round $accent; }
    #alerts-status { height: 1; width: 1fr; }
    """

    def __init__(self, client: EngineClient) -> None:
        super().__init__()
        self.client = client
        self.rules: dict[str, dict[str, Any]] = {}
        self.history: list[dict[str, Any]] = []
        self.history_of_selected = False  # h: the selected rule's notices only
        self.loads = 0
        self.narrow: bool | None = None  # the tables' layout (None: not yet set)
        self._ticks_since_load = 0
        self._select_next: str | None = None
        self._history_rule: str | None = None  # whose notices the history shows

    def compose(self) -> ComposeResult:
        yield Header()
        with Vertical(id="alerts-body"):
            yield Label("Alert rules", id="alerts-title")
            yield DataTable(id="alert-rules-table", cursor_type="row", zebra_stripes=True)
            yield DataTable(id="alert-history-table", cursor_type="row", zebra_stripes=True)
            yield Label("", id="alerts-status")
        yield Footer()

    def on_mount(self) -> None:
        rules = self.query_one("#alert-rules-table", DataTable)
        self._set_columns()
        self.query_one("#alerts-title", Label).update(
            "Alert rules (⚙ from the config file) · "
            f"{self.key_for('alerts-new')} new · {self.key_for('alerts-edit')} edit · "
            f"{self.key_for('alerts-pause')} pause/resume · {self.key_for('alerts-test')} test "
            f"· {self.key_for('alerts-remove')} remove"
        )
        self._title_history()
        rules.focus()
        self.set_interval(1.0, self._reload_if_due, name="alerts-refresh")
        self._load()

    def key_for(self, binding_id: str) -> str:
        """A binding's key as shown (the first of its keys)."""
        binding = next(binding for binding in self.BINDINGS if binding.id == binding_id)
        return self.app.get_key_display(binding)

    # --- reading ----------------------------------------------------------------------

    def _reload_if_due(self) -> None:
        self._ticks_since_load += 1
        if self._ticks_since_load >= RELOAD_EVERY_S:
            self._load()

    @work(exclusive=True, group="alerts-load", exit_on_error=False)
    async def _load(self) -> None:
        self._ticks_since_load = 0
        rules = await self.client.alert_rules()
        self._show_rules(rules)
        rule = self.selected_rule() if self.history_of_selected else None
        self._history_rule = rule
        notices = await self.client.alert_history(HISTORY_SHOWN, rule)
        self._show_history(notices)
        self.loads += 1

    def _set_columns(self) -> None:
        """The tables' columns for this width (again when the width crosses NARROW_BELOW)."""
        narrow = self.app.size.width < NARROW_BELOW
        if narrow == self.narrow:
            return
        self.narrow = narrow
        for table_id, wide, thin in (
            ("#alert-rules-table", RULE_COLUMNS, NARROW_RULE_COLUMNS),
            ("#alert-history-table", HISTORY_COLUMNS, NARROW_HISTORY_COLUMNS),
        ):
            table = self.query_one(table_id, DataTable)
            table.clear(columns=True)
            if not narrow:
                for key, label in wide:
                    table.add_column(label, key=key)
                continue
            # Borders (2), the scrollbar (2) and each column's padding (2).
            fixed = sum(width or 0 for _, _, width in thin) + 2 * len(thin) + 4
            rest = max(self.app.size.width - 2 - fixed, 12)
            for key, label, width in thin:
                table.add_column(label, key=key, width=width or rest)
        self._show_rules(list(self.rules.values()))
        history, self.history = self.history, []
        self._show_history(history)

    def on_resize(self) -> None:
        if self.narrow is not None:
            self._set_columns()

    def _show_rules(self, rules: list[dict[str, Any]]) -> None:
        """Rows written again (a handful): two lines each when narrow."""
        table = self.query_one("#alert-rules-table", DataTable)
        selected = self._select_next or self.selected_rule()
        self._select_next = None
        self.rules = {rule["name"]: rule for rule in rules}
        table.clear()
        for rule in rules:
            table.add_row(
                *_rule_cells(rule, bool(self.narrow)),
                key=rule["name"],
                height=None if self.narrow else 1,
            )
        if selected in table.rows:
            table.move_cursor(row=table.get_row_index(selected), animate=False)

    def _show_history(self, notices: list[dict[str, Any]]) -> None:
        if notices == self.history:
            return
        table = self.query_one("#alert-history-table", DataTable)
        self.history = notices
        table.clear()
        for index, notice in enumerate(notices):
            table.add_row(
                *_history_cells(notice, bool(self.narrow)),
                key=str(index),
                height=None if self.narrow else 1,
            )

    def _title_history(self) -> None:
        key = self.key_for("alerts-history")
        rule = self.selected_rule() if self.history_of_selected else None
        which = f"of {rule}" if rule else "of every rule"
        self.query_one(
            "#alert-history-table", DataTable
        ).border_title = (
            f"History {which} · {key}: {'every rule' if rule else 'the selected rule only'}"
        )

    def selected_rule(self) -> str | None:
        table = self.query_one("#alert-rules-table", DataTable)
        if not table.row_count:
            return None
        row_key, _ = table.coordinate_to_cell_key(table.cursor_coordinate)
        return row_key.value

    @on(DataTable.RowHighlighted, "#alert-rules-table")
    def _rule_highlighted(self) -> None:
        # Rows are written again on each read: only a new selection reads the history.
        if self.history_of_selected and self.selected_rule() != self._history_rule:
            self._title_history()
            self._load()

    def action_toggle_history(self) -> None:
        self.history_of_selected = not self.history_of_selected
        self._title_history()
        self._load()

    # --- acting -----------------------------------------------------------------------

    def _say(self, message: str | Text) -> None:
        self.query_one("#alerts-status", Label).update(message)

    def _stored(self, action: str) -> dict[str, Any] | None:
        """The selected rule if it is a stored one (a config rule: said)."""
        name = self.selected_rule()
        if name is None or name not in self.rules:
            self._say(f"no rule to {action}: {self.key_for('alerts-new')} adds one")
            return None
        rule = self.rules[name]
        if rule.get("source") == "config":
            self._say(Text(f"{name} {IN_CONFIG}", style="yellow"))
            return None
        return rule

    def action_new_rule(self) -> None:
        self.app.push_screen(AlertRuleForm(self.client), self._saved)

    def action_edit_rule(self) -> None:
        rule = self._stored("edit")
        if rule is not None:
            spec = dict(rule.get("rule") or {}) | {"name": rule["name"], "kind": rule["kind"]}
            self.app.push_screen(AlertRuleForm(self.client, spec), self._saved)

    def _saved(self, rule: dict | None) -> None:
        if rule is None:
            return
        self._say(f"{rule['name']}: saved")
        self._select_next = rule["name"]
        self._load()

    def action_toggle_pause(self) -> None:
        name = self.selected_rule()
        if name is not None and name in self.rules:
            self._pause(name, not self.rules[name].get("paused"))

    @work(group="alerts-pause", exit_on_error=False)
    async def _pause(self, name: str, pause: bool) -> None:
        try:
            await self.client.pause_alert_rule(name, pause)
        except Exception as error:  # said, not a crash
            self._say(Text(f"{name}: {error}", style="red"))
            return
        self._say(f"{name}: {'paused' if pause else 'resumed'}")
        self._load()

    def action_test_rule(self) -> None:
        name = self.selected_rule()
        if name is not None:
            self._test(name)

    @work(group="alerts-test", exit_on_error=False)
    async def _test(self, name: str) -> None:
        self._say(f"{name}: sending a test…")
        try:
            sent = await self.client.test_alert(name)
        except Exception as error:
            self._say(Text(f"{name}: {error}", style="red"))
            return
        where = ", ".join(sent) if sent else "no channel (none configured or all failed)"
        self._say(Text(f"{name}: test sent to {where}", style="green" if sent else "yellow"))
        self._load()

    def action_remove_rule(self) -> None:
        rule = self._stored("remove")
        if rule is not None:
            name = rule["name"]
            self.app.push_screen(
                ConfirmRemove(name), lambda yes: self._remove(name) if yes else None
            )

    @work(group="alerts-remove", exit_on_error=False)
    async def _remove(self, name: str) -> None:
        try:
            await self.client.remove_alert_rule(name)
        except Exception as error:
            self._say(Text(f"{name}: {error}", style="red"))
            return
        self._say(f"{name}: removed")
        self._load()

    def action_close(self) -> None:
        self.dismiss(None)
