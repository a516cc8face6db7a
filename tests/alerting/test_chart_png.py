"""candles_png draws the stored bars as an 800x450 PNG: any number of bars (one, a flat
one), up and down candles in their colours, labels from a frame or from plain rows."""

from __future__ import annotations

import io
from datetime import datetime, timedelta

import polars as pl
import pytest
from PIL import Image

from sptrader.alerting.chart_png import BACKGROUND, DOWN, UP, candles_png

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def bar(ts: datetime, open_: float, high: float, low: float, close: float) -> dict:
    return {"ts": ts, "open": open_, "high": high, "low": low, "close": close}


def decoded(data: bytes) -> Image.Image:
    assert data.startswith(PNG_SIGNATURE)
    image = Image.open(io.BytesIO(data))
    assert image.format == "PNG" and image.size == (800, 450)
    return image.convert("RGB")


def test_up_down_and_flat_bars_from_a_frame() -> None:
    start = datetime(2026, 12, 2, 9, 0)
    frame = pl.DataFrame(
        [
            bar(start, 1.0850, 1.0870, 1.0840, 1.0865),  # up
            bar(start + timedelta(hours=1), 1.0865, 1.0868, 1.0830, 1.0835),  # down
            bar(start + timedelta(hours=2), 1.0835, 1.0835, 1.0835, 1.0835),  # flat
        ]
    )
    image = decoded(candles_png("SIM:EURUSD", "1h", frame, 5))
    colours = {colour for _, colour in image.getcolors(maxcolors=800 * 450)}
    assert {BACKGROUND, UP, DOWN} <= colours


def test_one_bar_and_daily_bars_from_plain_rows() -> None:
    decoded(candles_png("SIM:X", "1m", [bar(datetime(2026, 1, 1), 5.0, 5.0, 5.0, 5.0)], 2))
    days = [
        bar(datetime(2026, 1, 1) + timedelta(days=i), 100 + i, 102 + i, 99 + i, 101 + i)
        for i in range(30)
    ]
    decoded(candles_png("SIM:Y", "1d", days, None))


def test_no_bars_is_an_error() -> None:
    with pytest.raises(ValueError):
        candles_png("SIM:X", "1h", [], 2)
