"""Services pane: state, events/s, last event age, errors and restarts of every
service. Select a row (click or arrows) and press Start/Stop/Restart (or s/x/r)."""

from __future__ import annotations

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widgets import Button, DataTable

from sptrader.clock import now_us
from sptrader.formatting import format_age, is_disconnect_note, service_notes
from sptrader.models import ServiceState, ServiceStatus

STATE_STYLES = {
    ServiceState.RUNNING: "green",
    ServiceState.STARTING: "yellow",
    ServiceState.BACKOFF: "yellow",  # reconnecting: a disconnect, or a crash (then Err counts)
    ServiceState.FAILED: "bold red",
    ServiceState.STOPPED: "dim",
    ServiceState.STALE: "bold yellow",
}
COLUMNS = ("name", "state", "rate", "age", "errors", "restarts", "notes")
LABELS = ("Service", "State", "Ev/s", "Last", "Err", "Rst", "Notes")
# Fixed widths: values grow after the first paint and update_cell keeps widths. The
# name column grows to the longest name (``scanner:<name>``), never cutting one.
WIDTHS = {"name": 10, "state": 8, "rate": 8, "age": 5, "errors": 4, "restarts": 4, "notes": 60}
NOT_RUNNING = (ServiceState.STOPPED, ServiceState.FAILED)


def _notes_style(last_error: str) -> str:
    """Red for an error; an ordinary disconnect (the service reconnects) is no error."""
    if not last_error or is_disconnect_note(last_error):
        return "dim"
    return "red"


class ServicesPane(Vertical):
    BINDINGS = [
        Binding("s", "service('start')", "Start", id="service-start"),
        Binding("x", "service('stop')", "Stop", id="service-stop"),
        Binding("r", "service('restart')", "Restart", id="service-restart"),
    ]

    class ServiceAction(Message):
        """The user asked to start, stop or restart a service."""

        def __init__(self, service: str, action: str) -> None:
            super().__init__()
            self.service = service
            self.action = action

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.statuses: dict[str, ServiceStatus] = {}
        self.border_title = "Services"
        self._name_width = WIDTHS["name"]
        self._reselect: str | None = None
        # What the keys offer for the selected service (the footer is refreshed when
        # that changes, e.g. Start once a service is stopped).
        self._offered: tuple[bool, ...] = ()

    def compose(self) -> ComposeResult:
        yield DataTable(id="services-table", cursor_type="row")
        with Horizontal(id="service-buttons"):
            yield Button("Start", id="service-start", variant="success", compact=True)
            yield Button("Stop", id="service-stop", variant="error", compact=True)
            yield Button("Restart", id="service-restart", variant="primary", compact=True)

    def on_mount(self) -> None:
        self._add_columns()
        self._update_buttons()

    def _add_columns(self) -> None:
        table = self.query_one(DataTable)
        widths = {**WIDTHS, "name": self._name_width}
        for key, label in zip(COLUMNS, LABELS, strict=True):
            table.add_column(label, key=key, width=widths[key])

    def _fit_names(self, statuses: list[ServiceStatus]) -> None:
        """Widen the name column to a longer name: the table is laid out again (its
        rows added anew by ``show``), the selected row kept."""
        longest = max((len(status.name) for status in statuses), default=0)
        if longest <= self._name_width:
            return
        selected = self.selected
        self._name_width = longest
        table = self.query_one(DataTable)
        table.clear(columns=True)
        self._add_columns()
        self.statuses = {}
        self._reselect = selected

    @property
    def selected(self) -> str | None:
        table = self.query_one(DataTable)
        if table.row_count == 0:
            return None
        return table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value

    def show(self, statuses: list[ServiceStatus]) -> None:
        self._fit_names(statuses)
        table = self.query_one(DataTable)
        now = now_us()
        for status in statuses:
            age = (
                None
                if status.last_event_us is None
                else max(0.0, (now - status.last_event_us) / 1e6)
            )
            cells = {
                "name": status.name,
                "state": Text(status.state.value, style=STATE_STYLES[status.state]),
                # Not running: no rate (a stopped service's last one would mislead).
                "rate": Text(
                    "-" if status.state in NOT_RUNNING else f"{status.events_per_s:,.0f}",
                    justify="right",
                ),
                "age": Text(format_age(age), justify="right"),
                "errors": Text(
                    str(status.errors), style="red" if status.errors else "", justify="right"
                ),
                "restarts": Text(str(status.restarts), justify="right"),
                "notes": Text(
                    service_notes(status.counters, status.last_error),
                    style=_notes_style(status.last_error),
                ),
            }
            if status.name not in self.statuses:
                table.add_row(*cells.values(), key=status.name)
            else:
                for column, value in cells.items():
                    table.update_cell(status.name, column, value)
            self.statuses[status.name] = status
        reselect, self._reselect = self._reselect, None
        if reselect in self.statuses:
            table.move_cursor(row=table.get_row_index(reselect))
        self._update_buttons()

    def allowed(self, action: str) -> bool:
        """Whether ``action`` (start, stop, restart) applies to the selected service."""
        status = self.statuses.get(self.selected or "")
        if status is None or not status.stoppable:
            return False
        running = status.state not in (ServiceState.STOPPED, ServiceState.FAILED)
        return {"start": not running, "stop": running}.get(action, True)

    def _update_buttons(self) -> None:
        offered = tuple(self.allowed(action) for action in ("start", "stop", "restart"))
        for action, allowed in zip(("start", "stop", "restart"), offered, strict=True):
            self.query_one(f"#service-{action}", Button).disabled = not allowed
        if offered != self._offered:
            # The footer shows the keys check_action allows: ask it again.
            self._offered = offered
            self.refresh_bindings()

    @on(DataTable.RowHighlighted, "#services-table")
    def _row_highlighted(self) -> None:
        self._update_buttons()

    @on(Button.Pressed, "#service-buttons Button")
    def _button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        action = (event.button.id or "").removeprefix("service-")
        self.action_service(action)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action != "service":
            return True
        # From the table's cursor, not the buttons: keys typed fast arrive before the
        # highlight message that refreshes the buttons.
        return self.allowed(str(parameters[0]))

    def action_service(self, action: str) -> None:
        name = self.selected
        if name is not None and self.allowed(action):
            self.post_message(self.ServiceAction(name, action))
