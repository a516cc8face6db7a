"""The chart pane on its own, driven with Pilot over a scripted engine client: what its
toolbar shows at 40 columns, and when it draws (only when what it shows changed, at most
twice a second for live data, never while hidden). The app drives the pane the same
way: bars through add_minute_bar, and render_if_due on a timer."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from conftest import wait_for
from textual.app import App, ComposeResult
from textual.screen import Screen

import sptrader.app
from sptrader.clock import now_us
from sptrader.models import US_PER_MINUTE, Bar
from sptrader.screens.chart import MAX_LIVE_RENDER_HZ, ChartPane, ChartTitle

TIMEFRAMES = ["1m", "5m", "15m", "1h", "4h", "1d"]
INSTRUMENT = "SIM:BTCUSD"


def minute_bars(count: int, price: float = 49_700.0) -> list[Bar]:
    """``count`` closed 1m bars up to the current minute (not included)."""
    now = now_us()
    start = now - now % US_PER_MINUTE - count * US_PER_MINUTE
    bars = []
    for index in range(count):
        close = price + (index % 7 - 3) * 9.5
        bars.append(
            Bar(INSTRUMENT, "1m", start + index * US_PER_MINUTE, price, max(price, close) + 4,
                min(price, close) - 4, close, 1_500.0 + 40 * (index % 5), 12)
        )  # fmt: skip
        price = close
    return bars


class ScriptedClient:
    """The engine calls the chart makes, answered from a list of 1m bars (a timeframe's
    bars are rolled up from them) and a forming bar the test moves."""

    def __init__(self, bars: list[Bar]) -> None:
        self.bars = bars
        last = bars[-1]
        self.forming = Bar(INSTRUMENT, "1m", last.ts_us + US_PER_MINUTE, last.close,
                           last.close + 2, last.close - 2, last.close, 10.0, 3)  # fmt: skip
        self.reads = 0

    def _frame(self, bars: list[Bar]) -> pl.DataFrame:
        return pl.DataFrame(
            {
                "ts": [bar.ts_us for bar in bars],
                "open": [bar.open for bar in bars],
                "high": [bar.high for bar in bars],
                "low": [bar.low for bar in bars],
                "close": [bar.close for bar in bars],
                "volume": [bar.volume for bar in bars],
                "trades": [bar.trades for bar in bars],
            },
            schema_overrides={"ts": pl.Int64},
        ).with_columns(pl.from_epoch("ts", time_unit="us"))

    async def candles(self, instrument, timeframe, *, last=None, start_us=None, end_us=None):
        self.reads += 1
        minutes = {"1m": 1, "5m": 5, "15m": 15, "1h": 60, "4h": 240, "1d": 1440}[timeframe]
        width = minutes * US_PER_MINUTE
        buckets: dict[int, list[Bar]] = {}
        for bar in self.bars:
            buckets.setdefault(bar.ts_us - bar.ts_us % width, []).append(bar)
        rolled = [
            Bar(instrument, timeframe, start, group[0].open, max(b.high for b in group),
                min(b.low for b in group), group[-1].close, sum(b.volume for b in group), 1)
            for start, group in sorted(buckets.items())
        ]  # fmt: skip
        if last is not None:
            rolled = rolled[-last:]
        else:
            rolled = [
                bar
                for bar in rolled
                if (start_us is None or bar.ts_us >= start_us)
                and (end_us is None or bar.ts_us < end_us)
            ]
        return self._frame(rolled)

    def forming_bar(self, instrument: str) -> Bar | None:
        return self.forming if instrument == INSTRUMENT else None

    async def price_decimals(self, instruments: list[str]) -> dict[str, int]:
        return {name: 2 for name in instruments}

    async def data_gaps(self, instrument, start_us, end_us):
        return []

    async def start_backfill(self, instruments, start_us, end_us) -> None:
        return None


class ChartApp(App):
    """The chart pane alone, styled as in the app, refreshed as the app does (at 10 Hz
    here: the pane itself keeps live renders at MAX_LIVE_RENDER_HZ)."""

    CSS_PATH = Path(sptrader.app.__file__).parent / "app.tcss"

    def __init__(self, client: ScriptedClient, overlays=()) -> None:
        super().__init__()
        self.client = client
        self.overlays = overlays

    def compose(self) -> ComposeResult:
        yield ChartPane(self.client, TIMEFRAMES, "1m", 60, overlays=self.overlays, id="chart")

    def on_mount(self) -> None:
        chart = self.query_one(ChartPane)
        chart.show_instrument(INSTRUMENT)
        self.set_interval(0.1, chart.render_if_due)


def move_forming(client: ScriptedClient, chart: ChartPane, close: float) -> None:
    """A new forming-bar price, handed over as the app hands it (BarUpdated)."""
    bar = client.forming
    client.forming = Bar(bar.instrument, "1m", bar.ts_us, bar.open, max(bar.high, close),
                         min(bar.low, close), close, bar.volume + 1, bar.trades + 1)  # fmt: skip
    chart.add_minute_bar(client.forming)


def painted_line(app: App, widget) -> str:
    """The text painted on screen on the widget's first row, across the widget."""
    region = widget.region
    strips = app.screen._compositor.render_strips()
    return "".join(segment.text for segment in strips[region.y].crop(region.x, region.right))


