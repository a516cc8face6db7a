"""Chart pane: candlesticks and volume of one instrument in one timeframe, with the
forming bar updating live. Timeframe buttons (or keys 1..6) switch the timeframe.

State: the complete bars of the window, plus the 1m bars of the newest (current)
bucket keyed by minute, so the current candle of any timeframe is rebuilt exactly
from its minutes as forming and closed 1m bars arrive.

Scrollback: left/right (or the mouse wheel) pan by part of the window, home jumps to
the oldest stored bar (again: a window further back), end returns to live. Panned
away from live the chart shows a fixed window ``[end - window bars, end)``; live bars
then only update the price in the title.

Lazy history: whenever the shown window holds open market time the store lacks, the
chart shows what is stored at once, asks the engine to backfill the missing part
(once per instrument and range) and reads the window again when HistoryStored says
the bars are there.

Overlays (keys ``m`` ``B`` ``i`` ``M`` with the chart focused): EMA20 + SMA50 and
Bollinger(20, 2) over the candles, RSI(14) (30/70 guides) and MACD(12, 26, 9) each in a
panel between the candles and the volume when it can be read there (else a note says it
is hidden; the volume panel gives way first). They are computed when the chart is drawn
over the shown bars plus ``lead`` bars read before the window for the warm-up; the title
lists the active ones. The overlays and the timeframe chosen are announced
(``ViewChanged``) for the app to keep across restarts.

Drawing: at once for what the user does; for live data only when the forming bar moved
by half a text row or more (``visible_state``), at most MAX_LIVE_RENDER_HZ, and never
while the chart is hidden (another screen on top, or display: none). Live windows read
are cached per instrument and timeframe (and the shown instrument's other timeframes
read ahead after a moment), so a switch draws at once and is corrected by the read that
follows. The title fits its width by whole words (``ChartTitle``) and never shows the
previous instrument's price.

A signal chosen on the Strategies screen (``show_signal``) switches to its instrument
and its scanner's timeframe, places the window so that its bar sits about three quarters
across (live if it is among the newest bars) and marks the bar: ▲ below a buy, ▼ above a
sell, ◆ above an exit, with its stop and target as short dashed lines. The status line
says what is marked; the mark scrolls with the chart and stays until another instrument
is shown or ``escape`` clears it. A backtest's trade chosen on the Backtest screen is a
mark with an exit too: ▲ or ▼ at its entry bar, ◆ above the bar it left in, the window
placed so that both show when the trade fits in three quarters of it.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from rich.style import Style
from rich.text import Span, Text
from textual import events, on, work
from textual.app import ComposeResult, RenderResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.content import Content
from textual.css.query import NoMatches
from textual.message import Message
from textual.screen import ModalScreen
from textual.widgets import Button, Label, Static

from sptrader.charting import (
    OVERLAYS,
    SignalMark,
    overlay_lookback,
    render_candles,
    signal_position,
    visible_state,
)
from sptrader.client.protocol import EngineClient
from sptrader.clock import now_us
from sptrader.formatting import decimals_of
from sptrader.models import (
    US_PER_MINUTE,
    BackfillProgressed,
    Bar,
    HistoryStored,
    timeframe_minutes,
)

log = logging.getLogger(__name__)

# The newest minutes belong to the live stream (a backfill never fetches them).
LIVE_EDGE_US = 3 * US_PER_MINUTE
# A range this chart asked for is not asked for again this soon (the source may not
# have it); requests are forgotten after REQUEST_MEMORY_S.
RETRY_AFTER_S = 60.0
REQUEST_MEMORY_S = 600.0
# Live data redraws the chart at most this often, whatever ui.chart_refresh_hz says (a
# plotext build costs 10-40 ms of a core); what the user does is drawn at once.
MAX_LIVE_RENDER_HZ = 2.0
# Live windows kept per (instrument, timeframe), drawn at once when shown again.
WINDOW_CACHE_SIZE = 32
# A cached window this many bars behind is still drawn (and read again at once).
CACHE_STALE_BARS = 5
# Windows likely to be asked for next are read into the cache after this long.
PREFETCH_AFTER_S = 1.0
# Below this many columns per timeframe button (plus room for the title) the toolbar's
# buttons lose their padding.
TITLE_ROOM = 28


def _rows_to_bars(instrument: str, timeframe: str, frame) -> list[Bar]:
    return [
        Bar(instrument, timeframe, ts, o, h, low, c, v, n)
        for ts, o, h, low, c, v, n in frame.select(
            frame["ts"].dt.epoch("us"), "open", "high", "low", "close", "volume", "trades"
        ).iter_rows()
    ]


def _combine(instrument: str, timeframe: str, start_us: int, minutes: list[Bar]) -> Bar:
    return Bar(
        instrument,
        timeframe,
        start_us,
        minutes[0].open,
        max(bar.high for bar in minutes),
        min(bar.low for bar in minutes),
        minutes[-1].close,
        sum(bar.volume for bar in minutes),
        sum(bar.trades for bar in minutes),
    )


def _format_time(ts_us: int, minutes: int) -> str:
    form = "%Y-%m-%d" if minutes >= 1440 else "%Y-%m-%d %H:%M"
    return datetime.fromtimestamp(ts_us / 1e6, tz=UTC).strftime(form)


class ChartTitle(Label):
    """The chart's title line: the longest of its variants (longest first) that fits
    its width, so a narrow pane shortens it by whole words and never cuts one.
    ``content`` stays the longest (full) title."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.variants: tuple[str, ...] = ()

    def show(self, variants: Sequence[str]) -> None:
        variants = tuple(variants)
        if variants != self.variants:
            self.variants = variants
            self.update(variants[0] if variants else "")

    def shown(self) -> str:
        """The variant drawn at the current width."""
        width = self.content_size.width
        for variant in self.variants:
            if len(variant) <= width:
                return variant
        return ""

    def render(self) -> RenderResult:
        return Content(self.shown()) if self.variants else super().render()


