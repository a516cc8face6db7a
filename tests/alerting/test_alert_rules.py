"""Alert rules on the bus (sptrader.alerting): each kind fires once and not again within
its cooldown; notices are stored and reach the TUI (an AlertRaised event) and a webhook
receiver; a dead webhook never slows the quotes."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import msgspec
import pytest
from conftest import wait_until
from fakes import FakeHttpServer, FakeRequest, FakeResponse

from sptrader.alerting.channels import Dispatcher, TuiChannel, WebhookChannel
from sptrader.alerting.notice import Notice
from sptrader.alerting.rules import Rule
from sptrader.alerting.service import AlertService
from sptrader.alerting.webhooks import Alerter
from sptrader.bus import Bus
from sptrader.config import AlertRuleConfig, AlertsConfig
from sptrader.models import (
    AlertRaised,
    OrderUpdated,
    QuoteReceived,
    ServiceState,
    ServiceStateChanged,
    SignalRaised,
)
from sptrader.store import Store
from sptrader.supervisor import ServiceContext

EUR = "SIM:EURUSD"
S = 1_000_000


def rule(**fields) -> Rule:
    fields.setdefault("name", "r")
    return Rule(msgspec.convert(fields, AlertRuleConfig), lambda instrument: 5)


def order(status: str, role: str = "entry", **more) -> dict:
    return {"order_id": 7, "instrument": EUR, "side": "buy", "qty": 1000.0, "status": status,
            "role": role, "venue": "paper", "avg_price": 1.1, "reason": "", **more}  # fmt: skip


def test_a_price_cross_fires_on_the_crossing_only() -> None:
    cross = rule(kind="price_cross", instrument=EUR, level=1.1)
    assert cross.on_price(EUR, 0, 1.09) == []  # the first price says the side
    assert cross.on_price(EUR, 1, 1.095) == []
    ((key, title, text, _),) = cross.on_price(EUR, 2, 1.1002)
    assert (key, title) == (EUR, "SIM:EURUSD crossed 1.10000")
    assert text == "SIM:EURUSD is above 1.10000: 1.10020"
    assert cross.on_price(EUR, 3, 1.101) == []
    assert cross.on_price(EUR, 4, 1.0999)[0][2].startswith("SIM:EURUSD is below")


def test_the_cooldown_stops_a_flapping_price_sending_fifty_messages() -> None:
    cross = rule(kind="price_cross", instrument=EUR, level=1.1, cooldown_s=60)
    sent = 0
    cross.on_price(EUR, 0, 1.09)
    for second in range(100):  # crosses every second
        price = 1.11 if second % 2 == 0 else 1.09
        for key, *_ in cross.on_price(EUR, second * S, price):
            if cross.due(key, second * S):
                cross.sent(key, second * S)
                sent += 1
    assert sent == 2  # at 0 s and at 60 s


def test_a_price_move_within_its_window() -> None:
    move = rule(kind="price_move", instrument=EUR, pct=1.0, window_s=60)
    assert move.on_price(EUR, 0, 100.0) == []
    assert move.on_price(EUR, 30 * S, 100.5) == []
    assert move.on_price(EUR, 120 * S, 101.4) == []  # 100.0 left the window: +0.9%
    ((_, title, _, data),) = move.on_price(EUR, 150 * S, 102.5)
    assert title == "SIM:EURUSD moved +1.08%" and data["from"] == 101.4


def test_order_events_filled_rejected_stop_and_target() -> None:
    watch = rule(kind="order", events=["filled", "rejected", "stop", "target"])
    assert watch.on_order(order("accepted")) == []
    assert watch.on_order(order("filled"))[0][1] == "buy 1000 SIM:EURUSD: filled"
    rejected = watch.on_order(order("rejected", reason="max leverage"))[0]
    assert rejected[0] == "7:rejected" and rejected[2].endswith("(max leverage)")
    assert watch.on_order(order("filled", "sl"))[0][1].endswith("stop-loss hit")
    assert watch.on_order(order("filled", "tp"))[0][1].endswith("take-profit hit")
    only_live = rule(kind="order", venue="binance")
    assert only_live.on_order(order("filled")) == []
    assert only_live.on_order(order("filled", venue="binance"))[0][1].endswith("at BINANCE: filled")


def test_pnl_fires_when_it_crosses_the_threshold() -> None:
    loss = rule(kind="pnl", threshold=-500)
    assert loss.on_pnl("paper", "paper day P&L", -100) == []
    ((_, title, _, _),) = loss.on_pnl("paper", "paper day P&L", -520)
    assert title == "paper day P&L -520.00"
    assert loss.on_pnl("paper", "paper day P&L", -600) == []  # still past: not again
    assert loss.on_pnl("paper", "paper day P&L", -100) == []
    assert loss.on_pnl("paper", "paper day P&L", -501) != []  # crossed again


def test_halts_feeds_and_signals() -> None:
    halt = rule(kind="halt")
    ((key, title, _, _),) = halt.on_halts({"binance": (5, "daily loss limit")})
    assert (key, title) == ("binance:5", "BINANCE HALTED")
    feed = rule(kind="feed", after_s=30)
    feed.on_feed_state("binance", "backoff", 0)
    assert feed.on_feeds_down(10 * S, {}) == []
    assert feed.on_feeds_down(31 * S, {})[0][1] == "feed binance is down"
    feed.on_feed_state("binance", "running", 40 * S)
    assert feed.on_feeds_down(100 * S, {}) == []
    signals = rule(kind="signal", scanner="momo")
    raised = SignalRaised(0, "momo", 1, EUR, 60 * S, "buy", 1.0, "cross up", None, None)
    assert signals.on_signal(raised)[0][1] == "BUY SIM:EURUSD (momo)"
    other = SignalRaised(0, "other", 1, EUR, 60 * S, "buy", 1.0, "", None, None)
    assert signals.on_signal(other) == []


# --- the service ------------------------------------------------------------------------


def receiver(hang_s: float = 0.0) -> tuple[FakeHttpServer, list[dict]]:
    received: list[dict] = []

    def route(request: FakeRequest) -> FakeResponse:
        if hang_s:
            time.sleep(hang_s)
            return FakeResponse(503, "down")
        received.append(json.loads(request.body))
        return FakeResponse(200, "ok")

    return FakeHttpServer(route), received


class Harness:
    def __init__(self, path: Path, rules: list[dict], webhook_url: str) -> None:
        self.store = Store(path)
        self.store.migrate()
        self.bus = Bus()
        alerts = msgspec.convert(
            {"webhooks": [{"url": webhook_url, "format": "json"}], "retries": 2}, AlertsConfig
        )
        self.alerter = Alerter(alerts, retry_delay_s=0.05)
        self.dispatcher = Dispatcher([TuiChannel(self.bus), WebhookChannel(self.alerter)])
        self.halted: dict[str, tuple[int, str]] = {}
        self.service = AlertService(
            self.bus,
            [msgspec.convert(r, AlertRuleConfig) for r in rules],
            self.dispatcher,
            store=lambda: self.store,
            halts=lambda: self.halted,
            feeds=lambda: {"sim"},
        )
        self.seen = self.bus.subscribe("tui", maxsize=10_000)
        self.task = asyncio.create_task(self.service.run(ServiceContext("alerts", self.bus)))

    def quote(self, price: float, instrument: str = EUR) -> None:
        self.bus.publish_nowait(
            [QuoteReceived(instrument, time.time_ns() // 1000, price, price, 1, 1)]
        )

    def history(self) -> list[tuple]:
        return (
            self.store.cursor()
            .execute("SELECT rule, kind, title, channels FROM alert_history")
            .fetchall()
        )

    async def close(self) -> None:
        self.task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await self.task
        self.alerter.close()
        self.store.close()


async def test_each_rule_kind_fires_once_within_its_cooldown(tmp_path: Path) -> None:
    server, received = receiver()
    with server:
        harness = Harness(
            tmp_path / "a.duckdb",
            [
                {"name": "eur-1.1", "kind": "price_cross", "instrument": EUR, "level": 1.1},
                {"name": "fills", "kind": "order"},
                {"name": "halts", "kind": "halt", "channels": ["tui"]},
                {"name": "feeds", "kind": "feed", "after_s": 0, "channels": ["tui"]},
            ],
            server.url,
        )
        try:
            for price in (1.09, 1.11, 1.09, 1.11, 1.09):
                harness.quote(price)
            harness.bus.publish_nowait([OrderUpdated(0, order("filled"))] * 2)  # the same twice
            harness.halted["paper"] = (1, "asked")
            harness.bus.publish_nowait(
                [ServiceStateChanged("sim", 0, ServiceState.BACKOFF, ServiceState.RUNNING, "")]
            )
            await wait_until(lambda: len(harness.history()) == 4, timeout=5)
            await asyncio.sleep(1.2)  # a second tick: nothing more (cooldowns, once per halt)
            rules = sorted(row[0] for row in harness.history())
            assert rules == ["eur-1.1", "feeds", "fills", "halts"]
            assert dict((r[0], r[3]) for r in harness.history())["fills"] == "tui,webhooks"
            await asyncio.to_thread(harness.alerter.wait_idle, 5)
            assert sorted(body["rule"] for body in received) == ["eur-1.1", "fills"]
            assert harness.dispatcher.counters() == {"webhook_sent": 2}
            shown = [e for e in harness.seen.get_nowait() if isinstance(e, AlertRaised)]
            assert sorted(e.rule for e in shown) == ["eur-1.1", "feeds", "fills", "halts"]
        finally:
            await harness.close()


async def test_a_dead_webhook_does_not_slow_the_quotes(tmp_path: Path) -> None:
    """Quote throughput through the bus with a rule firing on every other quote, with a
    webhook that answers and with one that hangs then fails: about the same."""

    async def throughput(url: str) -> float:
        harness = Harness(
            tmp_path / f"{abs(hash(url))}.duckdb",
            [
                {
                    "name": "flap",
                    "kind": "price_cross",
                    "instrument": EUR,
                    "level": 1.1,
                    "cooldown_s": 0,
                }
            ],
            url,
        )
        try:
            started = time.perf_counter()
            for index in range(20_000):
                harness.quote(1.11 if index % 2 else 1.09)
                if index % 1000 == 0:
                    await asyncio.sleep(0)  # the service's loop runs in between
            elapsed = time.perf_counter() - started
            return 20_000 / elapsed
        finally:
            await harness.close()

    live, _ = receiver()
    dead, _ = receiver(hang_s=2.0)
    with live, dead:
        # Best of three each, alternating: the other test worker shares the cores. A
        # delivery that blocked the bus would be orders of magnitude slower, not 3x.
        with_live = with_dead = 0.0
        for _ in range(3):
            with_live = max(with_live, await throughput(live.url))
            with_dead = max(with_dead, await throughput(dead.url))
    assert with_dead > with_live * 0.3, (with_live, with_dead)


def test_closing_with_a_hanging_webhook_stops_the_thread_and_logs_nothing_later(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A webhook that hangs must not keep the delivery thread alive past close(): it
    once went on retrying and logged its failures into later tests' stderr."""
    dead, _ = receiver(hang_s=0.5)
    with dead:
        alerts = msgspec.convert(
            {"webhooks": [{"url": dead.url, "format": "json"}], "retries": 2}, AlertsConfig
        )
        alerter = Alerter(alerts, retry_delay_s=0.05)
        for index in range(5):
            alerter.submit(Notice("price_cross", f"alert {index}", "", 0, "r"))
        alerter.close(timeout=0.2)
        assert "in flight and 4 queued alert(s) dropped" in caplog.text
        thread = alerter._thread
        assert thread is not None
        thread.join(2.0)  # at most the request in flight
        assert not thread.is_alive()
    assert "failed for" not in caplog.text


