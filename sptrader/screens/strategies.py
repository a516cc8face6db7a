"""The ``S`` Strategies screen: the configured scanners, the signals they raised and
the lineage of a scanner's newest run.

The scanners table (schedule, next run, last run, paused) acts on its selected row:
``r`` runs it now, ``p`` pauses (stops its service) or resumes it (keys remappable in
``[keymap]``: strategies-run, strategies-pause, strategies-close). The lineage tree
shows the selected scanner's newest run: its steps with durations and errors (an
instrument's own steps, such as a skip, under the instrument). A scanner with shadow
variations (``[[scanners.shadow]]``) shows them beside its live parameters over the
last SHADOW_DAYS days (read when the selection or its newest run changes); the table is
hidden for one without. Choosing a signal (``enter`` or one click) closes the screen with it, as a
SignalMark the app shows and marks in the chart. Rows are read again when the app
routes a signal or a service state change here, after a run now, and at most once a
second; a signal recorded again by a later run on the same bar shows once.
"""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual import events, on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.coordinate import Coordinate
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Label, Tree

from sptrader.charting import SignalMark
from sptrader.client.protocol import EngineClient
from sptrader.clock import format_us

SCANNER_COLUMNS = (
    ("name", "Scanner"),
    ("strategy", "Strategy"),
    ("schedule", "Schedule"),
    ("next", "Next run"),
    ("last", "Last run"),
    ("paused", "State"),
)
SIGNAL_COLUMNS = (
    ("time", "Bar"),
    ("scanner", "Scanner"),
    ("instrument", "Instrument"),
    ("side", "Side"),
    ("strength", "Strength"),
    ("reason", "Reason"),
)
SHADOW_COLUMNS = (
    ("variation", "Variation"),
    ("params", "Params"),
    ("signals", "Signals"),
    ("hit", "Hit %"),
    ("avg", "Avg %"),
    ("vs_live", "vs live"),
)
SIGNALS_SHOWN = 100
SHADOW_DAYS = 30
STATUS_STYLES = {"ok": "green", "partial": "yellow", "failed": "bold red"}


def _when(ts_us: int | None) -> str:
    return format_us(ts_us)[:19].replace("T", " ") if ts_us else "-"


def _last_run(scanner: dict[str, Any]) -> Text:
    status = scanner.get("last_status")
    if status is None:
        return Text("never", style="dim")
    duration = scanner.get("last_duration_ms") or 0.0
    return Text(
        f"{status} · {duration:.0f} ms · {_when(scanner.get('last_started_us'))[11:]}",
        style=STATUS_STYLES.get(status, ""),
    )


def _scanner_cells(scanner: dict[str, Any]) -> list[object]:
    paused = scanner["paused"]
    return [
        scanner["name"],
        scanner["strategy"],
        f"{scanner['schedule']} ({scanner['timeframe']})",
        "-" if paused else _when(scanner.get("next_run_us")),
        _last_run(scanner),
        Text("paused", style="yellow") if paused else Text("active", style="green"),
    ]


def _signal_cells(signal: dict[str, Any]) -> list[object]:
    side = str(signal["side"])
    strength = signal.get("strength")
    return [
        _when(signal["ts_us"]),
        signal["scanner"],
        signal["instrument"],
        Text(side.upper(), style="red" if side == "sell" else "green"),
        Text("-" if strength is None else f"{strength:.2f}", justify="right"),
        signal.get("reason") or "",
    ]


def _percent(value: float | None, signed: bool = True) -> Text:
    if value is None:
        return Text("-", style="dim", justify="right")
    style = "" if not signed else "green" if value > 0 else "red" if value < 0 else ""
    return Text(f"{value:+.2f}" if signed else f"{value:.1f}", style=style, justify="right")


def _shadow_cells(row: dict[str, Any]) -> list[object]:
    """A shadow_report row: live's params, a variation's as they differ from live's."""
    live = row["variation"] == "live"
    shown = row["params"] if live else row["changed"]
    params = ", ".join(f"{key}={value}" for key, value in shown.items())
    params = params or ("defaults" if live else "as live")
    open_ = f" ({row['pending']} open)" if row["pending"] else ""
    return [
        Text(row["variation"], style="bold" if live else ""),
        params if row["configured"] else Text(f"{params} (gone)", style="dim"),
        Text(f"{row['signals']}{open_}", justify="right"),
        _percent(row["hit_rate_pct"], signed=False),
        _percent(row["avg_return_pct"]),
        _percent(row["vs_live_avg_return_pct"]),
    ]


