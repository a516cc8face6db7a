"""The ``?`` help screen: keys and mouse use of every pane.

The keys are never written here: each row names the bindings it is about (``{id}`` in
its keys cell) and shows the keys those bindings have in this app, after the
``[keymap]`` of the config, so Help cannot drift from the keys (a test checks that
every binding of the panes and screens has a row)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from textual.app import App, ComposeResult
from textual.binding import Binding, BindingsMap
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Markdown

from sptrader.screens.alert_form import AlertRuleForm
from sptrader.screens.alerts import AlertsScreen, ConfirmRemove
from sptrader.screens.backtest import BacktestScreen
from sptrader.screens.chart import ChartPane
from sptrader.screens.data import DataScreen
from sptrader.screens.halt import HaltScreen
from sptrader.screens.journal import JournalScreen
from sptrader.screens.order_ticket import OrderTicket
from sptrader.screens.orders import OrdersPane
from sptrader.screens.positions import PositionsPane
from sptrader.screens.services import ServicesPane
from sptrader.screens.strategies import StrategiesScreen
from sptrader.screens.symbol_search import SymbolSearchScreen
from sptrader.screens.watchlist import WatchlistPane

# Where the bindings Help shows are declared (besides the app's own).
BOUND = (
    ChartPane,
    WatchlistPane,
    ServicesPane,
    PositionsPane,
    OrdersPane,
    OrderTicket,
    SymbolSearchScreen,
    DataScreen,
    StrategiesScreen,
    JournalScreen,
    BacktestScreen,
    HaltScreen,
    AlertsScreen,
    AlertRuleForm,
    ConfirmRemove,
)


@dataclass(frozen=True, slots=True)
class Row:
    """One line of the keys table: ``keys`` says what to press or click, with
    ``{binding-id}`` where a binding's keys go."""

    where: str
    keys: str
    does: str

    @property
    def binding_ids(self) -> list[str]:
        return re.findall(r"\{([a-z0-9-]+)\}", self.keys)


