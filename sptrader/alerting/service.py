"""The alerts service (``alerts``): taps the bus for the rules (sptrader.alerting.rules),
polls P&L, halts and feeds once a second, and hands each notice to its channels after
storing it in ``alert_history``.

The tap runs inside every publish, so it does O(1) work: a quote is looked at only when
a price rule watches its instrument; orders, signals and service changes are queued.
Findings are turned into notices on the service's own loop, stored in a thread, and
given to the channels (each of which only queues): a dead webhook or a slow Telegram
never slows the quotes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import msgspec

from sptrader.alerting import history
from sptrader.alerting.channels import Dispatcher
from sptrader.alerting.notice import Notice
from sptrader.alerting.rules import Finding, Rule, rules_by_kind
from sptrader.bus import Bus
from sptrader.clock import now_us
from sptrader.config import AlertRuleConfig, alert_rule_problem
from sptrader.errors import UsageError
from sptrader.models import (
    OrderUpdated,
    QuoteReceived,
    ServiceStateChanged,
    SignalRaised,
)
from sptrader.store import Store
from sptrader.supervisor import Service, ServiceContext
from sptrader.threads import run_in_thread

log = logging.getLogger(__name__)

TICK_S = 1.0


class AlertService(Service):
    kind = "alerts"
    stoppable = False

    def __init__(
        self,
        bus: Bus,
        rules: list[AlertRuleConfig],
        dispatcher: Dispatcher,
        *,
        store: Callable[[], Store],
        pnl: Callable[[], list[tuple[str, str, str, float]]] = list,
        halts: Callable[[], dict[str, tuple[int, str]]] = dict,
        feeds: Callable[[], set[str]] = set,
        decimals: Callable[[str], int | None] = lambda instrument: None,
        clock: Callable[[], int] = now_us,
    ) -> None:
        super().__init__("alerts")
        self.bus = bus
        self.dispatcher = dispatcher
        self.store = store
        #: (rule scope, key, what, value) of every P&L the rules may watch.
        self.pnl = pnl
        self.halts = halts
        self.feeds = feeds
        self.clock = clock
        self.decimals = decimals
        #: The config file's rules, and those added at run time (kept in the store).
        self.configured = {config.name: config for config in rules}
        self.stored: dict[str, AlertRuleConfig] = {}
        self.paused: set[str] = set()
        self.rules: list[Rule] = []
        self._by_kind: dict[str, list[Rule]] = {}
        self._price_rules: dict[str, list[Rule]] = {}
        self._rebuild()
        self._pending: list[tuple[Rule, Finding]] = []
        self._events: list[object] = []
        self._wake = asyncio.Event()
        self.sent = 0
        self.suppressed = 0
        self.subscription = bus.subscribe("alerts", maxsize=1, accepts=self._tap)

    # --- the rules ----------------------------------------------------------------------

    def _rebuild(self) -> None:
        """Index the rules (each keeps its state across a change of the others)."""
        known = {rule.name: rule for rule in self.rules}
        rules = []
        for config in [*self.configured.values(), *self.stored.values()]:
            rule = known.get(config.name)
            if rule is None or rule.config != config:
                rule = Rule(config, self.decimals)
            rule.paused = config.name in self.paused
            rules.append(rule)
        by_kind = rules_by_kind(rules)
        price_rules: dict[str, list[Rule]] = {}
        for kind in ("price_cross", "price_move"):
            for rule in by_kind.get(kind, []):
                price_rules.setdefault(rule.config.instrument, []).append(rule)
        # Swapped whole: the bus tap reads them between awaits.
        self.rules, self._by_kind, self._price_rules = rules, by_kind, price_rules

    def load(self, store: Store) -> None:
        """The rules added at run time and the paused ones (blocking: a thread's work)."""
        specs, self.paused = history.stored_rules(store)
        self.stored = {}
        for spec in specs:
            try:
                config = msgspec.convert(spec, AlertRuleConfig)
            except msgspec.ValidationError as error:
                log.warning("stored alert rule %s unreadable: %s", spec.get("name"), error)
                continue
            if config.name not in self.configured:
                self.stored[config.name] = config
        self._rebuild()

    async def add(self, spec: dict[str, Any]) -> dict[str, Any]:
        """Add or replace a stored rule (checked as the config file's are)."""
        try:
            config = msgspec.convert(spec, AlertRuleConfig)
        except msgspec.ValidationError as error:
            raise UsageError(f"bad alert rule: {error}") from None
        if config.name in self.configured:
            raise UsageError(f"rule {config.name} is defined in the config file: edit it there")
        problem = alert_rule_problem(config)
        if problem:
            raise UsageError(problem)
        await run_in_thread(
            history.save_rule, self.store(), msgspec.structs.asdict(config), self.clock()
        )
        self.stored[config.name] = config
        self._rebuild()
        return self._row(next(r for r in self.rules if r.name == config.name))

    async def remove(self, name: str) -> None:
        if name in self.configured:
            raise UsageError(f"rule {name} is defined in the config file: remove it there")
        if name not in self.stored:
            raise UsageError(f"no alert rule {name!r} (see `sptrader alerts list`)")
        await run_in_thread(history.delete_rule, self.store(), name)
        del self.stored[name]
        self.paused.discard(name)
        self._rebuild()

    async def pause(self, name: str, paused: bool = True) -> dict[str, Any]:
        rule = next((r for r in self.rules if r.name == name), None)
        if rule is None:
            raise UsageError(f"no alert rule {name!r} (see `sptrader alerts list`)")
        await run_in_thread(history.set_paused, self.store(), name, paused, self.clock())
        if paused:
            self.paused.add(name)
        else:
            self.paused.discard(name)
        self._rebuild()
        return self._row(next(r for r in self.rules if r.name == name))

    # --- the bus tap (inside every publish: keep it tiny) -----------------------------

    def _tap(self, event: object) -> bool:
        kind = type(event)
        if kind is QuoteReceived:
            rules = self._price_rules.get(event.instrument)
            if rules:
                price = (event.bid + event.ask) / 2
                for rule in rules:
                    for finding in rule.on_price(event.instrument, event.ts_us, price):
                        self._pending.append((rule, finding))
                        self._wake.set()
        elif kind in (OrderUpdated, SignalRaised, ServiceStateChanged) and self.rules:
            self._events.append(event)
            self._wake.set()
        return False

    def gap(self, instrument: str, start_us: int, end_us: int, why: str) -> None:
        """The engine found a hole in the data (called on the loop; only queues)."""
        for rule in self._by_kind.get("gap", []):
            for finding in rule.on_gap(instrument, start_us, end_us, why):
                self._pending.append((rule, finding))
                self._wake.set()

    # --- the loop ---------------------------------------------------------------------

    async def run(self, context: ServiceContext) -> None:
        context.mark_running()
        loop = asyncio.get_running_loop()
        next_tick = loop.time()
        while True:
            timeout = next_tick - loop.time()
            if timeout > 0 and not self._wake.is_set():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(timeout):
                        await self._wake.wait()
            self._wake.clear()
            found = self._take_events()
            if loop.time() >= next_tick:
                next_tick = loop.time() + TICK_S
                found.extend(self._poll())
            if found:
                await self._send(found)
            context.counters.update(
                alerts_sent=self.sent,
                alerts_suppressed=self.suppressed,
                **self.dispatcher.counters(),
            )

    def _take_events(self) -> list[tuple[Rule, Finding]]:
        found, self._pending = self._pending, []
        events, self._events = self._events, []
        for event in events:
            if isinstance(event, OrderUpdated):
                for rule in self._by_kind.get("order", []):
                    found.extend((rule, f) for f in rule.on_order(event.order))
            elif isinstance(event, SignalRaised):
                for rule in self._by_kind.get("signal", []):
                    found.extend((rule, f) for f in rule.on_signal(event))
            elif isinstance(event, ServiceStateChanged) and event.service in self.feeds():
                for rule in self._by_kind.get("feed", []):
                    rule.on_feed_state(event.service, event.state.value, event.ts_us)
        return found

    def _poll(self) -> list[tuple[Rule, Finding]]:
        found: list[tuple[Rule, Finding]] = []
        now = self.clock()
        pnl_rules = self._by_kind.get("pnl", [])
        if pnl_rules:
            figures = self.pnl()
            for rule in pnl_rules:
                for scope, key, what, value in figures:
                    if scope != rule.config.scope:
                        continue
                    venue = key.split(" ", 1)[0]
                    if rule.config.venue and venue != rule.config.venue:
                        continue
                    if (
                        rule.config.scope == "position"
                        and rule.config.instrument
                        and (not key.endswith(" " + rule.config.instrument))
                    ):
                        continue
                    found.extend((rule, f) for f in rule.on_pnl(key, what, value))
        halt_rules = self._by_kind.get("halt", [])
        if halt_rules:
            halted = dict(self.halts())
            for rule in halt_rules:
                found.extend((rule, f) for f in rule.on_halts(halted))
        for rule in self._by_kind.get("feed", []):
            found.extend((rule, f) for f in rule.on_feeds_down(now, {}))
        return found

    async def _send(self, found: list[tuple[Rule, Finding]]) -> None:
        now = self.clock()
        notices: list[tuple[Notice, list[str]]] = []
        for rule, (key, title, text, data) in found:
            if not rule.due(key, now):
                self.suppressed += 1
                continue
            rule.sent(key, now)
            notice = Notice(rule.config.kind, title, text, now, rule.name, data)
            notices.append((notice, rule.config.channels))
        await self.deliver_all(notices)

    async def deliver_all(self, notices: list[tuple[Notice, list[str]]]) -> None:
        """Store the notices, then hand each to its channels (also for reports and the
        daemon's own notices)."""
        if not notices:
            return
        delivered = [(notice, self.dispatcher.deliver(notice, names)) for notice, names in notices]
        self.sent += len(delivered)
        try:
            await run_in_thread(history.record, self.store(), delivered)
        except Exception:
            log.exception("alert history not stored")

    async def system(self, kind: str, title: str, text: str) -> None:
        """What the engine itself says (kind "daemon": started, stopping), to the rules
        of that kind."""
        found: list[tuple[Rule, Finding]] = [
            (rule, (title, title, text, {})) for rule in self._by_kind.get(kind, [])
        ]
        await self._send(found)

    async def test(self, name: str, skip: tuple[str, ...] = ()) -> list[str]:
        """Send a test notice through rule ``name``'s channels (but ``skip``); the
        channels it went to."""
        rule = next((r for r in self.rules if r.name == name), None)
        if rule is None:
            known = ", ".join(r.name for r in self.rules) or "none configured"
            raise UsageError(f"no alert rule {name!r} (rules: {known})")
        notice = Notice(
            rule.config.kind,
            f"test of alert {name}",
            f"SPtrader test: alert rule {name} ({rule.config.kind}) reaches this channel",
            self.clock(),
            name,
            {"test": True},
        )
        names = [name for name in rule.config.channels if name not in skip]
        sent = self.dispatcher.deliver(notice, names)
        await run_in_thread(history.record, self.store(), [(notice, sent)])
        return sent

    def status(self) -> list[dict[str, Any]]:
        """Every rule with its state (``EngineClient.alert_rules``)."""
        return [self._row(rule) for rule in self.rules]

    def _row(self, rule: Rule) -> dict[str, Any]:
        return {
            "name": rule.name,
            "kind": rule.config.kind,
            "enabled": rule.config.enabled and not rule.paused,
            "paused": rule.paused,
            "source": "config" if rule.name in self.configured else "stored",
            "channels": list(rule.config.channels),
            "cooldown_s": rule.config.cooldown_s,
            "rule": msgspec.structs.asdict(rule.config),
            "fired": rule.state.fired,
            "last_sent_us": max(rule.state.last_sent_us.values(), default=None),
        }
