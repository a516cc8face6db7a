"""The live broker through each venue's fake in the venue's own wire format (signatures
and auth checked by the fake): market and limit orders with partial fills, a placement
accepted whose answer times out (no duplicate), the order stream dropping mid-fill then
reconciliation, a restart with an order placed on the venue meanwhile, the halt."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import pytest
from conftest import wait_until
from fake_alpaca_trading import FakeAlpacaTrading
from fake_binance_trading import FakeBinanceTrading
from fake_ibkr_gateway import FakeIbkrTrading
from fake_oanda_trading import FakeOandaTrading
from live_harness import Running

from sptrader.broker.orders import OrderRequest
from sptrader.config import BrokersConfig
from sptrader.venues.registry import make_venue


@dataclass
class Case:
    name: str
    fake: type
    instrument: str
    qty: float  # a quantity the venue's rules accept
    part: float  # a part of it
    limit: float  # a buy limit well below the market (rests)


CASES = [
    Case("binance", FakeBinanceTrading, "BINANCE:BTCUSDT", 0.01, 0.004, 40_000.0),
    Case("oanda", FakeOandaTrading, "OANDA:EUR_USD", 10_000, 4_000, 1.0),
    Case("ibkr", FakeIbkrTrading, "IBKR:AAPL", 10, 4, 150.0),
    Case("alpaca", FakeAlpacaTrading, "ALPACA:AAPL", 10, 4, 150.0),
]


@pytest.fixture(params=CASES, ids=[case.name for case in CASES])
def case(request: pytest.FixtureRequest) -> Iterator[tuple[Case, Any]]:
    spec: Case = request.param
    with spec.fake(timeout_s=0.5) as fake:
        yield spec, fake


def venue_for(spec: Case, fake: Any):
    section = msgspec.convert(
        fake.config, type(getattr(BrokersConfig(), spec.name)), from_attributes=True
    )
    venue = make_venue(spec.name, section, env=fake.env)
    for name, value in (("poll_s", 0.02), ("pace_s", 0.0)):  # IBKR's poller, quick in tests
        if hasattr(venue, name):
            setattr(venue, name, value)
    return venue


def running(path: Path, spec: Case, fake: Any) -> Running:
    price = fake.prices[spec.instrument]
    return Running(
        path, venue_for(spec, fake), quotes={spec.instrument: (price * 0.9999, price * 1.0001)}
    )


async def test_market_order_fills_and_is_stored_once(tmp_path: Path, case) -> None:
    spec, fake = case
    live = running(tmp_path / "s.duckdb", spec, fake)
    broker = await live.start()
    try:
        result = await broker.place(OrderRequest(spec.instrument, "buy", spec.qty))
        assert result.rejection is None, result.rejection
        order = result.order
        await wait_until(lambda: order.status == "filled", timeout=5)
        await wait_until(lambda: live.rows("SELECT count(*) FROM fills") == [(1,)], timeout=5)
        (fill,) = live.rows("SELECT venue, qty, venue_fill_id FROM fills")
        assert fill[0] == spec.name and fill[1] == pytest.approx(spec.qty) and fill[2]
        assert fake.placed == 1 and fake.auth_failures == 0
        assert order.venue_order_id and order.client_order_id in fake.orders
    finally:
        await live.stop()


async def test_limit_order_partial_fill_then_the_rest(tmp_path: Path, case) -> None:
    spec, fake = case
    live = running(tmp_path / "s.duckdb", spec, fake)
    broker = await live.start()
    try:
        request = OrderRequest(spec.instrument, "buy", spec.qty, "limit", spec.limit)
        order = (await broker.place(request)).order
        assert order.status == "accepted", order.reason
        fake.fill(order.client_order_id, spec.part, spec.limit)
        await wait_until(lambda: order.status == "partially_filled", timeout=5)
        fake.fill(order.client_order_id, None, spec.limit)
        await wait_until(lambda: order.status == "filled", timeout=5)
        await wait_until(lambda: live.rows("SELECT count(*) FROM fills") == [(2,)], timeout=5)
        assert live.rows("SELECT sum(qty) FROM fills")[0][0] == pytest.approx(spec.qty)
    finally:
        await live.stop()


async def test_a_timed_out_placement_is_not_sent_twice(tmp_path: Path, case) -> None:
    spec, fake = case
    live = running(tmp_path / "s.duckdb", spec, fake)
    broker = await live.start()
    try:
        fake.accept_then_time_out()
        request = OrderRequest(spec.instrument, "buy", spec.qty, "limit", spec.limit)
        order = (await broker.place(request)).order
        assert fake.placed == 1
        assert order.status in ("accepted", "new")
        await broker.reconcile()
        assert order.status == "accepted" and fake.placed == 1
    finally:
        await live.stop()


async def test_the_stream_drops_mid_fill_and_reconciliation_finds_the_rest(
    tmp_path: Path, case
) -> None:
    spec, fake = case
    live = running(tmp_path / "s.duckdb", spec, fake)
    broker = await live.start()
    try:
        request = OrderRequest(spec.instrument, "buy", spec.qty, "limit", spec.limit)
        order = (await broker.place(request)).order
        fake.fill(order.client_order_id, spec.part, spec.limit)
        await wait_until(lambda: order.status == "partially_filled", timeout=5)
        fake.drop_stream()
        fake.fill(order.client_order_id, None, spec.limit)
        with pytest.raises(Exception):  # noqa: B017 - the run ends however the drop shows
            await live.task
        await live.run()  # the supervisor's restart: reconnect, reconcile
        await wait_until(lambda: order.status == "filled", timeout=5)
        await wait_until(lambda: live.rows("SELECT count(*) FROM fills") == [(2,)], timeout=5)
    finally:
        await live.stop()


async def test_a_restart_adopts_an_order_placed_on_the_venue_meanwhile(
    tmp_path: Path, case
) -> None:
    spec, fake = case
    first = running(tmp_path / "s.duckdb", spec, fake)
    await first.start()
    await first.stop()
    elsewhere = fake.place_elsewhere(spec.instrument, "buy", spec.qty, "limit", spec.limit)
    second = running(tmp_path / "s.duckdb", spec, fake)
    broker = await second.start()
    try:
        assert broker.last_reconcile["adopted_orders"] == 1
        (adopted,) = broker.orders.values()
        assert adopted.source == "venue" and adopted.qty == pytest.approx(spec.qty)
        assert elsewhere in adopted.client_order_id or adopted.venue_order_id
        assert second.rows("SELECT source, status FROM orders") == [("venue", "accepted")]
    finally:
        await second.stop()


async def test_halt_cancels_at_the_venue(tmp_path: Path, case) -> None:
    spec, fake = case
    live = running(tmp_path / "s.duckdb", spec, fake)
    broker = await live.start()
    try:
        request = OrderRequest(spec.instrument, "buy", spec.qty, "limit", spec.limit)
        order = (await broker.place(request)).order
        await broker.halt("test")
        await wait_until(lambda: order.status == "cancelled", timeout=5)
        refused = await broker.place(request)
        assert refused.rejection.limit == "halted" and fake.placed == 1
    finally:
        await live.stop()
