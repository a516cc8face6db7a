"""Candlestick and volume charts as ANSI text, drawn with plotext.

No textual here: the chart widget builds the text and shows it. Axis labels are written
here (nice_ticks, price_labels, compact_number), never plotext's own; chart_layout shares
a pane's rows between the panels; visible_state tells whether live data changed what a
chart shows. plotext keeps one global figure, so callers must not render from two
threads at once (``_render_lock``).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sptrader.models import US_PER_MINUTE, Bar

_render_lock = threading.Lock()


@dataclass(frozen=True, slots=True)
class SignalMark:
    """A scanner's signal marked on the chart at its bar (``ts_us``: the bar's open time
    in the scanner's ``timeframe``, None when the scanner is no longer configured), or a
    backtest's trade: its entry there and its exit (``exit_ts_us``) at the bar it left
    in."""

    instrument: str
    ts_us: int
    side: str  # buy, sell or exit
    scanner: str
    reason: str = ""
    stop: float | None = None
    target: float | None = None
    timeframe: str | None = None
    exit_ts_us: int | None = None


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


# Each overlay line's colour, and the legend entries of each overlay (label, colour,
# glyph) drawn on a row of their own above its panel, never over the candles.
LINE_COLOURS = {
    "ema20": "cyan",
    "sma50": "magenta",
    "bb20_upper": "yellow",
    "bb20_middle": "yellow",
    "bb20_lower": "yellow",
    "rsi14": "cyan",
    "macd": "cyan",
    "macd_signal": "magenta",
    "macd_hist": "blue",
}
LEGENDS: dict[str, tuple[tuple[str, str, str], ...]] = {
    "ma": (("EMA20", "cyan", "━"), ("SMA50", "magenta", "━")),
    "bb": (("BB20", "yellow", "━"),),
    "rsi": (("RSI14", "cyan", "━"), ("30/70", "default", "┄")),
    "macd": (("MACD", "cyan", "━"), ("signal", "magenta", "━"), ("hist", "blue", "█")),
}
PANEL_NAMES = {"rsi": "RSI", "macd": "MACD"}

# Text rows a panel needs: its box (2), its legend row, and at least this much canvas
# to be read; the x labels (1) go under the lowest panel only.
PRICE_MIN_ROWS = 5
LOWER_MIN_ROWS = 4
VOLUME_MIN_ROWS = 2
# The share of the rows each panel grows to when there is room (the price panel the rest).
PRICE_ROWS_SHARE = 0.45
LOWER_ROWS_SHARE = 0.18
VOLUME_ROWS_SHARE = 0.15


@dataclass(frozen=True, slots=True)
class ChartLayout:
    """Canvas rows of each panel in a chart ``height`` rows high (0: not drawn), and the
    panels hidden because the pane is too short (said on the chart's last line)."""

    price: int
    lower: dict[str, int]
    volume: int
    hidden: tuple[str, ...]
    legend: bool

    def note(self) -> str:
        if not self.hidden:
            return ""
        names = " and ".join(PANEL_NAMES[name] for name in self.hidden)
        return f"{names} hidden: pane too short"


def chart_layout(height: int, overlays: Sequence[str] = ()) -> ChartLayout:
    """Share ``height`` rows between the price panel, the RSI / MACD panels asked for
    and the volume: the price panel first, then the lower panels (each readable or left
    out with a note), then the volume; rows left over go to the lower panels and the
    volume up to their share, the rest to the price panel."""
    legend = any(name in overlays for name in PRICE_OVERLAYS)
    asked = [name for name in PANEL_OVERLAYS if name in overlays]
    budget = height - 1  # the x labels
    used = 2 + int(legend) + PRICE_MIN_ROWS
    lower: list[str] = []
    hidden: list[str] = []
    for name in asked:
        need = 3 + LOWER_MIN_ROWS
        # A panel left out costs a row for its note.
        note_row = 1 if hidden or len(lower) + 1 < len(asked) else 0
        if used + need + note_row <= budget:
            lower.append(name)
            used += need
        else:
            hidden.append(name)
    if hidden:
        used += 1
    volume = VOLUME_MIN_ROWS if used + 2 + VOLUME_MIN_ROWS <= budget else 0
    used += 2 + volume if volume else 0
    spare = budget - used  # below 0 only in a pane too short for the note: price gives
    # The price panel grows to its share first, then the others to theirs.
    price = PRICE_MIN_ROWS + min(spare, max(0, round(height * PRICE_ROWS_SHARE) - PRICE_MIN_ROWS))
    spare = max(0, spare - (price - PRICE_MIN_ROWS))
    lower_rows = dict.fromkeys(lower, LOWER_MIN_ROWS)
    for name in lower:
        grow = min(spare, max(0, round(height * LOWER_ROWS_SHARE) - LOWER_MIN_ROWS))
        lower_rows[name] += grow
        spare -= grow
    if volume:
        grow = min(spare, max(0, round(height * VOLUME_ROWS_SHARE) - VOLUME_MIN_ROWS))
        volume += grow
        spare -= grow
    return ChartLayout(max(2, price + spare), lower_rows, volume, tuple(hidden), legend)


# --- axis labels: written here, never plotext's own (which fall into 4.97e4) -----------


def nice_ticks(low: float, high: float, count: int, smallest: float = 0.0) -> list[float]:
    """About ``count`` round values within [low, high] (two at least when ``count`` asks
    for two and the range allows), evenly 1, 2 or 5 times 10^k apart and no closer
    than ``smallest`` (an instrument's price increment)."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return []
    if high < low:
        low, high = high, low
    span = high - low
    if span <= 0:
        return [low]
    rough = max(span / max(1, count), smallest)
    power = 10.0 ** math.floor(math.log10(rough))
    steps = [power * nice for nice in (0.5, 1.0, 2.0, 5.0, 10.0)]
    chosen = next(index for index, step in enumerate(steps) if step >= rough * (1 - 1e-9))
    ticks: list[float] = []
    for step in reversed(steps[: chosen + 1]):
        if step < smallest * (1 - 1e-9):
            break
        first = math.ceil(low / step - 1e-9)
        last = math.floor(high / step + 1e-9)
        ticks = [round(index * step, 12) for index in range(first, last + 1)]
        if len(ticks) >= min(2, count):
            break
    return ticks


def step_decimals(ticks: Sequence[float]) -> int:
    """The decimals that tell ``ticks`` (evenly spaced round values) apart."""
    if len(ticks) < 2:
        value = abs(ticks[0]) if ticks else 0.0
        return 0 if value == 0 or value >= 1 else -math.floor(math.log10(value))
    step = abs(ticks[1] - ticks[0])
    return max(0, -math.floor(math.log10(step) + 1e-9))


def price_labels(ticks: Sequence[float], decimals: int) -> list[str]:
    """Price tick labels with thousands separators, at no more decimals than the
    instrument's (``decimals``) nor than the step needs: ``49,700``, ``1.0642``."""
    places = min(decimals, step_decimals(ticks))
    return [f"{value:,.{places}f}" for value in ticks]


def compact_number(value: float) -> str:
    """A volume as a trader reads it: ``950``, ``1.8k``, ``90k``, ``125k``, ``2.1M``."""
    magnitude = abs(value)
    scaled, suffix = value, ""
    for unit, name in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if magnitude >= unit * 0.9995:
            scaled, suffix = value / unit, name
            break
    if abs(scaled) >= 100 or scaled == int(scaled):
        text = f"{scaled:.0f}"
    elif abs(scaled) >= 10 or suffix:
        text = f"{scaled:.1f}"
    else:
        text = f"{scaled:.2f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text + suffix


def _tick_count(rows: int) -> int:
    """One labelled tick every two rows or so."""
    return max(2, min(8, rows // 2))


def visible_state(bars: Sequence[Bar], height: int, overlays: Sequence[str] = ()) -> tuple:
    """What of ``bars`` a chart ``height`` rows high shows, at the resolution it is drawn
    (half a text row of the price and volume panels): equal states draw the same chart,
    so a forming bar that moved less than that needs no new render."""
    if not bars:
        return ()
    layout = chart_layout(height, overlays)
    *complete, last = bars
    settled = complete or [last]
    low = min(bar.low for bar in settled)
    high = max(bar.high for bar in settled)
    price_step = (high - low) / (2 * layout.price) or abs(last.close) * 1e-6 or 1.0
    top_volume = max(bar.volume for bar in settled)
    volume_step = top_volume / (2 * max(1, layout.volume)) or 1.0

    def price(value: float) -> int:
        return math.floor(value / price_step)

    return (
        len(bars),
        bars[0].ts_us,
        last.ts_us,
        price(low),
        price(high),
        price(last.open),
        price(last.high),
        price(last.low),
        price(last.close),
        math.floor(last.volume / volume_step) if layout.volume else 0,
        price_step,
    )


# --- drawing ----------------------------------------------------------------------------


def _line(plotext, panel, values: Sequence[float | None], colour: str, glyph: str = "hd"):
    """A line through the non-null values (x = bar position)."""
    points = [(x, y) for x, y in enumerate(values) if y is not None and y == y]
    if not points:
        return
    marker = plotext.marker(glyph, plotext.pixel(colour))
    signal = panel.signal([x for x, _ in points], [y for _, y in points], marker=marker)
    signal.lines(True)
    panel.draw(signal)


def _stems(plotext, panel, xs, tops, bottoms, glyph: str, colour: str):
    """Vertical strokes from each top down to its bottom, as one signal (plotext's own
    candlestick builds two signals per bar and costs about four times as much)."""
    if not xs:
        return
    signal = panel.signal(xs, tops, marker=plotext.marker(glyph, plotext.pixel(colour)))
    for index, (x, bottom) in enumerate(zip(xs, bottoms, strict=True)):
        signal._set_fill_point(index, x, bottom, signal.get(index).marker())
    panel.draw(signal)


def _candles(plotext, panel, bars: Sequence[Bar]) -> None:
    for up, colour in ((True, "green"), (False, "red")):
        xs = [index for index, bar in enumerate(bars) if (bar.close >= bar.open) == up]
        _stems(
            plotext, panel, xs, [bars[i].high for i in xs], [bars[i].low for i in xs], "│", colour
        )
        _stems(
            plotext,
            panel,
            xs,
            [max(bars[i].open, bars[i].close) for i in xs],
            [min(bars[i].open, bars[i].close) for i in xs],
            "█",
            colour,
        )


def _legend(plotext, entries: Sequence[tuple[str, str, str]], width: int):
    """The legend row (a plotext colorize, whose width plotext measures without the
    colour codes): as many entries as fit in ``width``, each whole."""
    legend = None
    used = 0
    for label, colour, glyph in entries:
        text = f"{glyph} {label}"
        size = len(text) + (2 if legend is not None else 0)
        if used + size > width:
            break
        part = plotext.colorize(text, None if colour == "default" else plotext.pixel(colour))
        legend = part if legend is None else legend + "  " + part
        used += size
    return legend or ""


def _labels(bars: Sequence[Bar], positions: list[int], minutes: int) -> list[str]:
    form = "%m-%d" if minutes >= 1440 else "%m-%d %H:%M" if minutes >= 60 else "%H:%M"
    return [datetime.fromtimestamp(bars[i].ts_us / 1e6, tz=UTC).strftime(form) for i in positions]


def _signal_offset(bars: Sequence[Bar], low: float, high: float, rows: int) -> float:
    """About one text row of the price panel, so a glyph clears the candle's wick."""
    return (high - low) / max(4, rows - 1) or abs(bars[-1].close) * 1e-4 or 1.0


def _mark_signal(
    plotext, candles, bars: Sequence[Bar], mark: SignalMark, index: int, offset: float, decimals
):
    """The signal's glyph below the low (buy) or above the high of bar ``index``, and
    short dashed, labelled lines at its stop and target from that bar on."""
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
        label = plotext.colorize(f" {name} {level:,.{decimals}f} ", plotext.pixel(tint))
        # The label after the dashes, or before them when the bar is near the right edge.
        if end + 1 + len(bars) // 6 <= last:
            candles.draw(candles.text(end + 1, level, label, alignment="left"))
        else:
            candles.draw(candles.text(max(0, start - 1), level, label, alignment="right"))


def _apart(low: float, high: float) -> tuple[float, float]:
    """Axis limits that are not one value (plotext warns on stderr about those): a flat
    series gets a little room either side."""
    if high > low:
        return low, high
    room = abs(low) * 1e-4 or 1.0
    return low - room, high + room


def _span(*series: Sequence[float | None]) -> tuple[float, float]:
    values = [
        value for values in series for value in values if value is not None and value == value
    ]
    return min(values), max(values)


def render_candles(
    bars: Sequence[Bar],
    width: int,
    height: int,
    minutes: int,
    overlays: Sequence[str] = (),
    lead: Sequence[Bar] = (),
    signal: SignalMark | None = None,
    decimals: int | None = None,
) -> str:
    """Candles on top, volume bars underneath, x labelled with bar open times (UTC) under
    the lowest panel, ``height`` rows of ``width`` columns.

    ``overlays`` (names of :data:`OVERLAYS`): moving averages and Bollinger bands are
    drawn over the candles; RSI (with 30/70 guides) and MACD (line, signal, histogram)
    each get a panel between the candles and the volume when there is room for it to be
    read (see :func:`chart_layout`), else a note on the last line says it is hidden.
    Legends sit on a row above their panel. ``lead``: bars before the window, read for
    the indicators' warm-up (not drawn). ``signal``: marked at its bar (see
    :data:`SIGNAL_GLYPHS`) when that bar is shown. ``decimals``: the instrument's price
    precision (None: what the bars use); price labels never show more."""
    import plotext  # about 65 ms to import: not on the way to the first paint

    width = max(width, 20)
    height = max(height, 8)
    if decimals is None:
        from sptrader.formatting import decimals_of

        decimals = decimals_of([bar.close for bar in bars[-50:]])
    layout = chart_layout(height, overlays)
    series = overlay_series(bars, [name for name in overlays if name not in layout.hidden], lead)
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
        panels = [("price", layout.price + 2 + int(layout.legend))]
        panels += [(name, rows + 3) for name, rows in layout.lower.items()]
        if layout.volume:
            panels.append(("volume", layout.volume + 2))
        # The lowest panel carries the x labels (one row more).
        panels[-1] = (panels[-1][0], panels[-1][1] + 1)
        fig.plot_size(width, sum(rows for _, rows in panels))
        subplots = {}
        if len(panels) > 1:
            fig.subplots(len(panels), 1)
        for row, (name, rows) in enumerate(panels, start=1):
            panel = fig.subplot(row, 1) if len(panels) > 1 else fig
            panel.plot_size(width, rows)
            panel.theme("simple")
            panel.canvas("default")
            subplots[name] = panel
        yticks: dict[str, tuple[list[float], list[str]]] = {}

        candles = subplots["price"]
        _candles(plotext, candles, bars)
        drawn: list[Sequence[float | None]] = [
            [bar.low for bar in bars],
            [bar.high for bar in bars],
        ]
        for name in PRICE_OVERLAYS:
            if name in overlays:
                for column in OVERLAYS[name][1]:
                    _line(plotext, candles, series[column], LINE_COLOURS[column])
                    drawn.append(series[column])
                candles.title(
                    _legend(
                        plotext,
                        [e for n in PRICE_OVERLAYS if n in overlays for e in LEGENDS[n]],
                        width,
                    )
                )
        index = None if signal is None else signal_position(bars, signal.ts_us, minutes)
        exit_index = (
            None
            if signal is None or signal.exit_ts_us is None
            else signal_position(bars, signal.exit_ts_us, minutes)
        )
        low, high = _span(*drawn)
        if signal is not None and (index is not None or exit_index is not None):
            levels = [level for level in (signal.stop, signal.target) if level is not None]
            low, high = min([low, *levels]), max([high, *levels])
            offset = _signal_offset(bars, low, high, layout.price)
            if index is not None:
                _mark_signal(plotext, candles, bars, signal, index, offset, decimals)
            if exit_index is not None:  # a trade's exit: ◆ above the bar it left in
                glyph, colour, _ = SIGNAL_GLYPHS["exit"]
                marker = plotext.marker(glyph, plotext.pixel(colour))
                exit_at = bars[exit_index].high + offset
                candles.draw(candles.signal([exit_index], [exit_at], marker=marker))
            low, high = low - offset, high + offset
        low, high = _apart(low, high)
        candles.ruler(1).lim(low, high)
        ticks = nice_ticks(low, high, _tick_count(layout.price), 10.0**-decimals)
        if ticks:
            yticks["price"] = (ticks, price_labels(ticks, decimals))
        else:  # a range narrower than the price increment: its middle, labelled
            middle = (low + high) / 2
            yticks["price"] = ([middle], [f"{middle:,.{decimals}f}"])

        last = max(1, len(bars) - 1)
        if "rsi" in layout.lower:
            panel = subplots["rsi"]
            panel.title(_legend(plotext, LEGENDS["rsi"], width))
            # The guides first: the RSI line is drawn over them.
            for guide in (30.0, 70.0):
                _line(plotext, panel, [guide] * (last + 1), "default", "┄")
            _line(plotext, panel, series["rsi14"], LINE_COLOURS["rsi14"])
            panel.ruler(1).lim(0, 100)
            yticks["rsi"] = ([30.0, 70.0], ["30", "70"])
        if "macd" in layout.lower:
            panel = subplots["macd"]
            panel.title(_legend(plotext, LEGENDS["macd"], width))
            hist = [(x, y) for x, y in enumerate(series["macd_hist"]) if y is not None]
            _stems(
                plotext,
                panel,
                [x for x, _ in hist],
                [y for _, y in hist],
                [0.0] * len(hist),
                "█",
                LINE_COLOURS["macd_hist"],
            )
            _line(plotext, panel, series["macd"], LINE_COLOURS["macd"])
            _line(plotext, panel, series["macd_signal"], LINE_COLOURS["macd_signal"])
            values = [*series["macd"], *series["macd_signal"], *series["macd_hist"], 0.0]
            macd_low, macd_high = _apart(*_span(values))
            panel.ruler(1).lim(macd_low, macd_high)
            ticks = nice_ticks(macd_low, macd_high, _tick_count(layout.lower["macd"]))
            yticks["macd"] = (ticks, price_labels(ticks, 12))
        if layout.volume:
            panel = subplots["volume"]
            positions = list(range(len(bars)))
            volumes = [float(bar.volume) for bar in bars]
            _stems(plotext, panel, positions, volumes, [0.0] * len(bars), "█", "blue")
            top = max(volumes) or 1.0
            panel.ruler(1).lim(0, top)
            # Zero is the panel's floor; a short panel labels its top at least.
            ticks = [tick for tick in nice_ticks(0, top, _tick_count(layout.volume + 1)) if tick]
            ticks = ticks or [top]
            yticks["volume"] = (ticks, [compact_number(tick) for tick in ticks])

        # Every panel's y labels padded to one width, so that the panels' bars line up.
        label_width = max(
            (len(label) for _, labels in yticks.values() for label in labels), default=1
        )
        count = max(2, min(8, width // 12))
        step = max(1, len(bars) // count)
        xticks = list(range(0, len(bars), step))
        lowest = panels[-1][0]
        for name, panel in subplots.items():
            positions, labels = yticks.get(name, ([], []))
            panel.ruler(1).ticks(positions, [label.rjust(label_width) for label in labels])
            if name == lowest:
                panel.ruler(0).ticks(xticks, _labels(bars, xticks, minutes))
            else:
                panel.ruler(0).ticks([], [])
            panel.ruler(0).lim(-0.5, len(bars) - 0.5)
        chart = fig.build().string()
    note = layout.note()
    return f"{chart.rstrip(chr(10))}\n{note}" if note else chart
