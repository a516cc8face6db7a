"""The Textual control center. It gets its EngineClient from connect() (an Engine hosted
on the app's own loop, or the daemon serving this home) and talks to the engine only
through it; ticks are coalesced and the panes repainted at a fixed rate."""

from __future__ import annotations

import contextlib
import functools
import gc
import logging
import os
import sys

from textual import on, work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Container, Vertical
from textual.content import Content
from textual.css.query import NoMatches
from textual.dom import DOMNode
from textual.timer import Timer
from textual.widgets import Footer, Header
from textual.worker import Worker, WorkerState

from sptrader.chart_prefs import ChartPrefs, load_chart_prefs, save_chart_prefs
from sptrader.charting import SignalMark
from sptrader.client.connect import client_for
from sptrader.client.protocol import EngineClient
from sptrader.config import Settings
from sptrader.formatting import decimals_of
from sptrader.models import (
    TIMEFRAMES,
    AlertRaised,
    BackfillProgressed,
    BarClosed,
    BarUpdated,
    EngineLogged,
    FillExecuted,
    HistoryStored,
    OrderUpdated,
    QuoteReceived,
    ServiceStateChanged,
    SignalRaised,
    WatchlistChanged,
)
from sptrader.screens import (
    BackfillsPane,
    ChartPane,
    DataScreen,
    ErrorScreen,
    EventLogPane,
    HelpScreen,
    ServicesPane,
    StrategiesScreen,
    SymbolSearchScreen,
    WatchlistPane,
)
from sptrader.screens.account import AccountBar, live_state, venue_name
from sptrader.screens.alert_form import AlertRuleForm
from sptrader.screens.alerts import AlertsScreen, ConfirmRemove
from sptrader.screens.backtest import BacktestScreen
from sptrader.screens.halt import HaltScreen
from sptrader.screens.journal import JournalScreen
from sptrader.screens.order_ticket import OrderTicket
from sptrader.screens.orders import OrdersPane, describe_order
from sptrader.screens.palette import ControlCenterCommands
from sptrader.screens.pane_bar import TURN_PANES, PaneBar
from sptrader.screens.positions import PositionsPane
from sptrader.screens.routing import EventBatch, EventRouter, Route
from sptrader.wording import counted

log = logging.getLogger(__name__)

# How often the account, positions and orders are read (and at once on an order event).
TRADING_REFRESH_S = 0.5
# Order updates the app notifies (fills and rejections of orders it did not place
# itself: scanners', stop-losses', the CLI's through a daemon, resting orders').
NOTIFIED_STATUSES = ("filled", "rejected", "expired")


@functools.cache
def declared_bindings(node_type: type[DOMNode]) -> tuple[Binding, ...]:
    """A widget class's bindings, one per key: the BINDINGS of the class and its bases
    (the keys Textual binds for it; as declared, before a [keymap] remaps them)."""
    return tuple(
        binding
        for base in reversed(node_type.__mro__)
        for binding in Binding.make_bindings(vars(base).get("BINDINGS", ()))
    )