ROWS = (
    Row(
        "anywhere",
        " ".join(f"{{timeframe-{tf}}}" for tf in ("1m", "5m", "15m", "1h", "4h", "1d")),
        "chart timeframe 1m, 5m, 15m, 1h, 4h, 1d",
    ),
    Row(
        "anywhere",
        "{focus-watchlist} {focus-chart} {focus-services} {focus-events} {focus-positions}"
        " {focus-orders}",
        "focus watchlist, chart, services, events, positions, orders (under 160 columns:"
        " show that pane)",
    ),
    Row(
        "anywhere",
        "{order-buy} / {order-sell}",
        "order ticket to buy / sell (the chart's instrument, or the selected position's"
        " or order's)",
    ),
    Row(
        "anywhere",
        "{search-symbols}",
        "search the feeds' instruments; `enter` adds one to the watchlist",
    ),
    Row("anywhere", "{data-screen}", "Data screen: stored coverage and gaps of every instrument"),
    Row(
        "anywhere",
        "{strategies-screen}",
        "Strategies screen: scanners, their signals and run lineage",
    ),
    Row(
        "anywhere",
        "{journal-screen}",
        "Journal screen: trades and notes per day, statistics, cumulative P&L",
    ),
    Row(
        "anywhere",
        "{backtest-screen}",
        "Backtest screen: a backtest, sweep or walk-forward from a form; equity, trades, folds",
    ),
    Row(
        "anywhere",
        "{alerts-screen}",
        "Alerts screen: alert rules (add, edit, pause, test, remove) and their history",
    ),
    Row(
        "anywhere",
        "`ctrl+p`",
        "command palette (instruments, timeframes, services, backfills, data)",
    ),
    Row(
        "anywhere",
        "{halt}",
        "kill switch: halt every venue (working orders cancelled, no new entries), after"
        " a confirmation; the same dialog resumes them",
    ),
    Row("anywhere", "{help}", "this help"),
    Row("anywhere", "{quit}", "quit: stops services, flushes the store"),
    Row("watchlist", "click a row, arrows, `enter`", "show the instrument in the chart"),
    Row("watchlist", "{watchlist-remove}", "remove the selected instrument"),
    Row("search", "type, arrows, `enter`; {search-close}", "add an instrument; close the search"),
    Row("chart", "click a timeframe button", "change the timeframe"),
    Row(
        "chart",
        "{chart-back} / {chart-forward}, mouse wheel",
        "pan back / forward in time (a quarter window; a wheel notch an eighth)",
    ),
    Row(
        "chart",
        "{chart-oldest}",
        "oldest stored bar; again: a window further back (fetched from the feed)",
    ),
    Row("chart", "{chart-live}", "back to live"),
    Row(
        "chart",
        "{chart-ma} / {chart-bands}",
        "toggle EMA20 + SMA50 / Bollinger(20, 2) over the candles",
    ),
    Row(
        "chart",
        "{chart-rsi} / {chart-macd}",
        "toggle an RSI(14) panel (30/70 guides) / a MACD(12, 26, 9) panel",
    ),
    Row("chart", "{chart-clear-signal}", "clear the mark of a signal chosen on Strategies"),
    Row("data", "arrows, {data-fill}", "select an instrument; fill its gaps over the window"),
    Row(
        "data",
        "click a day of the heatmap",
        "fill that day only (red / yellow: holes, · market closed)",
    ),
    Row("data", "{data-shorter} / {data-longer}", "fewer / more days (7 to 90)"),
    Row("data", "{data-close}", "back to the main screen"),
    Row(
        "strategies",
        "{strategies-run} / {strategies-pause}",
        "run the selected scanner now / pause or resume it",
    ),
    Row("strategies", "`enter` or click on a signal", "show its instrument in the chart"),
    Row("strategies", "{strategies-close}", "back to the main screen"),
    Row("services", "click a row, then Start / Stop / Restart", "control that service"),
    Row(
        "services",
        "{service-start} / {service-stop} / {service-restart}",
        "start / stop / restart the selected service",
    ),
    Row("positions", "click ✕ close, or {position-close}", "flatten the position (market order)"),
    Row("orders", "click ✕ cancel, or {order-cancel}", "cancel the order"),
    Row(
        "order ticket",
        "`tab`, click; `enter` or Submit",
        "move between fields; place the order (checked as you type)",
    ),
    Row("order ticket", "{ticket-close}", "close it without an order"),
    Row(
        "kill switch",
        "`enter` or Halt / Resume; {halt-cancel} or Cancel",
        "halt every venue / lift every halt; close it, halting nothing",
    ),
    Row(
        "journal",
        "arrows, click a day",
        "that day's notes, trades and statistics (*All days*: every one)",
    ),
    Row(
        "journal",
        "{journal-note}, then `enter`",
        "write a note about the selected day (today for *All days*)",
    ),
    Row("journal", "{journal-equity}", "chart the cumulative P&L / the equity curve"),
    Row("journal", "{journal-close}", "back to the main screen"),
    Row(
        "backtest",
        "`tab`, click; `enter` or Run, {backtest-run}",
        "move between fields; run it (ranges in params, e.g. `fast=5..30:5`: a sweep)",
    ),
    Row("backtest", "{backtest-cancel}", "cancel the run in progress"),
    Row(
        "backtest",
        "`enter` or click on a trade, {backtest-chart}",
        "show the trade on the chart: ▲/▼ at its entry, ◆ at its exit",
    ),
    Row("backtest", "`enter` on a sweep row", "its params in the form, to run it alone"),
    Row(
        "backtest",
        "{backtest-close}",
        "back to the main screen (a run goes on; a notice says when it ends; kept for next time)",
    ),
    Row(
        "alerts",
        "{alerts-new} / {alerts-edit}",
        "a new rule / edit the selected one (a config file rule is edited there)",
    ),
    Row(
        "alerts",
        "{alerts-pause} / {alerts-test}",
        "pause or resume the selected rule / send a test notice through its channels",
    ),
    Row("alerts", "{alerts-remove}", "remove the selected stored rule, after a confirmation"),
    Row("alerts", "{alerts-history}", "history of every rule / of the selected rule only"),
    Row("alerts", "{alerts-close}", "back to the main screen"),
    Row(
        "alert form",
        "`tab`, click; `enter` or Save; {alert-form-close}",
        "move between fields; save the rule (a refusal shows above Save); close it",
    ),
    Row(
        "remove alert",
        "`enter` or Remove; {alert-remove-cancel} or Cancel",
        "remove the rule / keep it",
    ),
)

INTRO = """\
# SPtrader — keys and mouse

| Where | Key / mouse | Does |
|---|---|---|
"""

