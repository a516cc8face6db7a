"""The live broker against an in-memory venue (tests/fake_venue.py): recorded before
sent, no duplicate after a lost answer, partial fills, the stream dropping mid-fill and
reconciliation, a restart with an order placed elsewhere meanwhile, the kill switch."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from conftest import wait_until
from fake_venue import INSTRUMENT, MemoryVenue
from live_harness import Running

from sptrader.broker import records
from sptrader.broker.halts import Halts
from sptrader.broker.ids import Ids
from sptrader.broker.live import LiveBroker
from sptrader.broker.orders import OrderRequest
from sptrader.bus import Bus
from sptrader.clock import now_us
from sptrader.config import RiskConfig, SupervisorConfig
from sptrader.errors import UsageError
from sptrader.models import SignalRaised
from sptrader.store import Store
from sptrader.supervisor import Supervisor

QUOTES = {INSTRUMENT: (99.9, 100.1)}


@pytest.fixture
async def live(tmp_path: Path):
    running = Running(tmp_path / "live.duckdb", MemoryVenue(), quotes=QUOTES)
    await running.start()
    yield running
    await running.stop()


async def test_market_order_is_stored_with_its_ids_and_its_fill(live: Running) -> None:
    result = await live.broker.place(OrderRequest(INSTRUMENT, "buy", qty=2))
    order = result.order
    assert result.rejection is None and order.status == "filled" and order.filled_qty == 2
    assert order.client_order_id.startswith(f"sp{order.order_id}-")
    assert order.venue == "binance" and order.venue_order_id
    assert [f.qty for f in result.fills] == [2]
    (row,) = live.rows("SELECT venue, client_order_id, venue_order_id, status FROM orders")
    assert row == ("binance", order.client_order_id, order.venue_order_id, "filled")
    assert live.rows("SELECT venue, venue_fill_id, qty FROM fills") == [("binance", "t1", 2.0)]
    assert live.broker.positions()[0]["qty"] == 2


async def test_partial_fills_then_the_rest(live: Running) -> None:
    order = (await live.broker.place(OrderRequest(INSTRUMENT, "buy", 3, "limit", 95.0))).order
    assert order.status == "accepted"
    live.venue.fill(order.client_order_id, 1, 95.0)
    await wait_until(lambda: order.status == "partially_filled")
    assert order.filled_qty == 1 and order.is_open
    live.venue.fill(order.client_order_id, None, 95.0)
    await wait_until(lambda: order.status == "filled")
    await wait_until(lambda: len(live.rows("SELECT * FROM fills")) == 2)
    assert live.rows("SELECT sum(qty) FROM fills") == [(3.0,)]
    assert live.rows("SELECT status, filled_qty FROM orders") == [("filled", 3.0)]


async def test_a_lost_answer_is_asked_about_not_resent(live: Running) -> None:
    live.venue.lost_answers = 1
    result = await live.broker.place(OrderRequest(INSTRUMENT, "buy", 1, "limit", 90.0))
    assert live.venue.placed == 1  # asked, found, never sent again
    assert result.order.status == "accepted" and result.rejection is None


async def test_an_unknowable_fate_stays_new_until_reconciled(live: Running) -> None:
    live.venue.lost_answers = 1
    live.venue.lookups_fail = 3
    result = await live.broker.place(OrderRequest(INSTRUMENT, "buy", 1, "limit", 90.0))
    order = result.order
    assert order.status == "new" and "reconciliation" in order.reason
    assert live.rows("SELECT status FROM orders") == [("new",)]
    report = await live.broker.reconcile()
    assert order.status == "accepted" and order.reason == ""
    assert live.venue.placed == 1 and report["adopted_orders"] == 0


async def test_an_order_that_never_reached_the_venue_is_marked_so(live: Running) -> None:
    live.venue.lost_answers = 1
    live.venue.lookups_fail = 3
    order = (await live.broker.place(OrderRequest(INSTRUMENT, "buy", 1, "limit", 90.0))).order
    del live.venue.orders[order.client_order_id]  # it never got there after all
    report = await live.broker.reconcile()
    assert order.status == "rejected" and order.reason == "never reached the venue"
    assert [d["kind"] for d in report["differences"]] == ["order_missing"]


async def test_the_stream_drops_mid_fill_then_reconciliation_finds_the_rest(
    live: Running,
) -> None:
    order = (await live.broker.place(OrderRequest(INSTRUMENT, "buy", 4, "limit", 95.0))).order
    live.venue.fill(order.client_order_id, 1, 95.0)
    await wait_until(lambda: order.filled_qty == 1)
    live.venue.drop_stream()
    with pytest.raises(Exception, match="order stream closed"):
        await live.task
    live.venue.fill(order.client_order_id, None, 96.0, stream=False)  # while disconnected
    await live.run()  # the supervisor's restart: reconnect, then reconcile
    assert order.status == "filled" and order.filled_qty == 4
    await wait_until(lambda: len(live.rows("SELECT * FROM fills")) == 2)
    assert sorted(live.rows("SELECT qty, price FROM fills")) == [(1.0, 95.0), (3.0, 96.0)]
    assert live.broker.last_reconcile["why"] == "reconnect"


async def test_a_restart_adopts_an_order_placed_elsewhere_meanwhile(tmp_path: Path) -> None:
    venue = MemoryVenue()
    first = Running(tmp_path / "s.duckdb", venue, quotes=QUOTES)
    await first.start()
    mine = (await first.broker.place(OrderRequest(INSTRUMENT, "buy", 1, "limit", 90.0))).order
    await first.stop()
    web = venue.place_elsewhere("sell", 2, 150.0)
    venue.fill(mine.client_order_id, stream=False)  # ours filled while we were down
    second = Running(tmp_path / "s.duckdb", venue, quotes=QUOTES)
    broker = await second.start()
    try:
        report = broker.last_reconcile
        assert report["adopted_orders"] == 1 and report["new_fills"] == 1
        adopted = [o for o in broker.orders.values() if o.client_order_id == web]
        assert adopted and adopted[0].source == "venue" and adopted[0].qty == 2
        assert second.rows(
            f"SELECT status FROM orders WHERE client_order_id = '{mine.client_order_id}'"
        ) == [("filled",)]
        assert venue.placed == 1
    finally:
        await second.stop()


async def test_a_venue_rejection_is_one_sentence(live: Running) -> None:
    live.venue.reject_next = "insufficient balance for 0.5 BTC"
    result = await live.broker.place(OrderRequest(INSTRUMENT, "buy", 0.5))
    assert result.order.status == "rejected"
    assert result.rejection.message == "Binance -2010: insufficient balance for 0.5 BTC"
    assert live.rows("SELECT status, reason FROM orders") == [
        ("rejected", "Binance -2010: insufficient balance for 0.5 BTC")
    ]


async def test_halt_cancels_working_orders_and_refuses_entries_until_resumed(
    tmp_path: Path,
) -> None:
    venue = MemoryVenue()
    running = Running(tmp_path / "s.duckdb", venue, quotes=QUOTES)
    broker = await running.start()
    await broker.place(OrderRequest(INSTRUMENT, "buy", 2))  # a position to reduce
    working = (await broker.place(OrderRequest(INSTRUMENT, "buy", 1, "limit", 90.0))).order
    cancelled = await broker.halt("asked by the trader")
    assert [o.order_id for o in cancelled] == [working.order_id]
    assert venue.orders[working.client_order_id].status == "cancelled"
    await wait_until(lambda: working.status == "cancelled")
    refused = await broker.place(OrderRequest(INSTRUMENT, "buy", 1))
    assert refused.rejection.limit == "halted" and venue.placed == 2
    reduced = await broker.place(OrderRequest(INSTRUMENT, "sell", 1))
    assert reduced.rejection is None and reduced.order.status == "filled"
    await running.stop()
    again = Running(tmp_path / "s.duckdb", venue, quotes=QUOTES)
    broker = await again.start()  # still halted after a restart
    try:
        assert broker.halted() == "asked by the trader"
        assert await broker.resume()
        assert (await broker.place(OrderRequest(INSTRUMENT, "buy", 1))).rejection is None
    finally:
        await again.stop()


async def test_the_daily_loss_limit_halts_the_venue(tmp_path: Path) -> None:
    running = Running(
        tmp_path / "s.duckdb",
        MemoryVenue(),
        RiskConfig(max_leverage=0, risk_per_trade_pct=0, daily_loss_limit=50),
        quotes=QUOTES,
    )
    broker = await running.start()
    try:
        await broker.place(OrderRequest(INSTRUMENT, "buy", 10))
        broker.quotes[INSTRUMENT] = (90.0, 90.2)  # 10 x -10: past the 50 limit
        await wait_until(lambda: broker.halted() is not None, timeout=5)
        assert broker.halted().startswith("daily loss limit")
    finally:
        await running.stop()


async def test_orders_outside_the_venue_or_with_unsupported_parts_are_usage_errors(
    live: Running,
) -> None:
    with pytest.raises(UsageError, match="trades FAKE: instruments"):
        await live.broker.place(OrderRequest("SIM:EURUSD", "buy", 1))
    with pytest.raises(UsageError, match="no attached stop-loss"):
        await live.broker.place(OrderRequest(INSTRUMENT, "buy", 1, sl=90.0))


def risk_sized(tmp_path: Path) -> Running:
    """A memory venue whose signals are sized by 1% of equity at risk to their stop."""
    return Running(
        tmp_path / "s.duckdb",
        MemoryVenue(),
        RiskConfig(max_leverage=0, risk_per_trade_pct=1.0),
        quotes=QUOTES,
    )


def momo_buy(**fields: float) -> SignalRaised:
    """Scanner momo's buy routed to binance, its stop at 95."""
    now = now_us()
    return SignalRaised(
        now, "momo", 1, INSTRUMENT, now, "buy", 1.0, "cross", 95.0, None,
        paper=False, broker="binance", **fields,
    )  # fmt: skip