@pytest.mark.parametrize("size", [(40, 14), (44, 12), (60, 20), (120, 40)])
async def test_title_and_timeframe_buttons_fit_the_pane(size) -> None:
    client = ScriptedClient(minute_bars(90))
    app = ChartApp(client, overlays=("ma",))
    async with app.run_test(size=size) as pilot:
        chart = app.query_one(ChartPane)
        await wait_for(pilot, lambda: chart.renders >= 1, what="the first render")
        await pilot.pause()
        title = app.query_one(ChartTitle)
        shown = title.shown()
        # A whole variant (never cut mid-word), with the symbol and the live price at
        # the instrument's precision (price_decimals says 2: thousands separators).
        assert shown in title.variants
        assert "BTCUSD" in shown
        assert f"{client.forming.close:,.2f}" in shown
        if size[0] >= 60:
            assert shown.startswith(f"{INSTRUMENT}  1m  ")
        # Every button inside the pane, none over another or over the title.
        buttons = list(chart.query(".tf-button"))
        right = title.region.right
        for button in buttons:
            assert button.region.width >= len(str(button.label))
            assert button.region.x >= right
            assert button.region.right <= chart.region.right - 1  # inside the border
            right = button.region.right
        # And painted: the toolbar row reads the title, then every timeframe.
        line = painted_line(app, app.query_one("#chart-toolbar"))
        assert line.lstrip().startswith(shown)
        assert line.split()[-len(TIMEFRAMES) :] == TIMEFRAMES


async def test_no_render_when_nothing_changed_and_at_most_twice_a_second() -> None:
    client = ScriptedClient(minute_bars(90))
    app = ChartApp(client)
    async with app.run_test(size=(80, 30)) as pilot:
        chart = app.query_one(ChartPane)
        await wait_for(pilot, lambda: chart.renders >= 1, what="the first render")
        await pilot.pause(0.7)
        renders = chart.renders
        # Ten refreshes with nothing new, then a forming bar that moves by a cent
        # (far less than a text row of a ~60-dollar range): nothing drawn.
        await pilot.pause(1.0)
        assert chart.renders == renders
        for _ in range(5):
            move_forming(client, chart, client.forming.close + 0.01)
            await pilot.pause(0.15)
        assert chart.renders == renders
        # The title follows every price even so.
        assert f"{client.forming.close:,.2f}" in app.query_one(ChartTitle).shown()
        # A move of many rows is drawn, at the next refresh.
        move_forming(client, chart, client.forming.close + 40)
        await wait_for(pilot, lambda: chart.renders == renders + 1, 2, "the move drawn")
        # Moving at 20 Hz for 2 s: drawn at most MAX_LIVE_RENDER_HZ.
        renders = chart.renders
        for step in range(40):
            move_forming(client, chart, client.forming.close + (15 if step % 2 else -15))
            await pilot.pause(0.05)
        assert 1 <= chart.renders - renders <= 2 * MAX_LIVE_RENDER_HZ + 1


async def test_no_render_while_hidden() -> None:
    client = ScriptedClient(minute_bars(90))
    app = ChartApp(client)
    async with app.run_test(size=(80, 30)) as pilot:
        chart = app.query_one(ChartPane)
        await wait_for(pilot, lambda: chart.renders >= 1, what="the first render")
        await pilot.pause(0.7)

        # Another screen on top (the Data, Strategies or Journal screen).
        await app.push_screen(Screen())
        renders = chart.renders
        for _ in range(8):
            move_forming(client, chart, client.forming.close + 30)
            await pilot.pause(0.15)
        assert chart.renders == renders
        app.pop_screen()
        await wait_for(pilot, lambda: chart.renders == renders + 1, 2, "drawn when shown")

        # The pane not displayed (a layout that tabs it away).
        chart.display = False
        await pilot.pause()
        renders = chart.renders
        for _ in range(8):
            move_forming(client, chart, client.forming.close + 30)
            await pilot.pause(0.15)
        assert chart.renders == renders
        chart.display = True
        await wait_for(pilot, lambda: chart.renders == renders + 1, 2, "drawn when displayed")


async def test_a_timeframe_key_draws_from_the_cache_at_once() -> None:
    """Shown once (or read ahead), a timeframe's window is drawn without waiting for the
    engine; the read that follows changes nothing here, so nothing more is drawn."""
    client = ScriptedClient(minute_bars(300))
    app = ChartApp(client)
    async with app.run_test(size=(80, 30)) as pilot:
        chart = app.query_one(ChartPane)
        await wait_for(pilot, lambda: chart.renders >= 1, what="the first render")
        # The shown instrument's other timeframes are read ahead after a moment.
        await wait_for(pilot, lambda: len(chart._window_cache) == len(TIMEFRAMES), 5, "read ahead")
        draws: list[tuple[tuple[str, str] | None, int]] = []
        draw = chart._draw_chart

        def counted(*args, **kwargs):
            draws.append((chart.loaded_key, client.reads))
            return draw(*args, **kwargs)

        chart._draw_chart = counted
        reads = client.reads
        chart.show_timeframe("5m")
        await wait_for(pilot, lambda: chart.loads >= 2, what="the 5m read")
        await pilot.pause(0.3)
        # Drawn once, before the engine was asked; the read that followed drew nothing.
        assert draws == [((INSTRUMENT, "5m"), reads)]
        assert chart.drawn_key == (INSTRUMENT, "5m")