NOTES = """
Prices flash green or red as they move. A dimmed row marked ⚠ is stale: its
feed is not delivering (reconnecting, silent or stopped), so its prices are old.
The watchlist is kept in the home (`watchlist.json`) across restarts. *Chg %* is since the first bar of the
UTC day. *Last* is the forming bar's close: trades for instruments that trade,
the bid for quote-only ones (FX, metals).

Paper trading: the strip above the positions shows equity, cash, exposure and the
day's P&L. The ticket sizes an order by quantity (`1000`, `10k`) or by the % of equity
lost at the stop-loss; a field's problem shows in red under it and keeps Submit
disabled. An order a risk limit refuses keeps the ticket open with the limit and its
numbers. Fills and rejections of orders placed elsewhere (scanners, stops, the CLI)
pop up as notifications. A focused pane's own keys come first: {service-start} starts a
service in the services pane.

Live trading: a venue whose `[brokers.NAME]` says `trading = "live"` sends real orders.
The header and the account strip then mark it `LIVE BINANCE` in red (with HALTED or
*not connected* when so), the positions and orders panes say each row's venue, and the
order ticket asks where the order goes: always paper unless you pick the live venue in
that ticket (its border and Submit then say LIVE). {halt} is the kill switch.

History loads itself: when the chart shows (or is panned to) hours the store lacks,
it shows what is there, says *loading history…* and fetches the missing open market
hours from the instrument's feed in the background. A panned chart says so in its
title; live prices keep updating, and {chart-live} brings the live window back.

Keys can be remapped in the `[keymap]` table of `config.toml`
(binding id = keys, e.g. `timeframe-1h = "h"`).

Press {help-close} or {help} to close.
"""

_BINDING_REF = re.compile(r"\{([a-z0-9-]+)\}")


def bound_keys(
    app: App, node_types: Iterable[type], keymap: Mapping[str, str]
) -> dict[str, list[str]]:
    """Each binding id's keys as a user reads them (``b``, ``esc``, ``←``), as bound in
    ``app``: the keys ``node_types`` (and the app) declare, with ``keymap`` (the config's
    ``[keymap]``, which the app gave App.set_keymap) applied the way Textual applies it
    to a screen's bindings."""
    keys: dict[str, list[str]] = {}
    for node_type in (type(app), *node_types):
        declared = getattr(node_type, "BINDINGS", [])
        first_keys: dict[str, str] = {}
        for binding in Binding.make_bindings(declared):
            if binding.id:
                first_keys.setdefault(binding.id, binding.key)
        bindings = BindingsMap(declared)
        if keymap:
            bindings.apply_keymap(dict(keymap))
        for key, key_bindings in bindings.key_to_bindings.items():
            for binding in key_bindings:
                if not binding.id:
                    continue
                # A declared key_display names the first key ("esc" of "escape,S");
                # the others are shown as keys.
                if binding.key_display and key == first_keys.get(binding.id):
                    shown = binding.key_display
                else:
                    shown = app.get_key_display(binding.with_key(key, key_display=None))
                shown_keys = keys.setdefault(binding.id, [])
                if shown not in shown_keys:  # a remapped "escape,S" binds each new key twice
                    shown_keys.append(shown)
    return keys


def _with_keys(text: str, keys: dict[str, list[str]]) -> str:
    def keys_of(match: re.Match[str]) -> str:
        shown = keys.get(match[1])
        return " or ".join(f"`{key}`" for key in shown) if shown else "(unbound)"

    return _BINDING_REF.sub(keys_of, text)


def help_markdown(keys: dict[str, list[str]]) -> str:
    lines = [f"| {row.where} | {_with_keys(row.keys, keys)} | {row.does} |" for row in ROWS]
    return INTRO + "\n".join(lines) + "\n" + _with_keys(NOTES, keys)


class HelpScreen(ModalScreen[None]):
    BINDINGS = [
        Binding("escape", "dismiss", "Close", id="help-close"),
        Binding("question_mark", "dismiss", "Close", show=False),
        Binding("q", "app.quit", "Quit", id="help-quit"),
    ]

    def __init__(self, keymap: Mapping[str, str] | None = None) -> None:
        super().__init__()
        self.keymap = dict(keymap or {})  # the config's [keymap]

    def compose(self) -> ComposeResult:
        self.keys = bound_keys(self.app, (*BOUND, type(self)), self.keymap)
        self.text = help_markdown(self.keys)
        with VerticalScroll(id="help-body"):
            yield Markdown(self.text)
