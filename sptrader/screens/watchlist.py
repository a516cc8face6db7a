"""Watchlist pane: bid, ask, last, change since the session open and a sparkline per
instrument. Prices flash green/red when they move; a click (or Enter) on a row shows
that instrument in the chart."""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import DataTable

from sptrader.client.protocol import InstrumentSummary
from sptrader.formatting import decimals_of, sparkline
from sptrader.models import Bar, QuoteReceived

FLASH_SECONDS = 0.6
COLUMNS = ("instrument", "bid", "ask", "last", "change", "trend")
LABELS = ("Instrument", "Bid", "Ask", "Last", "Chg %", "Trend")
# Fixed widths: prices arrive after the first paint, and columns must not jump.
PRICE_WIDTH = 10


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
    shown: dict[str, tuple[str, str]] = field(default_factory=dict)


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

    def action_remove_instrument(self) -> None:
        table = self.table
        if table.row_count:
            row_key, _ = table.coordinate_to_cell_key(table.cursor_coordinate)
            if row_key.value is not None:
                self.post_message(self.RemoveRequested(row_key.value))

    def __init__(self, instruments: list[str], sparkline_points: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.instruments = list(instruments)
        self.sparkline_points = sparkline_points
        self._rows = {name: _Row(closes=deque(maxlen=sparkline_points)) for name in instruments}
        self.border_title = "Watchlist"

    def compose(self) -> ComposeResult:
        table: DataTable = DataTable(id="watchlist-table", cursor_type="row", zebra_stripes=True)
        yield table

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        widths = {
            "instrument": max(18, *(len(name) + 2 for name in self.instruments)),
            "bid": PRICE_WIDTH,
            "ask": PRICE_WIDTH,
            "last": PRICE_WIDTH,
            "change": 7,
            "trend": self._rows[self.instruments[0]].closes.maxlen if self.instruments else 20,
        }
        for key, label in zip(COLUMNS, LABELS, strict=True):
            table.add_column(label, key=key, width=widths[key])
        for name in self.instruments:
            table.add_row(name, "…", "…", "…", "", "", key=name)

    @property
    def table(self) -> DataTable:
        return self.query_one(DataTable)

    def set_instruments(self, instruments: list[str]) -> None:
        """Add rows for new instruments and drop removed ones (the watchlist changed)."""
        table = self.table
        for name in [name for name in self.instruments if name not in instruments]:
            table.remove_row(name)
            del self._rows[name]
        for name in instruments:
            if name not in self._rows:
                self._rows[name] = _Row(closes=deque(maxlen=self.sparkline_points))
                table.add_row(name, "…", "…", "…", "", "", key=name)
        self.instruments = list(instruments)

    def mark_stale(self, stale: set[str]) -> None:
        """Instruments whose feed is not delivering are dimmed and marked."""
        for name, row in self._rows.items():
            row.stale = name in stale
        self._repaint(time.monotonic())

    def row_values(self, instrument: str) -> dict[str, str]:
        """The text shown in each cell of an instrument's row (for tests and status)."""
        table = self.table
        return {column: str(table.get_cell(instrument, column)) for column in COLUMNS}

    # --- data in ----------------------------------------------------------------------

    def load_summaries(self, summaries: dict[str, InstrumentSummary]) -> None:
        for name, summary in summaries.items():
            row = self._rows.get(name)
            if row is None:
                continue
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
                row.closes.append(bar.close)
                row.last_bar_ts = bar.ts_us
        for name, quote in quotes.items():
            row = self._rows.get(name)
            if row is None:
                continue
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
            row.last = bar.close
            if row.session_open is None and bar.ts_us % 86_400_000_000 == 0:
                row.session_open = bar.open
        self._repaint(now)

    def repaint_flashes(self) -> None:
        self._repaint(time.monotonic())

    # --- drawing ----------------------------------------------------------------------

    def _cells(self, name: str, row: _Row, now: float) -> dict[str, Text]:
        decimals = row.decimals if row.decimals is not None else 5

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
        points = list(row.closes)
        if row.last is not None:
            points = (
                [*points[1:], row.last] if len(points) == row.closes.maxlen else [*points, row.last]
            )
        if row.stale:
            flash_style = "dim"
        return {
            "instrument": Text(
                f"{name} ⚠" if row.stale else name, style="dim" if row.stale else ""
            ),
            "bid": Text(price(row.bid), style=flash_style, justify="right"),
            "ask": Text(price(row.ask), style=flash_style, justify="right"),
            "last": Text(price(row.last), justify="right"),
            "change": Text(change, style=change_style, justify="right"),
            "trend": Text(sparkline(points), style="cyan"),
        }

    def _repaint(self, now: float) -> None:
        """Update only the cells whose text or style changed."""
        table = self.table
        for name, row in self._rows.items():
            for column, value in self._cells(name, row, now).items():
                # rich's Text equality ignores the style, so compare both explicitly.
                shown = (value.plain, str(value.style))
                if row.shown.get(column) != shown:
                    row.shown[column] = shown
                    table.update_cell(name, column, value)

    # --- selection --------------------------------------------------------------------

    @on(DataTable.RowHighlighted, "#watchlist-table")
    @on(DataTable.RowSelected, "#watchlist-table")
    def _row_chosen(self, event: DataTable.RowHighlighted | DataTable.RowSelected) -> None:
        if event.row_key.value is not None:
            self.post_message(self.InstrumentChosen(event.row_key.value))
