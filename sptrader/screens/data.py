"""The ``d`` Data screen: what is stored of every instrument over the last N days, and
filling what is missing.

One row per instrument (the watchlist and everything stored): its source, first and
last bar, bar count, coverage of the window's open market time, and a heatmap with
one cell per UTC day (green: complete, yellow/red: holes, dim ·: market closed).
``f`` fills the selected row's gaps over the window; clicking a day with a hole fills
that day only. Progress shows under the table; rows are read again when the engine
says history was stored (the app routes those events here), never on a timer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.events import Click
from textual.message import Message
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Label

from sptrader.client.protocol import EngineClient
from sptrader.clock import format_us, now_us
from sptrader.data_view import COMPLETE, heat_text
from sptrader.models import US_PER_DAY, US_PER_MINUTE, BackfillProgressed
from sptrader.screens.backfills import BackfillsPane

WINDOWS_DAYS = (7, 14, 30, 60, 90)
DEFAULT_DAYS = 30
COLUMNS = ("instrument", "source", "first", "last", "bars", "coverage", "days")
LABELS = ("Instrument", "Source", "First bar", "Last bar", "Bars", "Cover", "By day (old → new)")
# The newest minutes are the live stream's to store, not a backfill's.
LIVE_EDGE_US = 3 * US_PER_MINUTE


def _fillable(status: dict[str, Any]) -> bool:
    """Gaps older than the last minutes (those belong to the live stream)."""
    edge = now_us() - LIVE_EDGE_US
    return any(start < edge for start, _ in status["gaps"])


def _when(ts_us: int | None) -> str:
    return format_us(ts_us)[:16].replace("T", " ") if ts_us else "-"


def _coverage(percent: float) -> Text:
    style = "green" if percent >= 99.95 else "yellow" if percent >= 50 else "bold red"
    return Text(f"{percent:.1f}%", style=style, justify="right")


class CoverageTable(DataTable):
    """The Data screen's table; a click on a heatmap cell also says which day."""

    @dataclass
    class DayClicked(Message):
        instrument: str
        day: int  # index into the row's days, oldest first

    def on_click(self, event: Click) -> None:
        # Runs before DataTable's own click handling (which moves the cursor).
        meta = event.style.meta
        offset = event.get_content_offset(self)
        if offset is None or meta.get("row", -1) < 0 or "column" not in meta:
            return
        column_index = meta["column"]
        columns = self.ordered_columns
        if not 0 <= column_index < len(columns) or columns[column_index].key.value != "days":
            return
        left = sum(column.get_render_width(self) for column in columns[:column_index])
        day = offset.x + round(self.scroll_x) - left - self.cell_padding
        row_key = self.ordered_rows[meta["row"]].key
        if day >= 0 and row_key.value is not None:
            self.post_message(self.DayClicked(row_key.value, day))