class SptraderApp(App[int]):
    CSS_PATH = "app.tcss"
    TITLE = "SPtrader"
    # Short terminals (e.g. 36 rows) give the services, positions/orders and events
    # panes fewer rows (app.tcss), so the watchlist and chart keep theirs.
    VERTICAL_BREAKPOINTS = [(0, "-short"), (44, "-tall")]
    # Under 160 columns the panes below the chart take turns (app.tcss, PaneBar); under
    # 120 the watchlist keeps only its most needed columns, so the chart keeps 40+.
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (120, "-medium"), (160, "-wide")]
    # The control center's palette commands, in their own order (palette.py).
    COMMANDS = App.COMMANDS | {ControlCenterCommands}
    # The order keys are app-wide, but a focused pane's own keys come first: `s` in the
    # services pane starts a service, `B` with the chart focused toggles its bands
    # (check_action keeps a disabled pane key from falling through to the ticket).
    BINDINGS = [
        Binding("q", "quit", "Quit", id="quit"),
        Binding("question_mark", "help", "Help", key_display="?", id="help"),
        Binding("b", "order_ticket('buy')", "Buy", id="order-buy"),
        Binding("s", "order_ticket('sell')", "Sell", id="order-sell"),
        Binding(
            "w", "focus_pane('watchlist-table')", "Watchlist", show=False, id="focus-watchlist"
        ),
        Binding("c", "focus_pane('chart')", "Chart", show=False, id="focus-chart"),
        Binding("v", "focus_pane('services-table')", "Services", show=False, id="focus-services"),
        Binding("e", "focus_pane('events')", "Events", show=False, id="focus-events"),
        Binding(
            "p", "focus_pane('positions-table')", "Positions", show=False, id="focus-positions"
        ),
        Binding("o", "focus_pane('orders-table')", "Orders", show=False, id="focus-orders"),
        Binding("J", "journal_screen", "Journal", id="journal-screen"),
        Binding("slash", "search_symbols", "Add instrument", key_display="/", id="search-symbols"),
        Binding("d", "data_screen", "Data", id="data-screen"),
        Binding("S", "strategies_screen", "Strategies", id="strategies-screen"),
        # Not in the footer (it is full at 80 columns): Help and the palette name it.
        Binding("A", "alerts_screen", "Alerts", show=False, id="alerts-screen"),
        Binding("T", "backtest_screen", "Backtest", show=False, id="backtest-screen"),
        # The kill switch works over every screen and in a text field too (it asks first).
        Binding("ctrl+k", "halt", "Halt", show=False, priority=True, id="halt"),
        *[
            Binding(str(index), f"timeframe('{timeframe}')", timeframe, id=f"timeframe-{timeframe}")
            for index, timeframe in enumerate(TIMEFRAMES, start=1)
        ],
    ]

    def __init__(self, settings: Settings, client: EngineClient | None = None) -> None:
        super().__init__()
        self.settings = settings
        self.config = settings.config
        # connect()'s choice for this home (an engine of our own, or the daemon's) unless
        # a caller hands one in.
        self.client: EngineClient = (
            client if client is not None else client_for(settings, run="everything")
        )
        # The Engine when it runs in this process (None when attached to a daemon).
        self.engine = getattr(self.client, "engine", None)
        self.subscription = self.client.subscribe("ui", self.config.ui.event_queue)
        self.engine_ready = False
        self.refreshes = 0
        self._stopping = False
        self._refresh_timers: list[Timer] = []
        # The API this app serves when it hosts the engine (EngineHost), else None.
        self._api_host = None
        # The newest (bid, ask) and the display decimals of each instrument (the order
        # ticket's estimate, the trading panes' prices).
        self.quotes: dict[str, tuple[float, float]] = {}
        self.price_decimals: dict[str, int] = {}
        self._decimals_asked: set[str] = set()
        # (order id, status) the user was shown by the ticket or a click, and those a
        # notification said: an order's update is notified once, whichever (its event
        # or the call's result, over a daemon's socket) comes first.
        self._told: set[tuple[int, str]] = set()
        self._notified: set[tuple[int, str]] = set()
        self._trading_busy = False
        self._trading_again = False
        # The last ticket's sizing and size per instrument (prefilled next time).
        self.ticket_sizes: dict[str, tuple[str, str]] = {}
        # Every venue as the client last told (trading_venues rows: live, connected,
        # halted ...); the header marks those that trade live.
        self.venues: list[dict] = []
        self._venue_marks: tuple[str, ...] = ()
        if self.config.keymap:
            self.set_keymap(self.config.keymap)

    # --- layout -----------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        chart = self.config.chart
        # The overlays and timeframe of the last session (kept in this TUI's home).
        prefs = load_chart_prefs(self.settings.home)
        timeframe = prefs.timeframe if prefs.timeframe in chart.timeframes else None
        yield Header(show_clock=True)
        # One grid for every size (app.tcss places the panes per breakpoint): from 160
        # columns each pane has its place; below, the panes after the account bar take
        # turns under the watchlist and chart (the pane bar, or a pane's key, shows one).
        with Container(id="desk", classes="-show-positions"):
            yield WatchlistPane(
                self.client.watchlist,
                self.config.ui.sparkline_points,
                decimals=self.price_decimals.get,
                id="watchlist",
            )
            yield ChartPane(
                self.client,
                list(chart.timeframes),
                timeframe or chart.default_timeframe,
                chart.bars,
                overlays=prefs.overlays,
                id="chart",
            )
            with Vertical(id="services-area"):
                yield ServicesPane(id="services")
                yield BackfillsPane(id="backfills")
            yield AccountBar(id="account")
            yield PaneBar(self._pane_keys(), id="pane-bar")
            yield PositionsPane(id="positions")
            yield OrdersPane(id="orders")
            yield EventLogPane(id="events")
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = f"{self.client.mode} · {counted(len(self.client.watchlist), 'instrument')}"
        self.query_one("#watchlist-table").focus()
        self._router = EventRouter(self._event_routes(), lambda: self._leaving)
        self._start_engine()

    @property
    def _leaving(self) -> bool:
        """Quitting, or exiting otherwise (``return_code`` is set once ``exit()`` was
        called; an app shut down from outside, as a test's or ctrl+c, stops running
        before it closes its widgets): nothing may be read or repainted any more."""
        return self._stopping or self.return_code is not None or not self.is_running

    @work(exclusive=True, group="engine", exit_on_error=False)
    async def _start_engine(self) -> None:
        await self.client.start()
        await self._serve_api()
        self._show_mode()
        self.engine_ready = True
        watchlist = self.client.watchlist
        await self._learn_price_decimals(watchlist)
        summaries = await self.client.summaries(watchlist, self.config.ui.sparkline_points)
        self.query_one(WatchlistPane).load_summaries(summaries)
        self.query_one(WatchlistPane).mark_stale(await self.client.stale_instruments())
        self.query_one(ChartPane).show_instrument(watchlist[0])
        self._refresh_timers = [
            self.set_interval(1 / self.config.ui.refresh_hz, self._drain_events, name="ui-refresh"),
            self.set_interval(
                1 / self.config.ui.chart_refresh_hz,
                self.query_one(ChartPane).render_if_due,
                name="chart-refresh",
            ),
            self.set_interval(1.0, self._poll_services, name="services-refresh"),
            self.set_interval(1.0, self._show_mode, name="mode-refresh"),
            self.set_interval(TRADING_REFRESH_S, self._refresh_trading, name="trading-refresh"),
        ]
        self._refresh_trading()
        await self._poll_services()
        await self._drain_events()
        # Everything built so far (widgets, caches, modules) lives as long as the app:
        # keep it out of the cyclic GC, whose full passes otherwise freeze the loop
        # for 150-250 ms every few seconds under a fast market.
        gc.freeze()

    async def _serve_api(self) -> None:
        """An engine hosted here serves the daemon's API on the home's socket, so every
        command (and another TUI) goes through it, as through a daemon."""
        if self.engine is None or not getattr(self.client, "run_services", False):
            return
        from sptrader.api.host import EngineHost
        from sptrader.client.paths import TUI

        host = EngineHost(self.engine, TUI)
        try:
            await host.start()
        except Exception as error:  # another host claimed the home meanwhile: said
            log.warning("not serving the API: %s", error)
            self.notify(str(error), title="commands cannot reach this TUI", severity="warning")
            return
        self._api_host = host

    async def _stop_engine(self) -> None:
        """Stop answering commands, then stop the engine (the store flushed and closed),
        then give the home back (the pid file goes last: until the store is closed no
        command may try to open it)."""
        host, self._api_host = self._api_host, None
        if host is not None:
            await host.close_server()
        try:
            await self.client.close()
        finally:
            if host is not None:
                await host.close()

    # --- engine events, coalesced and routed -------------------------------------------

    def _event_routes(self) -> list[Route]:
        """Who takes which engine events, in the order they are handed over each
        refresh: the app's own bookkeeping, the main screen's panes, the other screens,
        and the services poll last (it waits for the client)."""
        watchlist = self.query_one(WatchlistPane)
        chart = self.query_one(ChartPane)
        backfills = self.query_one(BackfillsPane)
        return [
            Route((QuoteReceived,), self._note_quotes),
            Route((OrderUpdated, FillExecuted), self._orders_changed),
            Route((SignalRaised, ServiceStateChanged), self._strategies_changed),
            # Every refresh: price flashes fade.
            Route(
                (QuoteReceived, BarUpdated, BarClosed), self._to_watchlist, watchlist, always=True
            ),
            Route((BarClosed, BarUpdated), self._to_chart, chart),
            # Not EventsDropped: the engine logs a drop too, and the pane shows it once.
            Route((EngineLogged,), self._to_event_log, self.query_one(EventLogPane)),
            Route((SignalRaised,), self._notify_signals),
            Route((AlertRaised,), self._notify_alerts),
            # Every refresh: finished backfills' lines go after a while.
            Route((BackfillProgressed,), self._to_backfills, backfills, always=True),
            Route((HistoryStored, BackfillProgressed), self._history_to_chart, chart),
            Route((HistoryStored, BackfillProgressed), self._history_to_data_screen),
            Route((WatchlistChanged,), self._watchlist_changed, watchlist),
            Route((HistoryStored, WatchlistChanged), self._history_changed),
            Route((ServiceStateChanged,), self._services_changed),
        ]

    async def _drain_events(self) -> None:
        """Take everything queued since the last refresh and hand it to the routes once
        (only the newest quote and forming bar per instrument)."""
        if self._leaving:
            return
        events = self.subscription.get_nowait()
        self.refreshes += 1
        await self._router.dispatch(events)

    async def _learn_price_decimals(self, instruments: list[str]) -> None:
        """Each instrument's price decimals from the engine (its feed's metadata, else
        its stored closes), asked once per instrument; quotes can only add to them."""
        names = [name for name in dict.fromkeys(instruments) if name not in self._decimals_asked]
        if not names:
            return
        self._decimals_asked.update(names)
        try:
            known = await self.client.price_decimals(names)
        except Exception as error:  # an older daemon, or it went away: quotes still teach
            log.debug("price decimals unavailable: %s", error)
            return
        for name, places in known.items():
            self.price_decimals[name] = max(places, self.price_decimals.get(name, -1))

    def _note_quotes(self, batch: EventBatch) -> None:
        """Keep the newest bid/ask of every instrument, and the most decimals its
        quotes used (1.05600 says 3, 1.05617 says 5)."""
        for name, quote in batch.quotes.items():
            self.quotes[name] = (quote.bid, quote.ask)
            places = decimals_of([quote.bid, quote.ask])
            if places > self.price_decimals.get(name, -1):
                self.price_decimals[name] = places

    def _orders_changed(self, batch: EventBatch) -> None:
        self._refresh_trading()  # at once, not on the next tick
        fills = batch.of(FillExecuted)
        journal = self._journal_screen()
        if journal is not None and fills:
            journal.note_changes()
        self._notify_orders([event.order for event in batch.of(OrderUpdated)])

    def _strategies_changed(self, batch: EventBatch) -> None:
        strategies_screen = self._strategies_screen()
        if strategies_screen is not None:
            strategies_screen.note_changes()  # read again on its next (1 s) tick

    def _to_watchlist(self, batch: EventBatch) -> None:
        closed = [event.bar for event in batch.of(BarClosed)]
        self.query_one(WatchlistPane).apply(batch.quotes, batch.forming, closed)

    def _to_chart(self, batch: EventBatch) -> None:
        chart = self.query_one(ChartPane)
        for event in batch.of(BarClosed):
            chart.add_minute_bar(event.bar)
        forming = batch.forming
        if chart.instrument in forming:
            chart.add_minute_bar(forming[chart.instrument])

    def _to_event_log(self, batch: EventBatch) -> None:
        self.query_one(EventLogPane).add(batch.of(EngineLogged))

    def _notify_signals(self, batch: EventBatch) -> None:
        for signal in batch.of(SignalRaised)[-5:]:  # a burst is summarised by its newest few
            self.notify(
                f"{signal.side.upper()} {signal.instrument}: {signal.reason}",
                title=f"signal · {signal.scanner}",
                severity="warning" if signal.side == "sell" else "information",
                timeout=8,
            )

    def _notify_alerts(self, batch: EventBatch) -> None:
        """Alert rules with the "tui" channel (sptrader.alerting)."""
        for alert in batch.of(AlertRaised)[-5:]:
            self.notify(
                alert.text,
                title=f"alert · {alert.rule}" if alert.rule else "alert",
                severity="warning",
                timeout=10,
            )

    def _to_backfills(self, batch: EventBatch) -> None:
        backfills_pane = self.query_one(BackfillsPane)
        progress = batch.of(BackfillProgressed)
        if progress:
            backfills_pane.apply(progress)
        elif backfills_pane.progress and self.refreshes % 10 == 0:
            backfills_pane.refresh_lines()  # let finished lines go

    def _history_to_chart(self, batch: EventBatch) -> None:
        self.query_one(ChartPane).note_history(
            batch.of(HistoryStored), batch.of(BackfillProgressed)
        )

    def _history_to_data_screen(self, batch: EventBatch) -> None:
        data_screen = self._data_screen()
        if data_screen is not None:
            with contextlib.suppress(NoMatches):  # still being composed
                data_screen.apply_events(
                    batch.of(BackfillProgressed),
                    {event.instrument for event in batch.of(HistoryStored)},
                )

    def _watchlist_changed(self, batch: EventBatch) -> None:
        self.query_one(WatchlistPane).set_instruments(batch.of(WatchlistChanged)[-1].instruments)

    def _history_changed(self, batch: EventBatch) -> None:
        """Backfilled bars arrived, or instruments joined the watchlist: charts (keeping
        a panned window) and sparklines read them again."""
        history = {event.instrument for event in batch.of(HistoryStored)}
        changed = batch.of(WatchlistChanged)
        if changed:
            history.update(changed[-1].instruments)
        if not history:
            return
        chart = self.query_one(ChartPane)
        if chart.instrument in history:
            chart.reload()
        self._load_summaries(sorted(history))

    async def _services_changed(self, batch: EventBatch) -> None:
        await self._poll_services()
        stale = await self.client.stale_instruments()
        # The app may have begun to leave while the engine answered (its panes going).
        if not self._leaving:
            with contextlib.suppress(NoMatches):
                self.query_one(WatchlistPane).mark_stale(stale)

    # --- paper trading ----------------------------------------------------------------

    def _refresh_trading(self) -> None:
        """Read the account, positions and open orders again (never two reads at once:
        one asked for during a read runs right after it)."""
        if not self.engine_ready or self._leaving:
            return
        if self._trading_busy:
            self._trading_again = True
            return
        self._trading_busy = True
        self._read_trading()

    @property
    def live_venues(self) -> list[dict]:
        """The venues that trade live here (trading = "live" and a live broker runs)."""
        return [row for row in self.venues if row.get("live") and row.get("enabled")]

    def _paper_halted(self) -> str | None:
        return next((row["halted"] for row in self.venues if row["venue"] == "paper"), None)

    async def _read_venues(self) -> None:
        """Every venue's status, and the header's marks when they change (an engine
        that cannot say keeps the last ones)."""
        try:
            self.venues = list(await self.client.trading_venues())
        except Exception as error:  # an older daemon, or it went away
            log.debug("trading venues unavailable: %s", error)
        marks = tuple(mark.plain for mark in self._header_marks())
        if marks != self._venue_marks:
            self._venue_marks = marks
            self._repaint_headers()

    def _header_marks(self) -> list:
        """LIVE BINANCE (HALTED, not connected) per live venue, PAPER HALTED."""
        marked = [row for row in self.venues if row["venue"] == "paper" and row.get("halted")]
        return [live_state(row) for row in [*marked, *self.live_venues]]

    def format_title(self, title: str, sub_title: str) -> Content:
        """The header's title, after the live venues' marks (first: a narrow header cuts
        the end of the line, never the marks)."""
        content = super().format_title(title, sub_title)
        for mark in reversed(self._header_marks()):
            content = Content.assemble(Content.from_rich_text(mark), "   ", content)
        return content

    def _repaint_headers(self) -> None:
        # Every Header watches the app's title: telling them it changed makes each one
        # format its title again (with the marks), through Textual's public API.
        self.mutate_reactive(App.title)

    async def _live_accounts(self) -> list[dict]:
        """Each live venue's account with its status (one that cannot be read: its
        status, no figures)."""
        accounts = []
        for row in self.live_venues:
            try:
                account = await self.client.account(str(row["venue"]))
            except Exception as error:  # the venue went away meanwhile: its status says
                log.debug("%s account unavailable: %s", row["venue"], error)
                account = {}
            accounts.append({**row, **account})
        return accounts

    @work(group="trading", exit_on_error=False)
    async def _read_trading(self) -> None:
        try:
            while True:
                self._trading_again = False
                try:
                    await self._read_venues()
                    live = await self._live_accounts()
                    try:
                        account, problem = await self.client.account(), ""
                    except Exception as error:  # paper disabled: the live venues still show
                        if not live:
                            raise
                        account, problem = None, str(error)
                    positions = await self.client.positions()
                    orders = await self.client.open_orders()
                    traded = [str(row["instrument"]) for row in [*positions, *orders]]
                    await self._learn_price_decimals(traded)
                except Exception as error:  # broker disabled, daemon gone: said in the strip
                    with contextlib.suppress(NoMatches):
                        self.query_one(AccountBar).show_problem(str(error))
                else:
                    with contextlib.suppress(NoMatches):  # the widgets are going away
                        self.query_one(AccountBar).show(
                            account, live, self._paper_halted(), problem
                        )
                        decimals = self.price_decimals.get
                        self.query_one(PositionsPane).show(positions, decimals, bool(live))
                        self.query_one(OrdersPane).show(orders, decimals, bool(live))
                if not self._trading_again or self._leaving:
                    break
        finally:
            self._trading_busy = False

    def _notify_orders(self, orders: list[dict]) -> None:
        """Fills, rejections and expiries the user has not been told of yet (a burst is
        summarised by its newest few)."""
        notable = []
        for order in orders:
            key = (int(order["order_id"]), str(order["status"]))
            if order["status"] in NOTIFIED_STATUSES and key not in self._told | self._notified:
                self._notified.add(key)
                notable.append(order)
        for order in notable[-5:]:
            source = str(order.get("source") or "manual")
            self.notify(
                describe_order(order, self.price_decimals.get(str(order["instrument"]))),
                title=f"{order['side']} {order['instrument']}"
                + ("" if source == "manual" else f" · {source}"),
                severity="error" if order["status"] == "rejected" else "information",
                timeout=8,
            )

    def _told_result(self, result: dict) -> None:
        """An order result the user was just shown (ticket, close, cancel)."""
        order = result.get("order")
        if order:
            self._told.add((int(order["order_id"]), str(order["status"])))

    def _notify_result(self, order: dict, title: str) -> None:
        """Say what became of an order this app placed, closed or cancelled (unless its
        event, over a daemon's socket, already did)."""
        key = (int(order["order_id"]), str(order["status"]))
        self._told.add(key)
        if key in self._notified:
            return
        self._notified.add(key)
        self.notify(
            describe_order(order, self.price_decimals.get(str(order["instrument"]))), title=title
        )

    def _ticket_instrument(self) -> str | None:
        """The selected position's or order's instrument when that pane is focused,
        else the watchlist's selected row or the chart's."""
        focused = self.focused
        positions = self.query_one(PositionsPane)
        orders = self.query_one(OrdersPane)
        if focused is positions.table and positions.selected_instrument:
            return positions.selected_instrument
        if focused is orders.table and orders.selected is not None:
            return str(orders.orders[orders.selected]["instrument"])
        watchlist = self.query_one(WatchlistPane).table
        if focused is watchlist and watchlist.row_count:
            row_key, _ = watchlist.coordinate_to_cell_key(watchlist.cursor_coordinate)
            if row_key.value:
                return row_key.value
        chart = self.query_one(ChartPane)
        return chart.instrument or next(iter(self.client.watchlist), None)

    def action_order_ticket(self, side: str) -> None:
        if not self.engine_ready:
            return
        account = self.query_one(AccountBar)
        if account.account is None and account.problem and not account.live:
            # The broker is disabled (or the daemon gone): say so instead of a ticket.
            self.notify(account.problem, title="no paper trading", severity="warning")
            return
        instrument = self._ticket_instrument() or ""
        sizing, size = self.ticket_sizes.get(instrument, ("qty", ""))
        ticket = OrderTicket(
            self.client,
            instrument=instrument,
            side=side,
            streamed=self.client.watchlist,
            quote=self.quotes.get,
            account=self.query_one(AccountBar).account,
            decimals=self.price_decimals.get,
            size=size,
            sizing=sizing,
            told=self._told_result,
            live=account.live,
        )
        self.push_screen(ticket, lambda result: self._ticket_done(ticket, result))

    def _ticket_done(self, ticket: OrderTicket, result: dict | None) -> None:
        """The ticket placed an order: say what became of it."""
        if result is None:
            return
        order = result["order"]
        self.ticket_sizes[str(order["instrument"])] = (ticket.form.sizing, ticket.form.size)
        where = f" · {venue_name(ticket.venue)}" if ticket.live else ""
        self._notify_result(order, f"{order['side']} {order['instrument']}{where}")
        self._refresh_trading()

    @on(PositionsPane.CloseRequested)
    def _close_requested(self, event: PositionsPane.CloseRequested) -> None:
        self.close_position(event.instrument, event.venue)

    @work(group="trading-actions", exit_on_error=False)
    async def close_position(self, instrument: str, venue: str = "paper") -> None:
        # "BINANCE:BTCUSDT at LIVE BINANCE" in what is said about a live venue's position.
        what = instrument if venue == "paper" else f"{instrument} at {venue_name(venue)}"
        try:
            result = await self.client.close_position(instrument, venue)
        except Exception as error:  # no position any more, broker disabled: said
            self.notify(str(error), title=f"close {what}", severity="error")
            return
        rejected = result.get("rejected")
        if rejected:
            self._told_result(result)
            self.notify(
                rejected["message"], title=f"{what} not closed", severity="error", timeout=8
            )
        else:
            self._notify_result(result["order"], f"closed {what}")
        self._refresh_trading()

    # --- the kill switch --------------------------------------------------------------

    def action_halt(self) -> None:
        """Ask, then halt every venue (or lift the halts)."""
        if self.engine_ready and not isinstance(self.screen, HaltScreen):
            self.push_screen(HaltScreen(self.venues), self._halt_chosen)

    def _halt_chosen(self, choice: str | None) -> None:
        if choice == "halt":
            self.halt_venues()
        elif choice == "resume":
            self.resume_venues()

    @work(group="trading-actions", exit_on_error=False)
    async def halt_venues(self) -> None:
        try:
            done = await self.client.halt(None, "halted from the TUI")
        except Exception as error:  # the store cannot be written, the daemon went away
            self.notify(str(error), title="not halted", severity="error", timeout=10)
            return
        parts = []
        for row in done:
            cancelled = row.get("cancelled")
            count = "" if cancelled is None else f" ({counted(int(cancelled), 'order')} cancelled)"
            parts.append(f"{venue_name(str(row['venue']))}{count}")
        message = f"halted {', '.join(parts) or 'nothing'}: new entries refused until resumed"
        self._say(message, "WARNING")
        self.notify(message, title="kill switch", severity="warning", timeout=10)
        self._refresh_trading()

    @work(group="trading-actions", exit_on_error=False)
    async def resume_venues(self) -> None:
        try:
            resumed = await self.client.resume(None)
        except Exception as error:
            self.notify(str(error), title="not resumed", severity="error", timeout=10)
            return
        names = ", ".join(venue_name(str(venue)) for venue in resumed)
        message = f"resumed {names}: entries accepted again" if names else "nothing was halted"
        self._say(message, "INFO")
        self.notify(message, title="kill switch", timeout=8)
        self._refresh_trading()

    def _say(self, message: str, level: str) -> None:
        """A line of the TUI's own in the events pane."""
        from sptrader.clock import now_us

        with contextlib.suppress(NoMatches):
            self.query_one(EventLogPane).add([EngineLogged(now_us(), level, "tui", message)])

    @on(OrdersPane.CancelRequested)
    def _cancel_requested(self, event: OrdersPane.CancelRequested) -> None:
        self.cancel_order(event.order_id)

    @work(group="trading-actions", exit_on_error=False)
    async def cancel_order(self, order_id: int) -> None:
        try:
            order = await self.client.cancel_order(order_id)
        except Exception as error:  # filled meanwhile, not open: said
            self.notify(str(error), title=f"cancel order {order_id}", severity="error")
            return
        self._notify_result(order, "order cancelled")
        self._refresh_trading()

    def _journal_screen(self) -> JournalScreen | None:
        """The Journal screen, if open (possibly under a modal)."""
        for screen in self.screen_stack:
            if isinstance(screen, JournalScreen):
                return screen
        return None

    def action_journal_screen(self) -> None:
        if self.engine_ready and self._journal_screen() is None:
            self.push_screen(JournalScreen(self.client, self.config.broker.currency))

    def _pane_key_shadows(self, binding_id: str) -> bool:
        """Whether the focused pane binds one of this app binding's keys itself (then
        that key is the pane's even when its action is disabled, e.g. `s` on a running
        service)."""
        keys = {
            binding.key for binding in declared_bindings(type(self)) if binding.id == binding_id
        }
        node = self.focused
        while node is not None and node is not self.screen:
            if any(binding.key in keys for binding in declared_bindings(type(node))):
                return True
            node = node.parent
        return False

    @work(group="summaries", exit_on_error=False)
    async def _load_summaries(self, instruments: list[str]) -> None:
        summaries = await self.client.summaries(instruments, self.config.ui.sparkline_points)
        with contextlib.suppress(NoMatches):
            self.query_one(WatchlistPane).load_summaries(summaries)

    def _show_mode(self) -> None:
        """The header says where the engine runs (and when a daemon went away)."""
        if not self._stopping:
            self.sub_title = (
                f"{self.client.mode} · {counted(len(self.client.watchlist), 'instrument')}"
            )

    @on(Worker.StateChanged)
    def _worker_failed(self, event: Worker.StateChanged) -> None:
        """A failed background job is shown in a modal and logged; the app goes on."""
        if event.state != WorkerState.ERROR:
            return
        error = event.worker.error
        log.error("background job %s failed", event.worker.name, exc_info=error)
        what = "Starting the engine" if event.worker.group == "engine" else f"{event.worker.name}"
        self.push_screen(ErrorScreen(f"{what} failed", f"{type(error).__name__}: {error}"))

    async def _poll_services(self) -> None:
        statuses = await self.client.services()
        if not self._leaving:
            with contextlib.suppress(NoMatches):
                self.query_one(ServicesPane).show(statuses)

    # --- user actions -----------------------------------------------------------------

    @on(WatchlistPane.InstrumentChosen)
    def _instrument_chosen(self, event: WatchlistPane.InstrumentChosen) -> None:
        if self.engine_ready:
            self.query_one(ChartPane).show_instrument(event.instrument)

    @on(ServicesPane.ServiceAction)
    async def _service_action(self, event: ServicesPane.ServiceAction) -> None:
        self.control_service(event.service, event.action)

    @work(group="service-control", exit_on_error=False)
    async def control_service(self, name: str, action: str) -> None:
        try:
            if action == "start":
                await self.client.start_service(name)
            elif action == "stop":
                await self.client.stop_service(name)
            else:
                await self.client.restart_service(name)
        except Exception as error:  # shown, never a crash
            self.notify(str(error), title=f"{action} {name}", severity="error")
        await self._poll_services()

    def action_search_symbols(self) -> None:
        if self.engine_ready and not isinstance(self.screen, SymbolSearchScreen):
            self.push_screen(
                SymbolSearchScreen(self.client, self.client.watchlist), self._add_instrument
            )

    @work(group="watchlist", exit_on_error=False)
    async def _add_instrument(self, instrument: str | None) -> None:
        if not instrument:
            return
        try:
            added = await self.client.add_instrument(instrument)
        except Exception as error:  # unknown symbol, feed disabled: said, not a crash
            self.notify(str(error), title="add instrument", severity="error")
            return
        self._show_mode()  # the header's count at once, not at the next refresh
        self.notify(f"{added} added: streaming and backfilling", title="watchlist")

    @on(WatchlistPane.RemoveRequested)
    def _remove_requested(self, event: WatchlistPane.RemoveRequested) -> None:
        self._remove_instrument(event.instrument)

    @work(group="watchlist", exit_on_error=False)
    async def _remove_instrument(self, instrument: str) -> None:
        try:
            await self.client.remove_instrument(instrument)
        except Exception as error:
            self.notify(str(error), title="remove instrument", severity="error")
            return
        self._show_mode()  # the header's count at once, not at the next refresh
        self.notify(f"{instrument} removed from the watchlist", title="watchlist")

    @work(group="backfill", exit_on_error=False)
    async def start_backfill(self, instrument: str, days: int) -> None:
        from sptrader.clock import now_us

        end = now_us()
        try:
            await self.client.start_backfill([instrument], end - days * 86_400_000_000, end)
        except Exception as error:
            self.notify(str(error), title="backfill", severity="error")
            return
        self.notify(f"backfilling {counted(days, 'day')} of {instrument}", title="backfill")

    def action_timeframe(self, timeframe: str) -> None:
        self.query_one(ChartPane).show_timeframe(timeframe)

    def _pane_keys(self) -> dict[str, str]:
        """The key that shows each pane that takes turns (after the [keymap])."""
        keymap = self.config.keymap or {}
        declared = {binding.id: binding for binding in declared_bindings(type(self))}
        keys = {}
        for pane in TURN_PANES:
            binding = declared[f"focus-{pane}"]
            key = keymap.get(binding.id, binding.key).split(",")[0]
            keys[pane] = self.get_key_display(Binding(key, binding.action))
        return keys

    def show_pane(self, pane: str) -> None:
        """Make ``pane`` the one shown below the watchlist and chart when the panes take
        turns (under 160 columns; from 160 every pane is shown and this changes nothing
        a user sees)."""
        desk = self.query_one("#desk")
        for other in TURN_PANES:
            desk.set_class(other == pane, f"-show-{other}")
        self.query_one(PaneBar).show_pane(pane)

    def on_pane_bar_pane_chosen(self, event: PaneBar.PaneChosen) -> None:
        self.action_focus_pane(TURN_PANES[event.pane])

    def action_focus_pane(self, widget_id: str) -> None:
        for pane, focused in TURN_PANES.items():
            if focused == widget_id:
                self.show_pane(pane)
        widget = self.query_one(f"#{widget_id}")
        # A pane just shown is laid out on the next refresh; it can take focus then.
        self.call_after_refresh(widget.focus)

    def _data_screen(self) -> DataScreen | None:
        """The Data screen, if open (possibly under a modal)."""
        for screen in self.screen_stack:
            if isinstance(screen, DataScreen):
                return screen
        return None

    def action_data_screen(self) -> None:
        if self.engine_ready and self._data_screen() is None:
            self.push_screen(DataScreen(self.client))

    def _strategies_screen(self) -> StrategiesScreen | None:
        """The Strategies screen, if open (possibly under a modal)."""
        for screen in self.screen_stack:
            if isinstance(screen, StrategiesScreen):
                return screen
        return None

    def action_strategies_screen(self) -> None:
        if self.engine_ready and self._strategies_screen() is None:
            self.push_screen(StrategiesScreen(self.client), self._signal_chosen)

    def action_alerts_screen(self) -> None:
        if self.engine_ready and not any(
            isinstance(screen, AlertsScreen) for screen in self.screen_stack
        ):
            self.push_screen(AlertsScreen(self.client))

    def action_backtest_screen(self) -> None:
        """The Backtest screen, kept (installed) once made: its result and a run in
        progress outlive a visit to the chart."""
        if not self.engine_ready or isinstance(self.screen, BacktestScreen):
            return
        if not self.is_screen_installed("backtest"):
            chart = self.query_one(ChartPane)
            strategies = [scanner.strategy for scanner in self.config.scanners]
            self.install_screen(
                BacktestScreen(
                    self.client,
                    chart.instrument or self.client.watchlist[0],
                    chart.timeframe,
                    [*strategies, "sma_cross", *_builtin_strategies()],
                ),
                "backtest",
            )
        self.push_screen("backtest", self._signal_chosen)

    def _signal_chosen(self, signal: SignalMark | None) -> None:
        """A signal chosen on the Strategies screen (or a trade on the Backtest screen):
        the chart shows and marks its bar (the chart focused, so that escape clears the
        mark)."""
        if signal is not None:
            chart = self.query_one(ChartPane)
            chart.show_signal(signal)
            # After the main screen has given the focus back to where it was.
            self.call_after_refresh(chart.focus)

    @on(ChartPane.ViewChanged)
    def _save_chart_view(self, event: ChartPane.ViewChanged) -> None:
        """Kept for the next start; a home that cannot be written is logged, not said."""
        try:
            save_chart_prefs(self.settings.home, ChartPrefs(event.overlays, event.timeframe))
        except OSError as error:
            log.warning("could not save the chart's overlays and timeframe: %s", error)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Keys that act on the main screen's panes do nothing over the Data, Strategies
        and Journal screens; the order ticket opens from the main screen only, and not
        with a key the focused pane has bound for itself."""
        if action == "halt":
            return not isinstance(self.screen, HaltScreen)
        if action == "order_ticket":
            return self.screen is self.screen_stack[0] and not self._pane_key_shadows(
                f"order-{parameters[0]}"
            )
        return action not in ("focus_pane", "timeframe") or not isinstance(
            self.screen,
            DataScreen
            | StrategiesScreen
            | JournalScreen
            | BacktestScreen
            | AlertsScreen
            | AlertRuleForm
            | ConfirmRemove,
        )

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen(self.config.keymap))

    def action_quit(self) -> None:
        """Say so at once, then stop services and flush the store before the terminal
        is restored (in a worker: the screen keeps painting meanwhile)."""
        if self._stopping:
            return
        self._stopping = True
        self._stop_timers()
        self.sub_title = "stopping…"
        self.notify("stopping services, flushing the store…", timeout=5)
        # Painted first: the engine's stop then competes with nothing the user waits for.
        self.call_after_refresh(self._shut_down)

    @work(group="shutdown", exit_on_error=False)
    async def _shut_down(self) -> None:
        try:
            await self._stop_engine()
        except Exception:
            log.exception("engine stop failed")
        self.exit(result=0, return_code=0)

    async def on_unmount(self) -> None:
        gc.unfreeze()
        # ctrl+c or a crash: still leave a consistent store behind.
        if not self._stopping:
            self._stopping = True
            self._stop_timers()
            await self._stop_engine()

    def _stop_timers(self) -> None:
        """No repaint may run while the engine stops and the widgets go away."""
        for timer in self._refresh_timers:
            timer.stop()
        self._refresh_timers.clear()


def _builtin_strategies() -> list[str]:
    """The built-in strategies' names (the form suggests them)."""
    from sptrader.strategies.registry import builtin_names

    return builtin_names()


