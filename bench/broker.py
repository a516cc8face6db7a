"""Paper broker speed: order handling (orders/s) and quote processing (quotes/s).

Orders:
- ``book``: market orders placed and filled by ``PaperBook`` alone (alternately buying
  and selling, so positions stay small), with the default risk limits checked.
- ``service``: ``await PaperBroker.place`` on a temporary DuckDB store: each order is
  stored (order and fill, one transaction) before ``place`` returns. ``sequential`` waits
  for each order; ``100 at once`` places 100 orders concurrently (their writes share
  transactions, as the API's clients would).

Quotes, with 100 resting limit orders spread over 20 instruments:
- ``book.on_quote``: the matching loop alone.
- ``service``: quotes published on a Bus in batches of 1,000 (the feeds' way), through
  the broker's tap, then one broker batch (every quote checked against the triggers,
  the newest of each instrument for the marks) and its write.
- ``none trigger`` keeps every order out of reach; ``some trigger`` puts a fifth of them
  within the quotes' range, so they fill during the run (their fills are stored).
- ``no orders``: quotes of instruments with nothing working (the tap's cheap path).

Run: .venv/bin/python bench/broker.py [--orders N] [--quotes N] [--repeat R]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import INSTRUMENTS

from sptrader.broker.book import PaperBook
from sptrader.broker.orders import OrderRequest
from sptrader.broker.service import PaperBroker
from sptrader.bus import Bus
from sptrader.config import BrokerConfig, RiskConfig
from sptrader.models import US_PER_DAY, QuoteReceived
from sptrader.store import Store

T0 = 20_400 * US_PER_DAY + 12 * 3600 * 10**6
BROKER = BrokerConfig(slippage_bps=1.0, fee_bps=0.5)
LIMITS = RiskConfig()  # the defaults: risk per trade 1% (checked only with a stop)
RESTING = 100


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> int:
        self.now += 1
        return self.now


def median_rate(count: int, seconds: list[float]) -> float:
    return count / statistics.median(seconds)


# --- orders -------------------------------------------------------------------------------


def book_orders(n: int) -> float:
    book = PaperBook(BROKER, LIMITS)
    book.on_quote("SIM:EURUSD", T0, 1.1000, 1.1002)
    requests = [
        OrderRequest("SIM:EURUSD", "buy" if i % 2 == 0 else "sell", qty=1000.0) for i in range(n)
    ]
    start = time.perf_counter()
    for i, request in enumerate(requests):
        result, _changes = book.place(request, T0 + i)
        assert result.order.status == "filled"
    return time.perf_counter() - start


async def service_broker(directory: Path) -> tuple[PaperBroker, Store]:
    store = Store(directory / "bench.duckdb")
    store.migrate()
    broker = PaperBroker(Bus(), BROKER, LIMITS, clock=Clock())
    await broker.open(store)
    return broker, store


async def service_orders(n: int, concurrent: int) -> float:
    with tempfile.TemporaryDirectory() as directory:
        broker, store = await service_broker(Path(directory))
        try:
            broker.bus.publish_nowait([QuoteReceived("SIM:EURUSD", T0, 1.1000, 1.1002, 1, 1)])
            sides = ["buy", "sell"]
            start = time.perf_counter()
            for first in range(0, n, concurrent):
                batch = [
                    broker.place(OrderRequest("SIM:EURUSD", sides[i % 2], qty=1000.0))
                    for i in range(first, min(n, first + concurrent))
                ]
                results = await asyncio.gather(*batch)
                assert all(r.order.status == "filled" for r in results)
            elapsed = time.perf_counter() - start
            stored = store.cursor().execute("SELECT count(*) FROM fills").fetchall()[0][0]
            assert stored == n, stored
            return elapsed
        finally:
            store.close()


# --- quotes -------------------------------------------------------------------------------


def make_quotes(n: int, seed: int = 3) -> list[QuoteReceived]:
    """Random walks around 100 for the 20 instruments, interleaved."""
    rng = np.random.default_rng(seed)
    count = len(INSTRUMENTS)
    per = n // count
    steps = rng.normal(0, 0.01, (count, per))
    mids = 100 + np.cumsum(steps, axis=1)
    quotes = []
    for t in range(per):
        for i, instrument in enumerate(INSTRUMENTS):
            mid = float(mids[i, t])
            quotes.append(QuoteReceived(instrument, T0 + t, mid - 0.01, mid + 0.01, 1.0, 1.0))
    return quotes


def resting_requests(trigger: bool, quotes: list[QuoteReceived]) -> list[OrderRequest]:
    """100 limit orders, 5 per instrument; with ``trigger``, one in five of them inside
    the range its instrument's quotes will reach."""
    lows: dict[str, float] = {}
    for quote in quotes:
        lows[quote.instrument] = min(lows.get(quote.instrument, 1e18), quote.ask)
    requests = []
    for index in range(RESTING):
        instrument = INSTRUMENTS[index % len(INSTRUMENTS)]
        reachable = trigger and index % 5 == 0
        price = (lows[instrument] + 100) / 2 if reachable else 50.0 - index * 0.01
        requests.append(OrderRequest(instrument, "buy", qty=1.0, type="limit", price=price))
    return requests


