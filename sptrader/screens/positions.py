"""Positions pane: every open position with its average price, mark and P&L (green or
red, live), and a "✕ close" cell per row: a click on it (or ``x`` on the selected row)
flattens that position with a market order at its venue. When a venue trades live a
Venue column says where each position is (paper, or LIVE BINANCE in red). The app reads
the positions at about 2 Hz, and at once when an order or a fill changes something.

Also ``ActionTable``, the compact table the positions and orders panes share: one space
between columns, optional columns that give way when the pane is narrow (the action
cell always stays), and a message when a row's action cell is clicked.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rich.text import Text
from textual.binding import Binding
from textual.containers import Vertical
from textual.events import Click, Resize
from textual.message import Message
from textual.widgets import DataTable

from sptrader.screens.account import (
    LIVE_STYLE,
    Decimals,
    format_price,
    format_qty,
    money,
    pnl_style,
    venue_name,
)

ACTION = "action"


@dataclass(frozen=True, slots=True)
class Column:
    key: str
    label: str
    width: int  # of the content; one more for the gap before it
    right: bool = False
    drop: int = 0  # 0: always shown; when the pane is narrow the highest go first


class ActionTable(DataTable):
    """A row-cursor table of keyed rows whose ``action`` column is a button per row."""

    @dataclass
    class ActionClicked(Message):
        """The action cell of row ``key`` was clicked."""

        table: ActionTable
        key: str

    def __init__(self, columns: Sequence[Column], **kwargs: Any) -> None:
        super().__init__(cursor_type="row", zebra_stripes=True, cell_padding=0, **kwargs)
        self.all_columns = list(columns)
        self.shown: list[Column] = []
        self._widths: list[int] = []
        #: The rows as last given (key -> column -> text), in order.
        self.data: dict[str, dict[str, Text]] = {}
        self._painted: dict[str, dict[str, tuple[str, str]]] = {}

    def on_mount(self) -> None:
        self._fit(force=True)

    def set_columns(self, columns: Sequence[Column]) -> None:
        """Show these columns from now on (the rows keep their cells)."""
        if list(columns) != self.all_columns:
            self.all_columns = list(columns)
            self._fit(force=True)

    # --- columns ----------------------------------------------------------------------

    def _width(self, column: Column) -> int:
        """A column's width: what its label and its widest cell need (never less than
        declared), so no cell is cut."""
        widest = max((cells[column.key].cell_len for cells in self.data.values()), default=0)
        return max(column.width, len(column.label), widest)

    def _fitting(self) -> list[Column]:
        available = self.size.width - 1  # the vertical scrollbar
        columns = list(self.all_columns)
        if available <= 1:
            return columns  # not laid out yet
        while sum(self._width(column) + 1 for column in columns) > available:
            optional = [column for column in columns if column.drop]
            if not optional:
                break
            columns.remove(max(optional, key=lambda column: column.drop))
        return columns

    def _fit(self, force: bool = False) -> None:
        columns = self._fitting()
        widths = [self._width(column) for column in columns]
        if not force and columns == self.shown and widths == self._widths:
            return
        cursor = self.selected
        self.shown = columns
        self._widths = widths
        self.clear(columns=True)
        for column, width in zip(columns, widths, strict=True):
            label = (
                Text(column.label, justify="right", style="bold")
                if column.right
                else Text(f" {column.label}", style="bold")
            )
            self.add_column(label, key=column.key, width=width + 1)
        self._painted.clear()
        self._add_rows(cursor)

    def on_resize(self, event: Resize) -> None:
        self._fit()

    @property
    def column_keys(self) -> list[str]:
        """The columns shown now (narrow panes drop optional ones)."""
        return [column.key for column in self.shown]

    # --- rows -------------------------------------------------------------------------

    @property
    def selected(self) -> str | None:
        if not self.row_count:
            return None
        row_key, _ = self.coordinate_to_cell_key(self.cursor_coordinate)
        return row_key.value

    def _cell(self, column: Column, value: Text) -> Text:
        if column.right:
            cell = value.copy()
            cell.justify = "right"
            return cell
        return Text(" ") + value

    def _add_rows(self, cursor: str | None) -> None:
        for key, cells in self.data.items():
            values = [self._cell(column, cells[column.key]) for column in self.shown]
            self.add_row(*values, key=key)
            self._painted[key] = {
                column.key: (value.plain, str(value.style))
                for column, value in zip(self.shown, values, strict=True)
            }
        if cursor in self.data:
            self.move_cursor(row=list(self.data).index(cursor), animate=False)

    def set_rows(self, rows: dict[str, dict[str, Text]]) -> None:
        """Show these rows (key -> column -> text): rows added, gone or reordered make the
        table be rebuilt (the cursor stays on its row); otherwise only the cells whose
        text or style changed are updated."""
        if list(rows) != list(self.data):
            cursor = self.selected
            self.data = dict(rows)
            self.clear()
            self._painted.clear()
            self._add_rows(cursor)
            self._fit()  # new rows may need wider columns (or fewer of them)
            return
        self.data = dict(rows)
        # Cells that grew re-lay the columns out; narrower ones keep them (no jitter as
        # a P&L loses a digit).
        widths = [self._width(column) for column in self.shown]
        if any(new > old for new, old in zip(widths, self._widths, strict=False)):
            self._fit()
            return
        for key, cells in rows.items():
            painted = self._painted.setdefault(key, {})
            for column in self.shown:
                value = self._cell(column, cells[column.key])
                # rich's Text equality ignores the style, so compare both explicitly.
                shown = (value.plain, str(value.style))
                if painted.get(column.key) != shown:
                    painted[column.key] = shown
                    self.update_cell(key, column.key, value)

    def cell_text(self, key: str, column: str) -> str:
        """What a row shows in a column (also for columns a narrow pane hides)."""
        return self.data[key][column].plain

    # --- the action cell --------------------------------------------------------------

    def on_click(self, event: Click) -> None:
        # Runs before DataTable's own click handling (which only moves the cursor, and
        # selects on a second click): one click on the action cell acts.
        meta = event.style.meta
        row, column = meta.get("row"), meta.get("column")
        if not (isinstance(row, int) and isinstance(column, int) and row >= 0 and column >= 0):
            return
        columns = self.ordered_columns
        if column >= len(columns) or columns[column].key.value != ACTION:
            return
        key = self.ordered_rows[row].key.value
        if key is None:
            return
        self.move_cursor(row=row, animate=False)
        event.prevent_default()
        event.stop()
        self.post_message(self.ActionClicked(self, key))


# drop: when the pane is narrow the highest goes first; the instrument and the ✕ close
# cell always stay.
POSITION_COLUMNS = (
    Column("instrument", "Instrument", 10),
    Column("side", "Side", 5, drop=2),
    Column("qty", "Qty", 8, right=True, drop=3),
    Column("avg_price", "Avg price", 9, right=True, drop=5),
    Column("mark", "Mark", 9, right=True, drop=4),
    Column("unrealized", "Unrl P&L", 10, right=True, drop=1),
    Column("realized", "Real P&L", 9, right=True, drop=6),
    Column(ACTION, "", 7),
)
CLOSE_CELL = "✕ close"
#: The venue column, shown (after the instrument, never dropped) while a venue trades live.
VENUE_COLUMN = Column("venue", "Venue", 5)


def with_venue(columns: Sequence[Column], live: bool) -> list[Column]:
    """``columns``, with the Venue column after the instrument when ``live``."""
    if not live:
        return list(columns)
    at = [column.key for column in columns].index("instrument") + 1
    return [*columns[:at], VENUE_COLUMN, *columns[at:]]


def venue_cell(venue: str) -> Text:
    return Text(venue_name(venue), style="dim" if venue == "paper" else LIVE_STYLE)


def position_key(position: dict[str, Any]) -> str:
    """A position's row: its instrument at paper, "binance BINANCE:BTCUSDT" elsewhere
    (the same instrument may be held at two venues)."""
    venue = str(position.get("venue") or "paper")
    instrument = str(position["instrument"])
    return instrument if venue == "paper" else f"{venue} {instrument}"


def position_cells(position: dict[str, Any], decimals: int | None) -> dict[str, Text]:
    side = str(position["side"])
    unrealized = position.get("unrealized")
    realized = position.get("realized")
    return {
        "instrument": Text(str(position["instrument"])),
        "side": Text(side, style="green" if side == "long" else "red"),
        "qty": Text(format_qty(abs(float(position["qty"])))),
        "avg_price": Text(format_price(position.get("avg_price"), decimals)),
        "mark": Text(format_price(position.get("mark"), decimals)),
        "unrealized": Text(money(unrealized, signed=True), style=pnl_style(unrealized)),
        "realized": Text(money(realized, signed=True), style=pnl_style(realized)),
        "venue": venue_cell(str(position.get("venue") or "paper")),
        ACTION: Text(CLOSE_CELL, style="bold red"),
    }


class PositionsPane(Vertical):
    BINDINGS = [
        Binding("x", "close_selected", "Close position", id="position-close"),
    ]

    @dataclass
    class CloseRequested(Message):
        """The user asked to flatten the position in ``instrument`` at ``venue``."""

        instrument: str
        venue: str = "paper"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.border_title = "Positions"
        self.border_subtitle = "none open"
        #: The positions as last read (position_key -> the client's position dict: the
        #: instrument for paper's).
        self.positions: dict[str, dict[str, Any]] = {}

    def compose(self):
        yield ActionTable(POSITION_COLUMNS, id="positions-table")

    @property
    def table(self) -> ActionTable:
        return self.query_one(ActionTable)

    @property
    def selected(self) -> str | None:
        """The selected row's position_key."""
        return self.table.selected

    @property
    def selected_instrument(self) -> str | None:
        key = self.selected
        return None if key not in self.positions else str(self.positions[key]["instrument"])

    def show(self, positions: list[dict[str, Any]], decimals: Decimals, live: bool = False) -> None:
        """The open ``positions``; ``live``: a venue trades live (the Venue column)."""
        self.positions = {position_key(p): p for p in positions}
        self.table.set_columns(with_venue(POSITION_COLUMNS, live))
        self.table.set_rows(
            {
                key: position_cells(position, decimals(str(position["instrument"])))
                for key, position in self.positions.items()
            }
        )
        if positions:
            total = sum(float(p.get("unrealized") or 0.0) for p in positions)
            style = pnl_style(total)
            amount = money(total, signed=True)
            self.border_subtitle = (
                f"{len(positions)} open · unrealized {f'[{style}]{amount}[/]' if style else amount}"
            )
        else:
            self.border_subtitle = "none open"

    def _request_close(self, key: str | None) -> None:
        position = self.positions.get(key) if key is not None else None
        if position is not None:
            venue = str(position.get("venue") or "paper")
            self.post_message(self.CloseRequested(str(position["instrument"]), venue))

    def action_close_selected(self) -> None:
        self._request_close(self.selected)

    def on_action_table_action_clicked(self, event: ActionTable.ActionClicked) -> None:
        event.stop()
        self._request_close(event.key)
