"""The ``J`` Journal screen: the trader's record, day by day (UTC).

Left, the days with a closed trade or a note (and today), newest first, under an "All
days" row: trades, P&L and notes of each. The selected day (or all of them) shows its
notes with an input to add one (enter saves it, about the selected day; about today
for "All days"), the statistics of its trades (win rate, average win and loss, profit
factor, expectancy, max drawdown, net P&L), the trades themselves (instrument, side,
quantity, entry and exit time and price, P&L) and a chart: the cumulative realized P&L,
or (``e`` switches) the account's mark-to-market equity curve over the same days
(15-minute buckets for one day, hourly for all of them).
A trade belongs to the day it closed. The screen reads the journal again when a fill
happens (the app routes those here), at most once a second.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Input, Label, Static

from sptrader.client.protocol import EngineClient
from sptrader.clock import now_us
from sptrader.models import US_PER_DAY
from sptrader.screens.account import format_price, format_qty, money, pnl_style

ALL = "all"
DAY_COLUMNS = (
    ("day", "Day", 16),
    ("trades", "Trades", 6),
    ("pnl", "P&L", 10),
    ("notes", "Notes", 5),
)
TRADE_COLUMNS = (
    ("instrument", "Instrument"),
    ("side", "Side"),
    ("qty", "Qty"),
    ("entry_time", "Entry time"),
    ("entry_price", "Entry"),
    ("exit_time", "Exit time"),
    ("exit_price", "Exit"),
    ("pnl", "P&L"),
)


def today() -> str:
    now = now_us()
    return datetime.fromtimestamp((now - now % US_PER_DAY) / 1e6, UTC).date().isoformat()


def _time(ts_us: int, with_day: bool) -> str:
    form = "%m-%d %H:%M:%S" if with_day else "%H:%M:%S"
    return datetime.fromtimestamp(ts_us / 1e6, UTC).strftime(form)


def _pnl(value: float | None) -> Text:
    return Text(money(value, signed=True), style=pnl_style(value), justify="right")


def stats_text(stats: dict[str, Any], currency: str = "") -> Text:
    """The statistics block, one figure a line."""
    trades = int(stats.get("trades") or 0)
    if not trades:
        return Text("no closed trades", style="dim")

    def figure(value: float | None, signed: bool = True) -> tuple[str, str]:
        if value is None:
            return "-", "dim"
        return money(value, signed=signed), pnl_style(value) if signed else ""

    win_rate = stats.get("win_rate")
    factor = stats.get("profit_factor")
    if factor is None:
        factor_text = "∞ (no losing trade)" if stats.get("wins") else "-"
    else:
        factor_text = f"{factor:.2f}"
    drawdown = float(stats.get("max_drawdown") or 0.0)
    drawdown_pct = stats.get("max_drawdown_pct")
    # A drawdown is written as the positive fall it is, as everywhere (performance.py).
    drawdown_text = money(drawdown, signed=False)
    if drawdown and drawdown_pct is not None:
        drawdown_text += f" ({drawdown_pct:.2f}%)"
    rows: list[tuple[str, tuple[str, str]]] = [
        (
            "Trades",
            (f"{trades}: {stats.get('wins', 0)} won, {stats.get('losses', 0)} lost", ""),
        ),
        ("Win rate", ("-" if win_rate is None else f"{win_rate * 100:.1f}%", "")),
        ("Average win", figure(stats.get("avg_win"))),
        ("Average loss", figure(stats.get("avg_loss"))),
        ("Profit factor", (factor_text, "")),
        ("Expectancy", figure(stats.get("expectancy"))),
        ("Max drawdown", (drawdown_text, "red" if drawdown else "")),
        ("Fees", figure(stats.get("fees"), signed=False)),
        ("Net P&L", figure(stats.get("net_pnl"))),
    ]
    text = Text()
    for index, (label, (value, style)) in enumerate(rows):
        if index:
            text.append("\n")
        text.append(f"{label:<14}", style="dim")
        text.append(value, style=f"bold {style}".strip() if label == "Net P&L" else style)
    if currency:
        text.append(f"\n{'':<14}{currency}", style="dim")
    return text


def _blank_figure(plotext: Any, width: int, height: int) -> Any:
    """plotext's one global figure, cleared and sized (call under charting's lock)."""
    fig = plotext.figure
    fig.clear()
    plotext.terminal.limit(False, False)
    fig.plot_size(width, height)
    fig.theme("simple")
    fig.canvas("default")
    return fig


def render_pnl_chart(points: list[dict[str, Any]], width: int, height: int) -> str:
    """The cumulative realized P&L, one point per closed trade (from 0 before the first),
    as plotext text (ANSI colours)."""
    import plotext

    from sptrader.charting import _render_lock  # plotext has one global figure

    width, height = max(width, 20), max(height, 6)
    with _render_lock:
        fig = _blank_figure(plotext, width, height)
        if not points:
            fig.title("no closed trades")
            return fig.build().string()
        values = [0.0, *(float(point["cum_pnl"]) for point in points)]
        positions = list(range(len(values)))
        line = fig.signal(positions, values)
        line.lines(True)
        fig.draw(line)
        zero = fig.signal(
            [-0.5, len(values) - 0.5],
            [0.0, 0.0],
            marker=plotext.marker("╌", plotext.pixel("gray")),
        )
        zero.lines(True)
        fig.draw(zero)
        low, high = min(values), max(values)
        if high > low:
            ticks = [low + (high - low) * i / 3 for i in range(4)]
            fig.ruler(1).ticks(ticks, [f"{tick:,.2f}" for tick in ticks])
        times = [int(points[0]["time_us"]), *(int(point["time_us"]) for point in points)]
        count = max(2, min(5, width // 14))
        xs = sorted({round(i * (len(values) - 1) / (count - 1)) for i in range(count)})
        span = times[-1] - times[0]
        form = "%H:%M" if span < US_PER_DAY else "%m-%d"
        labels = [datetime.fromtimestamp(times[x] / 1e6, UTC).strftime(form) for x in xs]
        fig.ruler(0).ticks(xs, labels)
        fig.ruler(0).lim(-0.5, len(values) - 0.5)
        fig.title(f"cumulative P&L {values[-1]:+,.2f}")
        return fig.build().string()


def render_equity_chart(points: list[dict[str, Any]], width: int, height: int) -> str:
    """The equity curve (``EngineClient.equity_curve`` rows, one per bucket, valued at
    its end) as plotext text (ANSI colours)."""
    import plotext

    from sptrader.charting import _render_lock  # plotext has one global figure

    width, height = max(width, 20), max(height, 6)
    with _render_lock:
        fig = _blank_figure(plotext, width, height)
        if not points:
            fig.title("no fills: no equity curve")
            return fig.build().string()
        values = [float(point["equity"]) for point in points]
        positions = list(range(len(values)))
        line = fig.signal(positions, values)
        line.lines(True)
        fig.draw(line)
        low, high = min(values), max(values)
        if high > low:
            ticks = [low + (high - low) * i / 3 for i in range(4)]
            fig.ruler(1).ticks(ticks, [f"{tick:,.2f}" for tick in ticks])
        times = [int(point["ts_us"]) for point in points]
        count = max(2, min(5, width // 14))
        last = len(values) - 1
        xs = sorted({round(i * last / (count - 1)) for i in range(count)})
        form = "%H:%M" if times[-1] - times[0] < US_PER_DAY else "%m-%d"
        labels = [datetime.fromtimestamp(times[x] / 1e6, UTC).strftime(form) for x in xs]
        fig.ruler(0).ticks(xs, labels)
        fig.ruler(0).lim(-0.5, last + 0.5)
        fig.title(f"equity {values[-1]:,.2f}")
        return fig.build().string()


CHART_TITLES = {"pnl": "Cumulative P&L", "equity": "Equity"}


class JournalScreen(Screen[None]):
    BINDINGS = [
        Binding("escape,J", "close", "Back", key_display="esc", id="journal-close"),
        Binding("n", "write_note", "Write a note", id="journal-note"),
        Binding("e", "toggle_chart", "P&L/equity", id="journal-equity"),
    ]

    def __init__(self, client: EngineClient, currency: str = "") -> None:
        super().__init__()
        self.client = client
        self.currency = currency
        self.selected_day: str = today()
        self.overview: dict[str, Any] = {}  # the journal of every day
        self.shown: dict[str, Any] = {}  # the journal of the selected day (or all)
        self.loads = 0
        self.charts = 0
        self._dirty = False
        self.chart_mode = "pnl"  # or "equity"
        self._chart_points: list[dict[str, Any]] | None = None
        self._chart: tuple[str, list[dict[str, Any]]] | None = None  # (mode, points) drawn

    def compose(self) -> ComposeResult:
        yield Header()
        with Vertical(id="journal-body"):
            yield Label("", id="journal-title")
            with Horizontal(id="journal-top"):
                yield DataTable(id="journal-days", cursor_type="row", zebra_stripes=True)
                with Vertical(id="journal-day"):
                    yield Label("", id="journal-day-title")
                    with VerticalScroll(id="journal-notes"):
                        yield Static("", id="journal-notes-text")
                    yield Input(
                        placeholder="write a note about this day… (enter saves)",
                        id="journal-note-input",
                    )
                yield Static("", id="journal-stats")
            with Horizontal(id="journal-bottom"):
                yield DataTable(id="journal-trades", cursor_type="row", zebra_stripes=True)
                yield Static("", id="journal-chart")
            yield Label("", id="journal-status")
        yield Footer()

    def on_mount(self) -> None:
        days = self.query_one("#journal-days", DataTable)
        for key, label, width in DAY_COLUMNS:
            days.add_column(label, key=key, width=width)
        trades = self.query_one("#journal-trades", DataTable)
        for key, label in TRADE_COLUMNS:
            trades.add_column(label, key=key)
        days.border_title = "Days"
        trades.border_title = "Trades"
        self.query_one("#journal-day").border_title = "Notes"
        self.query_one("#journal-stats").border_title = "Statistics"
        self.query_one("#journal-chart").border_title = CHART_TITLES[self.chart_mode]
        self.query_one("#journal-title", Label).update(
            "Journal · UTC days (a trade counts on the day it closed) · "
            f"{self._key_for('journal-note')} writes a note, enter saves it"
        )
        days.focus()
        self.set_interval(1.0, self._reload_if_due, name="journal-refresh")
        self._load()

    def _key_for(self, binding_id: str) -> str:
        for key, active in self.active_bindings.items():
            if active.node is self and active.binding.id == binding_id:
                return self.app.get_key_display(active.binding) or key
        default = next(binding for binding in self.BINDINGS if binding.id == binding_id)
        return self.app.get_key_display(default)

    # --- reading ----------------------------------------------------------------------

    def note_changes(self) -> None:
        """A fill happened (the app routes these): read again on the next tick."""
        self._dirty = True

    def _reload_if_due(self) -> None:
        if self._dirty:
            self._load()

    @work(exclusive=True, group="journal-load", exit_on_error=False)
    async def _load(self) -> None:
        self._dirty = False
        try:
            overview = await self.client.journal()
            day = self.selected_day
            shown = overview if day == ALL else await self.client.journal(day, day)
            if self.chart_mode == "equity":
                shown = {**shown, "equity": await self._read_equity(day)}
        except Exception as error:  # the broker disabled, the daemon gone: said here
            self._say(Text(f"the journal cannot be read: {error}", style="red"))
            return
        self.overview = overview
        self._show_days(overview)
        if day == self.selected_day:
            self._show_day(day, shown)
        self.loads += 1

    async def _read_equity(self, day: str) -> list[dict[str, Any]]:
        if day == ALL:
            return await self.client.equity_curve(timeframe="1h")
        start = int(datetime.fromisoformat(day).replace(tzinfo=UTC).timestamp()) * 1_000_000
        end = min(start + US_PER_DAY, now_us() + 1)
        if end <= start:
            return []
        return await self.client.equity_curve(start, end, "15m")

    def _day_rows(self, overview: dict[str, Any]) -> list[tuple[str, list[object]]]:
        days = {row["day"]: row for row in overview.get("days", [])}
        current = today()
        if current not in days:
            days[current] = {"day": current, "trades": 0, "pnl": 0.0, "notes": []}
        trades = overview.get("trades", [])
        total = sum(float(trade["pnl"]) for trade in trades)
        notes = len(overview.get("notes", []))
        rows: list[tuple[str, list[object]]] = [
            (
                ALL,
                [
                    Text("All days", style="bold"),
                    Text(str(len(trades)), justify="right"),
                    _pnl(total),
                    Text(str(notes), justify="right"),
                ],
            )
        ]
        for name in sorted(days, reverse=True):
            row = days[name]
            rows.append(
                (
                    name,
                    [
                        Text(name) + Text(" today", style="dim") if name == current else name,
                        Text(str(row["trades"]), justify="right"),
                        _pnl(float(row["pnl"])) if row["trades"] else Text("-", justify="right"),
                        Text(str(len(row["notes"])), justify="right"),
                    ],
                )
            )
        return rows

    def _show_days(self, overview: dict[str, Any]) -> None:
        table = self.query_one("#journal-days", DataTable)
        rows = self._day_rows(overview)
        if [key for key, _ in rows] != [key.value for key in table.rows]:
            table.clear()
            for key, cells in rows:
                table.add_row(*cells, key=key)
        else:
            for key, cells in rows:
                for (column, _, _), value in zip(DAY_COLUMNS, cells, strict=True):
                    table.update_cell(key, column, value)
        keys = [key for key, _ in rows]
        if self.selected_day in keys and table.cursor_row != keys.index(self.selected_day):
            table.move_cursor(row=keys.index(self.selected_day), animate=False)

    def _show_day(self, day: str, journal: dict[str, Any]) -> None:
        self.shown = journal
        everything = day == ALL
        trades = journal.get("trades", [])
        notes = journal.get("notes", [])
        total = sum(float(trade["pnl"]) for trade in trades)
        title = Text.assemble(
            ("All days" if everything else day, "bold"),
            f" · {len(trades)} trade{'' if len(trades) == 1 else 's'} · P&L ",
            (money(total, signed=True), pnl_style(total)),
            f" · {len(notes)} note{'' if len(notes) == 1 else 's'}",
        )
        self.query_one("#journal-day-title", Label).update(title)
        text = Text()
        for index, note in enumerate(notes):
            if index:
                text.append("\n")
            when = _time(int(note["created_us"]), with_day=False)
            prefix = f"{note['day']} {when}" if everything else when
            text.append(f"{prefix}  ", style="dim")
            text.append(note["text"])
        if not notes:
            text = Text("no notes yet", style="dim")
        self.query_one("#journal-notes-text", Static).update(text)
        note_input = self.query_one("#journal-note-input", Input)
        note_input.placeholder = (
            f"write a note about {'today' if everything else day}… (enter saves)"
        )
        self.query_one("#journal-stats", Static).update(
            stats_text(journal.get("stats", {}), self.currency)
        )
        self._show_trades(trades, with_day=everything)
        self._chart_points = journal.get("cumulative", [])
        if self.chart_mode == "equity":
            if "equity" not in journal:
                return  # read on the next load
            chart = ("equity", journal["equity"])
        else:
            chart = ("pnl", self._chart_points)
        if chart != self._chart:
            self._chart = chart
            self._draw_chart()

    def _show_trades(self, trades: list[dict[str, Any]], with_day: bool) -> None:
        table = self.query_one("#journal-trades", DataTable)
        table.clear()
        for index, trade in enumerate(reversed(trades)):  # newest first
            side = str(trade["side"])
            table.add_row(
                trade["instrument"],
                Text(side, style="green" if side == "long" else "red"),
                Text(format_qty(float(trade["qty"])), justify="right"),
                _time(int(trade["entry_time_us"]), with_day),
                Text(format_price(trade["entry_price"]), justify="right"),
                _time(int(trade["exit_time_us"]), with_day),
                Text(format_price(trade["exit_price"]), justify="right"),
                _pnl(float(trade["pnl"])),
                key=str(index),
            )

    def trade_rows(self) -> list[dict[str, str]]:
        """What the trades table shows, row by row (for tests)."""
        table = self.query_one("#journal-trades", DataTable)
        return [
            {
                key: str(table.get_cell_at((row, column)))
                for column, (key, _) in enumerate(TRADE_COLUMNS)
            }
            for row in range(table.row_count)
        ]

    # --- the chart --------------------------------------------------------------------

    def _draw_chart(self) -> None:
        chart = self.query_one("#journal-chart", Static)
        width, height = chart.content_size.width, chart.content_size.height
        if width < 10 or height < 4:
            return
        mode, points = self._chart or ("pnl", [])
        self._render_chart(mode, list(points), width, height)

    @work(thread=True, exclusive=True, group="journal-chart", exit_on_error=False)
    def _render_chart(
        self, mode: str, points: list[dict[str, Any]], width: int, height: int
    ) -> None:
        render = render_equity_chart if mode == "equity" else render_pnl_chart
        text = Text.from_ansi(render(points, width, height), no_wrap=True)
        self.app.call_from_thread(self._show_chart, text)

    def _show_chart(self, text: Text) -> None:
        if self.is_attached:
            self.query_one("#journal-chart", Static).update(text)
            self.charts += 1

    def on_resize(self) -> None:
        if self._chart is not None:
            self.call_after_refresh(self._draw_chart)

    def action_toggle_chart(self) -> None:
        """Switch the chart between the cumulative P&L and the equity curve."""
        self.chart_mode = "equity" if self.chart_mode == "pnl" else "pnl"
        self.query_one("#journal-chart").border_title = CHART_TITLES[self.chart_mode]
        if self.chart_mode == "pnl":
            self._chart = ("pnl", list(self._chart_points or []))
            self._draw_chart()
        else:
            self._load()

    # --- acting -----------------------------------------------------------------------

    @on(DataTable.RowHighlighted, "#journal-days")
    def _day_highlighted(self, event: DataTable.RowHighlighted) -> None:
        # Where the cursor is now, not where it was when the message left: rebuilding
        # the table moves it through row 0 before putting it back on the selected day.
        table = event.data_table
        if not table.row_count:
            return
        day = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        if day is not None and day != self.selected_day:
            self.selected_day = day
            self._load()

    def action_write_note(self) -> None:
        self.query_one("#journal-note-input", Input).focus()

    @on(Input.Submitted, "#journal-note-input")
    def _note_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        text = event.value.strip()
        if text:
            self._add_note(text, None if self.selected_day == ALL else self.selected_day)

    @work(group="journal-note", exit_on_error=False)
    async def _add_note(self, text: str, day: str | None) -> None:
        try:
            note = await self.client.add_journal_note(text, day)
        except Exception as error:
            self._say(Text(f"note not saved: {error}", style="red"))
            return
        self.query_one("#journal-note-input", Input).value = ""
        self._say(f"note saved about {note['day']}")
        self._load()

    def _say(self, message: str | Text) -> None:
        self.query_one("#journal-status", Label).update(message)

    def action_close(self) -> None:
        self.dismiss()