def run_tui(settings: Settings, args: object = None) -> int:
    """``sptrader tui`` (it takes no arguments of its own)."""
    from sptrader.logs import setup_logging

    log_config = settings.config.log
    setup_logging(
        settings.log_path,
        log_config.level,
        max_bytes=log_config.max_bytes,
        backups=log_config.backups,
    )
    client = client_for(settings, run="everything")
    engine = getattr(client, "engine", None)
    if engine is not None:
        from sptrader.api.host import claim_pid_file, release_pid_file
        from sptrader.client.paths import TUI

        # Claimed first: a command run while the engine starts waits for this TUI's API
        # instead of finding the store locked (the app serves it once the engine runs).
        claim_pid_file(settings.home, TUI)
        try:
            # Open the store before taking over the terminal: a locked file is one line.
            engine.open_store()
        except BaseException:
            release_pid_file(settings.home)
            raise
    app = SptraderApp(settings, client)
    try:
        result = app.run()
    finally:
        if engine is not None:
            release_pid_file(settings.home)  # an app that failed before serving
    # The store is flushed and closed and the terminal restored: leave without the
    # interpreter's teardown, whose final garbage collection over the app's heap took
    # 1-3 s after `q` (bench/quit.py).
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(result or app.return_code or 0)  # a crash shown by Textual exits 1
