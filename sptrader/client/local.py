"""LocalEngineClient: the EngineClient of an Engine running in this process (the TUI
without a daemon, the daemon's API server, a one-shot command)."""

from __future__ import annotations

import asyncio
import functools
import logging
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path

import polars as pl

from sptrader.backfill import Backfill
from sptrader.broker.live import LiveBroker
from sptrader.broker.orders import OrderRequest
from sptrader.broker.service import PaperBroker
from sptrader.bus import Subscription
from sptrader.client.protocol import InstrumentSummary
from sptrader.client.wire import encode_status
from sptrader.clock import format_us, now_us
from sptrader.config import LIVE_FEEDS, VENUES, Settings, feed_config
from sptrader.engine import Engine
from sptrader.errors import SptraderError, UsageError
from sptrader.feeds import Feed
from sptrader.formatting import price_decimals
from sptrader.intervals import total
from sptrader.models import (
    US_PER_DAY,
    US_PER_MINUTE,
    BackfillProgressed,
    Bar,
    ServiceState,
    ServiceStatus,
    SymbolInfo,
    normalize_instrument,
    parse_instrument,
    timeframe_minutes,
)
from sptrader.scanners import labels, lineage, shadow
from sptrader.scanners.service import unknown_scanner
from sptrader.store import Store, queries
from sptrader.threads import run_in_thread

log = logging.getLogger(__name__)

#: Stored 1m closes whose digits stand for an instrument's precision when its feed's
#: metadata does not say it.
PRECISION_SAMPLE = 200

BROKER_DISABLED = "the paper broker is disabled ([broker] enabled = false)"


def order_request(data: object) -> OrderRequest:
    """An OrderRequest from a dict (a client's or the API's); a malformed one is a
    one-line UsageError."""
    if not isinstance(data, dict):
        raise UsageError("an order request must be an object of OrderRequest fields")
    for name in ("instrument", "side"):
        if not isinstance(data.get(name), str):
            raise UsageError(
                f"an order needs an {name}"
                if name == "instrument"
                else "an order needs a side (buy or sell)"
            )
    for name in ("qty", "price", "sl", "tp", "risk_pct"):
        value = data.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise UsageError(f"{name} must be a number, not {value!r}")
    return OrderRequest.from_dict(data)


