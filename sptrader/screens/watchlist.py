"""Watchlist pane: bid, ask, last, change since the session open and a sparkline per
instrument. Prices flash green/red when they move; a click (or Enter) on a row shows
that instrument in the chart.

The table is a Line-API widget (``WatchlistTable``): each row is rendered once into a
cached Strip, and a refresh repaints only the rows whose text or style changed (a
DataTable refreshed its whole region on every update, about a sixth of a core under a
streaming market). Its columns fit the pane at any width: the ones that do not fit are
dropped by priority (Bid/Ask first, then the sparkline, then Chg %), never cut, and the
sparkline takes the width that is left, up to the points kept."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

from rich.segment import Segment
from rich.style import Style
from textual import events
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.coordinate import Coordinate
from textual.geometry import Region, Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.strip import Strip

from sptrader.client.protocol import InstrumentSummary
from sptrader.formatting import decimals_of, sparkline
from sptrader.models import Bar, QuoteReceived

FLASH_SECONDS = 0.6
COLUMNS = ("instrument", "bid", "ask", "last", "change", "trend")
LABELS = dict(zip(COLUMNS, ("Instrument", "Bid", "Ask", "Last", "Chg %", "Trend"), strict=True))
# Kept first when the pane is narrow (and dropped last), after the instrument.
PRIORITY = ("instrument", "last", "change", "trend", "bid", "ask")
RIGHT = frozenset({"bid", "ask", "last", "change"})
# Prices arrive after the first paint: a fixed width keeps columns from jumping (a
# price wider than this widens its column rather than being cut).
PRICE_WIDTH = 10
CHANGE_WIDTH = 7
# The narrowest sparkline worth showing; below this the Trend column is dropped.
MIN_TREND = 6
GAP = 1

#: The display decimals of an instrument (its feed's metadata, or learned from quotes),
#: None when not known yet.
DecimalsOf = Callable[[str], int | None]


class _RowKey(NamedTuple):
    """DataTable-like keys (``row_key.value``) for callers that ask for the cursor's row."""

    value: str | None


@dataclass(slots=True)
class _Row:
    bid: float | None = None
    ask: float | None = None
    last: float | None = None
    session_open: float | None = None
    closes: deque[float] = field(default_factory=lambda: deque(maxlen=30))
    last_bar_ts: int = 0
    decimals: int | None = None
    stale: bool = False
    flash_until: float = 0.0
    flash_up: bool = True
    # The cells as last drawn: (text, style) per column; whether they were drawn
    # flashing, and whether the row's data changed since (else they are not redone).
    cells: tuple[tuple[str, str], ...] = ()
    drawn_flash: bool = False
    dirty: bool = True


