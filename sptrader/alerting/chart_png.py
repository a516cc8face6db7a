"""The bars as a candlestick PNG for Telegram's /chart (Pillow's ImageDraw, no plot library):
dark background, green up / red down candles with wicks, prices on the right at the
instrument's decimals, UTC times (or dates, for daily bars) at the bottom."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from PIL import Image, ImageDraw, ImageFont

from sptrader.formatting import format_price
from sptrader.models import timeframe_minutes

WIDTH, HEIGHT = 800, 450
BACKGROUND = (17, 20, 26)
GRID = (38, 43, 52)
TEXT = (200, 205, 212)
UP = (38, 166, 91)
DOWN = (222, 60, 60)
LEFT, RIGHT, TOP, BOTTOM = 12, 92, 40, 30  # margins: price labels right, times below
PRICE_LABELS = 5
TIME_LABELS = 6


def candles_png(instrument: str, timeframe: str, bars: Any, decimals: int | None) -> bytes:
    """``bars``: a polars frame or a list of rows with open/high/low/close (and ``ts``,
    a datetime in UTC or epoch microseconds, for the time labels), oldest first."""
    rows = _rows(bars)
    if not rows:
        raise ValueError("no bars to draw")
    image = Image.new("RGB", (WIDTH, HEIGHT), BACKGROUND)
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=12)
    title_font = ImageFont.load_default(size=16)

    top = max(row["high"] for row in rows)
    bottom = min(row["low"] for row in rows)
    # A flat range still needs a scale: pad it so the bars sit in the middle.
    pad = (top - bottom) * 0.05 or abs(top) * 0.001 or 1.0
    top, bottom = top + pad, bottom - pad
    plot_right, plot_bottom = WIDTH - RIGHT, HEIGHT - BOTTOM

    def y_of(price: float) -> float:
        return TOP + (top - price) / (top - bottom) * (plot_bottom - TOP)

    for step in range(PRICE_LABELS):
        price = bottom + (top - bottom) * (step + 0.5) / PRICE_LABELS
        y = y_of(price)
        draw.line([(LEFT, y), (plot_right, y)], fill=GRID)
        label = format_price(price, decimals)
        draw.text((plot_right + 6, y), label, fill=TEXT, font=font, anchor="lm")

    slot = (plot_right - LEFT) / len(rows)
    half_body = max(0.5, slot * 0.35)
    for index, row in enumerate(rows):
        x = LEFT + slot * (index + 0.5)
        colour = UP if row["close"] >= row["open"] else DOWN
        draw.line([(x, y_of(row["high"])), (x, y_of(row["low"]))], fill=colour)
        body_top = y_of(max(row["open"], row["close"]))
        body_bottom = max(body_top + 1, y_of(min(row["open"], row["close"])))  # flat: 1px
        draw.rectangle([(x - half_body, body_top), (x + half_body, body_bottom)], fill=colour)

    daily = timeframe_minutes(timeframe) >= 24 * 60
    labelled = sorted({round(i * (len(rows) - 1) / (TIME_LABELS - 1)) for i in range(TIME_LABELS)})
    for index in labelled:
        when = _utc(rows[index].get("ts"))
        if when is None:
            continue
        label = when.strftime("%Y-%m-%d" if daily else "%H:%M")
        x = min(max(LEFT + slot * (index + 0.5), LEFT + 30), plot_right - 30)
        draw.text((x, plot_bottom + 8), label, fill=TEXT, font=font, anchor="mt")

    title = f"{instrument} {timeframe} · {format_price(rows[-1]['close'], decimals)}"
    draw.text((LEFT, TOP / 2), title, fill=TEXT, font=title_font, anchor="lm")
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def _rows(bars: Any) -> list[Mapping[str, Any]]:
    if hasattr(bars, "to_dicts"):  # a polars frame
        return bars.to_dicts()
    return list(bars) if isinstance(bars, Sequence) else []


def _utc(ts: Any) -> datetime | None:
    """A bar's open time in UTC: stored frames hold naive UTC datetimes."""
    if isinstance(ts, datetime):
        return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)
    if isinstance(ts, int):
        return datetime.fromtimestamp(ts / 1_000_000, UTC)
    return None
