"""Candlestick and volume charts as ANSI text, drawn with plotext.

No textual here: the chart widget renders in a worker thread and shows the text.
plotext keeps one global figure, so callers must not render from two threads at once.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sptrader.models import US_PER_MINUTE, Bar

_render_lock = threading.Lock()


@dataclass(frozen=True, slots=True)
class SignalMark:
    """A scanner's signal marked on the chart at its bar (``ts_us``: the bar's open time
    in the scanner's ``timeframe``, None when the scanner is no longer configured)."""

    instrument: str
    ts_us: int
    side: str  # buy, sell or exit
    scanner: str
    reason: str = ""
    stop: float | None = None
    target: float | None = None
    timeframe: str | None = None


# How each side is marked: glyph, colour, and whether it sits below the low (else above
# the high).
SIGNAL_GLYPHS: dict[str, tuple[str, str, bool]] = {
    "buy": ("▲", "green", True),
    "sell": ("▼", "red", False),
    "exit": ("◆", "yellow", False),
}


def signal_position(bars: Sequence[Bar], ts_us: int, minutes: int) -> int | None:
    """The index of the bar of ``bars`` (``minutes`` wide, in time order) whose span holds
    ``ts_us``; None when no shown bar does."""
    width = minutes * US_PER_MINUTE
    for index in range(len(bars) - 1, -1, -1):
        start = bars[index].ts_us
        if start <= ts_us:
            return index if ts_us < start + width else None
    return None


# Chart overlays, in toggle order: name -> (indicator specs, legend label of each column).
# "ma" and "bb" are drawn over the candles; "rsi" and "macd" each get a panel of their
# own between the candles and the volume.
OVERLAYS: dict[str, tuple[tuple[str, ...], dict[str, str]]] = {
    "ma": (("ema20", "sma50"), {"ema20": "EMA20", "sma50": "SMA50"}),
    "bb": (
        ("bb20",),
        {"bb20_upper": "BB20 up", "bb20_middle": "BB20 mid", "bb20_lower": "BB20 low"},
    ),
    "rsi": (("rsi14",), {"rsi14": "RSI14"}),
    "macd": (("macd",), {"macd": "MACD", "macd_signal": "signal", "macd_hist": "hist"}),
}
PRICE_OVERLAYS = ("ma", "bb")
PANEL_OVERLAYS = ("rsi", "macd")


def overlay_specs(overlays: Sequence[str]) -> list[str]:
    """The indicator specs the given overlays need."""
    return [spec for name in overlays for spec in OVERLAYS[name][0]]


def overlay_lookback(overlays: Sequence[str]) -> int:
    """Bars to read before the window so the overlays' first shown values are settled."""
    from sptrader.indicators import max_lookback, parse_specs

    specs = overlay_specs(overlays)
    return max_lookback(parse_specs(specs)) if specs else 0


def overlay_series(
    bars: Sequence[Bar], overlays: Sequence[str], lead: Sequence[Bar] = ()
) -> dict[str, list[float | None]]:
    """Indicator column -> its values over ``bars`` (null in the warm-up), computed with
    :func:`sptrader.indicators.add_indicators` over ``lead`` + ``bars`` (``lead``: the
    bars just before the window, for the warm-up)."""
    specs = overlay_specs(overlays)
    if not specs or not bars:
        return {}
    import polars as pl

    from sptrader.indicators import add_indicators, parse_spec

    rows = [*lead, *bars]
    frame = pl.DataFrame(
        {
            "ts": [bar.ts_us for bar in rows],
            "open": [float(bar.open) for bar in rows],
            "high": [float(bar.high) for bar in rows],
            "low": [float(bar.low) for bar in rows],
            "close": [float(bar.close) for bar in rows],
            "volume": [float(bar.volume) for bar in rows],
            "trades": [int(bar.trades) for bar in rows],
        }
    ).with_columns(pl.from_epoch("ts", time_unit="us"))
    result = add_indicators(frame, specs).tail(len(bars))
    columns = [column for spec in specs for column in parse_spec(spec).columns]
    return {column: result[column].to_list() for column in columns}


def _line(panel, values: Sequence[float | None], label: str | None = None, marker=None):
    """A line through the non-null values (x = bar position)."""
    points = [(x, y) for x, y in enumerate(values) if y is not None and y == y]
    if not points:
        return
    signal = panel.signal([x for x, _ in points], [y for _, y in points], marker=marker)
    signal.lines(True)
    if label:
        signal.label(label)
    panel.draw(signal)


def _labels(bars: Sequence[Bar], positions: list[int], minutes: int) -> list[str]:
    form = "%m-%d" if minutes >= 1440 else "%m-%d %H:%M" if minutes >= 60 else "%H:%M"
    return [datetime.fromtimestamp(bars[i].ts_us / 1e6, tz=UTC).strftime(form) for i in positions]