class WatchlistTable(ScrollView, can_focus=True):
    """The rows of the watchlist, drawn line by line; the header stays on top."""

    BINDINGS = [
        Binding("up", "cursor(-1)", show=False),
        Binding("down", "cursor(1)", show=False),
        Binding("home", "cursor_to(0)", show=False),
        Binding("end", "cursor_to(-1)", show=False),
        Binding("pageup", "page(-1)", show=False),
        Binding("pagedown", "page(1)", show=False),
        Binding("enter", "select", show=False),
    ]
    COMPONENT_CLASSES = {
        "watchlist--header",
        "watchlist--cursor",
        "watchlist--cursor-blurred",
        "watchlist--odd",
    }
    DEFAULT_CSS = """
    WatchlistTable { overflow-x: hidden; overflow-y: auto; padding: 0 0 0 1; }
    WatchlistTable > .watchlist--header { text-style: bold; color: $text-primary; }
    WatchlistTable > .watchlist--cursor {
        background: $block-cursor-background; color: $block-cursor-foreground;
        text-style: $block-cursor-text-style;
    }
    WatchlistTable > .watchlist--cursor-blurred { background: $block-cursor-blurred-background; }
    WatchlistTable > .watchlist--odd { background: $surface-lighten-1 20%; }
    """

    class Highlighted(Message):
        def __init__(self, instrument: str) -> None:
            super().__init__()
            self.instrument = instrument

    def __init__(self, pane: WatchlistPane, **kwargs) -> None:
        super().__init__(**kwargs)
        self.pane = pane
        self.cursor_row = 0
        self._layout: tuple[tuple[str, int], ...] = ()
        self._layout_width = -1
        # Rendered rows: name -> (what it was drawn from, the strip).
        self._strips: dict[str, tuple[tuple, Strip]] = {}
        self._header: tuple[tuple, Strip] | None = None

    # --- DataTable-like queries (the app and the tests use these) -----------------------

    @property
    def row_count(self) -> int:
        return len(self.pane.instruments)

    @property
    def header_height(self) -> int:
        return 1

    @property
    def cursor_coordinate(self) -> Coordinate:
        return Coordinate(self.cursor_row, 0)

    def coordinate_to_cell_key(self, coordinate: Coordinate) -> tuple[_RowKey, None]:
        names = self.pane.instruments
        row = coordinate.row
        return _RowKey(names[row] if 0 <= row < len(names) else None), None

    def get_row_index(self, instrument: str) -> int:
        return self.pane.instruments.index(instrument)

    @property
    def columns(self) -> tuple[str, ...]:
        """The columns shown at this width, in display order."""
        return tuple(name for name, _ in self._columns())

    def move_cursor(self, *, row: int) -> None:
        if not self.row_count:
            return
        row = max(0, min(self.row_count - 1, row))
        if row == self.cursor_row:
            return
        previous, self.cursor_row = self.cursor_row, row
        self._refresh_row(previous)
        self._refresh_row(row)
        self.scroll_to_row(row)
        self.post_message(self.Highlighted(self.pane.instruments[row]))

    def scroll_to_row(self, row: int) -> None:
        visible = max(1, self.scrollable_content_region.height - self.header_height)
        top = round(self.scroll_y)
        if row < top:
            self.scroll_to(y=row, animate=False)
        elif row >= top + visible:
            self.scroll_to(y=row - visible + 1, animate=False)

    # --- keys and mouse -----------------------------------------------------------------

    def action_cursor(self, step: int) -> None:
        self.move_cursor(row=self.cursor_row + step)

    def action_cursor_to(self, row: int) -> None:
        self.move_cursor(row=row if row >= 0 else self.row_count - 1)

    def action_page(self, step: int) -> None:
        page = max(1, self.scrollable_content_region.height - self.header_height)
        self.move_cursor(row=self.cursor_row + step * page)

    def action_select(self) -> None:
        if self.row_count:
            self.post_message(self.pane.InstrumentChosen(self.pane.instruments[self.cursor_row]))

    def on_click(self, event: events.Click) -> None:
        row = event.y - self.header_height + round(self.scroll_y)
        if event.y >= self.header_height and 0 <= row < self.row_count:
            self.focus()
            if row == self.cursor_row:
                self.action_select()
            else:
                self.move_cursor(row=row)

    def on_focus(self) -> None:
        self._refresh_row(self.cursor_row)

    def on_blur(self) -> None:
        self._refresh_row(self.cursor_row)

    # --- layout -------------------------------------------------------------------------

    def _columns(self) -> tuple[tuple[str, int], ...]:
        """(column, width) of the columns that fit, in display order (cached per width)."""
        width = self.scrollable_content_region.width or self.size.width
        if width == self._layout_width and self._layout:
            return self._layout
        pane = self.pane
        price = max(
            [PRICE_WIDTH, *(len(cell[0]) for row in pane._rows.values() for cell in row.cells[1:4])]
        )
        wanted = {
            "instrument": max(len(LABELS["instrument"]), *(len(n) + 2 for n in pane.instruments))
            if pane.instruments
            else 12,
            "bid": price,
            "ask": price,
            "last": price,
            "change": CHANGE_WIDTH,
            "trend": pane.sparkline_points,
        }
        # Which columns fit, by priority, with the sparkline at its narrowest; then
        # the sparkline takes the width left, up to the points kept.
        chosen: dict[str, int] = {}
        used = -GAP
        for name in PRIORITY:
            need = (MIN_TREND if name == "trend" else wanted[name]) + GAP
            if used + need <= width or name == "instrument":
                chosen[name] = need - GAP
                used += need
            elif name == "bid":
                break  # no ask without the bid
        if "trend" in chosen:
            chosen["trend"] = min(wanted["trend"], chosen["trend"] + max(0, width - used))
        self._layout = tuple((name, chosen[name]) for name in COLUMNS if name in chosen)
        self._layout_width = width
        self.virtual_size = Size(width, self.row_count + self.header_height)
        return self._layout

    def relayout(self) -> None:
        """Rows were added or removed, or a price outgrew its column."""
        self._layout_width = -1
        self._strips.clear()
        self._header = None
        self._columns()
        self.refresh()

    def on_resize(self) -> None:
        self.pane.redraw()  # the sparkline's width follows the pane's

    @property
    def price_width(self) -> int:
        return dict(self._columns()).get("last", PRICE_WIDTH)

    @property
    def trend_width(self) -> int:
        return dict(self._columns()).get("trend", 0)

    # --- drawing ------------------------------------------------------------------------

    def _refresh_row(self, row: int) -> None:
        y = row - round(self.scroll_y) + self.header_height
        if self.header_height <= y < self.size.height:
            self.repaint_line(y)

    def repaint_line(self, y: int) -> None:
        """Repaint one line of the widget as it is on screen (ScrollView.refresh_line
        takes a line of the scrolled content)."""
        self.refresh(Region(0, y, self.size.width, 1))

    def refresh_rows(self, names: list[str]) -> None:
        index = {name: i for i, name in enumerate(self.pane.instruments)}
        for name in names:
            if name in index:
                self._refresh_row(index[name])

    def _strip(self, cells: list[tuple[str, str]], base: Style) -> Strip:
        segments = []
        layout = self._columns()
        for i, ((name, width), (text, style)) in enumerate(zip(layout, cells, strict=True)):
            if i:
                segments.append(Segment(" " * GAP, base))
            text = text[:width]  # only the sparkline can be longer (it is cut to fit)
            padded = text.rjust(width) if name in RIGHT else text.ljust(width)
            segments.append(Segment(padded, base + Style.parse(style) if style else base))
        return Strip(segments)

    def render_line(self, y: int) -> Strip:
        width = self.size.width
        layout = self._columns()
        base = self.rich_style
        if y < self.header_height:
            key = (layout, width, base)
            if self._header is None or self._header[0] != key:
                header = self.get_component_rich_style("watchlist--header")
                cells = [(LABELS[name], "") for name, _ in layout]
                self._header = (
                    key,
                    self._strip(cells, base + header).extend_cell_length(width, base + header),
                )
            return self._header[1]
        row = y - self.header_height + round(self.scroll_y)
        names = self.pane.instruments
        if not 0 <= row < len(names):
            return Strip.blank(width, base)
        name = names[row]
        cells = self.pane._cells_for(name, layout)
        cursor = row == self.cursor_row
        if cursor:
            style = base + self.get_component_rich_style(
                "watchlist--cursor" if self.has_focus else "watchlist--cursor-blurred"
            )
        elif row % 2:
            style = base + self.get_component_rich_style("watchlist--odd")
        else:
            style = base
        key = (cells, layout, width, style)
        cached = self._strips.get(name)
        if cached is not None and cached[0] == key:
            return cached[1]
        strip = self._strip(cells, style).extend_cell_length(width, style)
        self._strips[name] = (key, strip)
        return strip


