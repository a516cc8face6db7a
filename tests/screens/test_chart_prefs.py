"""The chart's overlays and timeframe persist in the home (chart.json): written
atomically, read tolerantly (a corrupt file is logged and ignored), and brought back
by the next start of the app."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from test_app_data import WATCHLIST, app_settings, running, wait_for

from sptrader.app import SptraderApp
from sptrader.chart_prefs import (
    ChartPrefs,
    chart_prefs_path,
    load_chart_prefs,
    save_chart_prefs,
)
from sptrader.screens import ChartPane


def test_nothing_saved_is_the_defaults(tmp_path: Path) -> None:
    assert load_chart_prefs(tmp_path) == ChartPrefs([], None)


def test_saved_prefs_read_back(tmp_path: Path) -> None:
    save_chart_prefs(tmp_path / "home", ChartPrefs(["ma", "macd"], "15m"))
    assert load_chart_prefs(tmp_path / "home") == ChartPrefs(["ma", "macd"], "15m")
    # Atomic: the temporary file was renamed over the real one.
    assert [path.name for path in (tmp_path / "home").iterdir()] == ["chart.json"]


@pytest.mark.parametrize(
    "text",
    [
        "{not json",
        "[1, 2]",
        '{"overlays": "ma"}',
        '{"overlays": [], "timeframe": 5}',
        b"\xff\xfe not utf-8",
    ],
)
def test_a_corrupt_file_is_logged_and_ignored(
    tmp_path: Path, text: str | bytes, caplog: pytest.LogCaptureFixture
) -> None:
    data = text if isinstance(text, bytes) else text.encode()
    chart_prefs_path(tmp_path).write_bytes(data)
    with caplog.at_level(logging.WARNING, logger="sptrader.chart_prefs"):
        assert load_chart_prefs(tmp_path) == ChartPrefs()
    assert "ignoring" in caplog.text and "chart.json" in caplog.text


def test_unknown_overlays_are_dropped_and_the_order_is_the_toggle_order(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    chart_prefs_path(tmp_path).write_text(
        json.dumps({"overlays": ["macd", "vwap", 3, "ma"], "timeframe": "1h"}), "utf-8"
    )
    with caplog.at_level(logging.WARNING, logger="sptrader.chart_prefs"):
        assert load_chart_prefs(tmp_path) == ChartPrefs(["ma", "macd"], "1h")
    assert "vwap" in caplog.text


@pytest.fixture
def home(tmp_path: Path) -> Path:
    directory = tmp_path / "home"
    directory.mkdir()
    return directory


async def test_overlays_and_timeframe_come_back_after_a_restart(home: Path) -> None:
    app = SptraderApp(app_settings(home))
    async with running(app) as pilot:
        chart = app.query_one(ChartPane)
        await pilot.press("c", "m", "i")
        assert chart.overlays == ["ma", "rsi"]
        await pilot.press("2")
        assert chart.timeframe == "5m"
    assert load_chart_prefs(home) == ChartPrefs(["ma", "rsi"], "5m")

    restarted = SptraderApp(app_settings(home))
    async with restarted.run_test(size=(160, 48)) as pilot:
        chart = restarted.query_one(ChartPane)
        assert chart.overlays == ["ma", "rsi"] and chart.timeframe == "5m"
        await wait_for(pilot, lambda: chart.loaded_key == (WATCHLIST[0], "5m"), what="the 5m chart")
        await wait_for(pilot, lambda: chart.renders > 0, what="a render")
        assert "EMA20 SMA50" in chart.title_text() and "RSI14" in chart.title_text()
        assert chart.lead_wanted > 0  # the warm-up was read for them
        assert restarted.query_one("#tf-5m").has_class("-current")
        # Switching one off is kept too.
        await pilot.press("c", "i")
        assert load_chart_prefs(home) == ChartPrefs(["ma"], "5m")
        await pilot.press("q")
        await wait_for(pilot, lambda: restarted.return_code is not None, what="the exit")


async def test_a_timeframe_the_chart_no_longer_offers_falls_back_to_the_default(
    home: Path,
) -> None:
    save_chart_prefs(home, ChartPrefs(["bb"], "3m"))  # not in chart.timeframes
    app = SptraderApp(app_settings(home))
    async with running(app):
        chart = app.query_one(ChartPane)
        assert chart.timeframe == "1m" and chart.overlays == ["bb"]
