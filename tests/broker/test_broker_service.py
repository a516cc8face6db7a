"""The PaperBroker service: through a real Engine (the SIM feed, or quotes published on
the bus), stored in DuckDB, restored on restart, fed by scanners' paper signals."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
from conftest import make_settings, wait_until

from sptrader.broker import records
from sptrader.broker.orders import Fill, OrderRequest
from sptrader.broker.service import PaperBroker
from sptrader.bus import Bus
from sptrader.client.wire import decode_event, encode_event
from sptrader.clock import now_us
from sptrader.config import BrokerConfig, RiskConfig
from sptrader.engine import Engine
from sptrader.errors import UsageError
from sptrader.models import (
    US_PER_DAY,
    US_PER_MINUTE,
    FillExecuted,
    OrderUpdated,
    QuoteReceived,
    SignalRaised,
)
from sptrader.store import Store
from sptrader.store.retention import compact

EUR = "SIM:EURUSD"
BTC = "SIM:BTCUSD"


def broker_settings(home: Path, *, live: bool = False, **overrides):
    """Two SIM instruments. ``live``: the simulator streams quotes; otherwise it stays
    quiet (running, but publishing once an hour) and the test publishes its own."""
    sim = (
        {"publish_interval_ms": 10, "tick_rate": 5.0}
        if live
        else {"publish_interval_ms": 3_600_000}
    )
    overrides.setdefault("broker", {"slippage_bps": 0.0})
    return make_settings(
        home,
        watchlist=[EUR, BTC],
        store={"seed_days": 0.01, "flush_interval_ms": 20},
        feeds={"sim": sim},
        **overrides,
    )


def publish_quote(engine: Engine, bid: float, ask: float, instrument: str = EUR) -> None:
    engine.bus.publish_nowait([QuoteReceived(instrument, now_us(), bid, ask, 1.0, 1.0)])


def stored(engine_or_store, query: str) -> list[tuple]:
    store = (
        engine_or_store.require_store() if isinstance(engine_or_store, Engine) else engine_or_store
    )
    return store.cursor().execute(query).fetchall()


async def started(settings) -> Engine:
    engine = Engine(settings)
    await engine.start()
    assert engine.broker is not None
    await wait_until(lambda: engine.supervisor.status() and _running(engine, "sim"))
    return engine


def _running(engine: Engine, name: str) -> bool:
    return any(s.name == name and s.state.value == "running" for s in engine.supervisor.status())


async def test_market_order_fills_at_the_live_ask_and_is_stored(home: Path) -> None:
    engine = await started(broker_settings(home, live=True, broker={"slippage_bps": 2.0}))
    seen = engine.bus.subscribe(
        "test", maxsize=1_000_000, types=(QuoteReceived, FillExecuted, OrderUpdated)
    )
    try:
        broker = engine.broker
        assert await broker.wait_for_quote("sim:eurusd", timeout=10)
        result = await broker.place(OrderRequest(EUR, "buy", qty=1000))
        assert result.rejection is None and result.order.status == "filled"
        [fill] = result.fills
        # Stored before place() returned.
        assert stored(engine, "SELECT order_id, status, filled_qty FROM orders") == [
            (result.order.order_id, "filled", 1000.0)
        ]
        assert stored(engine, "SELECT fill_id, order_id, qty, price FROM fills") == [
            (fill.fill_id, result.order.order_id, 1000.0, fill.price)
        ]
        events = seen.get_nowait()
        asks = {e.ask for e in events if type(e) is QuoteReceived and e.instrument == EUR}
        # A live ask, moved 2 bps against the buyer.
        assert any(fill.price == pytest.approx(ask * 1.0002, rel=1e-12) for ask in asks)
        updates = [e for e in events if type(e) is OrderUpdated]
        fills = [e for e in events if type(e) is FillExecuted]
        assert [u.order["status"] for u in updates] == ["filled"]
        assert fills[0].fill == fill.to_dict()
        [position] = broker.positions()
        assert position["instrument"] == EUR and position["qty"] == 1000
        account = broker.account()
        assert account["open_positions"] == 1 and account["exposure"] > 0
    finally:
        await engine.stop()


async def test_limit_order_rests_then_fills_when_quotes_cross(home: Path) -> None:
    engine = await started(broker_settings(home))
    try:
        broker = engine.broker
        publish_quote(engine, 1.1000, 1.1002)
        result = await broker.place(OrderRequest(EUR, "buy", qty=500, type="limit", price=1.0990))
        order = result.order
        assert order.status == "open"
        assert [o["order_id"] for o in broker.open_orders()] == [order.order_id]
        assert stored(engine, "SELECT status FROM orders") == [("open",)]
        publish_quote(engine, 1.0992, 1.0994)
        await asyncio.sleep(0.05)
        assert order.status == "open"
        publish_quote(engine, 1.0985, 1.0988)
        await wait_until(lambda: stored(engine, "SELECT status FROM orders") == [("filled",)])
        assert stored(engine, "SELECT qty, price FROM fills") == [(500.0, 1.0988)]
        assert broker.open_orders() == []
        assert [f["price"] for f in await broker.fills()] == [1.0988]
        history = await broker.order_history()
        assert [(o["order_id"], o["status"]) for o in history] == [(order.order_id, "filled")]
    finally:
        await engine.stop()


async def test_a_stop_triggers_on_any_quote_of_a_batch_not_only_the_newest(home: Path) -> None:
    engine = await started(broker_settings(home))
    try:
        broker = engine.broker
        publish_quote(engine, 100.0, 100.5)
        order = (
            await broker.place(OrderRequest(EUR, "sell", qty=1, type="stop", price=99.0))
        ).order
        ts = now_us()
        engine.bus.publish_nowait(
            [
                QuoteReceived(EUR, ts, 99.5, 100.0, 1, 1),
                QuoteReceived(EUR, ts + 1, 98.9, 99.4, 1, 1),  # crosses
                QuoteReceived(EUR, ts + 2, 99.6, 100.1, 1, 1),  # back above
            ]
        )
        await wait_until(lambda: not order.is_open)
        assert order.status == "filled" and order.avg_price == 98.9
    finally:
        await engine.stop()


async def test_cancel_and_close_position(home: Path) -> None:
    engine = await started(broker_settings(home))
    try:
        broker = engine.broker
        publish_quote(engine, 100.0, 100.5)
        entry = await broker.place(OrderRequest(EUR, "buy", qty=2, sl=95.0, tp=110.0))
        assert entry.order.status == "filled"
        children = broker.open_orders()
        assert sorted(o["role"] for o in children) == ["sl", "tp"]
        resting = (
            await broker.place(OrderRequest(EUR, "buy", qty=1, type="limit", price=90.0))
        ).order
        cancelled = await broker.cancel(resting.order_id)
        assert cancelled.status == "cancelled"
        with pytest.raises(UsageError):
            await broker.cancel(resting.order_id)
        with pytest.raises(UsageError):
            await broker.place(OrderRequest(EUR, "buy", qty=-1))
        closed = await broker.close_position("sim:eurusd")
        assert closed.order.status == "filled" and closed.fills[0].price == 100.0
        assert broker.positions() == [] and broker.open_orders() == []
        statuses = dict(stored(engine, "SELECT order_id, status FROM orders"))
        assert sorted(statuses.values()) == [
            "cancelled",
            "cancelled",
            "cancelled",
            "filled",
            "filled",
        ]
    finally:
        await engine.stop()


async def test_restart_restores_positions_open_orders_and_ids(home: Path) -> None:
    settings = broker_settings(home)
    engine = await started(settings)
    try:
        broker = engine.broker
        publish_quote(engine, 100.0, 100.5)
        publish_quote(engine, 20_000.0, 20_010.0, instrument=BTC)
        await broker.place(OrderRequest(EUR, "buy", qty=3))
        await broker.place(OrderRequest(BTC, "sell", qty=0.5, sl=21_000.0))
        await broker.place(OrderRequest(EUR, "sell", qty=1))
        await broker.place(OrderRequest(EUR, "buy", qty=1, type="limit", price=90.0))
        before_positions = broker.positions()
        before_orders = broker.open_orders()
        before_account = broker.account()
        next_ids = (broker.book.next_order_id, broker.book.next_fill_id)
    finally:
        await engine.stop()

    engine = await started(settings)
    try:
        broker = engine.broker
        assert broker.open_orders() == before_orders
        # Marked at the last stored close until the first quote: compare the rest.
        keys = ("instrument", "side", "qty", "avg_price", "realized", "fees", "opened_us")
        assert [{k: p[k] for k in keys} for p in broker.positions()] == [
            {k: p[k] for k in keys} for p in before_positions
        ]
        account = broker.account()
        assert account["realized"] == pytest.approx(before_account["realized"])
        assert account["cash"] == pytest.approx(before_account["cash"])
        assert (broker.book.next_order_id, broker.book.next_fill_id) == next_ids
        publish_quote(engine, 100.0, 100.5)
        result = await broker.place(OrderRequest(EUR, "buy", qty=1))
        assert result.order.order_id == next_ids[0]
        assert result.fills[0].fill_id == next_ids[1]
        # The restored resting order still works, and so does the restored stop-loss.
        publish_quote(engine, 89.0, 89.5)
        await wait_until(lambda: [o["role"] for o in broker.open_orders()] == ["sl"])
        assert broker.positions()[1]["qty"] == pytest.approx(4.0)
        publish_quote(engine, 21_000.0, 21_000.5, instrument=BTC)
        await wait_until(lambda: broker.open_orders() == [])
        assert [p["instrument"] for p in broker.positions()] == [EUR]
    finally:
        await engine.stop()


def signal(side: str, stop: float | None = None, target: float | None = None, *, paper=True):
    return SignalRaised(
        now_us(), "cross", 7, EUR, now_us() - US_PER_MINUTE, side, 1.0, "test", stop, target, paper
    )


async def test_paper_signals_become_orders(home: Path) -> None:
    engine = await started(
        broker_settings(home, risk={"risk_per_trade_pct": 1.0}, broker={"slippage_bps": 0.0})
    )
    try:
        broker = engine.broker
        publish_quote(engine, 99.5, 100.0)
        # With a stop: sized so hitting it loses 1% of equity (1,000 over 4.0 = 250).
        engine.bus.publish_nowait([signal("buy", stop=96.0, target=110.0)])
        await wait_until(lambda: bool(broker.positions()))
        [position] = broker.positions()
        assert position["qty"] == pytest.approx(250.0)
        [order] = await broker.order_history(limit=10, status="filled")
        assert order["source"] == "scanner:cross" and order["sl"] == 96.0 and order["tp"] == 110.0
        assert sorted(o["role"] for o in broker.open_orders()) == ["sl", "tp"]
        # Already long: nothing. A signal not routed to the broker: nothing.
        engine.bus.publish_nowait([signal("buy"), signal("sell", paper=False)])
        await asyncio.sleep(0.1)
        assert broker.positions()[0]["qty"] == pytest.approx(250.0)
        # Sell reverses: covers 250 and goes short signal_notional / bid.
        engine.bus.publish_nowait([signal("sell")])
        await wait_until(lambda: broker.positions()[0]["side"] == "short")
        assert broker.positions()[0]["qty"] == pytest.approx(-10_000 / 99.5)
        assert broker.open_orders() == []  # the long's protection went with it
        engine.bus.publish_nowait([signal("exit")])
        await wait_until(lambda: broker.positions() == [])
        sources = [o["source"] for o in await broker.order_history()]
        assert sources.count("scanner:cross") >= 3
    finally:
        await engine.stop()


async def test_a_rejected_signal_order_is_logged_and_published(
    home: Path, caplog: pytest.LogCaptureFixture
) -> None:
    engine = await started(broker_settings(home, risk={"max_qty": {EUR: 10.0}}))
    updates = engine.bus.subscribe("test", maxsize=1000, types=OrderUpdated)
    try:
        publish_quote(engine, 99.5, 100.0)
        with caplog.at_level(logging.WARNING, logger="sptrader"):
            engine.bus.publish_nowait([signal("buy")])
            await wait_until(lambda: len(updates) > 0)
        [update] = updates.get_nowait()
        assert update.order["status"] == "rejected"
        assert update.order["source"] == "scanner:cross"
        assert "max quantity for SIM:EURUSD" in update.order["reason"]
        records_ = [r for r in caplog.records if getattr(r, "source", "") == "broker"]
        assert any(
            "rejected (max_qty)" in r.getMessage() and "the limit is 10" in r.getMessage()
            for r in records_
        )
        assert stored(engine, "SELECT status, reason FROM orders")[0][0] == "rejected"
        # No quote to size from: rejected too, with that reason.
        engine.bus.publish_nowait(
            [SignalRaised(now_us(), "cross", 8, BTC, 0, "buy", None, "", None, None, True)]
        )
        await wait_until(lambda: len(updates) > 0)
        [update] = updates.get_nowait()
        assert update.order["reason"] == "no quote for SIM:BTCUSD yet to size the order from"
    finally:
        await engine.stop()


async def test_stale_and_unstreamed_instruments_take_no_orders(home: Path) -> None:
    engine = await started(broker_settings(home))
    try:
        broker = engine.broker
        publish_quote(engine, 99.5, 100.0)
        assert not await broker.wait_for_quote("SIM:GBPUSD", timeout=0.05)
        result = await broker.place(
            OrderRequest("SIM:GBPUSD", "buy", qty=1, type="limit", price=1.0)
        )
        assert result.rejection.limit == "stale_quotes"
        assert "not streamed" in result.rejection.message
        await engine.supervisor.stop("sim")
        result = await broker.place(OrderRequest(EUR, "buy", qty=1))
        assert result.rejection.limit == "stale_quotes"
        assert result.rejection.message == "no orders on SIM:EURUSD: its feed sim is stopped"
    finally:
        await engine.stop()


async def test_db_compact_keeps_the_broker_tables(home: Path) -> None:
    settings = broker_settings(home)
    engine = await started(settings)
    try:
        publish_quote(engine, 99.5, 100.0)
        await engine.broker.place(OrderRequest(EUR, "buy", qty=1, sl=90.0))
        store = engine.require_store()
        with store._write_lock:
            store.cursor().execute(
                "INSERT INTO journal_notes VALUES (1, DATE '2026-01-02', now()::TIMESTAMP, 'calm')"
            )
    finally:
        await engine.stop()
    counts = "SELECT (SELECT count(*) FROM orders), (SELECT count(*) FROM fills), (SELECT count(*) FROM journal_notes)"
    store = Store(settings.store_path)
    before = stored(store, counts)
    store.close()
    assert before == [(2, 1, 1)]
    result = compact(settings.store_path, 0)
    assert {"orders", "fills", "journal_notes"} <= set(result.rows)
    store = Store(settings.store_path)
    try:
        assert stored(store, counts) == before
        open_orders, fills, next_order, next_fill = records.load_state(store)
        assert [o.role for o in open_orders] == ["sl"] and len(fills) == 1
        assert (next_order, next_fill) == (3, 2)
        # The primary keys survived: an upsert still replaces.
        order = open_orders[0]
        order.status = "cancelled"
        from sptrader.broker.book import Changes

        records.save_changes(store, Changes({order.order_id: order}))
        assert stored(store, "SELECT count(*), min(status) FROM orders WHERE role = 'sl'") == [
            (1, "cancelled")
        ]
    finally:
        store.close()


@pytest.mark.parametrize("count", [1, 12])
def test_records_upsert_orders_and_read_them_back(tmp_path: Path, count: int) -> None:
    from sptrader.broker.book import Changes
    from sptrader.broker.orders import Order

    store = Store(tmp_path / "s.duckdb")
    store.migrate()
    try:
        orders = [
            Order(i, EUR, "buy", 1.0, "limit", 90.0 + i, "day", 1_000 + i, expires_us=US_PER_DAY)
            for i in range(1, count + 1)
        ]
        records.save_changes(store, Changes({o.order_id: o for o in orders}))
        fills = []
        for order in orders:
            order.status, order.filled_qty, order.avg_price, order.updated_us = (
                "filled",
                1.0,
                89.0,
                5_000,
            )
            fills.append(
                Fill(
                    order.order_id,
                    order.order_id,
                    EUR,
                    "buy",
                    1.0,
                    89.0,
                    0.1,
                    5_000 + order.order_id,
                )
            )
        changes = Changes({o.order_id: o for o in orders}, fills)
        assert records.save_changes(store, changes) == 2 * count
        # Written again (a retried write): still one row each.
        records.save_changes(store, changes)
        history = records.orders(store, limit=100)
        assert [o["order_id"] for o in history] == list(range(count, 0, -1))
        assert history[-1] == orders[0].to_dict()
        assert records.orders(store, "open") == []
        assert [f["fill_id"] for f in records.fills(store)] == list(range(1, count + 1))
        assert [f["fill_id"] for f in records.fills(store, limit=1)] == [count]
        assert records.fills(store, since_us=5_000 + count) == [{**fills[-1].to_dict()}]
        open_orders, loaded, next_order, next_fill = records.load_state(store)
        assert open_orders == [] and loaded == fills
        assert (next_order, next_fill) == (count + 1, count + 1)
    finally:
        store.close()


def test_broker_disabled(home: Path) -> None:
    engine = Engine(broker_settings(home, broker={"enabled": False}))
    assert engine.broker is None


def test_order_events_cross_the_api() -> None:
    order = {"order_id": 3, "status": "filled", "price": None, "qty": 1.5}
    fill = Fill(1, 3, EUR, "buy", 1.5, 1.1, 0.0, 123).to_dict()
    for event in (OrderUpdated(5, order), FillExecuted(6, fill)):
        import json

        assert decode_event(json.loads(json.dumps(encode_event(event)))) == event


# --- the service without an engine: a fake clock, quotes on a bare bus -------------------


class Clock:
    def __init__(self, now: int) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


async def test_restart_rebuilds_the_days_starting_equity_from_fills_and_closes(
    tmp_path: Path,
) -> None:
    midnight = 20_400 * US_PER_DAY
    store = Store(tmp_path / "s.duckdb")
    store.migrate()
    try:
        # Yesterday: bought 10 at 100; the 23:59 bar closed at 104. Today: sold 5 at 110.
        from sptrader.broker.book import Changes

        records.save_changes(
            store,
            Changes(
                fills=[
                    Fill(1, 1, EUR, "buy", 10, 100.0, 1.0, midnight - 3600 * 10**6),
                    Fill(2, 2, EUR, "sell", 5, 110.0, 1.0, midnight + 3600 * 10**6),
                ]
            ),
        )
        import polars as pl

        store.upsert_bars(
            pl.DataFrame(
                {
                    "instrument": [EUR, EUR, EUR],
                    "ts": pl.Series(
                        [midnight - 2 * US_PER_MINUTE, midnight - US_PER_MINUTE, midnight]
                    ).cast(pl.Datetime("us")),
                    "open": [1.0] * 3,
                    "high": [1.0] * 3,
                    "low": [1.0] * 3,
                    "close": [103.0, 104.0, 108.0],
                    "volume": [1.0] * 3,
                    "trades": [1] * 3,
                }
            )
        )
        clock = Clock(midnight + 2 * 3600 * 10**6)
        broker = PaperBroker(Bus(), BrokerConfig(starting_cash=1_000.0), RiskConfig(), clock=clock)
        await broker.open(store)
        book = broker.book
        assert book.day_start_us == midnight
        # 1,000 - 1 fee + 10 * (104 - 100) at midnight.
        assert book.day_start_equity == pytest.approx(1_039.0)
        # Until a quote comes, the position is marked at the newest stored close (108).
        assert broker.positions()[0]["mark"] == 108.0
        # Now: 1,000 - 2 + 5 * 10 realized + 5 * (108 - 100).
        assert broker.account()["equity"] == pytest.approx(1_088.0)
        assert broker.account()["day_pnl"] == pytest.approx(49.0)
        # Without an engine (the CLI): the same account from the store alone.
        ledger, marks = records.offline_account(store, BrokerConfig(starting_cash=1_000.0))
        assert marks == {EUR: 108.0}
        assert ledger.equity(marks) == pytest.approx(1_088.0)
        assert records.last_closes(store, [EUR, BTC], midnight) == {EUR: 104.0}
    finally:
        store.close()


async def test_timer_expires_day_orders_without_quotes_and_overload_keeps_the_newest(
    tmp_path: Path,
) -> None:
    store = Store(tmp_path / "s.duckdb")
    store.migrate()
    bus = Bus()
    start = 20_400 * US_PER_DAY + 12 * 3600 * 10**6
    clock = Clock(start)
    broker = PaperBroker(
        bus, BrokerConfig(slippage_bps=0.0), RiskConfig(), clock=clock, max_pending=3
    )
    await broker.open(store)
    bus.publish_nowait([QuoteReceived(EUR, start, 100.0, 100.5, 1, 1)])
    day = (
        await broker.place(OrderRequest(EUR, "buy", qty=1, type="limit", price=90.0, tif="day"))
    ).order
    stop = (await broker.place(OrderRequest(EUR, "buy", qty=1, type="stop", price=105.0))).order
    # Overload (the loop is not running): only 3 quotes are kept, the newest crosses.
    bus.publish_nowait(
        [
            QuoteReceived(EUR, start + i, 100.0, 100.5 + (5 if i == 9 else 0), 1, 1)
            for i in range(10)
        ]
    )
    assert broker.quotes_dropped == 7 and len(broker._pending) == 3
    task = asyncio.get_running_loop().create_task(broker.run(_context()))
    try:
        await wait_until(lambda: not stop.is_open)
        assert stop.status == "filled" and stop.avg_price == 105.5
        assert day.is_open
        clock.now = start + US_PER_DAY  # past midnight, and no quote comes
        await wait_until(lambda: not day.is_open, timeout=5)
        assert day.status == "expired"
        await wait_until(lambda: ("expired",) in stored(store, "SELECT status FROM orders"))
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await broker.drain()
        store.close()


def _context():
    from sptrader.supervisor import ServiceContext

    return ServiceContext("broker", Bus())
