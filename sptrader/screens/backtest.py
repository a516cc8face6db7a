"""The ``T`` Backtest screen: a backtest, a sweep or a walk-forward run from a form, its
progress, and what it found.

The form asks what ``sptrader backtest`` asks: strategy, instrument, timeframe, from and
to (UTC; to empty: now), params (the command's ``k=v`` texts, space-separated; a range
``fast=5..30:5`` or a list ``slow=20,40`` needs the sweep or walk-forward mode), the mode,
a walk-forward's train and test spans (``30d``, ``12h``), a TPE search's trials (empty:
every combination) and the objective that ranks them, a single run's intra-bar detail
(filled on the finer stored bars), a Monte Carlo's runs of the trades (empty: none) and the
seed of its draws and a search's. ``enter`` in a field, the Run
button or ``ctrl+r`` runs it through the engine client (``start_backtest``): the engine
checks the request at once (a mistake is one red line under the form), loads the bars as
the command does and runs the work in a process of its own, so this screen keeps
drawing; it is followed here (``backtest_job``) with a progress bar until it ends.
``escape`` cancels a run (``cancel_backtest``); without one it goes back to the main
screen, keeping the result for the next visit.

The result: *Overview* (the summary figures beside the equity curve: the run's, a
sweep's best combination's, or a walk-forward's stitched out-of-sample account, with the
in-sample fold means beside it), *Trades* (``enter``, a click or ``c`` shows the trade on
the main chart, scrolled to it with its entry and exit marked), *Sweep* (the best
combinations by the objective; ``enter`` on one puts its params in the form as a single
run) and *Folds* (a walk-forward's folds: the params each train span chose and how they
did on the test span after it) and *Monte Carlo* (the percentiles of the drawdown, final
equity and return over the reshuffled and resampled trade lists). Prices show in the
instrument's own precision.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.suggester import SuggestFromList
from textual.widgets import (
    Button,
    Checkbox,
    DataTable,
    Footer,
    Header,
    Input,
    Label,
    ProgressBar,
    Select,
    Static,
    TabbedContent,
    TabPane,
    Tabs,
)

from sptrader.charting import SignalMark
from sptrader.client.protocol import EngineClient
from sptrader.clock import datetime_to_us, parse_time
from sptrader.errors import SptraderError
from sptrader.models import TIMEFRAMES
from sptrader.screens.account import format_price, format_qty, money, pnl_style
from sptrader.screens.journal import render_equity_chart
from sptrader.screens.strategies import SignalsTable

#: The objectives the engine knows by name (sptrader.backtest.objectives.NAMES; a test
#: keeps them equal); a user's ``module:function`` can be typed too.
OBJECTIVES = ("sharpe", "sortino", "profit_factor", "net_pnl", "calmar")
MODES = (
    ("single run", "single"),
    ("sweep", "sweep"),
    ("walk-forward", "walk-forward"),
    ("walk-forward, anchored", "anchored"),
)
#: A single run's intra-bar detail: off, or the finer bars it is filled on.
DETAILS = (("off", "off"), ("1m", "1m"), ("5m", "5m"), ("15m", "15m"), ("1h", "1h"))
FINISHED = ("done", "failed", "cancelled")
_SEVERITY = {"done": "information", "failed": "error", "cancelled": "warning"}
#: How often a running job is asked how far it got (seconds).
POLL_S = 0.25
#: Sweep rows asked for (best first).
TOP = 50
DEFAULT_DAYS = 5
TRADE_COLUMNS = (
    ("n", "#"),
    ("entry_time", "Entry time"),
    ("side", "Side"),
    ("entry", "Entry"),
    ("exit_time", "Exit time"),
    ("exit", "Exit"),
    ("pnl", "P&L"),
    ("why", "Exit on"),
    ("bars", "Bars"),
    ("qty", "Qty"),
)


def _time(ts_us: int | None) -> str:
    if ts_us is None:
        return "-"
    return datetime.fromtimestamp(ts_us / 1e6, UTC).strftime("%m-%d %H:%M")


def _day(ts_us: int) -> str:
    return datetime.fromtimestamp(ts_us / 1e6, UTC).strftime("%Y-%m-%d %H:%M")


def _span(start_us: int, end_us: int) -> str:
    """``11-28 → 12-01`` (midnights), ``12-03 00:00 → 10:31`` (one day)."""
    first, last = _time(start_us), _time(end_us)
    if first.endswith("00:00") and last.endswith("00:00"):
        return f"{first[:5]} → {last[:5]}"
    return f"{first} → {last[6:] if last[:5] == first[:5] else last}"


def _pct(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:+.{digits}f}%"


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _value(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _params_text(params: dict[str, Any] | None) -> str:
    return " ".join(f"{name}={_value(value)}" for name, value in (params or {}).items())


def _right(text: str, style: str = "") -> Text:
    return Text(text, style=style, justify="right")


def _signed(value: float | None) -> Text:
    return _right(money(value, signed=True), pnl_style(value))


def summary_text(result: dict[str, Any]) -> Text:
    """The summary figures of the result's run, one a line (a walk-forward's with the
    in-sample fold means beside)."""
    run = result.get("run")
    if run is None:
        return Text("no run to show: every combination failed", style="red")
    summary = run["summary"]
    text = Text()
    mode = result["mode"]
    if mode == "sweep":
        sweep = result["sweep"]
        text.append(f"best of {sweep['combinations']:,} by {result['objective']}\n", style="bold")
    elif mode == "walk-forward":
        folds = result["walk_forward"]["total_folds"]
        text.append(f"out-of-sample: {folds} folds\n", style="bold")
    params = _params_text(summary.get("params"))
    if params:
        text.append(f"{params}\n", style="bold")
    trades = int(summary.get("trades") or 0)
    win_rate = summary.get("win_rate")
    drawdown = summary.get("max_drawdown")
    drawdown_pct = summary.get("max_drawdown_pct")
    rows: list[tuple[str, str, str]] = [
        ("Trades", f"{trades:,} ({summary.get('wins', 0)} won)", ""),
        ("Win rate", "-" if win_rate is None else f"{win_rate * 100:.1f}%", ""),
        ("Net P&L", money(summary.get("net_pnl"), signed=True), pnl_style(summary.get("net_pnl"))),
        ("Return", _pct(summary.get("return_pct")), pnl_style(summary.get("return_pct"))),
        ("Profit factor", _ratio(summary.get("profit_factor")), ""),
        (
            "Max drawdown",
            money(drawdown) + ("" if drawdown_pct is None else f" ({drawdown_pct:.2f}%)"),
            "red" if drawdown else "",
        ),
        ("Sharpe", _ratio(summary.get("sharpe")), ""),
        ("Sortino", _ratio(summary.get("sortino")), ""),
        (
            "Exposure",
            "-" if summary.get("exposure_pct") is None else f"{summary['exposure_pct']:.1f}%",
            "",
        ),
        *([("Fees", money(summary.get("fees")), "")] if summary.get("fees") else []),
        ("Final equity", money(summary.get("final_equity")), ""),
        ("Bars", f"{int(summary.get('bars') or 0):,}", ""),
    ]
    cap = summary.get("volume_cap") or "off"
    if cap.startswith("off:"):  # [broker] max_volume_share asked for, the bars have no volume
        rows.append(("Volume cap", cap, "yellow"))
    elif cap != "off":
        rows.append(("Partial fills", f"{int(summary.get('partial_fills') or 0):,}", ""))
    if summary.get("detail_timeframe"):
        # What the finer path changed: the P&L the bars alone gave, the exits they guessed.
        without = summary.get("net_pnl_without_detail")
        rows += [
            (
                "Detail",
                f"{summary['detail_timeframe']} ({int(summary.get('detail_bars') or 0):,})",
                "",
            ),
            ("Bars-only P&L", money(without, signed=True), "dim"),
            ("Ambiguous", f"{int(summary.get('ambiguous_bars') or 0):,} bars", "dim"),
        ]
    if mode == "walk-forward":
        walk = result["walk_forward"]
        inside = walk["in_sample_mean"]
        rows += [
            # In-sample: the mean over folds of each fold's best train run.
            ("IS Sharpe", _ratio(inside.get("sharpe")), "dim"),
            ("IS net P&L", money(inside.get("net_pnl"), signed=True), "dim"),
            ("Efficiency", _ratio(walk.get("efficiency")), ""),
        ]
    for index, (label, value, style) in enumerate(rows):
        if index:
            text.append("\n")
        text.append(f"{label:<14}", style="dim")
        text.append(value, style=f"bold {style}".strip() if label == "Net P&L" else style)
    coverage = result.get("coverage") or {}
    if coverage.get("gaps"):
        text.append(
            f"\n{coverage['missing_minutes']:,} minutes missing ({coverage['gaps']} gaps)",
            style="yellow",
        )
    return text


def trade_mark(result: dict[str, Any], trade: dict[str, Any]) -> SignalMark:
    """A trade of the result as the chart marks it: its entry and its exit."""
    pnl = trade.get("pnl")
    return SignalMark(
        instrument=result["instrument"],
        ts_us=int(trade["entry_time_us"]),
        side="buy" if trade["side"] == "long" else "sell",
        scanner=result["strategy"],
        reason=f"{trade.get('exit_reason') or 'exit'} exit, P&L {money(pnl, signed=True)}",
        stop=trade.get("stop"),
        target=trade.get("target"),
        timeframe=result["timeframe"],
        exit_ts_us=None if trade.get("exit_time_us") is None else int(trade["exit_time_us"]),
    )


def _count(value: float | None) -> Text:
    return _right(f"{int(value or 0):,}")


def _rate(value: float | None) -> Text:
    return _right("-" if value is None else f"{value * 100:.0f}%")


def _fall(value: float | None) -> Text:
    return _right("-" if value is None else f"{value:.2f}%")


#: A sweep row's figures after its score: (column, summary key, how shown).
SWEEP_FIGURES = (
    ("Trades", "trades", _count),
    ("Net P&L", "net_pnl", _signed),
    ("Return", "return_pct", lambda value: _right(_pct(value))),
    ("Win", "win_rate", _rate),
    ("PF", "profit_factor", lambda value: _right(_ratio(value))),
    ("DD", "max_drawdown_pct", _fall),
    ("Sharpe", "sharpe", lambda value: _right(_ratio(value))),
)


class TradesTable(SignalsTable):
    """One click on a trade charts it (as a click on a signal does)."""


class BacktestScreen(Screen[SignalMark | None]):
    """Dismissed with a trade to chart (None: just closed). The app keeps the screen
    (installed), so a result and a run in progress outlive a visit to the chart."""

    BINDINGS = [
        # escape cancels a run (the first binding of the key that applies); without one,
        # it goes back. T goes back either way: a run goes on meanwhile.
        Binding("escape", "cancel_run", "Cancel run", key_display="esc", id="backtest-cancel"),
        Binding("escape,T", "close", "Back", key_display="esc", id="backtest-close"),
        Binding("ctrl+r", "run", "Run", id="backtest-run"),
        Binding("c", "chart_trade", "Chart trade", id="backtest-chart"),
    ]

    def __init__(
        self,
        client: EngineClient,
        instrument: str,
        timeframe: str,
        strategies: list[str] | None = None,
    ) -> None:
        super().__init__()
        self.client = client
        self.instrument = instrument
        self.timeframe = timeframe if timeframe in TIMEFRAMES else "1m"
        self.strategies = list(dict.fromkeys(strategies or ["sma_cross"]))
        self.job_id: int | None = None
        self.job: dict[str, Any] = {}  # the newest status of the job followed
        self.result: dict[str, Any] | None = None
        self.trades: list[dict[str, Any]] = []
        self.sweep_rows: list[dict[str, Any]] = []
        self.charts = 0
        self.headline = ""  # how the last job ended, in one line
        self._chart_points: list[dict[str, Any]] = []

    # --- layout -----------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        start = (datetime.now(UTC) - timedelta(days=DEFAULT_DAYS)).strftime("%Y-%m-%d")
        yield Header()
        with Vertical(id="bt-form"):
            with Horizontal(classes="bt-row"):
                yield Label("Strategy", classes="bt-label")
                yield Input(
                    self.strategies[0],
                    id="bt-strategy",
                    suggester=SuggestFromList(self.strategies, case_sensitive=False),
                    compact=True,
                )
                yield Label("Instrument", classes="bt-label")
                yield Input(self.instrument, id="bt-instrument", compact=True)
                yield Label("TF", classes="bt-label")
                yield Select(
                    [(tf, tf) for tf in TIMEFRAMES],
                    value=self.timeframe,
                    allow_blank=False,
                    id="bt-timeframe",
                    compact=True,
                )
            with Horizontal(classes="bt-row"):
                yield Label("From", classes="bt-label")
                yield Input(start, id="bt-from", placeholder="2026-11-20", compact=True)
                yield Label("To", classes="bt-label")
                yield Input("", id="bt-to", placeholder="now", compact=True)
                yield Label("Mode", classes="bt-label")
                yield Select(MODES, value="single", allow_blank=False, id="bt-mode", compact=True)
            with Horizontal(classes="bt-row"):
                yield Label("Params", classes="bt-label")
                yield Input(
                    "",
                    id="bt-params",
                    placeholder="fast=10 slow=30 · ranges for a sweep: fast=5..30:5 slow=20,40",
                    compact=True,
                )
                yield Label("Detail", classes="bt-label")
                yield Select(DETAILS, value="off", allow_blank=False, id="bt-detail", compact=True)
                yield Label("MC", classes="bt-label")
                yield Input("", id="bt-mc", placeholder="off", compact=True)
                yield Label("Seed", classes="bt-label")
                yield Input("", id="bt-seed", placeholder="-", compact=True)
                yield Checkbox("gaps ok", id="bt-gaps", compact=True)
            with Horizontal(classes="bt-row"):
                yield Label("Train", classes="bt-label")
                yield Input("3d", id="bt-train", compact=True)
                yield Label("Test", classes="bt-label")
                yield Input("1d", id="bt-test", compact=True)
                yield Label("Trials", classes="bt-label")
                yield Input("", id="bt-trials", placeholder="grid", compact=True)
                yield Label("Objective", classes="bt-label")
                yield Input(
                    "sharpe",
                    id="bt-objective",
                    suggester=SuggestFromList(OBJECTIVES),
                    compact=True,
                )
                yield Button("Run", id="bt-run", variant="primary", compact=True)
        with Horizontal(id="bt-status-row"):
            yield ProgressBar(id="bt-progress", show_eta=False)
            yield Label("", id="bt-message")
        with TabbedContent(id="bt-results"):
            with TabPane("Overview", id="bt-tab-overview"), Horizontal(id="bt-overview"):
                yield Static(
                    Text("run a backtest: its figures show here", style="dim"), id="bt-summary"
                )
                yield Static("", id="bt-equity")
            with TabPane("Trades", id="bt-tab-trades"):
                yield TradesTable(id="bt-trades", cursor_type="row", zebra_stripes=True)
            with TabPane("Sweep", id="bt-tab-sweep"):
                yield DataTable(id="bt-sweep", cursor_type="row", zebra_stripes=True)
            with TabPane("Folds", id="bt-tab-folds"):
                yield DataTable(id="bt-folds", cursor_type="row", zebra_stripes=True)
            with TabPane("Monte Carlo", id="bt-tab-mc"), Vertical():
                yield Static("", id="bt-mc-note")
                yield DataTable(id="bt-mc-table", cursor_type="row", zebra_stripes=True)
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#bt-trades", DataTable)
        for key, label in TRADE_COLUMNS:
            table.add_column(label, key=key)
        tabs = self.query_one(TabbedContent)
        tabs.hide_tab("bt-tab-sweep")
        tabs.hide_tab("bt-tab-folds")
        tabs.hide_tab("bt-tab-mc")
        self.query_one("#bt-progress").display = False
        run = self.app.get_key_display(Binding("ctrl+r", "run"))
        self._say(Text(f"enter (or {run}) runs it · ranges in params make a sweep", style="dim"))
        self._show_mode_fields("single")
        self.query_one("#bt-strategy", Input).focus()

    # --- the form ---------------------------------------------------------------------

    @on(Select.Changed, "#bt-mode")
    def _mode_changed(self, event: Select.Changed) -> None:
        self._show_mode_fields(str(event.value))

    def _show_mode_fields(self, mode: str) -> None:
        """Train and test mean something to a walk-forward, trials to a search, detail
        to a single run, a Monte Carlo to one run's trades (a walk-forward's stitched)."""
        walk = mode in ("walk-forward", "anchored")
        for name in ("bt-train", "bt-test"):
            self.query_one(f"#{name}", Input).disabled = not walk
        self.query_one("#bt-trials", Input).disabled = mode == "single"
        self.query_one("#bt-detail", Select).disabled = mode != "single"
        self.query_one("#bt-mc", Input).disabled = mode == "sweep"

    def _text(self, name: str) -> str:
        return self.query_one(f"#{name}", Input).value.strip()

    def request(self) -> dict[str, Any]:
        """The form as a backtest request; a SptraderError naming the field when a time
        or a number cannot be read (the engine checks everything else)."""
        mode = str(self.query_one("#bt-mode", Select).value)
        start = datetime_to_us(parse_time(self._text("bt-from"), what="from time"))
        to = self._text("bt-to")
        request: dict[str, Any] = {
            "strategy": self._text("bt-strategy"),
            "instrument": self._text("bt-instrument"),
            "timeframe": str(self.query_one("#bt-timeframe", Select).value),
            "start_us": start,
            "end_us": datetime_to_us(parse_time(to, what="to time")) if to else None,
            "params": self._text("bt-params").split(),
            "mode": "walk-forward" if mode == "anchored" else mode,
            "objective": self._text("bt-objective") or "sharpe",
            "allow_gaps": self.query_one("#bt-gaps", Checkbox).value,
        }
        if mode in ("walk-forward", "anchored"):
            request.update(
                train=self._text("bt-train"),
                test=self._text("bt-test"),
                anchored=mode == "anchored",
            )
        if mode != "single":
            request["top"] = TOP
            trials = self._whole("bt-trials", "trials")
            if trials is not None:
                request["trials"] = trials
        detail = str(self.query_one("#bt-detail", Select).value)
        if mode == "single" and detail != "off":
            request["detail"] = detail
        runs = self._whole("bt-mc", "Monte Carlo runs")
        if mode != "sweep" and runs:
            request["monte_carlo"] = runs
        seed = self._whole("bt-seed", "seed")
        if seed is not None:
            request["seed"] = seed
        return request

    def _whole(self, name: str, what: str) -> int | None:
        """A field's whole number (None: empty); a SptraderError naming it otherwise."""
        text = self._text(name).replace(",", "").replace("_", "")
        if not text:
            return None
        if not text.isdigit():
            raise SptraderError(f"{what} must be a whole number, not {self._text(name)!r}")
        return int(text)

    @on(Input.Submitted)
    def _submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.action_run()

    @on(Button.Pressed, "#bt-run")
    def _run_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.action_run()

    def action_run(self) -> None:
        if self.running:
            self._say(Text("a backtest is running: esc cancels it", style="yellow"))
            return
        try:
            request = self.request()
        except SptraderError as error:
            self._say(Text(str(error), style="red"))
            return
        self._start(request)

    @property
    def running(self) -> bool:
        return self.job_id is not None and self.job.get("state") not in FINISHED

    # --- the job ----------------------------------------------------------------------

    @work(exclusive=True, group="backtest-start", exit_on_error=False)
    async def _start(self, request: dict[str, Any]) -> None:
        self._say(Text("starting…", style="dim"))
        try:
            status = await self.client.start_backtest(request)
        except Exception as error:  # a bad request, the daemon gone: one line
            self._say(Text(_one_line(error), style="red"))
            return
        self.job_id = int(status["job_id"])
        self._show_status(status)
        # Off the form, so T (back: the run goes on) and ←/→ are keys, not letters.
        self.query_one(TabbedContent).query_one(Tabs).focus()
        self.refresh_bindings()
        self._follow(self.job_id)

    @work(exclusive=True, group="backtest-follow", exit_on_error=False)
    async def _follow(self, job_id: int) -> None:
        """Ask how the job is doing until it ends (never two asks at once)."""
        while True:
            try:
                status = await self.client.backtest_job(job_id)
            except Exception as error:
                self.job = {"state": "failed"}
                self._say(Text(f"the backtest cannot be followed: {_one_line(error)}", "red"))
                self.refresh_bindings()
                return
            if job_id != self.job_id:
                return
            self._show_status(status)
            if status["state"] in FINISHED:
                self.refresh_bindings()
                if status["state"] == "done" and status.get("result") is not None:
                    self._show_result(status["result"])
                if self.app.screen is not self:  # it ended while the user was elsewhere
                    self.app.notify(
                        self.headline, title="backtest", severity=_SEVERITY[status["state"]]
                    )
                return
            await asyncio.sleep(POLL_S)

    def action_cancel_run(self) -> None:
        if self.running and self.job_id is not None:
            self._cancel(self.job_id)

    @work(group="backtest-cancel", exit_on_error=False)
    async def _cancel(self, job_id: int) -> None:
        self._say(Text("cancelling…", style="yellow"))
        try:
            await self.client.cancel_backtest(job_id)
        except Exception as error:
            self._say(Text(f"not cancelled: {_one_line(error)}", style="red"))

    def _show_status(self, status: dict[str, Any]) -> None:
        self.job = status
        state = status["state"]
        bar = self.query_one("#bt-progress", ProgressBar)
        bar.display = state not in FINISHED
        if state == "running" and status.get("total"):
            bar.update(total=status["total"], progress=status["done"])
        elif state == "loading":
            bar.update(total=None)
        elapsed = f"{status.get('elapsed_s') or 0:.1f}s"
        if state == "failed":
            self.headline = status.get("error") or "failed"
            self._say(Text(self.headline, style="red"))
        elif state == "cancelled":
            done = (
                f" after {status['done']}/{status['total']} {status['unit']}"
                if status.get("total")
                else ""
            )
            self.headline = f"cancelled{done}"
            self._say(Text(self.headline, style="yellow"))
        elif state == "done":
            self.headline = f"done in {elapsed}: {self._what_ran(status)}"
            chart = self.app.get_key_display(Binding("c", "chart_trade"))
            self._say(
                Text.assemble(
                    (self.headline, "green"),
                    (f" · ←/→ the result's tabs · {chart} charts a trade", "dim"),
                )
            )
        else:
            self._say(Text(f"{status.get('message') or state} · {elapsed}", style="dim"))

    def _what_ran(self, status: dict[str, Any]) -> str:
        result = status.get("result") or {}
        if result.get("mode") == "sweep":
            return f"{result['sweep']['combinations']:,} combinations"
        if result.get("mode") == "walk-forward":
            return f"{result['walk_forward']['total_folds']} folds"
        run = result.get("run") or {}
        return f"{run.get('trades_total', 0):,} trades"

    def _say(self, message: Text) -> None:
        self.query_one("#bt-message", Label).update(message)

    # --- the result -------------------------------------------------------------------

    def _show_result(self, result: dict[str, Any]) -> None:
        self.result = result
        run = result.get("run") or {}
        self.query_one("#bt-summary", Static).update(summary_text(result))
        equity = run.get("equity") or {"ts_us": [], "equity": []}
        self._chart_points = [
            {"ts_us": ts, "equity": value}
            for ts, value in zip(equity["ts_us"], equity["equity"], strict=True)
        ]
        self._draw_chart()
        self._show_trades(run, result.get("price_decimals"))
        tabs = self.query_one(TabbedContent)
        if result["mode"] == "sweep":
            self._show_sweep(result)
            tabs.show_tab("bt-tab-sweep")
        else:
            tabs.hide_tab("bt-tab-sweep")
        if result["mode"] == "walk-forward":
            self._show_folds(result)
            tabs.show_tab("bt-tab-folds")
        else:
            tabs.hide_tab("bt-tab-folds")
        if result.get("monte_carlo"):
            self._show_monte_carlo(result["monte_carlo"])
            tabs.show_tab("bt-tab-mc")
        else:
            tabs.hide_tab("bt-tab-mc")
        tabs.active = "bt-tab-overview"
        # The tabs focused: ←/→ go through the result at once, tab into a table.
        tabs.query_one(Tabs).focus()
        self.refresh_bindings()

    def _show_trades(self, run: dict[str, Any], decimals: int | None) -> None:
        table = self.query_one("#bt-trades", DataTable)
        table.clear()
        self.trades = list(run.get("trades") or [])
        for index, trade in enumerate(self.trades, start=1):
            side = str(trade["side"])
            table.add_row(
                _right(str(index), "dim"),
                _time(trade.get("entry_time_us")),
                Text(side, style="green" if side == "long" else "red"),
                _right(format_price(trade.get("entry_price"), decimals)),
                _time(trade.get("exit_time_us")),
                _right(format_price(trade.get("exit_price"), decimals)),
                _signed(trade.get("pnl")),
                trade.get("exit_reason") or "",
                _right(str(trade.get("bars") or 0)),
                _right(format_qty(float(trade.get("qty") or 0))),
                key=str(index),
            )
        total = int(run.get("trades_total") or 0)
        label = (
            f"Trades {total:,}"
            if total == len(self.trades)
            else (f"Trades {len(self.trades):,}/{total:,}")
        )
        self.query_one(TabbedContent).get_tab("bt-tab-trades").label = label

    def _show_sweep(self, result: dict[str, Any]) -> None:
        sweep = result["sweep"]
        table = self.query_one("#bt-sweep", DataTable)
        table.clear(columns=True)
        varied = list(sweep["varied"])
        objective = result["objective"]
        # The objective's own figure is its score column, not shown twice.
        figures = [figure for figure in SWEEP_FIGURES if figure[1] != objective]
        for column in ["#", *varied, objective, *(label for label, _, _ in figures)]:
            table.add_column(column)
        self.sweep_rows = list(sweep["rows"])
        for index, row in enumerate(self.sweep_rows, start=1):
            cells: list[object] = [
                _right(str(index), "dim"),
                *(_right(_value(row["params"].get(name, "-"))) for name in varied),
            ]
            if row.get("error"):
                cells += [Text(row["error"], style="red"), *[""] * len(figures)]
            else:
                summary = row["summary"] or {}
                cells.append(_right(_ratio(row.get("score")), "bold"))
                cells += [shown(summary.get(key)) for _, key, shown in figures]
            table.add_row(*cells, key=str(index))
        method = "TPE" if sweep["method"] == "tpe" else "grid"
        self.query_one(TabbedContent).get_tab(
            "bt-tab-sweep"
        ).label = f"Sweep {sweep['combinations']:,} ({method})"

    def _show_folds(self, result: dict[str, Any]) -> None:
        walk = result["walk_forward"]
        table = self.query_one("#bt-folds", DataTable)
        table.clear(columns=True)
        varied = list(walk["varied"])
        columns = [
            "Fold",
            "Train",
            "Test",
            *varied,
            "IS score",
            "OOS score",
            "OOS trades",
            "OOS P&L",
            "OOS DD",
        ]
        for column in columns:
            table.add_column(column)
        for fold in walk["folds"]:
            params = fold.get("params") or {}
            out = fold.get("out_sample") or {}
            cells: list[object] = [
                _right(str(fold["fold"]), "dim"),
                _span(fold["train_start_us"], fold["train_end_us"]),
                _span(fold["test_start_us"], fold["test_end_us"]),
                *[_right(_value(params[name]) if name in params else "-") for name in varied],
            ]
            if fold.get("error"):
                cells += [Text(fold["error"], style="red"), "", "", "", ""]
            else:
                drawdown = out.get("max_drawdown_pct")
                cells += [
                    _right(_ratio(fold.get("in_score"))),
                    _right(_ratio(fold.get("out_score")), "bold"),
                    _right(f"{int(out.get('trades') or 0):,}"),
                    _signed(out.get("net_pnl")),
                    _right("-" if drawdown is None else f"{drawdown:.2f}%"),
                ]
            table.add_row(*cells, key=str(fold["fold"]))
        kind = "anchored" if walk["anchored"] else "rolling"
        self.query_one(TabbedContent).get_tab(
            "bt-tab-folds"
        ).label = f"Folds {walk['total_folds']} ({kind})"

    def _show_monte_carlo(self, drawn: dict[str, Any]) -> None:
        """The percentiles of each figure over the draws, and what the real order was."""
        note = self.query_one("#bt-mc-note", Static)
        table = self.query_one("#bt-mc-table", DataTable)
        table.clear(columns=True)
        tab = self.query_one(TabbedContent).get_tab("bt-tab-mc")
        if drawn.get("error"):
            note.update(Text(drawn["error"], style="yellow"))
            tab.label = "Monte Carlo"
            return
        shuffled, resampled = drawn["reshuffled"], drawn["resampled"]
        original = drawn["original"]
        seed = "" if drawn.get("seed") is None else f", seed {drawn['seed']}"
        note.update(
            Text.assemble(
                (f"{drawn['trades']:,} trades, {shuffled['runs']:,} runs each{seed}", "bold"),
                (" · the real order's drawdown ", "dim"),
                f"{money(original['max_drawdown'])} ({original['max_drawdown_pct']:.2f}%)",
                (f", deeper than {drawn['original_drawdown_percentile']:.0f}% of orders", "dim"),
                (" · resampled: a loss in ", "dim"),
                f"{resampled['loss_pct']:.1f}%",
                (", ruin in ", "dim"),
                f"{resampled['ruin_pct']:.1f}%",
            )
        )
        keys = list(shuffled["max_drawdown"])  # p5 ... p95
        for column in ["", *keys]:
            table.add_column(column)

        # Each figure a row of its own, so the five percentiles fit 80 columns.
        def share(value: float) -> str:
            return f"{value:.2f}%"

        rows = [
            ("shuffled DD", shuffled, "max_drawdown", money),
            ("shuffled DD %", shuffled, "max_drawdown_pct", share),
            ("resampled DD", resampled, "max_drawdown", money),
            ("resampled DD %", resampled, "max_drawdown_pct", share),
            ("final equity", resampled, "final_equity", money),
            ("return", resampled, "return_pct", _pct),
        ]
        for label, dist, figure, shown in rows:
            values = dist[figure]
            style = pnl_style if figure == "return_pct" else (lambda value: "")
            table.add_row(
                label, *(_right(shown(values[k]), style(values[k])) for k in keys), key=label
            )
        tab.label = f"Monte Carlo {shuffled['runs']:,}"

    def _draw_chart(self) -> None:
        chart = self.query_one("#bt-equity", Static)
        width, height = chart.content_size.width, chart.content_size.height
        if self.result is None or width < 10 or height < 4:
            return
        self._render_chart(list(self._chart_points), width, height)

    @work(thread=True, exclusive=True, group="backtest-chart", exit_on_error=False)
    def _render_chart(self, points: list[dict[str, Any]], width: int, height: int) -> None:
        text = Text.from_ansi(render_equity_chart(points, width, height), no_wrap=True)
        self.app.call_from_thread(self._show_chart, text)

    def _show_chart(self, text: Text) -> None:
        if self.is_attached:
            self.query_one("#bt-equity", Static).update(text)
            self.charts += 1

    def on_resize(self) -> None:
        if self.result is not None:
            self.call_after_refresh(self._draw_chart)

    @on(TabbedContent.TabActivated)
    def _tab_shown(self, event: TabbedContent.TabActivated) -> None:
        if event.pane.id == "bt-tab-overview":  # sized only once shown
            self.call_after_refresh(self._draw_chart)

    # --- acting on the result ---------------------------------------------------------

    @on(DataTable.RowSelected, "#bt-trades")
    def _trade_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.action_chart_trade()

    def action_chart_trade(self) -> None:
        """Close the screen with the trade under the cursor, for the chart."""
        table = self.query_one("#bt-trades", DataTable)
        if self.result is None or not self.trades:
            return
        row = min(max(table.cursor_row, 0), len(self.trades) - 1)
        self.dismiss(trade_mark(self.result, self.trades[row]))

    @on(DataTable.RowSelected, "#bt-sweep")
    def _sweep_row_selected(self, event: DataTable.RowSelected) -> None:
        """A combination into the form, as a single run (Run shows its trades)."""
        event.stop()
        index = event.cursor_row
        if not 0 <= index < len(self.sweep_rows):
            return
        params = self.sweep_rows[index]["params"]
        self.query_one("#bt-params", Input).value = _params_text(params)
        self.query_one("#bt-mode", Select).value = "single"
        self._say(Text(f"{_params_text(params)} in the form: enter runs it alone", style="dim"))
        self.query_one("#bt-params", Input).focus()

    def action_close(self) -> None:
        self.dismiss(None)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """``escape`` cancels while a run goes on (else it goes back); ``c`` charts only
        a result's trade."""
        if action == "cancel_run":
            return self.running
        if action == "chart_trade":
            return bool(self.trades)
        return True

    # --- for tests ----------------------------------------------------------------------

    def trade_rows(self) -> list[dict[str, str]]:
        table = self.query_one("#bt-trades", DataTable)
        return [
            {
                key: str(table.get_cell_at((row, column)))
                for column, (key, _) in enumerate(TRADE_COLUMNS)
            }
            for row in range(table.row_count)
        ]

    def table_rows(self, table_id: str) -> list[list[str]]:
        table = self.query_one(f"#{table_id}", DataTable)
        return [
            [str(table.get_cell_at((row, column))) for column in range(len(table.columns))]
            for row in range(table.row_count)
        ]

    @property
    def message(self) -> str:
        return str(self.query_one("#bt-message", Label).render())


def _one_line(error: BaseException) -> str:
    text = (str(error).strip().splitlines() or [""])[0]
    return text or type(error).__name__