def book_quotes(quotes: list[QuoteReceived], trigger: bool) -> tuple[float, int]:
    book = PaperBook(BROKER, LIMITS)
    for instrument in INSTRUMENTS:
        book.on_quote(instrument, T0 - 1, 100.0, 100.02)
    for request in resting_requests(trigger, quotes):
        assert book.place(request, T0 - 1)[0].order.status == "open"
    start = time.perf_counter()
    fills = 0
    on_quote = book.on_quote
    for quote in quotes:
        changes = on_quote(quote.instrument, quote.ts_us, quote.bid, quote.ask)
        if changes:
            fills += len(changes.fills)
    return time.perf_counter() - start, fills


async def service_quotes(
    quotes: list[QuoteReceived], trigger: bool, orders: bool = True
) -> tuple[float, int]:
    with tempfile.TemporaryDirectory() as directory:
        broker, store = await service_broker(Path(directory))
        try:
            bus = broker.bus
            bus.publish_nowait(
                [QuoteReceived(name, T0 - 1, 100.0, 100.02, 1, 1) for name in INSTRUMENTS]
            )
            if orders:
                for request in resting_requests(trigger, quotes):
                    assert (await broker.place(request)).order.status == "open"
            batches = [quotes[i : i + 1000] for i in range(0, len(quotes), 1000)]
            start = time.perf_counter()
            for batch in batches:
                bus.publish_nowait(batch)
                broker._stash(broker._batch())  # what the service's loop does per wake-up
                await broker._flush()
            elapsed = time.perf_counter() - start
            fills = store.cursor().execute("SELECT count(*) FROM fills").fetchall()[0][0]
            return elapsed, fills
        finally:
            store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=20_000)
    parser.add_argument("--service-orders", type=int, default=1_000)
    parser.add_argument("--quotes", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    repeat = range(args.repeat)

    print(f"paper broker: order handling (median of {args.repeat} runs)")
    rate = median_rate(args.orders, [book_orders(args.orders) for _ in repeat])
    print(f"  book     market orders placed+filled: {rate:>12,.0f} orders/s")
    n = args.service_orders
    for concurrent, label in ((1, "sequential"), (100, "100 at once")):
        times = [asyncio.run(service_orders(n, concurrent)) for _ in repeat]
        rate = median_rate(n, times)
        print(f"  service  {label:<11} placed+filled+stored: {rate:>8,.0f} orders/s")

    quotes = make_quotes(args.quotes)
    print(
        f"paper broker: quote processing, {RESTING} resting orders over"
        f" {len(INSTRUMENTS)} instruments, {len(quotes):,} quotes"
    )
    for trigger, label in ((False, "none trigger"), (True, "some trigger")):
        runs = [book_quotes(quotes, trigger) for _ in repeat]
        rate = median_rate(len(quotes), [t for t, _ in runs])
        print(f"  book.on_quote  {label}: {rate:>12,.0f} quotes/s  ({runs[0][1]} fills)")
    for trigger, label in ((False, "none trigger"), (True, "some trigger")):
        runs = [asyncio.run(service_quotes(quotes, trigger)) for _ in repeat]
        rate = median_rate(len(quotes), [t for t, _ in runs])
        print(f"  service        {label}: {rate:>12,.0f} quotes/s  ({runs[0][1]} fills stored)")
    runs = [asyncio.run(service_quotes(quotes, False, orders=False)) for _ in repeat]
    rate = median_rate(len(quotes), [t for t, _ in runs])
    print(f"  service        no orders:    {rate:>12,.0f} quotes/s")


if __name__ == "__main__":
    main()