class LocalEngineClient:
    """EngineClient for an Engine in this process. ``run_services=False`` opens only its
    store: reads, and one-shot work such as a backfill or a scan, run here without any
    feed streaming (what a command run without a daemon needs)."""

    mode = "local engine"
    attached = False  # to a daemon: no, the engine is this process's

    def __init__(self, engine: Engine, *, run_services: bool = True) -> None:
        self.engine = engine
        self.run_services = run_services
        # Ranges fetch_missing left missing, fetched once the store is let go of.
        self._fetch_later: list[tuple[str, int, int]] = []

    async def start(self) -> None:
        if self.run_services:
            await self.engine.start()
        else:
            await run_in_thread(self.engine.open_store)

    async def close(self) -> None:
        await self.engine.stop()  # not started: closes the store
        self._continue_fetching()

    @property
    def watchlist(self) -> list[str]:
        return list(self.engine.watchlist)

    def subscribe(self, name: str, maxsize: int) -> Subscription:
        """A lossy (drop-oldest) subscription to every engine event."""
        return self.engine.subscribe(name, maxsize)

    async def services(self) -> list[ServiceStatus]:
        return self.engine.service_statuses()

    async def start_service(self, name: str) -> None:
        supervisor, local_name = self.engine.supervisor_of(name)
        supervisor.start(local_name)

    async def stop_service(self, name: str) -> None:
        supervisor, local_name = self.engine.supervisor_of(name)
        await supervisor.stop(local_name)

    async def restart_service(self, name: str) -> None:
        supervisor, local_name = self.engine.supervisor_of(name)
        await supervisor.restart(local_name)

    async def candles(
        self,
        instrument: str,
        timeframe: str,
        *,
        last: int | None = None,
        start_us: int | None = None,
        end_us: int | None = None,
    ) -> pl.DataFrame:
        store = self.engine.require_store()
        timeframe_minutes(timeframe)  # an unknown timeframe is a usage error

        def read() -> pl.DataFrame:
            instrument_ = self.engine.check_instrument(instrument)
            if last is not None:
                return queries.last_bars(store, instrument_, timeframe, last)
            return queries.bars_between(store, instrument_, timeframe, start_us, end_us)

        return await run_in_thread(read)

    def forming_bar(self, instrument: str) -> Bar | None:
        return self.engine.forming_bar(instrument)

    async def price_decimals(self, instruments: list[str]) -> dict[str, int]:
        def read() -> dict[str, int]:
            found = self.engine.symbols.price_decimals(instruments)
            store = self.engine.require_store()
            for name in instruments:
                if name not in found:
                    closes = queries.last_bars(store, name, "1m", PRECISION_SAMPLE)["close"]
                    decimals = price_decimals(None, closes.to_list())
                    if decimals is not None:
                        found[name] = decimals
            return found

        return await run_in_thread(read)

    async def stale_instruments(self) -> set[str]:
        return self.engine.stale_instruments()

    async def search_symbols(
        self, query: str, feed: str | None = None, limit: int = 50
    ) -> list[SymbolInfo]:
        self._enabled_feeds(feed)
        return await run_in_thread(self.engine.symbols.search, query, feed, limit)

    async def add_instrument(self, instrument: str) -> str:
        return await self.engine.add_instrument(instrument)

    async def remove_instrument(self, instrument: str) -> None:
        await self.engine.remove_instrument(instrument)

    async def start_backfill(self, instruments: list[str], start_us: int, end_us: int) -> None:
        self.engine.start_backfill(instruments, start_us, end_us)

    async def data_gaps(self, instrument: str, start_us: int, end_us: int) -> list[tuple[int, int]]:
        def read() -> list[tuple[int, int]]:
            name = self.engine.check_instrument(instrument)
            return self.engine.data.gaps(name, start_us, end_us)

        return await run_in_thread(read)

    async def data_status(
        self, instruments: list[str] | None, start_us: int, end_us: int
    ) -> list[dict]:
        return await run_in_thread(self.engine.data.statuses, instruments, start_us, end_us)

    async def summaries(self, instruments: list[str], points: int) -> dict[str, InstrumentSummary]:
        """Session open (first 1m bar of the UTC day), last close and the last ``points``
        1m closes of each instrument."""
        store = self.engine.require_store()
        now = now_us()
        day_start = now - now % US_PER_DAY
        since = min(day_start, now - (points + 1) * 60_000_000)

        def read() -> dict[str, InstrumentSummary]:
            frame = queries.recent_closes(store, instruments, since)
            result = {name: InstrumentSummary(name, None, None) for name in instruments}
            for (name,), rows in frame.partition_by("instrument", as_dict=True).items():
                today = rows.filter(pl.col("ts") >= pl.lit(day_start).cast(pl.Datetime("us")))
                result[name] = InstrumentSummary(
                    name,
                    today["open"][0] if today.height else None,
                    rows["close"][-1],
                    rows["close"].tail(points).to_list(),
                )
            return result

        return await run_in_thread(read)

    # --- scanners ---------------------------------------------------------------------

    async def scanners(self) -> list[dict]:
        store = self.engine.require_store()
        runs = await run_in_thread(lineage.last_runs, store)
        states = {status.name: status.state for status in self.engine.supervisor.status()}
        result = []
        for name, service in self.engine.scanners.items():
            config = service.config
            last = runs.get(name, {})
            result.append(
                {
                    "name": name,
                    "strategy": config.strategy,
                    "instruments": list(config.instruments),
                    "timeframe": config.timeframe,
                    "schedule": config.schedule,
                    "next_run_us": (
                        int(service.next_due.timestamp() * 1_000_000) if service.next_due else None
                    ),
                    "paused": states.get(service.name) == ServiceState.STOPPED,
                    "last_run_id": last.get("last_run_id"),
                    "last_status": last.get("last_status"),
                    "last_duration_ms": last.get("last_duration_ms"),
                    "last_started_us": last.get("last_started_us"),
                }
            )
        return result

    async def run_scanner(self, name: str) -> dict:
        result = await self.engine.run_scanner(name)
        return {
            "run_id": result.run_id,
            "status": result.status,
            "signals": len(result.signals),
            "error": result.error,
        }

    def _scanner_service(self, name: str) -> str:
        from sptrader.scanners.service import find_scanner

        return find_scanner(self.engine.scanners, name).name

    async def pause_scanner(self, name: str) -> None:
        await self.engine.supervisor.stop(self._scanner_service(name))

    async def resume_scanner(self, name: str) -> None:
        self.engine.supervisor.start(self._scanner_service(name))

    async def recent_signals(self, limit: int = 50) -> list[dict]:
        return await run_in_thread(lineage.recent_signals, self.engine.require_store(), limit)

    async def run_steps(self, run_id: int) -> list[dict]:
        return await run_in_thread(lineage.run_steps, self.engine.require_store(), run_id)

    async def scan(self, name: str) -> dict:
        """Run scanner ``name`` now (in a thread) and return its ScanResult as JSON-able
        data; its signals are published and alerted as a scheduled run's (an engine with
        only its store open runs it by itself: ``_scan_here``)."""
        from sptrader.strategies.registry import StrategyLoadError

        if not self.engine.started:
            return await self._scan_here(name)
        if name not in self.engine.scanners:
            raise unknown_scanner(name, list(self.engine.scanners))
        try:
            result = await self.engine.run_scanner(name)
        except StrategyLoadError as error:
            raise SptraderError(f"cannot load its strategy: {error}") from None
        return result.to_json()

    async def runs(self, last: int = 20) -> list[dict]:
        frame = await run_in_thread(lineage.recent_runs, self.engine.require_store(), last)
        return frame.to_dicts()

    async def scanner_activity(self, name: str, start_us: int, end_us: int) -> dict:
        from sptrader.scanners.activity import scanner_activity

        broker = self._running_broker()
        if broker is not None:
            await broker.fills(limit=1)  # stores what it has not stored yet
        for live in self.engine.live_brokers.values():
            await live.drain()
        return await run_in_thread(
            scanner_activity, self.engine.require_store(), name, start_us, end_us
        )

    async def run_detail(self, run_id: int) -> dict:
        run, steps, signals = await run_in_thread(
            lineage.run_detail, self.engine.require_store(), run_id
        )
        return {"run": run, "steps": steps.to_dicts(), "signals": signals.to_dicts()}

    async def shadow_report(self, scanner: str | None = None, days: int = 30) -> list[dict]:
        configs = self.engine.config.scanners
        if scanner is not None and scanner not in {config.name for config in configs}:
            raise unknown_scanner(scanner, [config.name for config in configs])
        store = self.engine.require_store()
        return await run_in_thread(shadow.report, store, configs, scanner, days)

    async def signal_labels(
        self,
        scanner: str | None = None,
        start_us: int | None = None,
        end_us: int | None = None,
        source: str = "live",
    ) -> list[dict]:
        configs = self.engine.config.scanners
        if scanner is not None and scanner not in {config.name for config in configs}:
            raise unknown_scanner(scanner, [config.name for config in configs])
        if source not in labels.SOURCES:
            raise UsageError(f"unknown source {source!r} (sources: {', '.join(labels.SOURCES)})")
        chosen = [config for config in configs if scanner in (None, config.name)]
        store = self.engine.require_store()
        modules = self.engine.config.strategies.modules

        def read() -> list[dict]:
            if source != "backtest":  # stored; first what became known since the last run
                pending = labels.label_pending if source == "live" else labels.label_pending_shadow
                pending(store, chosen)
                names = [config.name for config in chosen]
                return labels.labels(store, names, start_us or 0, end_us or 2**62, source)
            end = end_us if end_us is not None else now_us()
            start = start_us if start_us is not None else end - 30 * US_PER_DAY
            rows: list[dict] = []
            for config in chosen:
                rows += labels.replayed_labels(store, config, modules, start, end)
            return rows

        return await run_in_thread(read)

    # --- the store --------------------------------------------------------------------

    async def status(self) -> dict:
        store = self.engine.require_store()
        counts = await run_in_thread(queries.table_counts, store)
        path = Path(self.engine.store_path)
        size = path.stat().st_size if path.exists() else 0
        wal = path.with_name(path.name + ".wal")
        size += wal.stat().st_size if wal.exists() else 0
        status = {
            "home": str(self.engine.settings.home),
            "store": {"path": str(path), "size_bytes": size, "rows": counts},
            "services": [encode_status(status) for status in self.engine.service_statuses()],
            "role": "all" if self.engine.companion is not None else self.engine.role,
        }
        if self.engine.config.nats.enabled:
            # Every collector and writer NATS knows about (their last heartbeats).
            status["cluster"] = self.engine.cluster_hosts()
        return status

    # --- the paper broker -------------------------------------------------------------

    def _broker(self) -> PaperBroker:
        broker = self.engine.broker
        if broker is None:
            raise SptraderError(BROKER_DISABLED)
        return broker

    def _offline_store(self) -> Store | None:
        """The store when the paper broker does not run here (an engine with only its
        store open: a command's without a daemon), so the account is read and changed
        there (``sptrader.broker.offline``); None when it runs. Disabled: an error."""
        return self.engine.require_store() if self._broker().book is None else None

    def _live(self, venue: str) -> LiveBroker:
        """The live broker of ``venue``; a one-line error when it does not trade live."""
        live = self.engine.live_brokers.get(venue)
        if live is not None:
            return live
        if venue not in VENUES:
            raise UsageError(f"unknown venue {venue!r} (use {', '.join(VENUES)})")
        raise SptraderError(
            f'{venue} does not trade live here ([brokers.{venue}] trading = "live" to'
            " route orders to it)"
        )

    def _venues(self, venue: str | None) -> list[str]:
        """``venue``, or every venue that trades here (paper first) when None."""
        if venue is not None:
            if venue != "paper":
                self._live(venue)
            return [venue]
        names = ["paper"] if self.engine.broker is not None else []
        names += list(self.engine.live_brokers)
        if not names:
            raise SptraderError(BROKER_DISABLED)
        return names

    async def place_order(self, request: dict) -> dict:
        venue = request.get("venue", "paper") if isinstance(request, dict) else "paper"
        if venue != "paper":
            return (await self._live(str(venue)).place(order_request(request))).to_dict()
        broker = self._broker()
        result = await broker.place(order_request(request))
        return result.to_dict()

    async def cancel_order(self, order_id: int) -> dict:
        from sptrader.broker import offline

        for live in self.engine.live_brokers.values():
            if int(order_id) in live.orders:
                return (await live.cancel(int(order_id))).to_dict()
        store = self._offline_store()
        if store is not None:
            return await run_in_thread(offline.cancel, store, int(order_id))
        broker = self._broker()
        try:
            order = await broker.cancel(int(order_id))
        except UsageError:
            # Say what the order is (filled, cancelled ...) or that there is none, as
            # the store-only path above does.
            await broker.order_history(1)  # stores what is not stored yet
            store = self.engine.require_store()
            raise await run_in_thread(offline.not_open, store, int(order_id)) from None
        return order.to_dict()

    async def close_position(self, instrument: str, venue: str = "paper") -> dict:
        if venue != "paper":
            return (await self._live(venue).close_position(instrument)).to_dict()
        result = await self._broker().close_position(instrument)
        return result.to_dict()

    async def account(self, venue: str = "paper") -> dict:
        if venue != "paper":
            return self._live(venue).account()
        store = self._offline_store()
        if store is not None:  # no live quotes: marked at the last stored closes
            return (await self._offline_account(store))[0]
        return {"venue": "paper", "live": False, **self._broker().account()}

    async def positions(self, venue: str | None = None) -> list[dict]:
        rows: list[dict] = []
        for name in self._venues(venue):
            if name != "paper":
                live = self._live(name)
                if live.store is None:  # not connected here: from its stored fills
                    from sptrader.broker import offline

                    store = self.engine.require_store()
                    rows.extend(
                        await run_in_thread(
                            offline.venue_positions, store, self.engine.config.broker, name
                        )
                    )
                else:
                    rows.extend(live.positions())
                continue
            store = self._offline_store()
            paper = (
                (await self._offline_account(store))[1]
                if store is not None
                else self._broker().positions()
            )
            rows.extend({"venue": "paper", **row} for row in paper)
        return rows

    async def _offline_account(self, store: Store) -> tuple[dict, list[dict]]:
        from sptrader.broker import offline

        return await run_in_thread(offline.account, store, self.engine.config.broker)

    async def open_orders(self, venue: str | None = None) -> list[dict]:
        from sptrader.broker import offline

        if not self.engine.started:
            # No engine trades here: the store says what is working at every venue.
            store = self.engine.require_store()
            if venue is None or venue == "paper":
                self._broker()  # disabled paper broker: say so
            return await run_in_thread(functools.partial(offline.orders, store, venue=venue))
        rows: list[dict] = []
        for name in self._venues(venue):
            if name == "paper":
                rows.extend(self._broker().open_orders())
            else:
                rows.extend(self._live(name).open_orders())
        return sorted(rows, key=lambda order: order["order_id"])

    async def order_history(self, limit: int = 100, venue: str | None = None) -> list[dict]:
        from sptrader.broker import offline

        self._venues(venue)  # a disabled broker says so
        broker = self._running_broker()
        if broker is not None:
            await broker.fills(limit=1)  # stores what it has not stored yet
        for live in self.engine.live_brokers.values():
            await live.drain()
        store = self.engine.require_store()
        return await run_in_thread(
            functools.partial(offline.orders, store, every=True, limit=int(limit), venue=venue)
        )

    async def trading_venues(self) -> list[dict]:
        config = self.engine.config
        rows = [
            {
                "venue": "paper",
                "live": False,
                "enabled": config.broker.enabled,
                "connected": True,
                "halted": self.engine.halts.reason("paper"),
                "last_error": "",
                "working_orders": None,
                "last_reconcile": None,
            }
        ]
        for name in VENUES[1:]:
            live = self.engine.live_brokers.get(name)
            if live is not None:
                rows.append({**live.status(), "enabled": True})
            else:
                rows.append(
                    {
                        "venue": name,
                        "live": getattr(config.brokers, name).live,
                        "enabled": False,
                        "connected": False,
                        "halted": self.engine.halts.reason(name),
                        "last_error": "",
                        "working_orders": None,
                        "last_reconcile": None,
                    }
                )
        return rows

    async def halt(self, venue: str | None = None, reason: str = "") -> list[dict]:
        why = reason or "halted by the trader"
        config = self.engine.config
        if venue is not None and venue not in VENUES:
            raise UsageError(f"unknown venue {venue!r} (use {', '.join(VENUES)})")
        names = (
            [venue]
            if venue is not None
            else ["paper"] + [n for n in VENUES[1:] if getattr(config.brokers, n).live]
        )
        done = []
        for name in names:
            live = self.engine.live_brokers.get(name)
            if name == "paper":
                done.append({"venue": name, "cancelled": await self._halt_paper(why)})
            elif live is not None and live.store is not None:
                done.append({"venue": name, "cancelled": len(await live.halt(why))})
            else:
                # No engine trades there now: recorded, and its working orders are
                # cancelled as soon as an engine connects to it.
                store = self.engine.require_store()
                await run_in_thread(self.engine.halts.load, store)
                await run_in_thread(self.engine.halts.set, store, name, now_us(), why)
                done.append({"venue": name, "cancelled": None})
        return done

    async def _halt_paper(self, why: str) -> int:
        from sptrader.broker import offline

        store = self.engine.require_store()
        await run_in_thread(self.engine.halts.load, store)
        await run_in_thread(self.engine.halts.set, store, "paper", now_us(), why)
        broker = self._running_broker()
        if broker is not None:
            return len(await broker.cancel_all(f"halted: {why}"))
        working = await run_in_thread(functools.partial(offline.orders, store, venue="paper"))
        for order in working:
            await run_in_thread(
                offline.cancel, store, int(order["order_id"]), None, f"halted: {why}"
            )
        return len(working)

    async def resume(self, venue: str | None = None) -> list[str]:
        store = self.engine.require_store()
        await run_in_thread(self.engine.halts.load, store)
        names = [venue] if venue is not None else list(self.engine.halts.halted)
        if venue is not None and venue not in VENUES:
            raise UsageError(f"unknown venue {venue!r} (use {', '.join(VENUES)})")
        resumed = []
        for name in names:
            if await run_in_thread(self.engine.halts.clear, store, name):
                resumed.append(name)
        return resumed

    async def alert_rules(self) -> list[dict]:
        return (await self.engine.ensure_alerts()).status()

    async def add_alert_rule(self, rule: dict) -> dict:
        if not isinstance(rule, dict):
            raise UsageError("an alert rule must be an object of AlertRuleConfig fields")
        return await (await self.engine.ensure_alerts()).add(rule)

    async def remove_alert_rule(self, name: str) -> None:
        await (await self.engine.ensure_alerts()).remove(name)

    async def pause_alert_rule(self, name: str, paused: bool = True) -> dict:
        return await (await self.engine.ensure_alerts()).pause(name, bool(paused))

    async def alert_history(self, limit: int = 50, rule: str | None = None) -> list[dict]:
        from sptrader.alerting import history

        store = self.engine.require_store()
        return await run_in_thread(history.read, store, int(limit), rule)

    async def test_alert(self, name: str) -> list[str]:
        # No TUI watches a one-shot engine's bus: its "tui" channel would reach no one.
        skip = () if self.engine.started else ("tui",)
        sent = await (await self.engine.ensure_alerts()).test(name, skip)
        webhooks = self.engine.alert_channels.channels.get("webhooks")
        if webhooks is not None and not self.engine.started:
            # A one-shot command: wait for the webhooks' thread to deliver.
            timeout = self.engine.config.alerts.timeout_s * 2
            await run_in_thread(webhooks.alerter.wait_idle, timeout)  # type: ignore[attr-defined]
        return sent

    async def wait_venue_ready(self, venue: str, timeout_s: float) -> None:
        await self._live(venue).wait_ready(float(timeout_s))

    async def reconcile(self, venue: str | None = None) -> list[dict]:
        names = [venue] if venue is not None else list(self.engine.live_brokers)
        reports = []
        for name in names:
            if name == "paper":
                raise UsageError("the paper account is its own record: nothing to reconcile")
            live = self._live(name)
            if not live.connected:
                why = f": {live.last_error}" if live.last_error else ""
                raise SptraderError(f"{name} is not connected{why}")
            reports.append(await live.reconcile())
        return reports

    async def fills(self, since_us: int | None = None, limit: int | None = None) -> list[dict]:
        from sptrader.broker import records

        store = self._offline_store()
        if store is not None:
            return await run_in_thread(records.fills, store, since_us, limit)
        return await self._broker().fills(since_us, limit)

    def _running_broker(self) -> PaperBroker | None:
        """The paper broker when it runs here (the journal reads its fills through it, so
        what it has not stored yet is stored first); None when disabled or not running."""
        broker = self.engine.broker
        return broker if broker is not None and broker.book is not None else None

    async def journal(
        self, day_from: str | None = None, day_to: str | None = None, venue: str | None = None
    ) -> dict:
        from sptrader.broker import journal, records

        store = self.engine.require_store()
        first, last = (
            journal.parse_day(day_from, "--from day"),
            journal.parse_day(day_to, "--to day"),
        )
        broker = self._running_broker()
        # The broker's fills read flushes what it has not stored yet first.
        if broker is not None:
            await broker.fills(limit=1)  # stores what it has not stored yet
        for live in self.engine.live_brokers.values():
            await live.drain()
        fills = await run_in_thread(functools.partial(records.fills, store, venue=venue))
        notes = await run_in_thread(journal.notes, store, first, last)
        starting_cash = self.engine.config.broker.starting_cash
        return await run_in_thread(journal.summarize, fills, notes, first, last, starting_cash)

    async def equity_curve(
        self,
        start_us: int | None = None,
        end_us: int | None = None,
        timeframe: str = "1h",
        venue: str = "paper",
    ) -> list[dict]:
        from sptrader.broker import equity, records

        store = self.engine.require_store()
        broker = self._running_broker()
        if broker is not None:
            await broker.fills(limit=1)  # stores the fills it has not stored yet
        if venue != "paper":
            self._live(venue)  # an unknown venue, or one not live, says so
            await self._live(venue).drain()
        # A live venue's curve is the P&L of its fills on record (from 0): SPtrader does
        # not know the account's history before them.
        starting_cash = self.engine.config.broker.starting_cash if venue == "paper" else 0.0
        fills = await run_in_thread(records.all_fills, store, venue)
        return await run_in_thread(
            functools.partial(
                equity.curve_points, store, starting_cash, start_us, end_us, timeframe, fills
            )
        )

    async def add_journal_note(self, text: str, day: str | None = None) -> dict:
        from sptrader.broker import journal

        return await run_in_thread(journal.add_note, self.engine.require_store(), text, day)

    # --- trading commands (order, journal, scan, backtest) ---

    #: True for a client made by ``streaming()``: its engine started for an order and
    #: has no quote yet, so ``wait_for_quote`` waits for the first.
    one_shot = False

    #: The venue a one-shot engine was started to trade at.
    one_shot_venue = "paper"

    @classmethod
    def streaming(
        cls, settings: Settings, instruments: Sequence[str], venue: str = "paper"
    ) -> LocalEngineClient:
        """A client (not started) whose engine streams just ``instruments`` to trade them
        at ``venue``: ``connect(streaming=...)``, a one-shot ``sptrader order``. A paper
        order needs live quotes from an enabled feed, and the broker must be enabled; a
        live venue must trade live (its instruments stream when a feed has them): checked
        here, before anything starts. No scanners; the saved watchlist is left alone."""
        import dataclasses

        import msgspec

        names = [normalize_instrument(name) for name in instruments]
        config = settings.config
        if venue != "paper":
            if venue not in VENUES:
                raise UsageError(f"unknown venue {venue!r} (use {', '.join(VENUES)})")
            if not getattr(config.brokers, venue).live:
                raise SptraderError(
                    f'{venue} does not trade live ([brokers.{venue}] trading = "live" to'
                    " route orders to it)"
                )
            # Quotes where a feed has them (for the limits and marks); the venue itself
            # needs none.
            names = [
                name
                for name in names
                if parse_instrument(name)[0] in LIVE_FEEDS
                and feed_config(config, parse_instrument(name)[0]).enabled
            ]
        else:
            for name in names:
                prefix = parse_instrument(name)[0]
                if prefix not in LIVE_FEEDS:
                    raise UsageError(
                        f"{name}: {prefix} has no live quotes to fill a paper order"
                        f" (live feeds: {', '.join(LIVE_FEEDS)})"
                    )
            if not config.broker.enabled:
                raise SptraderError(BROKER_DISABLED)
            for name in names:
                prefix = parse_instrument(name)[0]
                if not feed_config(config, prefix).enabled:
                    raise UsageError(
                        f"{name} needs feeds.{prefix.lower()}.enabled = true in the config"
                    )
        # The scanners are not a one-shot engine's business.
        quiet = dataclasses.replace(settings, config=msgspec.structs.replace(config, scanners=[]))
        client = cls(Engine(quiet, instruments=names))
        client.one_shot = True
        client.one_shot_venue = venue
        return client

    async def wait_for_quote(self, instrument: str, timeout_s: float) -> None:
        if not self.one_shot:
            return  # an engine already running: its broker judges its quotes itself
        name = normalize_instrument(instrument)
        if self.one_shot_venue != "paper":
            # Connected and reconciled first; then a quote if a feed streams it.
            live = self._live(self.one_shot_venue)
            await live.wait_ready(timeout_s)
            deadline = time.monotonic() + timeout_s
            while name in self.engine.watchlist and name not in live.quotes:
                if time.monotonic() > deadline:
                    raise SptraderError(self._no_quote(name, timeout_s))
                await asyncio.sleep(0.02)
            return
        broker = self._broker()
        if await run_in_thread(self.engine.symbols.unknown, [name]):
            prefix = parse_instrument(name)[0].lower()
            raise UsageError(f"unknown symbol {name} (see `sptrader symbols --feed {prefix}`)")
        if not await broker.wait_for_quote(name, timeout_s):
            raise SptraderError(self._no_quote(name, timeout_s))

    def _no_quote(self, instrument: str, wait_s: float) -> str:
        feeds = self.engine.feeds.values()
        feed = next((f for f in feeds if instrument in f.instruments), None)
        states = self.engine.supervisor.status()
        status = next((s for s in states if feed is not None and s.name == feed.name), None)
        why = ""
        if status is not None:
            why = f" (feed {status.name} is {status.state.value}"
            why += f": {status.last_error})" if status.last_error else ")"
        return f"no quote for {instrument} within {wait_s:g}s{why}; nothing was placed (try --wait)"

    async def history_source(self, instrument: str) -> str | None:
        feed = self.engine.history_feed(normalize_instrument(instrument))
        return None if feed is None else feed.name

    async def start_backtest(self, request: dict) -> dict:
        config = self.engine.config
        return await self.engine.backtests.start(
            request, self, config.broker, config.risk, config.strategies.modules
        )

    async def backtest_job(self, job_id: int) -> dict:
        return self.engine.backtests.status(job_id)

    async def cancel_backtest(self, job_id: int) -> dict:
        return await self.engine.backtests.cancel(job_id)

    async def _scan_here(self, name: str) -> dict:
        """``scan`` on an engine with only its store open (a command's without a daemon):
        nothing streams the scanner's instruments, so their recent history is fetched
        first; it runs here, and its signals are alerted here (no alerter service runs)."""
        from sptrader.alerting.webhooks import Alerter
        from sptrader.scanners.service import Scanner, alert_payload, going_on, load_filters
        from sptrader.strategies import registry

        config = self.engine.config
        chosen = [scanner for scanner in config.scanners if scanner.name == name]
        if not chosen:
            raise unknown_scanner(name, [scanner.name for scanner in config.scanners])
        scanner = chosen[0]
        at = now_us()  # the window's end: the history fetched below covers it
        for instrument in scanner.instruments:
            try:
                await run_in_thread(self.engine.seed_history, [instrument])
            except Exception as error:  # scanning what is stored still makes sense
                log.warning("could not fetch recent history of %s: %s", instrument, error)
        try:
            strategy = registry.build(
                scanner.strategy, dict(scanner.params), config.strategies.modules
            )
        except registry.StrategyLoadError as error:
            if error.details:
                log.error("%s\n%s", error, error.details)
            raise SptraderError(f"cannot load its strategy: {error}") from None
        # The same model and LLM step in front of the orders as the scanner's service.
        model, llm = await run_in_thread(
            load_filters, self.engine.settings.home, config.llm, scanner
        )
        runner = Scanner(self.engine.scanner_deps, scanner, strategy, model, llm)
        result = await run_in_thread(functools.partial(runner.scan, "manual", at_us=at))
        alerter = Alerter(config.alerts)
        for signal in going_on(result.signals):  # not those its filters held back
            alerter.submit(alert_payload(signal))
        await run_in_thread(alerter.wait_idle, config.alerts.timeout_s * 2)
        await run_in_thread(shadow.after_run, runner, result)  # after the alerts
        await run_in_thread(labels.after_run, runner, result)
        return result.to_json()

    # --- data commands (candles, backfill, data, symbols, export) ---

    async def backfill(
        self,
        instruments: list[str],
        start_us: int,
        end_us: int,
        on_progress: Callable[[BackfillProgressed], None] | None = None,
    ) -> dict[str, BackfillProgressed]:
        engine = self.engine
        loop = asyncio.get_running_loop()
        outcome: dict[str, BackfillProgressed] = {}

        def record(event: BackfillProgressed) -> None:
            outcome[event.instrument] = event
            if on_progress is not None:
                on_progress(event)

        def plan() -> tuple[Backfill, list]:
            names = [engine.check_instrument(name) for name in instruments]
            # Reports come from the backfill's threads: handed to the loop, in order.
            backfill = engine.make_backfill(
                on_progress=lambda event: loop.call_soon_threadsafe(record, event)
            )
            return backfill, backfill.plan(names, start_us, end_us)

        backfill, jobs = await run_in_thread(plan)
        await _run_backfill(backfill, jobs)
        return outcome  # the reports queued before the thread's end have run

    async def recent_window(self, instrument: str, timeframe: str, bars: int) -> tuple[int, int]:
        width = timeframe_minutes(timeframe) * US_PER_MINUTE

        def window() -> tuple[int, int]:
            name = self.engine.check_instrument(instrument)
            now = now_us()
            # One bar more: the current one is still forming, history ends before it.
            wanted = (bars + 1) * width
            start = now - wanted
            while (
                start > 0
                and total(self.engine.data.open_ranges(name, max(start, 0), now)) < wanted
                and now - start < 400 * US_PER_DAY
            ):
                start -= wanted
            # Nothing is older than 1970 (many daily bars back would be).
            return max(0, start - start % width), now

        return await run_in_thread(window)

    async def fetch_missing(
        self, instrument: str, start_us: int, end_us: int, wait_s: float
    ) -> list[tuple[int, int]]:
        engine = self.engine
        name = await run_in_thread(engine.check_instrument, instrument)
        if not engine.started:
            missing = await self._fetch_for_a_while(name, start_us, end_us, wait_s)
            if missing:
                self._fetch_later.append((name, start_us, end_us))
            return missing
        # A running engine (a daemon's) keeps its backfill going after the wait.
        gaps = await run_in_thread(engine.data.gaps, name, start_us, end_us)
        if not gaps:
            return gaps
        try:
            engine.start_backfill([name], start_us, end_us)
        except UsageError:
            return gaps  # no history feed, or only the live edge is missing
        deadline = time.monotonic() + wait_s
        while gaps and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
            gaps = await run_in_thread(engine.data.gaps, name, start_us, end_us)
        return gaps

    async def _fetch_for_a_while(
        self, instrument: str, start_us: int, end_us: int, wait_s: float
    ) -> list[tuple[int, int]]:
        """Fetch what is missing for at most ``wait_s`` seconds, then stop the backfill
        (this engine is about to close its store); what is still missing."""
        engine = self.engine
        gaps = await run_in_thread(engine.data.gaps, instrument, start_us, end_us)
        if not gaps or wait_s == 0 or engine.history_feed(instrument) is None:
            return gaps
        backfill = engine.make_backfill()
        try:
            jobs = await run_in_thread(backfill.plan, [instrument], start_us, end_us)
        except UsageError:
            return gaps  # only the live edge is missing
        await _run_backfill(backfill, jobs, wait_s)
        return await run_in_thread(engine.data.gaps, instrument, start_us, end_us)

    def _continue_fetching(self) -> None:
        """A detached `sptrader data ensure` per range fetch_missing left missing: it
        finishes the fetch after this process exits (the store is closed by now, so it
        can open it)."""
        settings = self.engine.settings
        for instrument, start_us, end_us in self._fetch_later:
            command = [
                sys.executable,
                "-m",
                "sptrader.cli",
                "--home",
                str(settings.home),
                *(["--config", str(settings.config_path)] if settings.config_path else []),
                "data",
                "ensure",
                instrument,
                "--from",
                format_us(start_us),
                "--to",
                format_us(end_us),
            ]
            subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        self._fetch_later.clear()

    async def bars_before(
        self, instrument: str, timeframe: str, before_us: int, count: int
    ) -> pl.DataFrame:
        store = self.engine.require_store()
        width = timeframe_minutes(timeframe) * US_PER_MINUTE

        def read() -> pl.DataFrame:
            name = self.engine.check_instrument(instrument)
            first = queries.first_bar_ts(store, name)
            start = before_us - before_us % width
            if first == 0 or first >= start:
                return queries.empty_bars()
            # Further back (x4 each time) over gaps, as far as the first stored bar.
            span = (count + 1) * width
            while True:
                piece = queries.bars_between(store, name, timeframe, start - span, start)
                if piece.height >= count or start - span <= first:
                    return piece.tail(count)
                span *= 4

        return await run_in_thread(read)

    def _enabled_feeds(self, feed: str | None) -> list[Feed]:
        """The enabled feeds, or just ``feed``; one that is not enabled is a usage error
        (a command's --feed)."""
        feeds = self.engine.enabled_feeds()
        names = [item.name for item in feeds]
        if feed is not None and feed not in names:
            raise UsageError(
                f"--feed {feed}: not an enabled feed (enabled: {', '.join(names) or 'none'})"
            )
        return [item for item in feeds if feed is None or item.name == feed]

    async def refresh_symbols(self, feed: str | None = None) -> None:
        feeds = self._enabled_feeds(feed)

        def refresh() -> None:
            for item in feeds:
                self.engine.symbols.ensure(item, refresh=True)

        await run_in_thread(refresh)

    async def unknown_symbols(self, instruments: list[str]) -> tuple[list[str], list[str]]:
        unchecked: list[str] = []
        unknown = await run_in_thread(self.engine.symbols.unknown, list(instruments), unchecked)
        return unknown, unchecked

    async def import_bars(self, bars: pl.DataFrame) -> dict:
        from sptrader.data import transfer

        store = self.engine.require_store()
        return asdict(await run_in_thread(transfer.import_bars, store, bars))


async def _run_backfill(backfill: Backfill, jobs: list, timeout_s: float | None = None) -> None:
    """Run a planned backfill in a thread; past ``timeout_s``, or interrupted, it stops
    after the requests in flight (before the caller closes the store)."""
    running = asyncio.ensure_future(asyncio.to_thread(backfill.run, jobs))
    try:
        done, _ = await asyncio.wait([asyncio.shield(running)], timeout=timeout_s)
    except asyncio.CancelledError:
        backfill.cancel()
        await asyncio.wait([running])
        raise
    if not done:
        backfill.cancel()
        await asyncio.wait([running])
    running.result()  # its error, if it failed
