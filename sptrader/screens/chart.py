"""Chart pane: candlesticks and volume of one instrument in one timeframe, with the
forming bar updating live. Timeframe buttons (or keys 1..6) switch the timeframe.

State: the complete bars of the window, plus the 1m bars of the newest (current)
bucket keyed by minute, so the current candle of any timeframe is rebuilt exactly
from its minutes as forming and closed 1m bars arrive.
"""

from __future__ import annotations

import time

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, Label, Static

from sptrader.charting import render_candles
from sptrader.client import EngineClient
from sptrader.formatting import decimals_of
from sptrader.models import US_PER_MINUTE, Bar, timeframe_minutes


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


class ChartPane(Vertical):
    def __init__(
        self, client: EngineClient, timeframes: list[str], timeframe: str, bars: int, **kwargs
    ) -> None:
        super().__init__(**kwargs)
        self.client = client
        self.timeframes = timeframes
        self.timeframe = timeframe
        self.instrument: str | None = None
        self.window = bars
        self.complete: list[Bar] = []
        self.current_minutes: dict[int, Bar] = {}
        self.bucket_start = 0
        self.loaded_key: tuple[str, str] | None = None
        self.renders = 0
        self.last_render_ms = 0.0
        self._dirty = False
        self._rendering = False
        self._decimals = 5
        self.border_title = "Chart"

    def compose(self) -> ComposeResult:
        with Horizontal(id="chart-toolbar"):
            yield Label("", id="chart-title")
            for timeframe in self.timeframes:
                button = Button(timeframe, id=f"tf-{timeframe}", classes="tf-button", compact=True)
                if timeframe == self.timeframe:
                    button.add_class("-current")
                yield button
        yield Static("loading…", id="chart-plot")

    # --- what to show -----------------------------------------------------------------

    def show_instrument(self, instrument: str) -> None:
        if instrument != self.instrument:
            self.instrument = instrument
            self.reload()

    def show_timeframe(self, timeframe: str) -> None:
        if timeframe not in self.timeframes or timeframe == self.timeframe:
            return
        self.timeframe = timeframe
        for button in self.query(".tf-button"):
            button.set_class(button.id == f"tf-{timeframe}", "-current")
        self.reload()

    @on(Button.Pressed, ".tf-button")
    def _timeframe_clicked(self, event: Button.Pressed) -> None:
        event.stop()
        self.show_timeframe((event.button.id or "").removeprefix("tf-"))

    def reload(self) -> None:
        self._update_title()
        if self.instrument is not None:
            self._load_bars(self.instrument, self.timeframe)

    @work(exclusive=True, group="chart-load", exit_on_error=False)
    async def _load_bars(self, instrument: str, timeframe: str) -> None:
        minutes = timeframe_minutes(timeframe)
        frame = await self.client.candles(instrument, timeframe, last=self.window)
        bars = _rows_to_bars(instrument, timeframe, frame)
        bucket_start = bars[-1].ts_us if bars else 0
        current: dict[int, Bar] = {}
        if bars:
            minute_frame = await self.client.candles(
                instrument, "1m", start_us=bucket_start, end_us=None
            )
            current = {bar.ts_us: bar for bar in _rows_to_bars(instrument, "1m", minute_frame)}
            self._decimals = decimals_of([bar.close for bar in bars[-50:]])
        if (instrument, timeframe) != (self.instrument, self.timeframe):
            return  # the user moved on while this was loading
        forming = self.client.forming_bar(instrument)
        self.complete = bars[:-1]
        self.bucket_start = bucket_start
        self.current_minutes = current
        self.loaded_key = (instrument, timeframe)
        if forming is not None:
            self.add_minute_bar(forming, minutes)
        self._dirty = True
        self._update_title()
        self.render_if_due()

    # --- live data --------------------------------------------------------------------

    def add_minute_bar(self, bar: Bar, minutes: int | None = None) -> None:
        """A forming or closed 1m bar of the shown instrument."""
        if self.loaded_key is None or bar.instrument != self.instrument:
            return
        minutes = minutes or timeframe_minutes(self.timeframe)
        width = minutes * US_PER_MINUTE
        start = bar.ts_us - bar.ts_us % width
        if start < self.bucket_start:
            return
        if start > self.bucket_start:
            if self.current_minutes:
                self.complete.append(self._current_bar())
                del self.complete[: max(0, len(self.complete) - self.window + 1)]
            self.bucket_start = start
            self.current_minutes = {}
        self.current_minutes[bar.ts_us] = bar
        self._dirty = True

    def _current_bar(self) -> Bar:
        minutes = [self.current_minutes[ts] for ts in sorted(self.current_minutes)]
        return _combine(minutes[0].instrument, self.timeframe, self.bucket_start, minutes)

    def shown_bars(self) -> list[Bar]:
        if not self.current_minutes:
            return list(self.complete)
        return [*self.complete, self._current_bar()]

    # --- drawing ----------------------------------------------------------------------

    def _update_title(self) -> None:
        title = f"{self.instrument or '—'}  {self.timeframe}"
        if self.current_minutes:
            title += f"  {self._current_bar().close:,.{self._decimals}f}"
        self.query_one("#chart-title", Label).update(title)

    def render_if_due(self) -> None:
        """Called at the chart refresh rate: redraw only if something changed."""
        if not self._dirty or self._rendering or self.loaded_key is None or not self.is_attached:
            return
        plot = self.query_one("#chart-plot", Static)
        width, height = plot.content_size.width, plot.content_size.height
        if width < 10 or height < 5:
            return
        self._dirty = False
        self._rendering = True
        self._update_title()
        self._draw_chart(self.shown_bars(), width, height, timeframe_minutes(self.timeframe))

    @work(thread=True, exclusive=True, group="chart-render", exit_on_error=False)
    def _draw_chart(self, bars: list[Bar], width: int, height: int, minutes: int) -> None:
        started = time.perf_counter()
        try:
            text = Text.from_ansi(render_candles(bars, width, height, minutes), no_wrap=True)
        finally:
            self.app.call_from_thread(self._rendered_done)
        self.app.call_from_thread(self._show_plot, text, (time.perf_counter() - started) * 1000)

    def _rendered_done(self) -> None:
        self._rendering = False

    def _show_plot(self, text: Text, elapsed_ms: float) -> None:
        if not self.is_attached:
            return  # the app is closing
        self.query_one("#chart-plot", Static).update(text)
        self.renders += 1
        self.last_render_ms = elapsed_ms

    def on_resize(self) -> None:
        self._dirty = True