def _step_label(step: dict[str, Any]) -> Text:
    label = Text(f"{step['step']}  {step['duration_ms']:.1f} ms")
    summary = step.get("output_summary") or step.get("input_summary")
    if summary:
        label.append(f"  {summary}", style="dim")
    if step.get("error"):
        label.append(f"  {str(step['error']).splitlines()[0]}", style="bold red")
    return label


def _signal_mark(signal: dict[str, Any], timeframe: str | None) -> SignalMark:
    """A row of recent_signals as the chart marks it."""
    return SignalMark(
        instrument=signal["instrument"],
        ts_us=int(signal["ts_us"]),
        side=str(signal["side"]),
        scanner=signal["scanner"],
        reason=signal.get("reason") or "",
        stop=signal.get("stop"),
        target=signal.get("target"),
        timeframe=timeframe,
    )


# The scanners table is read again at least this often (seconds).
RELOAD_EVERY_S = 5


class SignalsTable(DataTable):
    """One click on a signal chooses it, whether or not the cursor is already on it (a
    DataTable selects only a row clicked while under the cursor, and a click on the
    highlighted row moves nothing, so no RowHighlighted either: here a click means
    "show me this one")."""

    def _on_click(self, event: events.Click) -> None:
        # Runs before DataTable's own click handler (Textual calls each class's in MRO
        # order), which prevent_default then skips: the row is chosen here, once.
        meta = event.style.meta
        row, column = meta.get("row"), meta.get("column")
        if not (isinstance(row, int) and isinstance(column, int)) or row < 0:
            return  # the header, a border or past the last row: DataTable's as usual
        event.prevent_default()
        event.stop()
        self.cursor_coordinate = Coordinate(row, max(column, 0))
        self.action_select_cursor()


