"""The Backtest screen (`T`), driven as a user drives it at 80x24 (a walk-forward at
160x48): the form filled and run, the progress, the summary and trades, a trade shown on
the chart, a sweep and its rows, a walk-forward's folds, mistakes as one line, cancel."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import conftest
import pytest
from textual.pilot import Pilot
from textual.widgets import Input, ProgressBar, Select, TabbedContent

from sptrader.app import SptraderApp
from sptrader.backtest import objectives
from sptrader.config import Config, FeedsConfig, Settings, SimFeedConfig, StoreConfig
from sptrader.screens import ChartPane, ErrorScreen, HelpScreen
from sptrader.screens.backtest import OBJECTIVES, BacktestScreen, summary_text
from sptrader.store import queries

SMALL = (80, 24)
LARGE = (160, 48)
EURUSD = "SIM:EURUSD"
HOUR_US = 3_600_000_000


def app_settings(home: Path) -> Settings:
    """One instrument with about seven hours of stored history and a slow market."""
    config = Config(
        watchlist=[EURUSD],
        store=StoreConfig(seed_days=0.3),
        feeds=FeedsConfig(sim=SimFeedConfig(tick_rate=2.0)),
    )
    return Settings(home=home, config_path=None, config=config)


@pytest.fixture
def app(tmp_path: Path) -> SptraderApp:
    home = tmp_path / "home"
    home.mkdir()
    return SptraderApp(app_settings(home))


async def wait_for(pilot, condition, timeout: float = 30, what: str = "") -> None:
    await conftest.wait_for(pilot, condition, timeout, what)


def iso(ts_us: int) -> str:
    return datetime.fromtimestamp(ts_us / 1e6, UTC).strftime("%Y-%m-%dT%H:%MZ")


@contextlib.asynccontextmanager
async def backtest_open(
    app: SptraderApp, size: tuple[int, int] = SMALL
) -> AsyncIterator[tuple[Pilot, BacktestScreen, int]]:
    """The app started (history stored), the Backtest screen opened with `T`; with the
    open time of the newest whole stored hour (a window ending there has every bar)."""
    async with app.run_test(size=size) as pilot:
        await wait_for(pilot, lambda: app.engine_ready, what="the engine to start")
        await conftest.wait_for_history(app.engine, [EURUSD])
        last = queries.last_bar_ts(app.engine.require_store(), EURUSD)
        await pilot.press("T")
        await wait_for(pilot, lambda: isinstance(app.screen, BacktestScreen), what="the screen")
        screen = app.screen
        assert isinstance(screen, BacktestScreen)
        try:
            yield pilot, screen, last - last % HOUR_US
            failed = [
                f"{error.title_text}: {error.message}"
                for error in app.screen_stack
                if isinstance(error, ErrorScreen)
            ]
            assert not failed, f"a background job failed: {failed}"
        finally:
            if app.return_code is None:
                for _ in range(3):  # a run cancelled, then back: `q` is not typed in a field
                    if isinstance(app.screen, BacktestScreen | HelpScreen):
                        await pilot.press("escape")
                        await pilot.pause(0.2)
                await pilot.press("q")
                await wait_for(pilot, lambda: app.return_code is not None, what="the exit")


def fill(screen: BacktestScreen, **fields: str) -> None:
    for name, value in fields.items():
        screen.query_one(f"#bt-{name}", Input).value = value


async def type_into(pilot: Pilot, screen: BacktestScreen, name: str, text: str) -> None:
    """Click the field, clear it and type ``text`` key by key."""
    await pilot.click(f"#bt-{name}")
    field = screen.query_one(f"#bt-{name}", Input)
    assert field.has_focus
    await pilot.press("end", "ctrl+u", *text)


async def run_and_wait(pilot: Pilot, screen: BacktestScreen, state: str = "done") -> None:
    await wait_for(pilot, lambda: screen.job.get("state") == state, what=f"the job {state}")
    await pilot.pause()


def test_the_screen_knows_the_engine_s_objectives() -> None:
    assert objectives.NAMES == OBJECTIVES


def test_the_summary_says_what_the_volume_cap_did() -> None:
    def shown(**summary: object) -> str:
        return str(summary_text({"mode": "single", "run": {"summary": summary}}))

    assert "Partial fills 4" in shown(volume_cap="0.5 of each bar's volume", partial_fills=4)
    assert "Volume cap    off: no volume" in shown(volume_cap="off: no volume")
    assert "Partial fills" not in shown(volume_cap="off") and "Volume cap" not in shown()


async def test_a_backtest_from_the_form_and_a_trade_on_the_chart(app: SptraderApp) -> None:
    async with backtest_open(app) as (pilot, screen, hour):
        assert screen.query_one("#bt-strategy", Input).value == "sma_cross"
        assert screen.query_one("#bt-instrument", Input).value == EURUSD
        await type_into(pilot, screen, "from", iso(hour - 5 * HOUR_US))
        fill(screen, to=iso(hour))
        await type_into(pilot, screen, "params", "fast=5 slow=20")
        await pilot.press("enter")
        await run_and_wait(pilot, screen)
        result = screen.result
        assert result is not None and result["mode"] == "single"
        # What the screen shows is the engine's job, as the client returns it.
        job = await app.client.backtest_job(screen.job_id)
        assert job["result"] == result and job["request"]["params"] == ["fast=5", "slow=20"]
        run = result["run"]
        summary = screen.query_one("#bt-summary").render()
        text = str(summary)
        assert "fast=5 slow=20 short=false" in text
        assert f"Trades        {run['summary']['trades']:,}" in text
        assert "Net P&L" in text and "Max drawdown" in text and "Sharpe" in text
        assert "done in" in screen.message and "trades" in screen.message
        await wait_for(pilot, lambda: screen.charts >= 1, what="the equity curve")
        assert "equity" in str(screen.query_one("#bt-equity").render())
        rows = screen.trade_rows()
        assert len(rows) == run["trades_total"] > 0
        first = run["trades"][0]
        assert rows[0]["entry"] == f"{first['entry_price']:,.5f}"  # EURUSD's 5 decimals
        assert rows[0]["side"] in ("long", "short") and rows[0]["why"]
        tabs = screen.query_one(TabbedContent)
        assert str(tabs.get_tab("bt-tab-trades").label) == f"Trades {len(rows)}"
        # The tabs are focused: → shows the trades; enter on one charts it.
        await pilot.press("right")
        assert tabs.active == "bt-tab-trades"
        await pilot.press("tab", "down", "enter")
        await wait_for(pilot, lambda: not isinstance(app.screen, BacktestScreen), what="closed")
        chart = app.query_one(ChartPane)
        second = run["trades"][1]
        assert chart.signal is not None
        assert chart.signal.ts_us == second["entry_time_us"]
        assert chart.signal.exit_ts_us == second["exit_time_us"]
        assert chart.instrument == EURUSD and chart.timeframe == "1m"
        assert chart.signal_text().startswith(
            f"trade: {'BUY' if second['side'] == 'long' else 'SELL'} sma_cross"
        )
        await wait_for(pilot, lambda: chart.signal_drawn_at == second["entry_time_us"])
        # Back again: the same screen with its result.
        await pilot.press("T")
        await wait_for(pilot, lambda: app.screen is screen, what="the screen again")
        assert screen.result is result and len(screen.trade_rows()) == len(rows)
        await pilot.press("c")  # the trade under the cursor, from anywhere on the screen
        await wait_for(pilot, lambda: app.screen is not screen, what="closed by c")
        assert chart.signal.ts_us == second["entry_time_us"]


async def test_a_sweep_shows_its_best_rows_and_one_goes_back_to_the_form(
    app: SptraderApp,
) -> None:
    async with backtest_open(app) as (pilot, screen, hour):
        fill(screen, params="fast=5..15:5 slow=30,40")
        fill(screen, **{"from": iso(hour - 5 * HOUR_US), "to": iso(hour)})
        await pilot.press("enter")
        refused = "several values of fast, slow: give one value each"
        await wait_for(pilot, lambda: screen.message.startswith(refused), what="refused")
        assert screen.job_id is None  # nothing started
        screen.query_one("#bt-mode", Select).value = "sweep"
        await pilot.pause()
        assert not screen.query_one("#bt-trials", Input).disabled
        assert screen.query_one("#bt-train", Input).disabled
        await pilot.click("#bt-run")
        await run_and_wait(pilot, screen)
        sweep = screen.result["sweep"]
        assert sweep["combinations"] == 6 and sweep["method"] == "grid"
        rows = screen.table_rows("bt-sweep")
        assert len(rows) == 6
        best = sweep["rows"][0]
        assert rows[0][1:3] == [str(best["params"]["fast"]), str(best["params"]["slow"])]
        assert "best of 6 by sharpe" in str(screen.query_one("#bt-summary").render())
        tabs = screen.query_one(TabbedContent)
        assert str(tabs.get_tab("bt-tab-sweep").label) == "Sweep 6 (grid)"
        # The best's own run: its trades.
        assert len(screen.trade_rows()) == screen.result["run"]["trades_total"]
        await pilot.press("right", "right")
        assert tabs.active == "bt-tab-sweep"
        await pilot.press("tab", "down", "enter")  # the second best
        second = sweep["rows"][1]["params"]
        params = screen.query_one("#bt-params", Input)
        assert params.value == f"fast={second['fast']} slow={second['slow']} short=false"
        assert params.has_focus and screen.query_one("#bt-mode", Select).value == "single"


async def test_mistakes_are_one_line_in_the_screen(app: SptraderApp) -> None:
    async with backtest_open(app) as (pilot, screen, hour):
        for fields, expected in [
            ({"from": "yesterday"}, "bad from time 'yesterday': use ISO 8601"),
            ({"from": iso(hour - HOUR_US), "strategy": "nope"}, "unknown strategy 'nope'"),
            ({"strategy": "sma_cross", "params": "fast"}, "bad param 'fast': use NAME=VALUE"),
            ({"params": "speed=3"}, "unknown field `speed`"),
            ({"params": "", "instrument": "EURUSD"}, "bad instrument 'EURUSD'"),
            (
                {"instrument": "NOPE:THING"},
                "unknown instrument NOPE:THING: nothing stored and no configured feed serves it",
            ),
            ({"instrument": EURUSD, "to": iso(hour - 2 * HOUR_US)}, "the end must be later"),
        ]:
            fill(screen, **fields)
            await pilot.press("ctrl+r")
            await wait_for(
                pilot, lambda expected=expected: expected in screen.message, what=expected
            )
            assert "\n" not in screen.message and "Traceback" not in screen.message
        assert isinstance(app.screen, BacktestScreen)


async def test_escape_cancels_a_run_and_then_goes_back(app: SptraderApp) -> None:
    async with backtest_open(app) as (pilot, screen, hour):
        fill(
            screen,
            params="fast=2..60:1 slow=61..200:1",
            **{"from": iso(hour - 5 * HOUR_US), "to": iso(hour)},
        )
        screen.query_one("#bt-mode", Select).value = "sweep"
        await pilot.press("ctrl+r")
        await wait_for(
            pilot,
            lambda: screen.job.get("state") == "running" and screen.job.get("done", 0) >= 1,
            what="the sweep under way",
        )
        bar = screen.query_one("#bt-progress", ProgressBar)
        assert bar.display and bar.total == 59 * 140 and bar.progress >= 1
        assert screen.check_action("cancel_run", ())  # escape's first binding, while it runs
        await pilot.press("escape")
        await run_and_wait(pilot, screen, "cancelled")
        assert isinstance(app.screen, BacktestScreen)  # escape cancelled, did not leave
        assert screen.message.startswith("cancelled after")
        assert not bar.display
        await pilot.press("escape")
        await wait_for(pilot, lambda: not isinstance(app.screen, BacktestScreen), what="back")


async def test_a_run_goes_on_while_the_user_is_elsewhere(app: SptraderApp) -> None:
    async with backtest_open(app) as (pilot, screen, hour):
        fill(
            screen,
            params="fast=2..30:1 slow=31..60:3",
            **{"from": iso(hour - 5 * HOUR_US), "to": iso(hour)},
        )
        screen.query_one("#bt-mode", Select).value = "sweep"
        await pilot.press("ctrl+r")
        await wait_for(pilot, lambda: screen.running, what="the sweep started")
        await pilot.press("T")  # back: not typed in a field, the run goes on
        await wait_for(pilot, lambda: not isinstance(app.screen, BacktestScreen), what="back")
        await wait_for(pilot, lambda: screen.job.get("state") == "done", what="the sweep done")
        await wait_for(
            pilot,
            lambda: any("combinations" in str(n.message) for n in app._notifications),
            what="the notice",
        )
        await pilot.press("T")
        await wait_for(pilot, lambda: app.screen is screen, what="the screen again")
        assert screen.result["sweep"]["combinations"] == 29 * 10
        assert len(screen.table_rows("bt-sweep")) == 50  # the best 50


async def test_a_walk_forward_s_folds_at_160x48(app: SptraderApp) -> None:
    async with backtest_open(app, LARGE) as (pilot, screen, hour):
        fill(
            screen,
            params="fast=5,10 slow=20",
            train="2h",
            test="1h",
            **{"from": iso(hour - 5 * HOUR_US), "to": iso(hour)},
        )
        screen.query_one("#bt-mode", Select).value = "walk-forward"
        await pilot.pause()
        assert not screen.query_one("#bt-train", Input).disabled
        await pilot.press("ctrl+r")
        await run_and_wait(pilot, screen)
        walk = screen.result["walk_forward"]
        assert walk["total_folds"] == 3 and not walk["anchored"]
        rows = screen.table_rows("bt-folds")
        assert [row[0] for row in rows] == ["1", "2", "3"]
        chosen = walk["folds"][0]["params"]["fast"]
        assert rows[0][3] == str(chosen)
        summary = str(screen.query_one("#bt-summary").render())
        assert "out-of-sample: 3 folds" in summary and "Efficiency" in summary
        tabs = screen.query_one(TabbedContent)
        assert str(tabs.get_tab("bt-tab-folds").label) == "Folds 3 (rolling)"
        assert screen.query_one("#bt-equity").size.width > 100  # the curve gets the room


async def test_detail_and_a_monte_carlo_from_the_form_at_80x24(app: SptraderApp) -> None:
    async with backtest_open(app) as (pilot, screen, hour):
        fill(screen, params="fast=2 slow=5", mc="200", seed="3")
        fill(screen, **{"from": iso(hour - 6 * HOUR_US), "to": iso(hour)})
        screen.query_one("#bt-timeframe", Select).value = "5m"
        screen.query_one("#bt-detail", Select).value = "1m"
        await pilot.press("ctrl+r")
        await run_and_wait(pilot, screen)
        job = await app.client.backtest_job(screen.job_id)
        assert (job["request"]["detail"], job["request"]["monte_carlo"]) == ("1m", 200)
        assert job["request"]["seed"] == 3
        summary = screen.result["run"]["summary"]
        assert summary["detail_timeframe"] == "1m" and summary["detail_bars"] == 6 * 60
        assert summary["trades"] >= 2
        text = str(screen.query_one("#bt-summary").render())
        assert "Detail        1m (360)" in text and "Bars-only P&L" in text
        tabs = screen.query_one(TabbedContent)
        assert str(tabs.get_tab("bt-tab-mc").label) == "Monte Carlo 200"
        rows = screen.table_rows("bt-mc-table")
        assert [row[0] for row in rows] == [
            "shuffled DD",
            "shuffled DD %",
            "resampled DD",
            "resampled DD %",
            "final equity",
            "return",
        ]
        drawn = screen.result["monte_carlo"]
        median = drawn["resampled"]["final_equity"]["p50"]
        assert rows[4][3] == f"{median:,.2f}"  # p5, p25, p50
        assert drawn["seed"] == 3 and drawn["trades"] == summary["trades"]
        note = str(screen.query_one("#bt-mc-note").render())
        assert f"{drawn['trades']:,} trades, 200 runs each, seed 3" in note
        # A sweep takes neither: its fields are off, and a mistake in one is one line.
        screen.query_one("#bt-mode", Select).value = "sweep"
        await pilot.pause()
        assert screen.query_one("#bt-detail", Select).disabled
        assert screen.query_one("#bt-mc", Input).disabled
        screen.query_one("#bt-mode", Select).value = "single"
        fill(screen, mc="lots")
        await pilot.press("ctrl+r")
        await wait_for(
            pilot, lambda: "Monte Carlo runs must be a whole number, not 'lots'" in screen.message
        )


async def test_the_palette_opens_the_backtest_screen(app: SptraderApp) -> None:
    async with app.run_test(size=SMALL) as pilot:
        await wait_for(pilot, lambda: app.engine_ready, what="the engine to start")
        await pilot.press("ctrl+p")
        await pilot.press(*"Backtest")
        await wait_for(
            pilot,
            lambda: conftest.first_palette_option(app) == "Backtest: run, sweep, walk-forward",
            what="the palette to offer it",
        )
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, BacktestScreen), what="the screen")
        await pilot.press("escape")
        await wait_for(pilot, lambda: not isinstance(app.screen, BacktestScreen), what="back")
        await pilot.press("q")
        await wait_for(pilot, lambda: app.return_code is not None, what="the exit")


async def test_help_names_the_screen_and_its_keys(app: SptraderApp) -> None:
    async with backtest_open(app) as (pilot, _screen, _):
        await pilot.press("escape")
        await pilot.press("question_mark")
        await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen), what="help")
        text = app.screen.text
        assert "| anywhere | `T` | Backtest screen" in text
        assert "| backtest | `esc` | cancel the run in progress |" in text
        assert "`c`" in text and "show the trade on the chart" in text


def test_the_backtest_keys_can_be_remapped() -> None:
    """[keymap] takes the Backtest screen's binding ids (an unknown id is a config error)."""
    config = conftest.make_config(keymap={"backtest-screen": "ctrl+t", "backtest-run": "f5"})
    assert config.keymap["backtest-screen"] == "ctrl+t"