async def test_the_daemon_rules_hear_started_stopping_and_restarted(home: Path) -> None:
    from conftest import make_settings

    from sptrader.engine import Engine

    settings = make_settings(
        home,
        store={"seed_days": 0.01},
        alerts={"rules": [{"name": "life", "kind": "daemon", "channels": ["tui"]}]},
    )

    def titles() -> list[str]:
        store = Store(settings.store_path)
        try:
            rows = store.cursor().execute("SELECT title FROM alert_history ORDER BY ts")
            return [title for (title,) in rows.fetchall()]
        finally:
            store.close()

    engine = Engine(settings)
    await engine.start()
    await wait_until(lambda: engine.alerts is not None and engine.alerts.sent == 1)
    await engine.stop()
    assert titles() == ["SPtrader started", "SPtrader stopping"]
    store = Store(settings.store_path)
    store.cursor().execute("DELETE FROM alert_history WHERE title = 'SPtrader stopping'")
    store.close()  # as if the last run had been killed before it could say so
    engine = Engine(settings)
    await engine.start()
    await wait_until(lambda: engine.alerts is not None and engine.alerts.sent == 1)
    await engine.stop()
    assert titles() == ["SPtrader started", "SPtrader restarted", "SPtrader stopping"]


def test_a_data_gap_is_found_once_per_hole() -> None:
    gaps = rule(kind="gap", instrument="BINANCE:BTCUSDT")
    ((key, title, text, _),) = gaps.on_gap("BINANCE:BTCUSDT", 0, 3 * 60 * S, "12 trades lost")
    assert (key, title) == ("BINANCE:BTCUSDT:0", "data gap in BINANCE:BTCUSDT")
    assert text.startswith("BINANCE:BTCUSDT: 3 min of data missing (12 trades lost)")
    assert gaps.on_gap("BINANCE:ETHUSDT", 0, 60 * S, "x") == []
