"""The chart's own axis labels (never plotext's, which fall into 4.97e4), the rows each
panel gets in a pane of any height, and the state that decides whether live data needs
a new render."""

from __future__ import annotations

import math
import re

import pytest
from rich.text import Text

from sptrader.charting import (
    LOWER_MIN_ROWS,
    chart_layout,
    compact_number,
    nice_ticks,
    price_labels,
    render_candles,
    visible_state,
)
from sptrader.models import Bar

# 4.97e4, 9.0e4, 1.8e3, 1e+05: what plotext's own labels showed.
SCIENTIFIC = re.compile(r"\d(\.\d+)?e[+-]?\d")


def trending_bars(count: int, start: float, step: float, volume: float) -> list[Bar]:
    bars = []
    price = start
    for index in range(count):
        swing = step * math.sin(index / 4)
        close = price + step + swing
        bars.append(
            Bar(
                "SIM:X",
                "1m",
                index * 60_000_000,
                price,
                max(price, close) + step / 2,
                min(price, close) - step / 2,
                close,
                volume * (1 + (index % 5) / 4),
                5,
            )
        )
        price = close
    return bars


@pytest.mark.parametrize(
    ("low", "high", "count", "smallest", "expected"),
    [
        (49_610.0, 49_790.0, 4, 0.01, [49_650.0, 49_700.0, 49_750.0]),
        (1.06381, 1.06472, 4, 1e-5, [1.064, 1.0645]),
        (
            1.06381,
            1.06472,
            9,
            1e-5,
            [1.064, 1.0642, 1.0644, 1.0646],
        ),
        (0.0, 93_000.0, 2, 0.0, [0.0, 50_000.0]),
        (-0.00031, 0.00042, 3, 0.0, [-0.0002, 0.0, 0.0002, 0.0004]),
        # Never closer than the instrument's increment (0.01): one tick, not five
        # labels that all read 100.00.
        (100.001, 100.004, 5, 0.01, []),
    ],
)
def test_nice_ticks_are_round_and_inside(low, high, count, smallest, expected) -> None:
    ticks = nice_ticks(low, high, count, smallest)
    assert ticks == pytest.approx(expected)
    assert all(low <= tick <= high for tick in ticks)


@pytest.mark.parametrize(
    ("ticks", "decimals", "expected"),
    [
        ([49_650.0, 49_700.0, 49_750.0], 2, ["49,650", "49,700", "49,750"]),
        ([1.0642, 1.0644, 1.0646], 5, ["1.0642", "1.0644", "1.0646"]),
        # At most the instrument's decimals, even when the step would need more.
        ([1.06421, 1.06422], 4, ["1.0642", "1.0642"]),
        ([150.0, 150.5, 151.0], 3, ["150.0", "150.5", "151.0"]),
        ([1_000_000.0, 2_000_000.0], 2, ["1,000,000", "2,000,000"]),
        ([-0.0002, 0.0, 0.0002], 12, ["-0.0002", "0.0000", "0.0002"]),
    ],
)
def test_price_labels_use_separators_and_the_instruments_precision(
    ticks, decimals, expected
) -> None:
    assert price_labels(ticks, decimals) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0, "0"),
        (950, "950"),
        (1_000, "1k"),
        (1_800, "1.8k"),
        (12_500, "12.5k"),
        (90_000, "90k"),
        (125_000, "125k"),
        (999_999, "1M"),
        (2_100_000, "2.1M"),
        (3_000_000_000, "3B"),
        (12.5, "12.5"),
        (0.25, "0.25"),
    ],
)
def test_compact_number(value: float, expected: str) -> None:
    assert compact_number(value) == expected