class WatchlistPane(Vertical):
    """Owns the watchlist table; the app feeds it coalesced updates at a fixed rate."""

    BINDINGS = [
        Binding("delete", "remove_instrument", "Remove", id="watchlist-remove"),
    ]

    class InstrumentChosen(Message):
        def __init__(self, instrument: str) -> None:
            super().__init__()
            self.instrument = instrument

    class RemoveRequested(Message):
        def __init__(self, instrument: str) -> None:
            super().__init__()
            self.instrument = instrument

    def __init__(
        self,
        instruments: list[str],
        sparkline_points: int,
        decimals: DecimalsOf | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.instruments = list(instruments)
        self.sparkline_points = sparkline_points
        # The instrument's own precision when known (feed metadata); else learned here.
        self.decimals_of: DecimalsOf = decimals or (lambda instrument: None)
        self._rows = {name: _Row(closes=deque(maxlen=sparkline_points)) for name in instruments}
        self.border_title = "Watchlist"

    def compose(self) -> ComposeResult:
        yield WatchlistTable(self, id="watchlist-table")

    @property
    def table(self) -> WatchlistTable:
        return self.query_one(WatchlistTable)

    def action_remove_instrument(self) -> None:
        table = self.table
        if table.row_count:
            row_key, _ = table.coordinate_to_cell_key(table.cursor_coordinate)
            if row_key.value is not None:
                self.post_message(self.RemoveRequested(row_key.value))

    def set_instruments(self, instruments: list[str]) -> None:
        """Add rows for new instruments and drop removed ones (the watchlist changed)."""
        for name in [name for name in self.instruments if name not in instruments]:
            del self._rows[name]
        for name in instruments:
            if name not in self._rows:
                self._rows[name] = _Row(closes=deque(maxlen=self.sparkline_points))
        self.instruments = list(instruments)
        table = self.table
        table.cursor_row = max(0, min(table.cursor_row, len(instruments) - 1))
        self.redraw()

    def mark_stale(self, stale: set[str]) -> None:
        """Instruments whose feed is not delivering are dimmed and marked."""
        for name, row in self._rows.items():
            row.stale = name in stale
            row.dirty = True
        self._repaint(time.monotonic())

    def row_values(self, instrument: str) -> dict[str, str]:
        """The text of each cell of an instrument's row, shown or not at this width (for
        tests and status)."""
        row = self._rows[instrument]
        if not row.cells:
            row.cells = self._cells(instrument, row, time.monotonic())
        return {column: text for column, (text, _) in zip(COLUMNS, row.cells, strict=True)}

    # --- data in ----------------------------------------------------------------------

    def load_summaries(self, summaries: dict[str, InstrumentSummary]) -> None:
        for name, summary in summaries.items():
            row = self._rows.get(name)
            if row is None:
                continue
            row.dirty = True
            row.session_open = summary.session_open
            row.closes.extend(summary.closes)
            if summary.last is not None and row.last is None:
                row.last = summary.last
            if row.decimals is None and summary.closes:
                row.decimals = decimals_of(summary.closes)
        self._repaint(time.monotonic())

    def apply(
        self, quotes: dict[str, QuoteReceived], forming: dict[str, Bar], closed: list[Bar]
    ) -> None:
        """One refresh's worth of coalesced updates."""
        now = time.monotonic()
        for bar in closed:
            row = self._rows.get(bar.instrument)
            if row is not None and bar.ts_us > row.last_bar_ts:
                row.dirty = True
                row.closes.append(bar.close)
                row.last_bar_ts = bar.ts_us
        for name, quote in quotes.items():
            row = self._rows.get(name)
            if row is None:
                continue
            row.dirty = True
            if row.bid is not None and quote.bid != row.bid:
                row.flash_up = quote.bid > row.bid
                row.flash_until = now + FLASH_SECONDS
            row.bid, row.ask = quote.bid, quote.ask
            if row.decimals is None:
                row.decimals = decimals_of([quote.bid, quote.ask])
        for name, bar in forming.items():
            row = self._rows.get(name)
            if row is None:
                continue
            row.dirty = True
            row.last = bar.close
            if row.session_open is None and bar.ts_us % 86_400_000_000 == 0:
                row.session_open = bar.open
        self._repaint(now)

    def repaint_flashes(self) -> None:
        self._repaint(time.monotonic())

    # --- drawing ----------------------------------------------------------------------

    def _cells(self, name: str, row: _Row, now: float) -> tuple[tuple[str, str], ...]:
        """(text, style) of every column of a row."""
        known = self.decimals_of(name)
        decimals = known if known is not None else row.decimals if row.decimals is not None else 5

        def price(value: float | None) -> str:
            return "…" if value is None else f"{value:,.{decimals}f}"

        flash = now < row.flash_until
        flash_style = ("bold green" if row.flash_up else "bold red") if flash else ""
        change = ""
        change_style = ""
        if row.last is not None and row.session_open:
            percent = (row.last - row.session_open) / row.session_open * 100
            change = f"{percent:+.2f}%"
            change_style = "green" if percent > 0 else "red" if percent < 0 else ""
        # As many points as the Trend column has cells (the newest), the live last one.
        points = list(row.closes)
        if row.last is not None:
            points.append(row.last)
        shown = self.table.trend_width if self.is_mounted else self.sparkline_points
        points = points[-shown:] if shown else []
        if row.stale:
            flash_style = "dim"
        return (
            (f"{name} ⚠" if row.stale else name, "dim" if row.stale else ""),
            (price(row.bid), flash_style),
            (price(row.ask), flash_style),
            (price(row.last), ""),
            (change, change_style),
            (sparkline(points), "cyan"),
        )

    def _cells_for(
        self, name: str, layout: tuple[tuple[str, int], ...]
    ) -> tuple[tuple[str, str], ...]:
        """The cells of the columns shown (what the table draws)."""
        row = self._rows[name]
        if not row.cells:
            row.cells = self._cells(name, row, time.monotonic())
        by_column = dict(zip(COLUMNS, row.cells, strict=True))
        return tuple(by_column[column] for column, _ in layout)

    def _repaint(self, now: float) -> None:
        """Recompute each row's cells; repaint only the rows where one changed."""
        if not self.is_mounted:
            return
        table = self.table
        changed = []
        widest = 0
        for name, row in self._rows.items():
            flashing = now < row.flash_until
            if not row.dirty and flashing == row.drawn_flash and row.cells:
                continue  # nothing new, and no flash to fade: its cells stand
            row.dirty, row.drawn_flash = False, flashing
            cells = self._cells(name, row, now)
            if cells != row.cells:
                row.cells = cells
                changed.append(name)
                widest = max(widest, *(len(text) for text, _ in cells[1:4]))
        if not changed:
            return
        if widest > table.price_width:
            table.relayout()  # a price outgrew its column: widen it, never cut it
        else:
            table.refresh_rows(changed)

    def redraw(self) -> None:
        """The width or the rows changed: every cell again, the whole table repainted."""
        for row in self._rows.values():
            row.cells = ()
            row.dirty = True
        self.table.relayout()
        self._repaint(time.monotonic())
        self.table.refresh()

    # --- selection --------------------------------------------------------------------

    def on_watchlist_table_highlighted(self, event: WatchlistTable.Highlighted) -> None:
        event.stop()
        self.post_message(self.InstrumentChosen(event.instrument))