def unique_signals(signals: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per signal: a scanner that runs again on the same closed bar (run now
    after its scheduled run, a catch-up run) records the same signal again, and
    showing it twice reads as two signals. The newest record (first: they come newest
    first) is kept."""
    seen: set[tuple[object, ...]] = set()
    unique = []
    for signal in signals:
        key = (signal["scanner"], signal["instrument"], signal["ts_us"], signal["side"])
        if key not in seen:
            seen.add(key)
            unique.append(signal)
    return unique


class StrategiesScreen(Screen[SignalMark | None]):
    """Dismissed with the chosen signal (None: just closed)."""

    BINDINGS = [
        Binding("escape,S", "close", "Back", key_display="esc", id="strategies-close"),
        Binding("r", "run_now", "Run now", id="strategies-run"),
        Binding("p", "toggle_pause", "Pause/resume", id="strategies-pause"),
    ]

    def __init__(self, client: EngineClient) -> None:
        super().__init__()
        self.client = client
        self.scanners: dict[str, dict[str, Any]] = {}
        self.signals: list[dict[str, Any]] = []
        self.loads = 0
        self.lineage_run_id: int | None = None  # the run the tree shows
        self.shadow_rows: list[dict[str, Any]] = []
        self._shadow_shown: tuple[object, ...] | None = None  # (scanner, its newest run)
        self.running: set[str] = set()  # scanners this screen asked to run now
        self._dirty = True
        self._ticks_since_load = 0

    def compose(self) -> ComposeResult:
        yield Header()
        with Vertical(id="strategies-body"):
            yield Label("Scanners", id="strategies-title")
            with Horizontal(id="strategies-top"):
                yield DataTable(id="scanners-table", cursor_type="row", zebra_stripes=True)
                yield Tree("no run yet", id="lineage-tree")
            yield DataTable(id="shadow-table", cursor_type="row", zebra_stripes=True)
            yield SignalsTable(id="signals-table", cursor_type="row", zebra_stripes=True)
            yield Label("", id="strategies-status")
        yield Footer()

    def on_mount(self) -> None:
        scanners = self.query_one("#scanners-table", DataTable)
        for key, label in SCANNER_COLUMNS:
            scanners.add_column(label, key=key)
        signals = self.query_one("#signals-table", DataTable)
        for key, label in SIGNAL_COLUMNS:
            signals.add_column(label, key=key)
        shadow = self.query_one("#shadow-table", DataTable)
        for key, label in SHADOW_COLUMNS:
            shadow.add_column(label, key=key)
        shadow.border_title = f"Shadow variations · last {SHADOW_DAYS} days"
        shadow.display = False
        self.query_one("#lineage-tree", Tree).show_root = True
        run, pause = self.key_for("strategies-run"), self.key_for("strategies-pause")
        self.query_one("#strategies-title", Label).update(
            f"Scanners · {run} runs the selected one now · {pause} pauses / resumes it · "
            "click a signal (or enter on it) to mark it in the chart"
        )
        scanners.focus()
        # Reads happen only when something changed, and at most once a second.
        self.set_interval(1.0, self._reload_if_due, name="strategies-refresh")
        self._load()

    def key_for(self, binding_id: str) -> str:
        """How the key of one of this screen's bindings is shown, as remapped in
        ``[keymap]``."""
        for key, active in self.active_bindings.items():
            if active.node is self and active.binding.id == binding_id:
                return self.app.get_key_display(active.binding) or key
        # Shadowed by a focused widget's binding of the same key: the default.
        default = next(binding for binding in self.BINDINGS if binding.id == binding_id)
        return self.app.get_key_display(default)

    # --- reading ----------------------------------------------------------------------

    def note_changes(self) -> None:
        """A signal was raised or a service changed state (the app routes these)."""
        self._dirty = True

    def _reload_if_due(self) -> None:
        # Quiet runs (no signal, no state change) still move "last run" and "next run":
        # re-read every few seconds even when nothing was routed here.
        self._ticks_since_load += 1
        if self._dirty or self._ticks_since_load >= RELOAD_EVERY_S:
            self._ticks_since_load = 0
            self._load()

    @work(exclusive=True, group="strategies-load", exit_on_error=False)
    async def _load(self) -> None:
        self._dirty = False
        scanners = await self.client.scanners()
        signals = await self.client.recent_signals(SIGNALS_SHOWN)
        self._show_scanners(scanners)
        self._show_signals(unique_signals(signals))
        await self._show_lineage()
        await self._show_shadow()
        self.loads += 1

    def _show_scanners(self, scanners: list[dict[str, Any]]) -> None:
        table = self.query_one("#scanners-table", DataTable)
        self.scanners = {scanner["name"]: scanner for scanner in scanners}
        for scanner in scanners:
            name = scanner["name"]
            if name not in table.rows:
                table.add_row(*_scanner_cells(scanner), key=name)
                continue
            for (column, _), value in zip(SCANNER_COLUMNS, _scanner_cells(scanner), strict=True):
                table.update_cell(name, column, value)

    def _show_signals(self, signals: list[dict[str, Any]]) -> None:
        if signals == self.signals:
            return
        table = self.query_one("#signals-table", DataTable)
        cursor = table.cursor_row
        self.signals = signals
        table.clear()
        for index, signal in enumerate(signals):
            table.add_row(*_signal_cells(signal), key=str(index))
        if signals:
            table.move_cursor(row=min(cursor, len(signals) - 1))

    def selected_scanner(self) -> str | None:
        table = self.query_one("#scanners-table", DataTable)
        if not table.row_count:
            return None
        row_key, _ = table.coordinate_to_cell_key(table.cursor_coordinate)
        return row_key.value

    async def _show_lineage(self) -> None:
        """The tree shows the selected scanner's newest run (read when it changed)."""
        name = self.selected_scanner()
        scanner = self.scanners.get(name or "")
        run_id = scanner.get("last_run_id") if scanner else None
        if run_id == self.lineage_run_id:
            return
        tree = self.query_one("#lineage-tree", Tree)
        if scanner is None or run_id is None:
            tree.clear()
            tree.root.set_label(f"{name or 'no scanner'}: no run yet")
            self.lineage_run_id = run_id
            return
        # Marked shown only once the tree is filled: a load cancelled while it waits for
        # the steps (a newer one replaces it: exclusive) must leave the next load to
        # draw the run, not take it for drawn.
        steps = await self.client.run_steps(run_id)
        tree.clear()
        self.lineage_run_id = run_id
        tree.root.set_label(
            Text(
                f"run {run_id} · {name} · {scanner['last_status']} · "
                f"{scanner['last_duration_ms'] or 0:.0f} ms",
                style=STATUS_STYLES.get(scanner["last_status"], ""),
            )
        )
        # Steps of the whole run (a stacked strategy's, over all its instruments) hang
        # from the run; an instrument's own steps (skips, unstacked strategies) from it.
        branches: dict[str, Any] = {}
        for step in steps:
            instrument = step.get("instrument")
            if not instrument:
                tree.root.add_leaf(_step_label(step), data=step)
                continue
            if instrument not in branches:
                branches[instrument] = tree.root.add(instrument, expand=True)
            branches[instrument].add_leaf(_step_label(step), data=step)
        tree.root.expand()

    async def _show_shadow(self) -> None:
        """The selected scanner's variations beside live (read when it or its newest
        run changed: outcomes are resolved at each run)."""
        name = self.selected_scanner()
        scanner = self.scanners.get(name or "")
        shown = (name, scanner.get("last_run_id") if scanner else None)
        if shown == self._shadow_shown:
            return
        rows: list[dict[str, Any]] = []
        if name is not None and scanner is not None:
            try:
                rows = await self.client.shadow_report(name, SHADOW_DAYS)
            except Exception as error:  # an engine that cannot say: no table, and why
                self._say(Text(f"{name}: shadow report: {error}", style="red"))
        table = self.query_one("#shadow-table", DataTable)
        self._shadow_shown = shown
        self.shadow_rows = rows
        table.clear()
        for index, row in enumerate(rows):
            table.add_row(*_shadow_cells(row), key=str(index))
        table.display = bool(rows)

    @on(DataTable.RowHighlighted, "#scanners-table")
    def _scanner_highlighted(self) -> None:
        self._dirty = True
        self._load()

    # --- acting -----------------------------------------------------------------------

    def _say(self, message: str | Text) -> None:
        self.query_one("#strategies-status", Label).update(message)

    def action_run_now(self) -> None:
        name = self.selected_scanner()
        if name is not None and name not in self.running:
            self._run(name)

    @work(group="strategies-run", exit_on_error=False)
    async def _run(self, name: str) -> None:
        self.running.add(name)
        self._say(f"{name}: running…")
        try:
            result = await self.client.run_scanner(name)
        except Exception as error:  # said, not a crash
            self._say(Text(f"{name}: {error}", style="red"))
            return
        finally:
            self.running.discard(name)
        error = f": {result['error']}" if result.get("error") else ""
        self._say(
            Text(
                f"{name}: run {result['run_id']} {result['status']}, "
                f"{result['signals']} signal(s){error}",
                style=STATUS_STYLES.get(result["status"], ""),
            )
        )
        self._load()

    def action_toggle_pause(self) -> None:
        name = self.selected_scanner()
        if name is not None and name in self.scanners:
            self._pause(name, not self.scanners[name]["paused"])

    @work(group="strategies-pause", exit_on_error=False)
    async def _pause(self, name: str, pause: bool) -> None:
        try:
            if pause:
                await self.client.pause_scanner(name)
            else:
                await self.client.resume_scanner(name)
        except Exception as error:
            self._say(Text(f"{name}: {error}", style="red"))
            return
        self._say(f"{name}: {'paused' if pause else 'resumed'}")
        self._load()

    @on(DataTable.RowSelected, "#signals-table")
    def _signal_chosen(self, event: DataTable.RowSelected) -> None:
        index = int(event.row_key.value or 0)
        if index < len(self.signals):
            signal = self.signals[index]
            scanner = self.scanners.get(signal["scanner"])
            self.dismiss(_signal_mark(signal, scanner["timeframe"] if scanner else None))

    def action_close(self) -> None:
        self.dismiss(None)
