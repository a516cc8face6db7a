"""Chart overlays: the series drawn equal add_indicators' columns (warm-up from the lead
bars), render_candles draws them with their legend labels, and the chart's toggle keys
switch them on and off and re-render. A signal's marker is drawn at its bar."""

from __future__ import annotations

import math
from pathlib import Path

import polars as pl
import pytest
from rich.text import Text
from test_app_data import WINDOW, running, wait_for

from sptrader.app import SptraderApp
from sptrader.charting import SignalMark, overlay_series, render_candles, signal_position
from sptrader.indicators import add_indicators
from sptrader.models import Bar
from sptrader.screens import ChartPane


def make_bars(count: int) -> list[Bar]:
    bars = []
    price = 100.0
    for i in range(count):
        open_ = price
        price += math.sin(i / 3) + 0.1 * math.cos(i * 1.7)
        bars.append(
            Bar(
                "SIM:X",
                "1m",
                i * 60_000_000,
                open_,
                max(open_, price) + 0.2,
                min(open_, price) - 0.2,
                price,
                10.0 + i % 4,
                3,
            )
        )
    return bars


def test_overlay_series_equal_the_indicator_columns() -> None:
    bars = make_bars(700)
    frame = pl.DataFrame({"close": [bar.close for bar in bars]})
    expected = add_indicators(frame, ["ema20", "sma50", "bb20", "rsi14", "macd"]).tail(80)
    series = overlay_series(bars[-80:], ["ma", "bb", "rsi", "macd"], bars[:-80])
    assert set(series) == {
        "ema20",
        "sma50",
        "bb20_upper",
        "bb20_middle",
        "bb20_lower",
        "rsi14",
        "macd",
        "macd_signal",
        "macd_hist",
    }
    for column, values in series.items():
        assert len(values) == 80
        assert values == pytest.approx(expected[column].to_list(), rel=1e-12), column
        assert None not in values  # the lead covers the warm-up


def test_without_lead_the_warm_up_is_null() -> None:
    series = overlay_series(make_bars(30), ["ma"])
    assert series["ema20"][18] is None and series["ema20"][19] is not None
    assert all(value is None for value in series["sma50"])
    assert overlay_series(make_bars(30), []) == {}


def test_render_candles_draws_the_overlays_with_legends() -> None:
    bars = make_bars(200)
    plain = render_candles(bars[-80:], 140, 50, 1)
    assert "EMA20" not in plain and "RSI14" not in plain
    text = render_candles(bars[-80:], 140, 50, 1, ["ma", "bb", "rsi", "macd"], bars[:-80])
    for label in ("EMA20", "SMA50", "BB20", "RSI14", "MACD", "signal"):
        assert label in text, label
    # Each legend on a row of its own above its panel's box, never over the candles or
    # the axis.
    lines = Text.from_ansi(text).plain.splitlines()
    for label in ("EMA20", "RSI14", "MACD"):
        row = next(index for index, line in enumerate(lines) if label in line)
        assert "┌" in lines[row + 1] and not any(glyph in lines[row] for glyph in "│┤┌└")
    # A small pane still renders (the volume panel gives way).
    assert "┌" in render_candles(bars[-40:], 60, 16, 1, ["rsi", "macd"], bars[:-40])


def test_signal_position_finds_the_bar_holding_the_time() -> None:
    bars = make_bars(10)
    assert signal_position(bars, bars[4].ts_us, 1) == 4
    assert signal_position(bars, bars[4].ts_us + 59_000_000, 1) == 4
    assert signal_position(bars, bars[0].ts_us - 1, 1) is None
    assert signal_position(bars, bars[-1].ts_us + 60_000_000, 1) is None
    # A 5m bar holds the 1m signal times inside it; a hole in the bars holds none.
    five = [bar for bar in make_bars(60) if bar.ts_us % 300_000_000 == 0]
    assert signal_position(five, 7 * 60_000_000, 5) == 1
    assert signal_position([bars[0], bars[5]], bars[3].ts_us, 1) is None
    assert signal_position([], 0, 1) is None


@pytest.mark.parametrize(
    ("side", "glyph", "colour"), [("buy", "▲", 2), ("sell", "▼", 1), ("exit", "◆", 11)]
)
def test_render_candles_marks_a_signal_at_its_bar(side: str, glyph: str, colour: int) -> None:
    bars = make_bars(80)
    bar = bars[50]
    stop = bar.low - 1
    mark = SignalMark("SIM:X", bar.ts_us, side, "cross", "why", stop=stop, target=None)
    text = render_candles(bars, 140, 40, 1, ["ma"], [], mark, decimals=2)
    assert text.count(glyph) == 1
    # Drawn in its colour (green, red, yellow).
    before = text[: text.index(glyph)]
    assert before[before.rindex("\x1b[") :].startswith(f"\x1b[38;5;{colour}m")
    assert f"stop {stop:.2f}" in text and "target" not in text  # at the instrument's precision
    # Below the bar's low for a buy, above its high otherwise: the glyph's row against
    # the rows of the candles drawn in its column.
    lines = Text.from_ansi(text).plain.splitlines()
    row = next(index for index, line in enumerate(lines) if glyph in line)
    column = lines[row].index(glyph)
    candle = [
        index
        for index, line in enumerate(lines[: row + 12])
        if index > row - 12 and line[column : column + 1] in ("│", "█")
    ]
    assert candle
    assert row > max(candle) if side == "buy" else row < min(candle)
    # Not drawn when its bar is not shown.
    outside = SignalMark("SIM:X", bars[-1].ts_us + 3_600_000_000, side, "cross")
    assert glyph not in render_candles(bars, 140, 40, 1, [], [], outside)


@pytest.fixture
def app(tmp_path: Path) -> SptraderApp:
    from test_app_data import app_settings

    home = tmp_path / "home"
    home.mkdir()
    return SptraderApp(app_settings(home))


async def test_toggle_keys_switch_overlays_and_rerender(app: SptraderApp) -> None:
    async with running(app) as pilot:
        chart = app.query_one(ChartPane)
        await pilot.press("c")
        assert chart.has_focus and chart.overlays == []
        await wait_for(pilot, lambda: chart.renders > 0, what="a first render")
        for key, name, label in (
            ("m", "ma", "EMA20 SMA50"),
            ("B", "bb", "BB20"),
            ("i", "rsi", "RSI14"),
            ("M", "macd", "MACD"),
        ):
            renders = chart.renders
            await pilot.press(key)
            assert name in chart.overlays
            assert label in chart.title_text()
            await wait_for(pilot, lambda r=renders: chart.renders > r, what=f"a render with {name}")
        assert chart.overlays == ["ma", "bb", "rsi", "macd"]
        await wait_for(pilot, lambda: chart.lead_wanted > 0 and chart.loaded_end is None)
        assert len(chart.shown_bars()) >= WINDOW  # the lead is not shown
        assert len(chart.shown_bars()) <= WINDOW
        renders = chart.renders
        await pilot.press("M")
        assert chart.overlays == ["ma", "bb", "rsi"]
        assert "MACD" not in chart.title_text()
        await wait_for(pilot, lambda: chart.renders > renders, what="a render without MACD")
        await pilot.press("m", "B", "i")
        assert chart.overlays == []
        assert "[" not in chart.title_text()