class TimeframeButton(Button):
    """A timeframe button as wide as its label and its line-pad (Button's own width
    always adds two columns; a narrow chart sets line-pad 0)."""

    def get_content_width(self, container, viewport) -> int:
        return self.label.cell_length + 2 * self.styles.line_pad


class ChartPane(Vertical, can_focus=True):
    BINDINGS = [
        Binding("left", "pan(-1)", "Back", key_display="←", id="chart-back"),
        Binding("right", "pan(1)", "Forward", key_display="→", id="chart-forward"),
        Binding("home", "oldest", "Oldest", id="chart-oldest"),
        Binding("end", "live", "Live", id="chart-live"),
        Binding("m", "overlay('ma')", "MAs", id="chart-ma"),
        Binding("B", "overlay('bb')", "Bands", id="chart-bands"),
        Binding("i", "overlay('rsi')", "RSI", id="chart-rsi"),
        Binding("M", "overlay('macd')", "MACD", id="chart-macd"),
        Binding(
            "escape", "clear_signal", "Clear signal", key_display="esc", id="chart-clear-signal"
        ),
    ]

    OVERLAY_NAMES = {"ma": "EMA20 SMA50", "bb": "BB20", "rsi": "RSI14", "macd": "MACD"}

    @dataclass
    class ViewChanged(Message):
        """The user changed the overlays or the timeframe (the app keeps them)."""

        overlays: list[str]
        timeframe: str

    def __init__(
        self,
        client: EngineClient,
        timeframes: list[str],
        timeframe: str,
        bars: int,
        overlays: Sequence[str] = (),
        decimals: Callable[[str], int | None] | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.client = client
        # The instrument's price precision (e.g. from its symbol metadata); None, or no
        # answer: the decimals the shown bars use.
        self.decimals_source = decimals
        self.timeframes = timeframes
        self.timeframe = timeframe
        self.instrument: str | None = None
        self.window = bars
        # None: live (the newest bars, the forming one included); else the exclusive
        # end (µs, on a bar boundary) of the historical window shown.
        self.history_end: int | None = None
        self.complete: list[Bar] = []
        # Bars just before the window, for the overlays' warm-up (not drawn).
        self.lead: list[Bar] = []
        self.lead_wanted = 0  # the lead the last load asked for
        self.overlays: list[str] = [name for name in OVERLAYS if name in overlays]
        # The signal marked (see show_signal), and the open time of the bar it was drawn
        # at in the last render (None: not drawn, its bar is not in the window).
        self.signal: SignalMark | None = None
        self.signal_drawn_at: int | None = None
        self.current_minutes: dict[int, Bar] = {}
        self.bucket_start = 0
        self.loaded_key: tuple[str, str] | None = None
        self.loaded_end: int | None = None  # history_end of what is shown
        self.loads = 0
        self.renders = 0
        self.drawn_key: tuple[str, str] | None = None  # (instrument, timeframe) drawn last
        self.last_render_ms = 0.0
        self.live_close: float | None = None
        # Backfills this chart asked for: (instrument, start, end) -> when (monotonic),
        # and the ones no HistoryStored or finished BackfillProgressed answered yet.
        self.history_requests: dict[tuple[str, int, int], float] = {}
        self.pending_history: set[tuple[str, int, int]] = set()
        self._problems_said: set[str] = set()
        # _dirty: what the user asked for changed (drawn at once); _live_dirty: the
        # forming bar moved (drawn on the refresh tick, when visible_state changed).
        self._dirty = False
        self._live_dirty = False
        self._title_dirty = False
        self._drawn_state: tuple | None = None
        self._last_render_at = 0.0
        self._data_decimals = 5
        self._known_decimals: dict[str, int] = {}
        # (instrument, timeframe) -> (lead count, complete bars, lead, current minutes,
        # bucket start) of the live window last read, oldest first.
        self._window_cache: dict[tuple[str, str], tuple] = {}
        self.border_title = "Chart"

    def compose(self) -> ComposeResult:
        with Horizontal(id="chart-toolbar"):
            yield ChartTitle("", id="chart-title")
            for timeframe in self.timeframes:
                button = TimeframeButton(
                    timeframe, id=f"tf-{timeframe}", classes="tf-button", compact=True
                )
                if timeframe == self.timeframe:
                    button.add_class("-current")
                yield button
        # Panned or fetching history: said on a line of its own (shown only then).
        yield Label("", id="chart-status")
        yield Static("loading…", id="chart-plot")

    # --- what to show -----------------------------------------------------------------

    @property
    def live(self) -> bool:
        return self.history_end is None

    def show_instrument(self, instrument: str) -> None:
        if instrument != self.instrument:
            self.instrument = instrument
            self.history_end = None
            self._take_live_price(instrument)
            if self.signal is not None:
                self.signal = None  # it was another instrument's
                self.refresh_bindings()
            self.reload()

    def show_signal(self, signal: SignalMark) -> None:
        """Chart the signal's instrument, in its scanner's timeframe when the chart has
        it, with the window placed so that its bar is shown, and mark that bar."""
        if signal.instrument != self.instrument:
            self.instrument = signal.instrument
            self._take_live_price(signal.instrument)
        if signal.timeframe in self.timeframes and signal.timeframe != self.timeframe:
            self._set_timeframe(signal.timeframe)
        self.signal = signal
        self.refresh_bindings()  # escape now clears it
        anchor = signal.ts_us
        if signal.exit_ts_us is not None:  # the exit at three quarters, the entry in view
            anchor = min(signal.exit_ts_us, signal.ts_us + (self.window // 2) * self._bar_width())
        self.history_end = self._end_showing(anchor)
        self._dirty = True
        self.reload()

    def _take_live_price(self, instrument: str) -> None:
        """The newly shown instrument's last price at once (its forming 1m bar, which
        the client keeps), never the previous instrument's: the title says it before
        the bars are read."""
        forming = self.client.forming_bar(instrument)
        self.live_close = forming.close if forming is not None else None

    @property
    def decimals(self) -> int:
        """The shown instrument's price precision: the decimals source's, else the
        engine's (price_decimals, asked once per instrument), else what its bars use."""
        if self.decimals_source is not None and self.instrument is not None:
            places = self.decimals_source(self.instrument)
            if places is not None:
                return places
        if self.instrument in self._known_decimals:
            return self._known_decimals[self.instrument]
        return self._data_decimals

    def _end_showing(self, ts_us: int) -> int | None:
        """The window that shows the bar holding ``ts_us``: live when that bar is among
        the newest bars (not at the very left edge), else the window with the bar about
        three quarters across."""
        width = self._bar_width()
        bar_start = ts_us - ts_us % width
        live_end = self._live_end()
        if bar_start >= live_end - (self.window - self.window // 8) * width:
            return None
        end = bar_start + (self.window - (3 * self.window) // 4) * width
        return None if end >= live_end else end

    def action_clear_signal(self) -> None:
        if self.signal is not None:
            self.signal = None
            self.refresh_bindings()
            self._dirty = True
            self._update_title()
            self.render_now()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """``escape`` clears a marked signal (and is left to others when none is)."""
        return action != "clear_signal" or self.signal is not None

    def show_timeframe(self, timeframe: str) -> None:
        if timeframe not in self.timeframes or timeframe == self.timeframe:
            return
        self._set_timeframe(timeframe)
        self.reload()

    def _set_timeframe(self, timeframe: str) -> None:
        """Switch to ``timeframe`` (keeping a historical window at the same moment)
        without reading the bars."""
        self.timeframe = timeframe
        for button in self.query(".tf-button"):
            button.set_class(button.id == f"tf-{timeframe}", "-current")
        self.post_message(self.ViewChanged(list(self.overlays), timeframe))
        if self.history_end is not None:
            # Stay at the same moment, on the new timeframe's bar boundaries.
            width = self._bar_width()
            end = -(-self.history_end // width) * width
            self.history_end = None if end >= self._live_end() else end

    @on(Button.Pressed, ".tf-button")
    def _timeframe_clicked(self, event: Button.Pressed) -> None:
        event.stop()
        self.show_timeframe((event.button.id or "").removeprefix("tf-"))

    def reload(self) -> None:
        """Read the shown window again (live, or the historical window panned to)."""
        self._update_title()
        if self.instrument is not None:
            self._load_bars(self.instrument, self.timeframe, self.history_end)

    def _bar_width(self) -> int:
        return timeframe_minutes(self.timeframe) * US_PER_MINUTE

    def _live_end(self) -> int:
        """The end of the current (forming) bar's bucket."""
        width = self._bar_width()
        now = now_us()
        return now - now % width + width

    def view_range(self) -> tuple[int, int]:
        """[start, end) of the window shown (live: the last ``window`` bar slots)."""
        end = self.history_end if self.history_end is not None else self._live_end()
        return end - self.window * self._bar_width(), end

    # --- scrollback -------------------------------------------------------------------

    def pan(self, bars: int) -> None:
        """Move the window by ``bars`` bars: back in time if negative."""
        if self.instrument is None or bars == 0:
            return
        width = self._bar_width()
        live_end = self._live_end()
        end = (self.history_end if self.history_end is not None else live_end) + bars * width
        self._go_to(None if end >= live_end else end)

    def _go_to(self, history_end: int | None) -> None:
        if history_end == self.history_end:
            return
        self.history_end = history_end
        self.reload()

    def action_pan(self, direction: int) -> None:
        self.pan(direction * max(1, self.window // 4))

    def action_overlay(self, name: str) -> None:
        """Toggle an overlay (see charting.OVERLAYS); reads more bars if its warm-up
        needs more than were read."""
        if name not in OVERLAYS:
            return
        if name in self.overlays:
            self.overlays.remove(name)
        else:
            self.overlays = [other for other in OVERLAYS if other in {*self.overlays, name}]
        self.post_message(self.ViewChanged(list(self.overlays), self.timeframe))
        self._dirty = True
        self._update_title()
        if overlay_lookback(self.overlays) > self.lead_wanted:
            self.reload()
        else:
            self.render_now()

    def action_live(self) -> None:
        self._go_to(None)

    def action_oldest(self) -> None:
        if self.instrument is not None:
            self._jump_to_oldest(self.instrument, self.timeframe)

    @work(exclusive=True, group="chart-oldest", exit_on_error=False)
    async def _jump_to_oldest(self, instrument: str, timeframe: str) -> None:
        """To the window starting at the oldest stored bar; from there (or from before
        it), a whole window further back, where the history is fetched."""
        now = now_us()
        statuses = await self.client.data_status([instrument], now - US_PER_MINUTE, now)
        if (instrument, timeframe) != (self.instrument, self.timeframe):
            return
        first = statuses[0]["first_us"] if statuses else None
        width = self._bar_width()
        start, _ = self.view_range()
        if first is not None and first - first % width < start:
            end = first - first % width + self.window * width
        else:
            end = start
        self._go_to(None if end >= self._live_end() else end)

    def on_mouse_scroll_up(self, event: events.MouseScrollUp) -> None:
        self._wheel(event, -1)

    def on_mouse_scroll_down(self, event: events.MouseScrollDown) -> None:
        self._wheel(event, 1)

    def on_mouse_scroll_left(self, event: events.MouseScrollLeft) -> None:
        self._wheel(event, -1)

    def on_mouse_scroll_right(self, event: events.MouseScrollRight) -> None:
        self._wheel(event, 1)

    def _wheel(self, event: events.MouseEvent, direction: int) -> None:
        """The wheel pans the chart (up or left: back in time) by an eighth of the
        window per notch."""
        event.stop()
        event.prevent_default()
        self.pan(direction * max(1, self.window // 8))

    # --- reading bars -----------------------------------------------------------------

    @work(exclusive=True, group="chart-load", exit_on_error=False)
    async def _load_bars(self, instrument: str, timeframe: str, history_end: int | None) -> None:
        minutes = timeframe_minutes(timeframe)
        width = minutes * US_PER_MINUTE
        current: dict[int, Bar] = {}
        lead_count = overlay_lookback(self.overlays)
        if history_end is None:
            cached = self._cached_window(instrument, timeframe, lead_count)
            if cached is not None:
                # Drawn at once; the read below redraws only if what is seen changed.
                self._show_window(instrument, timeframe, None, lead_count, *cached)
            (bars, lead, current, bucket_start), _ = await asyncio.gather(
                self._read_live_window(instrument, timeframe, lead_count),
                self._learn_decimals(instrument),
            )
        else:
            start = history_end - self.window * width
            frame = await self.client.candles(
                instrument, timeframe, start_us=start - lead_count * width, end_us=history_end
            )
            bars = _rows_to_bars(instrument, timeframe, frame)
            lead = [bar for bar in bars if bar.ts_us < start][-lead_count:] if lead_count else []
            bars = [bar for bar in bars if bar.ts_us >= start]
            bucket_start = history_end
        if (instrument, timeframe, history_end) != (
            self.instrument,
            self.timeframe,
            self.history_end,
        ):
            return  # the user moved on while this was loading
        if history_end is None:
            self._cache_window(instrument, timeframe, lead_count, bars, lead, current, bucket_start)
        self._show_window(
            instrument, timeframe, history_end, lead_count, bars, lead, current, bucket_start
        )
        self.loads += 1
        if history_end is None:
            self._prefetch(instrument, lead_count)
        await self._fetch_missing(instrument, history_end, bool(bars or current))

    async def _read_live_window(self, instrument: str, timeframe: str, lead_count: int):
        """The live window's complete bars, the lead before them, the stored minutes of
        the forming bar's bucket (by the clock) and that bucket's start; the window and
        the minutes are read at the same time."""
        width = timeframe_minutes(timeframe) * US_PER_MINUTE
        now = now_us()
        bucket_start = now - now % width
        frame, minute_frame = await asyncio.gather(
            self.client.candles(instrument, timeframe, last=self.window + lead_count),
            self.client.candles(instrument, "1m", start_us=bucket_start, end_us=None),
        )
        stored = [
            bar for bar in _rows_to_bars(instrument, timeframe, frame) if bar.ts_us < bucket_start
        ]
        current = {bar.ts_us: bar for bar in _rows_to_bars(instrument, "1m", minute_frame)}
        shown = self.window - 1 if current else self.window
        return stored[-shown:], stored[:-shown], current, bucket_start

    def _cache_window(self, instrument: str, timeframe: str, lead_count: int, *window) -> None:
        self._window_cache.pop((instrument, timeframe), None)
        self._window_cache[(instrument, timeframe)] = (lead_count, *window)
        while len(self._window_cache) > WINDOW_CACHE_SIZE:
            del self._window_cache[next(iter(self._window_cache))]

    @work(exclusive=True, group="chart-prefetch", exit_on_error=False)
    async def _prefetch(self, instrument: str, lead_count: int) -> None:
        """Once the chart has shown ``instrument`` for a moment, read into the cache the
        live windows a key is likely to ask for next, one at a time: its other
        timeframes, then the watchlist's other instruments in this timeframe. (Cancelled
        by the next load; windows cached and recent enough are not read again; never
        asks for history.)"""
        await asyncio.sleep(PREFETCH_AFTER_S)
        timeframe = self.timeframe
        wanted = [(instrument, other) for other in self.timeframes]
        wanted += [(other, timeframe) for other in getattr(self.client, "watchlist", [])]
        for name, frame in wanted:
            if self.instrument != instrument or not self.is_shown():
                return
            if self._cached_window(name, frame, lead_count, touch=False) is not None:
                continue
            window = await self._read_live_window(name, frame, lead_count)
            self._cache_window(name, frame, lead_count, *window)

    async def _learn_decimals(self, instrument: str) -> None:
        """The instrument's price precision from the engine (its symbol metadata), asked
        once per instrument."""
        if instrument in self._known_decimals:
            return
        try:
            answer = await self.client.price_decimals([instrument])
        except Exception as error:  # an older daemon: the bars' own decimals then
            log.debug("no price precision for %s: %s", instrument, error)
            answer = {}
        if instrument in answer:
            self._known_decimals[instrument] = answer[instrument]

    def _cached_window(self, instrument: str, timeframe: str, lead_count: int, touch=True):
        """The live window last read for (instrument, timeframe), if it has the lead
        the overlays need and no more than CACHE_STALE_BARS bars closed since (shown
        for the moment the window takes to be read again)."""
        cached = self._window_cache.get((instrument, timeframe))
        if cached is None or cached[0] < lead_count:
            return None
        width = timeframe_minutes(timeframe) * US_PER_MINUTE
        live_bucket = now_us() // width * width
        if cached[4] < live_bucket - CACHE_STALE_BARS * width:
            return None
        if touch:  # the newest used is the last to go
            self._window_cache[(instrument, timeframe)] = self._window_cache.pop(
                (instrument, timeframe)
            )
        return cached[1:]

    def _show_window(
        self,
        instrument: str,
        timeframe: str,
        history_end: int | None,
        lead_count: int,
        bars: list[Bar],
        lead: list[Bar],
        current: dict[int, Bar],
        bucket_start: int,
    ) -> None:
        """Hold the bars read (or cached) for the window and draw them."""
        closes = [bar.close for bar in [*bars[-50:], *current.values()]]
        if closes:
            self._data_decimals = decimals_of(closes)
        self.bucket_start = bucket_start
        self.lead = list(lead)
        self.lead_wanted = lead_count
        self.loaded_key = (instrument, timeframe)
        self.loaded_end = history_end
        self.complete = list(bars)
        self.current_minutes = dict(current)
        if history_end is None:
            forming = self.client.forming_bar(instrument)
            if forming is not None:
                self.add_minute_bar(forming, timeframe_minutes(timeframe))
        self.render_now()

    async def _fetch_missing(self, instrument: str, history_end: int | None, stored: bool) -> None:
        """Ask for the window's missing open hours, unless already asked (or, live, when
        nothing is stored yet: the instrument's feed is seeding it)."""
        if history_end is None and not stored:
            return
        start, end = self.view_range()
        edge = now_us() - LIVE_EDGE_US
        end = min(end, edge - edge % US_PER_MINUTE)
        if end <= start:
            return
        gaps = await self.client.data_gaps(instrument, start, end)
        if not gaps or self._asked_for(instrument, gaps[0][0], gaps[-1][1]):
            return
        missing_start, missing_end = gaps[0][0], gaps[-1][1]
        if history_end is not None:
            # Panning back goes on: fetch a window more while at it.
            missing_start -= self.window * self._bar_width()
        key = (instrument, missing_start, missing_end)
        self.history_requests[key] = time.monotonic()
        self.pending_history.add(key)
        self._update_title()
        try:
            await self.client.start_backfill([instrument], missing_start, missing_end)
        except Exception as error:  # no feed serves it, nothing fetchable yet: said once
            self.pending_history.discard(key)
            self._update_title()
            log.info("no history for %s: %s", instrument, error)
            if str(error) not in self._problems_said:
                self._problems_said.add(str(error))
                self.notify(str(error), title="chart history", severity="warning")

    def _asked_for(self, instrument: str, start: int, end: int) -> bool:
        """A request of this chart covers [start, end) and is pending or recent (a range
        the source could not fill is not asked for again at every reload)."""
        now = time.monotonic()
        for key, asked in list(self.history_requests.items()):
            if now - asked > REQUEST_MEMORY_S:
                del self.history_requests[key]
                self.pending_history.discard(key)
                continue
            name, requested_start, requested_end = key
            covers = name == instrument and requested_start <= start and requested_end >= end
            if covers and (key in self.pending_history or now - asked < RETRY_AFTER_S):
                return True
        return False

    @property
    def loading_history(self) -> bool:
        """A backfill this chart asked for is running over the shown window."""
        if self.instrument is None:
            return False
        start, end = self.view_range()
        return any(
            name == self.instrument and requested_start < end and requested_end > start
            for name, requested_start, requested_end in self.pending_history
        )

    def note_history(self, stored: list[HistoryStored], progress: list[BackfillProgressed]) -> None:
        """Engine events about history: answer this chart's pending requests. (The app
        reloads the chart when bars of its instrument were stored.)"""
        reload = False
        for event in stored:
            self.pending_history.discard((event.instrument, event.start_us, event.end_us))
        for event in progress:
            if event.state == "running":
                continue
            answered = {key for key in self.pending_history if key[0] == event.instrument}
            if not answered:
                continue
            self.pending_history -= answered
            if event.instrument == self.instrument and (event.rows == 0 or event.state != "done"):
                reload = True  # no HistoryStored follows: show what there is
            if event.state == "failed":
                self.notify(
                    f"{event.instrument}: {event.message}",
                    title="chart history",
                    severity="warning",
                )
        if reload:
            self.reload()
        else:
            self._title_dirty = True

    # --- live data --------------------------------------------------------------------

    def add_minute_bar(self, bar: Bar, minutes: int | None = None) -> None:
        """A forming or closed 1m bar of the shown instrument."""
        if bar.instrument != self.instrument:
            return
        if self.loaded_key != (self.instrument, self.timeframe):
            # Its bars are being read (the ones held are another instrument's or
            # timeframe's): only the title's price follows.
            self.live_close = bar.close
            self._title_dirty = True
            return
        if self.history_end is not None or self.loaded_end is not None:
            # A historical window (shown or asked for) stays put; the title still
            # shows the live price. Back to live, the window is read again.
            self.live_close = bar.close
            self._title_dirty = True
            return
        minutes = minutes or timeframe_minutes(self.timeframe)
        width = minutes * US_PER_MINUTE
        start = bar.ts_us - bar.ts_us % width
        if start < self.bucket_start:
            return
        if start > self.bucket_start:
            if self.current_minutes:
                self.complete.append(self._current_bar())
            self.bucket_start = start
            self.current_minutes = {}
        if not self.current_minutes:
            # A forming bar joins the window: the oldest bar makes room.
            dropped = max(0, len(self.complete) - self.window + 1)
            self.lead.extend(self.complete[:dropped])
            del self.complete[:dropped]
            del self.lead[: max(0, len(self.lead) - self.lead_wanted)]
        self.current_minutes[bar.ts_us] = bar
        self.live_close = bar.close
        self._live_dirty = True
        self._title_dirty = True

    def _current_bar(self) -> Bar:
        minutes = [self.current_minutes[ts] for ts in sorted(self.current_minutes)]
        return _combine(minutes[0].instrument, self.timeframe, self.bucket_start, minutes)

    def shown_bars(self) -> list[Bar]:
        if not self.current_minutes:
            return list(self.complete)
        return [*self.complete, self._current_bar()]

    # --- drawing ----------------------------------------------------------------------

    def _showing_loaded(self) -> bool:
        """The bars held are the shown instrument's (not the previous one's, still
        held while the new one's are read)."""
        return self.loaded_key is not None and self.loaded_key[0] == self.instrument

    def price_text(self) -> str:
        """The shown instrument's last price, or … until it is known."""
        if self.current_minutes and self._showing_loaded():
            price = self._current_bar().close
        elif self.live_close is not None:
            price = self.live_close
        else:
            return "…"
        return f"{price:,.{self.decimals}f}"

    def title_variants(self) -> list[str]:
        """The title, longest first: instrument, timeframe, the live price and the
        overlays; then without the overlays, with single spaces, without the feed's
        prefix, without the timeframe (its button is marked), the symbol alone."""
        instrument = self.instrument or "—"
        symbol = instrument.split(":", 1)[-1]
        price = self.price_text()
        full = f"{instrument}  {self.timeframe}  {price}"
        variants = [full]
        if self.overlays:
            names = ", ".join(self.OVERLAY_NAMES[name] for name in self.overlays)
            variants.insert(0, f"{full}  [{names}]")
        variants += [
            f"{instrument} {self.timeframe} {price}",
            f"{symbol} {self.timeframe} {price}",
            f"{symbol} {price}",
            symbol,
        ]
        return variants

    def title_text(self) -> str:
        """Instrument, timeframe, the live price and the overlays (the full title)."""
        return self.title_variants()[0]

    def signal_text(self) -> str:
        """What is marked: side, scanner, bar time, reason, stop and target."""
        signal = self.signal
        if signal is None:
            return ""
        minutes = timeframe_minutes(signal.timeframe or self.timeframe)
        when = _format_time(signal.ts_us, minutes)
        if signal.exit_ts_us is not None:  # the exit's day left out when it is the entry's
            exit_when = _format_time(signal.exit_ts_us, minutes)
            same_day = exit_when[:10] == when[:10] and len(exit_when) > 10
            when += f" → {exit_when[11:] if same_day else exit_when}"
        kind = "signal" if signal.exit_ts_us is None else "trade"
        text = f"{kind}: {signal.side.upper()} {signal.scanner} {when}"
        if signal.reason:
            text += f" — {signal.reason}"
        for name, level in (("stop", signal.stop), ("target", signal.target)):
            if level is not None:
                text += f", {name} {level:,.{self.decimals}f}"
        return text + " (esc clears)"

    def status_text(self) -> str:
        """The signal marked, the historical window shown, and whether history is being
        fetched."""
        parts = [self.signal_text()] if self.signal is not None else []
        if self.history_end is not None:
            minutes = timeframe_minutes(self.timeframe)
            start, end = self.view_range()
            parts.append(
                f"{_format_time(start, minutes)} → {_format_time(end, minutes)}"
                " (history; End for live)"
            )
        if self.loading_history:
            parts.append("loading history…")
        return "  ·  ".join(parts)

    def _update_title(self) -> None:
        self._title_dirty = False
        try:
            title = self.query_one("#chart-title", ChartTitle)
            status = self.query_one("#chart-status", Label)
        except NoMatches:
            return  # the app is closing: its children are removed before the pane
        title.show(self.title_variants())
        status.update(self.status_text())
        status.set_class(self.history_end is not None, "-history")
        status.set_class(self.loading_history, "-loading")
        status.set_class(self.signal is not None, "-signal")

    def render_if_due(self) -> None:
        """The refresh tick (ui.chart_refresh_hz): the title's price, and the chart
        again if what it shows changed."""
        if self._title_dirty and self.is_attached:
            self._update_title()
        self._start_render()

    def render_now(self) -> None:
        """What the user asked for changed (instrument, timeframe, window, overlays,
        signal): drawn at once, or right after the render in flight."""
        self._dirty = True
        if self.is_attached:
            self._update_title()
        self._start_render()

    def is_shown(self) -> bool:
        """On the screen the user sees: its screen is the top one (or under a modal
        dialog, which leaves it in view) and neither it nor a container is hidden."""
        if not self.is_attached:
            return False
        app_screen = self.app.screen
        screen = self.screen
        if screen is not app_screen:
            stack = self.app.screen_stack
            under_modal = isinstance(app_screen, ModalScreen) and len(stack) > 1
            if not (under_modal and stack[-2] is screen):
                return False
        # Not in the screen's last layout: it or a container is display: none.
        return self.is_on_screen

    def _start_render(self) -> None:
        """Draw the chart if it is shown and what it shows changed (the view the user
        chose, its size, or the live bars at the resolution drawn: visible_state); live
        data at most MAX_LIVE_RENDER_HZ, what the user asked for at once."""
        if self.loaded_key is None or not (self._dirty or self._live_dirty):
            return
        if not self._dirty and time.monotonic() - self._last_render_at < 1 / MAX_LIVE_RENDER_HZ:
            return
        if not self.is_shown():
            return  # kept dirty: drawn when shown again
        plot = self.query_one("#chart-plot", Static)
        width, height = plot.content_size.width, plot.content_size.height
        if width < 10 or height < 5:
            return
        bars = self.shown_bars()
        overlays = tuple(self.overlays)
        state = (
            self.loaded_key,
            self.loaded_end,
            width,
            height,
            overlays,
            self.signal,
            self.decimals,
            visible_state(bars, height, overlays),
        )
        self._live_dirty = False
        if state == self._drawn_state:
            self._dirty = False
            return  # e.g. the forming bar moved less than half a row: nothing to redraw
        self._dirty = False
        self._drawn_state = state
        self._draw_chart(
            bars,
            width,
            height,
            timeframe_minutes(self.timeframe),
            overlays,
            list(self.lead),
            self.signal,
            self.decimals,
            self.loaded_key,
        )

    def _draw_chart(
        self,
        bars: list[Bar],
        width: int,
        height: int,
        minutes: int,
        overlays: tuple[str, ...] = (),
        lead: list[Bar] | None = None,
        signal: SignalMark | None = None,
        decimals: int | None = None,
        drawn_key: tuple[str, str] | None = None,
    ) -> None:
        """Build the chart here, on the event loop: 5-40 ms of plotext at most twice a
        second for live data. (A render thread competed with the loop for the
        interpreter and took two to four times as long to show a key's chart.)"""
        started = time.perf_counter()
        try:
            text, drawn_at = _render_text(
                bars, width, height, minutes, overlays, lead or [], signal, decimals
            )
        except Exception:
            self._drawn_state = None  # drawn again next time
            raise
        finally:
            self._last_render_at = time.monotonic()
        self._show_plot(text, (time.perf_counter() - started) * 1000, drawn_at, drawn_key)

    def _show_plot(
        self,
        text: Text,
        elapsed_ms: float,
        signal_drawn_at: int | None,
        drawn_key: tuple[str, str] | None = None,
    ) -> None:
        if not self.is_attached:
            return  # the app is closing
        self.signal_drawn_at = signal_drawn_at
        self.drawn_key = drawn_key
        self.query_one("#chart-plot", Static).update(text)
        self.renders += 1
        self.last_render_ms = elapsed_ms

    def on_resize(self, event: events.Resize) -> None:
        buttons = sum(len(timeframe) + 3 for timeframe in self.timeframes)
        compact = event.size.width - 2 < buttons + TITLE_ROOM
        if compact != self.has_class("-compact"):
            self.set_class(compact, "-compact")
            for button in self.query(".tf-button"):
                button.styles.line_pad = 0 if compact else 1
        self._dirty = True
        # The plot's new size is known after this layout.
        self.call_after_refresh(self._start_render)


# plotext writes only resets and 256-colour foregrounds: read here in a third of the time
# rich's general ANSI decoder takes (which was about 40% of a render).
_SGR = re.compile(r"\x1b\[([0-9;]*)m")
_FOREGROUND = re.compile(r"38;5;(\d+)")
_STYLES: dict[str, Style | None] = {"0": None, "": None}


def ansi_text(chart: str) -> Text:
    """``chart`` (plotext's ANSI text) as rich Text."""
    pieces = _SGR.split(chart)
    plain: list[str] = []
    spans: list[Span] = []
    position = 0
    style: Style | None = None
    for index, piece in enumerate(pieces):
        if index % 2:  # an SGR code
            if piece not in _STYLES:
                match = _FOREGROUND.fullmatch(piece)
                if match is None:
                    return Text.from_ansi(chart, no_wrap=True)  # not plotext's: the long way
                _STYLES[piece] = Style(color=f"color({match[1]})")
            style = _STYLES[piece]
        elif piece:
            plain.append(piece)
            if style is not None:
                spans.append(Span(position, position + len(piece), style))
            position += len(piece)
    return Text("".join(plain).rstrip("\n"), spans=spans, no_wrap=True, end="")


def _render_text(
    bars: list[Bar],
    width: int,
    height: int,
    minutes: int,
    overlays: tuple[str, ...],
    lead: list[Bar],
    signal: SignalMark | None,
    decimals: int | None,
) -> tuple[Text, int | None]:
    """The chart as rich Text, and the open time of the bar
    the signal is drawn at (None: not drawn)."""
    chart = render_candles(bars, width, height, minutes, overlays, lead, signal, decimals)
    position = None if signal is None else signal_position(bars, signal.ts_us, minutes)
    return ansi_text(chart), None if position is None else bars[position].ts_us