class DataScreen(Screen[None]):
    BINDINGS = [
        Binding("escape,d", "close", "Back", key_display="esc", id="data-close"),
        Binding("f", "fill_selected", "Fill gaps", id="data-fill"),
        Binding(
            "left_square_bracket,minus",
            "window(-1)",
            "Fewer days",
            key_display="[",
            id="data-shorter",
        ),
        Binding(
            "right_square_bracket,plus", "window(1)", "More days", key_display="]", id="data-longer"
        ),
    ]

    def __init__(self, client: EngineClient, days: int = DEFAULT_DAYS) -> None:
        super().__init__()
        self.client = client
        self.days = days
        self.statuses: dict[str, dict[str, Any]] = {}
        # Instruments this screen asked to fill: their rows are read again when done.
        self.filling: set[str] = set()
        self.loads = 0
        self.shown_start = 0  # the first day of the heatmaps shown
        self._rows_due: set[str] = set()

    def compose(self) -> ComposeResult:
        yield Header()
        with Vertical(id="data-body"):
            yield Label("", id="data-title")
            yield CoverageTable(id="data-table", cursor_type="row", zebra_stripes=True)
            yield BackfillsPane(id="data-progress")
            yield Label("", id="data-status")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one(CoverageTable).focus()
        self.set_interval(1.0, self._expire_progress, name="data-progress")
        self._show_window()

    def _expire_progress(self) -> None:
        """Let finished backfill lines go after a while."""
        progress = self.query_one(BackfillsPane)
        if progress.progress:
            progress.refresh_lines()

    # --- the window -------------------------------------------------------------------

    def window(self) -> tuple[int, int]:
        """The last ``days`` UTC days, today included."""
        now = now_us()
        end = now - now % US_PER_DAY + US_PER_DAY
        return end - self.days * US_PER_DAY, end

    def action_window(self, step: int) -> None:
        index = WINDOWS_DAYS.index(self.days) if self.days in WINDOWS_DAYS else 2
        days = WINDOWS_DAYS[max(0, min(len(WINDOWS_DAYS) - 1, index + step))]
        if days != self.days:
            self.days = days
            self._show_window()

    def _show_window(self) -> None:
        self.query_one("#data-title", Label).update(
            f"Stored 1m data, last {self.days} days (UTC) · coverage of open market hours · "
            "f fills the selected row · click a red or yellow day to fill it · [ ] days"
        )
        self._load_all()

    @work(exclusive=True, group="data-status", exit_on_error=False)
    async def _load_all(self) -> None:
        days = self.days
        start, end = self.window()
        statuses = await self.client.data_status(None, start, end)
        if days != self.days:
            return
        self.shown_start = start
        table = self.query_one(CoverageTable)
        cursor = self._selected()
        table.clear(columns=True)
        widths = {
            "instrument": max(18, *(len(row["instrument"]) for row in statuses), 0),
            "source": 10,
            "first": 16,
            "last": 16,
            "bars": 10,
            "coverage": 7,
            "days": max(days, len(LABELS[-1])),
        }
        for key, label in zip(COLUMNS, LABELS, strict=True):
            table.add_column(label, key=key, width=widths[key])
        self.statuses = {}
        for status in statuses:
            self.statuses[status["instrument"]] = status
            table.add_row(*self._cells(status), key=status["instrument"])
        if cursor in self.statuses:
            table.move_cursor(row=table.get_row_index(cursor))
        self.loads += 1

    @staticmethod
    def _cells(status: dict[str, Any]) -> list[object]:
        return [
            status["instrument"],
            status["source"] or "-",
            _when(status["first_us"]),
            _when(status["last_us"]),
            Text(f"{status['bars']:,}", justify="right"),
            _coverage(status["coverage_pct"]),
            heat_text(status["days"], Text),
        ]

    def refresh_rows(self, instruments: list[str]) -> None:
        """Read these instruments' rows again (history of theirs was stored)."""
        self._rows_due.update(instruments)
        self._load_rows()

    @work(exclusive=True, group="data-rows", exit_on_error=False)
    async def _load_rows(self) -> None:
        due = sorted(self._rows_due)
        if not due:
            return
        days = self.days
        start, end = self.window()
        statuses = await self.client.data_status(due, start, end)
        if days != self.days:
            return  # the whole table is being read for another window
        self._rows_due.difference_update(due)
        table = self.query_one(CoverageTable)
        for status in statuses:
            name = status["instrument"]
            self.statuses[name] = status
            if name not in table.rows:
                table.add_row(*self._cells(status), key=name)
                continue
            for column, value in zip(COLUMNS, self._cells(status), strict=True):
                table.update_cell(name, column, value)
        self.loads += 1

    # --- events the app routes here ---------------------------------------------------

    def apply_events(self, progress: list[BackfillProgressed], stored: set[str]) -> None:
        """Backfill progress and instruments whose history was stored, since the last
        refresh."""
        if progress:
            self.query_one(BackfillsPane).apply(progress)
        finished = {event.instrument for event in progress if event.state != "running"}
        status = self.query_one("#data-status", Label)
        for event in progress:
            if event.state == "running" or event.instrument not in self.filling:
                continue
            self.filling.discard(event.instrument)
            if event.state == "failed":
                status.update(
                    Text(f"{event.instrument}: filling failed: {event.message}", style="red")
                )
            else:
                status.update(f"{event.instrument}: filled, {event.rows:,} bars fetched")
        due = (stored | finished) & set(self.statuses)
        if due:
            self.refresh_rows(sorted(due))

    # --- filling ----------------------------------------------------------------------

    def _selected(self) -> str | None:
        table = self.query_one(CoverageTable)
        if not table.row_count:
            return None
        row_key, _ = table.coordinate_to_cell_key(table.cursor_coordinate)
        return row_key.value

    def action_fill_selected(self) -> None:
        instrument = self._selected()
        if instrument is None:
            return
        status = self.statuses.get(instrument)
        if status is not None and not _fillable(status):
            label = self.query_one("#data-status", Label)
            label.update(f"{instrument}: complete over the last {self.days} days")
        else:
            start, end = self.window()
            self._fill(instrument, start, min(end, now_us()), f"the last {self.days} days")

    @on(CoverageTable.DayClicked)
    def _day_clicked(self, event: CoverageTable.DayClicked) -> None:
        status = self.statuses.get(event.instrument)
        if status is None or event.day >= len(status["days"]):
            return
        share = status["days"][event.day]
        day_start = self.shown_start + event.day * US_PER_DAY
        day = format_us(day_start)[:10]
        label = self.query_one("#data-status", Label)
        if share < 0:
            label.update(f"{event.instrument} {day}: the market was closed")
        elif share >= COMPLETE:
            label.update(f"{event.instrument} {day}: complete")
        else:
            self._fill(event.instrument, day_start, min(day_start + US_PER_DAY, now_us()), day)

    @work(group="data-fill", exit_on_error=False)
    async def _fill(self, instrument: str, start_us: int, end_us: int, what: str) -> None:
        label = self.query_one("#data-status", Label)
        self.filling.add(instrument)
        label.update(f"filling {instrument}: {what}…")
        try:
            await self.client.start_backfill([instrument], start_us, end_us)
        except Exception as error:  # nothing to fetch, no feed for it: said, not a crash
            self.filling.discard(instrument)
            label.update(Text(f"{instrument}: {error}", style="red"))

    def action_close(self) -> None:
        self.dismiss()
