"""The control center's commands in the command palette (ctrl+p): instruments, screens
(Data, Strategies, Journal, Alerts, Backtest), the order ticket, positions and orders,
backfills, timeframes and services.

The app offers them through ControlCenterCommands, a palette provider of its own beside
Textual's system commands: those are listed sorted by title, which would put
"last 30 days" before "last 7 days" and 15m before 1m; these keep their order. What they
act on is the ControlCenter below (the app: it imports this module, so this one cannot
import it).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol, TypeVar

from textual.app import SystemCommand
from textual.command import DiscoveryHit, Hit, Hits, Provider
from textual.widget import Widget

from sptrader.client.protocol import EngineClient
from sptrader.screens.chart import ChartPane
from sptrader.screens.orders import OrdersPane
from sptrader.screens.positions import PositionsPane
from sptrader.screens.services import ServicesPane
from sptrader.wording import counted

W = TypeVar("W", bound=Widget)


class ControlCenter(Protocol):
    """What the palette's commands need of the app."""

    client: EngineClient
    engine_ready: bool

    def query_one(self, selector: type[W]) -> W: ...
    def action_search_symbols(self) -> None: ...
    def action_data_screen(self) -> None: ...
    def action_strategies_screen(self) -> None: ...
    def action_journal_screen(self) -> None: ...
    def action_alerts_screen(self) -> None: ...
    def action_backtest_screen(self) -> None: ...
    def action_order_ticket(self, side: str) -> None: ...
    # Background jobs (workers): what they return is not used.
    def close_position(self, instrument: str) -> Any: ...
    def cancel_order(self, order_id: int) -> Any: ...
    def start_backfill(self, instrument: str, days: int) -> Any: ...
    def control_service(self, name: str, action: str) -> Any: ...


def palette_commands(app: ControlCenter) -> Iterator[SystemCommand]:
    chart = app.query_one(ChartPane)
    for instrument in app.client.watchlist:
        yield SystemCommand(
            f"Chart {instrument}",
            f"show {instrument} in the chart",
            lambda name=instrument: chart.show_instrument(name),
        )
    yield SystemCommand(
        "Add instrument…", "search the feeds' instruments (/)", app.action_search_symbols
    )
    yield SystemCommand(
        "Data: coverage and gaps",
        "what is stored of each instrument, day by day; fill the gaps (d)",
        app.action_data_screen,
    )
    yield SystemCommand(
        "Strategies: scanners and signals",
        "run, pause or resume scanners; their signals and run lineage (S)",
        app.action_strategies_screen,
    )
    yield SystemCommand(
        "Journal: trades, notes, statistics",
        "the paper trades and notes of each day, win rate, profit factor, P&L (J)",
        app.action_journal_screen,
    )
    yield SystemCommand(
        "Alerts: rules and history",
        "add, edit, pause, test or remove alert rules; the notices they sent (A)",
        app.action_alerts_screen,
    )
    yield SystemCommand(
        "Backtest: run, sweep, walk-forward",
        "a strategy over the stored bars, with intra-bar detail and a Monte Carlo (T)",
        app.action_backtest_screen,
    )
    if app.engine_ready:
        yield SystemCommand(
            "Buy…", "open the order ticket to buy (b)", lambda: app.action_order_ticket("buy")
        )
        yield SystemCommand(
            "Sell…",
            "open the order ticket to sell (s)",
            lambda: app.action_order_ticket("sell"),
        )
    for instrument in app.query_one(PositionsPane).positions:
        yield SystemCommand(
            f"Close position {instrument}",
            "flatten it with a market order",
            lambda name=instrument: app.close_position(name),
        )
    for order_id, order in app.query_one(OrdersPane).orders.items():
        yield SystemCommand(
            f"Cancel order {order_id}",
            f"{order['side']} {order['qty']:g} {order['instrument']} {order['type']}",
            lambda number=order_id: app.cancel_order(number),
        )
    yield SystemCommand(
        "Chart: back to live", "show the newest bars again (End)", chart.action_live
    )
    for instrument in dict.fromkeys([chart.instrument, *app.client.watchlist]):
        if not instrument:
            continue
        for days in (1, 7, 30):
            yield SystemCommand(
                f"Backfill {instrument}: last {days} day{'s' if days > 1 else ''}",
                f"download {counted(days, 'day')} of 1m history from its feed",
                lambda name=instrument, span=days: app.start_backfill(name, span),
            )
    for timeframe in chart.timeframes:
        yield SystemCommand(
            f"Timeframe {timeframe}",
            f"chart in {timeframe} bars",
            lambda tf=timeframe: chart.show_timeframe(tf),
        )
    for status in app.query_one(ServicesPane).statuses.values():
        if not status.stoppable:
            continue
        for action in ("start", "stop", "restart"):
            yield SystemCommand(
                f"{action.capitalize()} service {status.name}",
                f"{action} the {status.name} {status.kind}",
                lambda name=status.name, verb=action: app.control_service(name, verb),
            )


class ControlCenterCommands(Provider):
    """The palette's provider of palette_commands, in their order (1, 7, 30 days; 1m,
    5m, 15m ...): listed as given when nothing is typed, and matches of a query that
    score alike stay in that order (the palette sorts by score only)."""

    def _commands(self) -> list[SystemCommand]:
        app: Any = self.app  # the SptraderApp, a ControlCenter
        return list(palette_commands(app))

    async def discover(self) -> Hits:
        for command in self._commands():
            if command.discover:
                yield DiscoveryHit(command.title, command.callback, help=command.help)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for command in self._commands():
            score = matcher.match(command.title)
            if score > 0:
                yield Hit(
                    score, matcher.highlight(command.title), command.callback, help=command.help
                )
