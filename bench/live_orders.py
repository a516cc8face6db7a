"""Live broker speed: order to acknowledgement through each venue's fake, and
reconciliation of 1,000 orders and 10,000 fills.

Order to acknowledgement: ``await LiveBroker.place`` of a resting limit order (far from
the market, so the venue answers "accepted" and nothing fills) on a temporary DuckDB
store, one order at a time, through the venue module and its local fake
(tests/fake_*_trading.py, the venue's own wire format and signatures). Each order is
stored twice (recorded ``new`` before it is sent, ``accepted`` after). Two figures:

- ``ours``: the broker's and the store's time, excluding the venue call (``total`` less
  the time inside ``Venue.place``): our overhead, with no network in it;
- ``total``: the whole ``place``, including the venue module (signing, JSON, httpx) and
  the round trip to the fake on localhost.

Reconciliation: an in-memory venue (tests/fake_venue.py, so the figure is ours alone)
holding 1,000 working orders and 10,000 fills made elsewhere. ``first`` adopts all of
them (orders and fills stored in one transaction); ``again`` finds nothing new (the
steady state after every reconnect).

Run: .venv/bin/python bench/live_orders.py [--orders N] [--venues binance,oanda,ibkr,alpaca]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import msgspec  # noqa: E402
import numpy as np  # noqa: E402
from fake_alpaca_trading import FakeAlpacaTrading  # noqa: E402
from fake_binance_trading import FakeBinanceTrading  # noqa: E402
from fake_ibkr_gateway import FakeIbkrTrading  # noqa: E402
from fake_oanda_trading import FakeOandaTrading  # noqa: E402
from fake_venue import INSTRUMENT, MemoryVenue  # noqa: E402
from live_harness import Running  # noqa: E402

from sptrader.broker.orders import OrderRequest  # noqa: E402
from sptrader.config import BrokersConfig  # noqa: E402
from sptrader.venues.base import VenueFill  # noqa: E402
from sptrader.venues.registry import make_venue  # noqa: E402

FAKES = {
    "binance": (FakeBinanceTrading, "BINANCE:BTCUSDT", 0.01, 40_000.0),
    "oanda": (FakeOandaTrading, "OANDA:EUR_USD", 10_000, 1.0),
    "ibkr": (FakeIbkrTrading, "IBKR:AAPL", 10, 150.0),
    "alpaca": (FakeAlpacaTrading, "ALPACA:AAPL", 1, 150.0),  # buying power: 100k
}


def percentiles(values_ms: list[float]) -> str:
    p50, p99 = np.percentile(values_ms, [50, 99])
    return f"p50 {p50:6.2f} ms  p99 {p99:6.2f} ms"


async def order_to_ack(name: str, orders: int, directory: Path) -> tuple[list[float], list[float]]:
    fake_class, instrument, qty, limit = FAKES[name]
    with fake_class(timeout_s=5.0) as fake:
        section = msgspec.convert(
            fake.config, type(getattr(BrokersConfig(), name)), from_attributes=True
        )
        venue = make_venue(name, section, env=fake.env)
        for attribute, value in (("poll_s", 0.5), ("pace_s", 0.0)):  # IBKR's poller
            if hasattr(venue, attribute):
                setattr(venue, attribute, value)
        inside: list[float] = []
        place = venue.place

        async def timed_place(request):
            started = time.perf_counter()
            try:
                return await place(request)
            finally:
                inside.append(time.perf_counter() - started)

        venue.place = timed_place  # type: ignore[method-assign]
        price = fake.prices[instrument]
        live = Running(directory / f"{name}.duckdb", venue, quotes={instrument: (price, price)})
        broker = await live.start()
        totals: list[float] = []
        ours: list[float] = []
        try:
            for index in range(orders + 5):
                inside.clear()
                started = time.perf_counter()
                result = await broker.place(OrderRequest(instrument, "buy", qty, "limit", limit))
                elapsed = time.perf_counter() - started
                if result.rejection is not None:
                    raise SystemExit(f"{name}: {result.rejection.message}")
                if index >= 5:  # warm-up: connections, first DuckDB writes
                    totals.append(elapsed * 1000)
                    ours.append((elapsed - sum(inside)) * 1000)
        finally:
            await live.stop()
        return ours, totals


async def reconciliation(directory: Path, orders: int, fills: int) -> tuple[float, float]:
    venue = MemoryVenue()
    for _ in range(orders):
        venue.place_elsewhere("buy", 1.0, 90.0)
    now = venue.clock()
    venue.executions.extend(
        VenueFill(
            f"x{i}",
            f"v{i % 500}",
            None,
            INSTRUMENT,
            "buy" if i % 2 else "sell",
            1.0,
            100.0 + i % 7,
            0.01,
            now - (fills - i) * 1000,
        )
        for i in range(fills)
    )
    live = Running(directory / "reconcile.duckdb", venue, quotes={INSTRUMENT: (99.9, 100.1)})
    broker = await live.start()  # the start reconciles: that is "first"
    first = broker.last_reconcile["duration_ms"]
    again = (await broker.reconcile())["duration_ms"]
    stored = live.rows("SELECT count(*) FROM fills")[0][0]
    await live.stop()
    assert stored == fills, stored
    return first, again


async def main(orders: int, venues: list[str]) -> None:
    logging.getLogger("sptrader").setLevel(logging.ERROR)  # IBKR's questions, adoptions
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        print(f"order to acknowledgement, {orders} resting limit orders one at a time:")
        for name in venues:
            ours, totals = await order_to_ack(name, orders, directory)
            print(f"  {name:8} ours  {percentiles(ours)}   total {percentiles(totals)}")
        first, again = await reconciliation(directory, 1_000, 10_000)
        print("reconciliation, 1,000 working orders and 10,000 fills made elsewhere:")
        print(f"  first (adopts them all) {first:8.0f} ms")
        print(f"  again (nothing new)     {again:8.0f} ms")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=200)
    parser.add_argument("--venues", default=",".join(FAKES))
    args = parser.parse_args()
    asyncio.run(main(args.orders, args.venues.split(",")))