def _mark_signal(plotext, candles, bars: Sequence[Bar], mark: SignalMark, index: int, rows: int):
    """The signal's glyph below the low (buy) or above the high of bar ``index``, and
    short dashed, labelled lines at its stop and target from that bar on."""
    levels = [level for level in (mark.stop, mark.target) if level is not None]
    top = max([bar.high for bar in bars] + levels)
    bottom = min([bar.low for bar in bars] + levels)
    # About one text row of the price panel, so the glyph clears the candle's wick.
    offset = (top - bottom) / max(4, rows - 3) or abs(bars[index].close) * 1e-4 or 1.0
    glyph, colour, below = SIGNAL_GLYPHS.get(mark.side, ("✕", "magenta", False))
    bar = bars[index]
    price = bar.low - offset if below else bar.high + offset
    candles.draw(
        candles.signal([index], [price], marker=plotext.marker(glyph, plotext.pixel(colour)))
    )
    last = len(bars) - 1
    span = max(3, len(bars) // 12)
    start, end = max(0, index - 1), min(last, index + span)
    for name, level, tint in (("stop", mark.stop, "red"), ("target", mark.target, "green")):
        if level is None:
            continue
        xs = list(range(start, end + 1))
        dashes = candles.signal(
            xs, [level] * len(xs), marker=plotext.marker("╌", plotext.pixel(tint))
        )
        dashes.lines(True)
        candles.draw(dashes)
        label = plotext.colorize(f" {name} {level:g} ", plotext.pixel(tint))
        # The label after the dashes, or before them when the bar is near the right edge.
        if end + 1 + len(bars) // 6 <= last:
            candles.draw(candles.text(end + 1, level, label, alignment="left"))
        else:
            candles.draw(candles.text(max(0, start - 1), level, label, alignment="right"))


def render_candles(
    bars: Sequence[Bar],
    width: int,
    height: int,
    minutes: int,
    overlays: Sequence[str] = (),
    lead: Sequence[Bar] = (),
    signal: SignalMark | None = None,
) -> str:
    """Candles on top, volume bars underneath, x labelled with bar open times (UTC).

    ``overlays`` (names of :data:`OVERLAYS`): moving averages and Bollinger bands are
    drawn over the candles; RSI (with 30/70 guides) and MACD (line, signal, histogram)
    each get a panel between the candles and the volume. ``lead``: bars before the
    window, read for the indicators' warm-up (not drawn). ``signal``: marked at its bar
    (see :data:`SIGNAL_GLYPHS`) when that bar is shown."""
    import plotext  # about 65 ms to import: not on the way to the first paint

    series = overlay_series(bars, overlays, lead)
    lower = [name for name in PANEL_OVERLAYS if name in overlays]

    width = max(width, 20)
    height = max(height, 8)
    with _render_lock:
        fig = plotext.figure
        fig.clear()
        plotext.terminal.limit(False, False)
        fig.plot_size(width, height)
        if not bars:
            fig.theme("simple")
            fig.canvas("default")
            fig.title("no bars stored yet")
            return fig.build().string()
        volume_height = max(4, height // 4)
        lower_height = max(5, height // 4) if lower else 0
        price_height = height - volume_height - lower_height * len(lower)
        if lower and price_height < 8:  # small pane: the volume panel gives way
            volume_height = 0
            price_height = height - lower_height * len(lower)
        rows = 1 + len(lower) + (1 if volume_height else 0)
        fig.subplots(rows, 1)
        candles = fig.subplot(1, 1)
        candles.plot_size(width, max(4, price_height))
        panels = [candles]
        lower_panels = {}
        for index, name in enumerate(lower):
            panel = fig.subplot(2 + index, 1)
            panel.plot_size(width, lower_height)
            lower_panels[name] = panel
            panels.append(panel)
        volume = None
        if volume_height:
            volume = fig.subplot(rows, 1)
            volume.plot_size(width, volume_height)
            panels.append(volume)
        positions = list(range(len(bars)))
        for panel in panels:
            panel.theme("simple")
            panel.canvas("default")
        candles.draw(
            candles.candlestick(
                {
                    "date": positions,
                    "open": [bar.open for bar in bars],
                    "close": [bar.close for bar in bars],
                    "high": [bar.high for bar in bars],
                    "low": [bar.low for bar in bars],
                }
            )
        )
        for name in PRICE_OVERLAYS:
            if name in overlays:
                for column, label in OVERLAYS[name][1].items():
                    _line(candles, series[column], label)
        if any(name in overlays for name in PRICE_OVERLAYS):
            candles.legend(True)
        index = None if signal is None else signal_position(bars, signal.ts_us, minutes)
        if signal is not None and index is not None:
            _mark_signal(plotext, candles, bars, signal, index, max(4, price_height))
        last = max(1, len(bars) - 1)
        if "rsi" in lower_panels:
            panel = lower_panels["rsi"]
            _line(panel, series["rsi14"], "RSI14")
            for guide in (30.0, 70.0):
                _line(panel, [guide] * (last + 1), marker="dot")
            panel.ruler(1).lim(0, 100)
            panel.legend(True)
        if "macd" in lower_panels:
            panel = lower_panels["macd"]
            hist = [(x, y) for x, y in enumerate(series["macd_hist"]) if y is not None]
            if hist:
                panel.draw(panel.bar([x for x, _ in hist], [y for _, y in hist], marker="full"))
            _line(panel, series["macd"], "MACD")
            _line(panel, series["macd_signal"], "signal")
            panel.legend(True)
        if volume is not None:
            volume.draw(volume.bar(positions, [bar.volume for bar in bars], marker="full"))
        count = max(2, min(8, width // 12))
        step = max(1, len(bars) // count)
        ticks = list(range(0, len(bars), step))
        for panel in panels:
            panel.ruler(0).ticks(ticks, _labels(bars, ticks, minutes))
            panel.ruler(0).lim(-0.5, len(bars) - 0.5)
        return fig.build().string()