async def test_a_scanner_routed_here_trades_its_signal(tmp_path: Path) -> None:
    """``broker = "binance"`` on a scanner: its signal becomes an order at that venue,
    sized from the stop by risk_per_trade_pct and the venue's equity; paper ignores it."""
    running = risk_sized(tmp_path)
    broker = await running.start()
    try:
        running.bus.publish_nowait([momo_buy()])
        await wait_until(lambda: broker.ledger.positions.get(INSTRUMENT) is not None, timeout=5)
        (row,) = running.rows("SELECT source, venue, qty FROM orders")
        assert row[:2] == ("scanner:momo", "binance")
        assert row[2] == pytest.approx(1_000_000 * 0.01 / (100.1 - 95.0))
    finally:
        await running.stop()


async def test_a_trailing_signal_is_not_traded_with_a_fixed_stop_instead(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A venue takes no trailing stop from us: the signal is refused with why, not sent
    with a fixed stop the strategy did not ask for."""
    running = risk_sized(tmp_path)
    broker = await running.start()
    try:
        with caplog.at_level("WARNING", logger="sptrader"):
            await broker._on_signal(momo_buy(trail_pct=1.0))
        assert "not traded: trailing stops are paper-only" in caplog.text
        assert running.rows("SELECT count(*) FROM orders") == [(0,)]
        assert broker.ledger.positions.get(INSTRUMENT) is None
    finally:
        await running.stop()


async def test_the_limits_judge_the_venues_positions(tmp_path: Path) -> None:
    """Coins held before SPtrader (a deposit) are the venue's position: selling some is a
    reduction, so it passes even while halted; buying more is an entry and is refused."""
    venue = MemoryVenue()
    venue.holdings[INSTRUMENT] = 3.0
    running = Running(tmp_path / "s.duckdb", venue, quotes=QUOTES)
    broker = await running.start()
    try:
        report = broker.last_reconcile
        assert [d["kind"] for d in report["differences"]] == ["position_mismatch"]
        await broker.halt("test")
        sold = await broker.place(OrderRequest(INSTRUMENT, "sell", 1))
        assert sold.rejection is None and sold.order.status == "filled"
        bought = await broker.place(OrderRequest(INSTRUMENT, "buy", 1))
        assert bought.rejection.limit == "halted"
    finally:
        await running.stop()


async def test_the_supervisor_reconnects_a_dropped_stream_and_fails_on_refused_keys(
    tmp_path: Path,
) -> None:
    """A drop is an ordinary disconnect (reconnect with backoff, reconcile again); keys
    the venue refuses fail the service with the venue's sentence (the user must act)."""
    venue = MemoryVenue()
    store = Store(tmp_path / "s.duckdb")
    store.migrate()
    bus = Bus()
    halts = Halts()
    halts.load(store)
    broker = LiveBroker(bus, venue, RiskConfig(max_leverage=0), halts=halts)
    await broker.open(store, Ids(*records.next_ids(store)))
    supervisor = Supervisor(bus, SupervisorConfig(backoff_initial_s=0.01, backoff_max_s=0.05))
    supervisor.add(broker)
    supervisor.start(broker.name)
    try:
        await broker.wait_ready(5)
        venue.drop_stream()
        await wait_until(lambda: broker.last_reconcile["why"] == "reconnect", timeout=5)
        (status,) = supervisor.status()
        assert status.state.value == "running" and status.restarts == 1
        venue.auth_refused = True
        venue.drop_stream()
        await wait_until(lambda: supervisor.status()[0].state.value == "failed", timeout=5)
        assert supervisor.status()[0].last_error == "Binance: set BINANCE_API_SECRET"
    finally:
        await supervisor.stop_all()
        store.close()


async def test_a_lasting_difference_is_kept_once(tmp_path: Path) -> None:
    """Every reconciliation reports a holding the fills do not explain; the log and the
    reconciliations table get it once while it lasts, and again once it changes."""
    venue = MemoryVenue()
    venue.holdings[INSTRUMENT] = 3.0
    running = Running(tmp_path / "s.duckdb", venue, quotes=QUOTES)
    broker = await running.start()
    try:
        again = await broker.reconcile()
        assert [d["kind"] for d in again["differences"]] == ["position_mismatch"]
        assert running.rows("SELECT count(*) FROM reconciliations") == [(1,)]
        venue.holdings[INSTRUMENT] = 4.0
        await broker.reconcile()
        assert running.rows("SELECT count(*) FROM reconciliations") == [(2,)]
    finally:
        await running.stop()


@pytest.mark.parametrize("reached", [False, True], ids=["never-sent", "accepted"])
async def test_a_process_killed_mid_send_loses_nothing(tmp_path: Path, reached: bool) -> None:
    """The order is stored `new` before it is sent; killed while the request is in
    flight, the next start asks the venue: accepted there, it is followed; never sent,
    it is marked so. Either way it is never sent twice."""
    venue = MemoryVenue()
    first = Running(tmp_path / "s.duckdb", venue, quotes=QUOTES)
    broker = await first.start()
    real_place = venue.place

    sending = asyncio.Event()

    async def in_flight(request):
        if reached:
            await real_place(request)  # the venue has it; the answer never comes back
        sending.set()
        await asyncio.Event().wait()

    venue.place = in_flight  # type: ignore[method-assign]
    venue.push = lambda event: None  # type: ignore[method-assign]  # nor does the stream say
    placing = asyncio.create_task(broker.place(OrderRequest(INSTRUMENT, "buy", 1, "limit", 90.0)))
    await asyncio.wait_for(sending.wait(), 5)
    assert first.rows("SELECT status FROM orders") == [("new",)]
    placing.cancel()  # the process dies here, the request in flight
    await first.stop()
    venue.place = real_place  # type: ignore[method-assign]
    del venue.push  # the class's again
    second = Running(tmp_path / "s.duckdb", venue, quotes=QUOTES)
    await second.start()
    try:
        expected = "accepted" if reached else "rejected"
        assert second.rows("SELECT status FROM orders") == [(expected,)]
        if not reached:
            assert second.rows("SELECT reason FROM orders") == [("never reached the venue",)]
        assert venue.placed == (1 if reached else 0)
    finally:
        await second.stop()
