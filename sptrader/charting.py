"""Candlestick and volume charts as ANSI text, drawn with plotext.

No textual here: the chart widget renders in a worker thread and shows the text.
plotext keeps one global figure, so callers must not render from two threads at once.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from datetime import UTC, datetime

from sptrader.models import Bar

_render_lock = threading.Lock()


def _labels(bars: Sequence[Bar], positions: list[int], minutes: int) -> list[str]:
    form = "%m-%d" if minutes >= 1440 else "%m-%d %H:%M" if minutes >= 60 else "%H:%M"
    return [datetime.fromtimestamp(bars[i].ts_us / 1e6, tz=UTC).strftime(form) for i in positions]


def render_candles(bars: Sequence[Bar], width: int, height: int, minutes: int) -> str:
    """Candles on top, volume bars underneath, x labelled with bar open times (UTC)."""
    import plotext  # about 65 ms to import: not on the way to the first paint

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
        fig.subplots(2, 1)
        candles = fig.subplot(1, 1)
        candles.plot_size(width, height - volume_height)
        volume = fig.subplot(2, 1)
        volume.plot_size(width, volume_height)
        positions = list(range(len(bars)))
        for panel in (candles, volume):
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
        volume.draw(volume.bar(positions, [bar.volume for bar in bars], marker="full"))
        count = max(2, min(8, width // 12))
        step = max(1, len(bars) // count)
        ticks = list(range(0, len(bars), step))
        for panel in (candles, volume):
            panel.ruler(0).ticks(ticks, _labels(bars, ticks, minutes))
            panel.ruler(0).lim(-0.5, len(bars) - 0.5)
        return fig.build().string()