@pytest.mark.parametrize(
    ("start", "step", "volume", "decimals", "price_label", "volume_label"),
    [
        # BTC near 49,700 with volumes near 90,000: 4.97e4 and 9.0e4 before.
        (49_500.0, 12.0, 60_000.0, 2, re.compile(r"^\s*49,\d00┤"), re.compile(r"\d+k┤")),
        # EURUSD with volumes near 1,800: 1.8e3 before.
        (1.0630, 0.00004, 1_500.0, 5, re.compile(r"^\s*1\.06\d{1,3}┤"), re.compile(r"\d(\.\d)?k┤")),
    ],
)
def test_axes_never_use_scientific_notation(
    start, step, volume, decimals, price_label, volume_label
) -> None:
    bars = trending_bars(120, start, step, volume)
    for width, height in ((38, 10), (74, 40), (134, 52)):
        lines = Text.from_ansi(render_candles(bars, width, height, 1, decimals=decimals)).plain
        assert not SCIENTIFIC.search(lines), lines
        rows = lines.splitlines()
        assert any(price_label.search(row) for row in rows), lines
        if chart_layout(height).volume:
            assert any(volume_label.search(row) for row in rows), lines


def test_every_panel_lines_up() -> None:
    """The y labels of every panel are padded to one width: the boxes start in the same
    column, so a bar's candle, RSI and volume are one above the other."""
    bars = trending_bars(200, 49_500.0, 12.0, 60_000.0)
    text = render_candles(bars[-120:], 90, 48, 1, ["rsi", "macd"], bars[:-120], decimals=2)
    rows = Text.from_ansi(text).plain.splitlines()
    corners = {row.index("┌") for row in rows if "┌" in row}
    assert len(corners) == 1 and sum("┌" in row for row in rows) == 4  # price, RSI, MACD, volume


@pytest.mark.parametrize("height", range(8, 61, 4))
@pytest.mark.parametrize("overlays", [(), ("rsi",), ("ma", "rsi", "macd")])
def test_the_chart_fills_its_height_with_readable_panels(height: int, overlays) -> None:
    bars = trending_bars(200, 100.0, 0.2, 100.0)
    layout = chart_layout(height, overlays)
    assert layout.price >= 2
    assert all(rows >= LOWER_MIN_ROWS for rows in layout.lower.values())
    assert set(layout.lower) | set(layout.hidden) == {"rsi", "macd"} & set(overlays)
    text = render_candles(bars[-120:], 60, height, 1, overlays, bars[:-120], decimals=2)
    lines = Text.from_ansi(text).plain.rstrip("\n").split("\n")
    assert len(lines) == height
    if layout.hidden:
        assert lines[-1].endswith("hidden: pane too short")


def test_a_short_pane_hides_the_rsi_with_a_note() -> None:
    bars = trending_bars(200, 100.0, 0.2, 100.0)
    text = render_candles(bars[-60:], 38, 10, 1, ["rsi"], bars[:-60], decimals=2)
    lines = Text.from_ansi(text).plain.rstrip("\n").split("\n")
    assert lines[-1] == "RSI hidden: pane too short"
    assert "RSI14" not in text
    tall = render_candles(bars[-60:], 38, 30, 1, ["rsi"], bars[:-60], decimals=2)
    assert "RSI14" in tall and "hidden" not in tall


def test_visible_state_changes_only_with_what_is_drawn() -> None:
    bars = trending_bars(60, 100.0, 0.2, 100.0)
    low = min(bar.low for bar in bars[:-1])
    high = max(bar.high for bar in bars[:-1])
    half_row = (high - low) / (2 * chart_layout(30).price)
    last = bars[-1]

    def with_close(close: float) -> list[Bar]:
        moved = Bar(
            last.instrument,
            last.timeframe,
            last.ts_us,
            last.open,
            max(last.high, close),
            min(last.low, close),
            close,
            last.volume,
            last.trades,
        )
        return [*bars[:-1], moved]

    state = visible_state(bars, 30)
    # Snap the close to the middle of its half-row cell, then move within the cell.
    cell = math.floor(last.close / half_row)
    middle = (cell + 0.5) * half_row
    assert visible_state(with_close(middle), 30) == visible_state(
        with_close(middle + half_row * 0.3), 30
    )
    assert visible_state(with_close(middle), 30) != visible_state(with_close(middle + half_row), 30)
    # A new bar is always drawn.
    assert visible_state(bars[1:], 30) != state
    assert visible_state([*bars, last], 30) != state
