"""The engine path on one event loop: SimFeed -> Bus -> BarService(BarBuilder) ->
StoreWriter -> DuckDB, in simulated fast-forward time.

    .venv/bin/python bench/engine_path.py [--seconds 10] [--max-ticks N] [--keep-ticks]
        [--ui] [--pin] [--tick-rate 1] [--interval-s 60]

The pieces are built as Engine builds them (Bus, BarBuilder with the feed's price
sources, BarService, StoreWriter with the Store, the engine-log subscription) for 20 SIM
instruments. SimFeed.generate is called over consecutive simulated intervals (the per-day
price paths are warmed first) and each interval's events are published on the bus as
fast as possible, with BarService.run and StoreWriter.run as asyncio tasks. Bars close
on the feed's simulated clock (as for the replay feed), so every bar is complete.

Prints ticks/s for the whole path, generation alone and BarBuilder.process alone, the
bars stored, and sanity checks: no duplicate (instrument, ts) in bars_1m, and the sum of
the stored bars' ``trades`` equals the ticks the builder used.

--keep-ticks also stores every tick (store.keep_ticks = ["*"]); --ui adds a drop-oldest
subscriber like the TUI's (drained every 100 ms); --pin pins the process (and DuckDB's
threads) to CPU 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import INSTRUMENTS

from sptrader.bars import BarBuilder
from sptrader.bus import Bus
from sptrader.config import SimFeedConfig, StoreConfig
from sptrader.engine import BarService
from sptrader.feeds.sim import US_PER_DAY, SimFeed
from sptrader.models import (
    US_PER_SECOND,
    EngineLogged,
)
from sptrader.store import Store
from sptrader.store.writer import StoreWriter
from sptrader.supervisor import ServiceContext

# A fixed, busy stretch of simulated time: 2026-01-05 13:00 UTC (a Monday).
DAY = 20_458
START_US = DAY * US_PER_DAY + 13 * 3600 * US_PER_SECOND


def line(name: str, value: float | str, unit: str = "", extra: str = "") -> None:
    text = f"{value:,.0f}" if isinstance(value, float | int) else value
    suffix = f"  ({extra})" if extra else ""
    print(f"{name}: {text} {unit}{suffix}".rstrip(), flush=True)


def make_feed(tick_rate: float) -> SimFeed:
    return SimFeed(INSTRUMENTS, SimFeedConfig(tick_rate=tick_rate))


def warm(feed: SimFeed, days: int) -> None:
    for spec in feed._specs.values():
        for day in range(DAY, DAY + days + 1):
            feed.market.day_path(spec, day)


def generation_only(tick_rate: float, interval_us: int, seconds: float) -> tuple[float, float]:
    """Ticks/s of SimFeed.generate alone (events discarded) and events per call."""
    feed = make_feed(tick_rate)
    warm(feed, 1)
    ticks = calls = 0
    start = START_US
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        ticks += len(feed.generate(start, start + interval_us))
        start += interval_us
        calls += 1
    return ticks / (time.perf_counter() - started), ticks / calls


def prebuilt(tick_rate: float, interval_us: int, events: int) -> list[list]:
    feed = make_feed(tick_rate)
    warm(feed, 1)
    batches: list[list] = []
    start = START_US
    while sum(map(len, batches)) < events:
        batches.append(feed.generate(start, start + interval_us))
        start += interval_us
    return batches


def builder_only(feed: SimFeed, batches: list[list], repeats: int = 3) -> float:
    """Ticks/s of BarBuilder.process on pre-built events (median of ``repeats``)."""
    ticks = sum(len(batch) for batch in batches)
    rates = []
    for _ in range(repeats):
        builder = BarBuilder(feed.price_source)
        started = time.perf_counter()
        for batch in batches:
            builder.process(batch)
        rates.append(ticks / (time.perf_counter() - started))
    return statistics.median(rates)


async def full_path(args: argparse.Namespace, store: Store) -> dict[str, float]:
    feed = make_feed(args.tick_rate)
    warm(feed, int(args.max_sim_days))
    sim_now = [START_US]
    feed.clock_us = lambda: sim_now[0]  # bars close on simulated time

    store_config = StoreConfig(keep_ticks=["*"] if args.keep_ticks else [])
    bus = Bus()
    builder = BarBuilder(feed.price_source)
    bars = BarService(bus, builder, {feed.name: feed}, store_config.writer_queue)
    writer = StoreWriter(store, bus, store_config)
    log_subscription = bus.subscribe("engine-log", maxsize=1000, types=EngineLogged)
    ui = bus.subscribe("ui", maxsize=20_000, policy="drop_oldest") if args.ui else None

    async def ui_drain() -> None:
        while True:
            await asyncio.sleep(0.1)
            if ui is not None:
                ui.get_nowait()
            log_subscription.get_nowait()

    tasks = [
        asyncio.create_task(bars.run(ServiceContext("bars", bus))),
        asyncio.create_task(writer.run(ServiceContext("store", bus))),
        asyncio.create_task(ui_drain()),
    ]
    await asyncio.sleep(0)

    interval_us = int(args.interval_s * US_PER_SECOND)
    published = 0
    generate_s = 0.0
    start = START_US
    limit_us = START_US + int(args.max_sim_days * US_PER_DAY)
    started = time.perf_counter()
    while time.perf_counter() - started < args.seconds and published < args.max_ticks:
        if start + interval_us > limit_us:
            break
        t0 = time.perf_counter()
        events = feed.generate(start, start + interval_us)
        generate_s += time.perf_counter() - t0
        start += interval_us
        sim_now[0] = start
        published += len(events)
        await bus.publish(events)
        await asyncio.sleep(0)
    publish_done = time.perf_counter()
    # Wait for the bar builder to take everything.
    while len(bars.subscription):
        await asyncio.sleep(0.001)
    bars_done = time.perf_counter()
    # Close the last forming bars, then let the writer write everything.
    await bus.publish(builder.close_all())
    while len(writer.subscription) or writer.pending():
        await asyncio.sleep(0.005)
    async with writer._flush_lock:  # a flush in flight has finished
        pass
    store_done = time.perf_counter()
    for task in tasks:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    await writer.drain()
    return {
        "published": published,
        "builder_ticks": builder.ticks,
        "late": builder.late_ticks,
        "publish_s": publish_done - started,
        "bars_s": bars_done - started,
        "store_s": store_done - started,
        "generate_s": generate_s,
        "sim_minutes": (start - START_US) / 60 / US_PER_SECOND,
        "flushes": writer.flushes,
        "dropped_ui": ui.dropped if ui is not None else 0,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="wall time of the full run")
    parser.add_argument("--max-ticks", type=int, default=10_000_000)
    parser.add_argument("--tick-rate", type=float, default=1.0, help="feeds.sim.tick_rate")
    parser.add_argument(
        "--interval-s", type=float, default=60.0, help="simulated seconds per generate call"
    )
    parser.add_argument("--max-sim-days", type=float, default=2.0)
    parser.add_argument("--keep-ticks", action="store_true")
    parser.add_argument("--ui", action="store_true")
    parser.add_argument("--pin", action="store_true")
    args = parser.parse_args()
    if args.pin:
        os.sched_setaffinity(0, {0})
    print(
        f"config: {len(INSTRUMENTS)} instruments, tick_rate {args.tick_rate}, "
        f"{args.interval_s:g} simulated s per generate call, keep_ticks "
        f"{'*' if args.keep_ticks else 'none'}, ui subscriber {'yes' if args.ui else 'no'}, "
        f"cpus {sorted(os.sched_getaffinity(0))}",
        flush=True,
    )

    interval_us = int(args.interval_s * US_PER_SECOND)
    gen_rate, per_call = generation_only(args.tick_rate, interval_us, 3.0)
    line(
        "generation only (SimFeed.generate, warm paths)",
        gen_rate,
        "ticks/s",
        f"{per_call:,.0f} events per call",
    )
    batches = prebuilt(args.tick_rate, interval_us, 2_000_000)
    feed = make_feed(args.tick_rate)
    build_rate = builder_only(feed, batches)
    probe = BarBuilder(feed.price_source)
    for batch in batches:
        probe.process(batch)
    events = sum(map(len, batches))
    line(
        "bar builder only (BarBuilder.process, pre-built events)",
        build_rate,
        "ticks/s",
        f"{events:,} events, {probe.ticks / events:.0%} of them used (quotes of trade-priced instruments are skipped)",
    )
    del batches, probe

    with tempfile.TemporaryDirectory(prefix="sptrader-bench-engine-") as temp:
        store = Store(Path(temp) / "sptrader.duckdb")
        store.migrate()
        try:
            result = asyncio.run(full_path(args, store))
            cursor = store.cursor()
            bars_stored, trades_sum = cursor.execute(
                "SELECT count(*), coalesce(sum(trades), 0) FROM bars_1m"
            ).fetchall()[0]
            duplicates = cursor.execute(
                "SELECT count(*) FROM (SELECT instrument, ts FROM bars_1m GROUP BY ALL HAVING count(*) > 1)"
            ).fetchall()[0][0]
            ticks_stored = cursor.execute("SELECT count(*) FROM ticks").fetchall()[0][0]
        finally:
            store.close()

    published = result["published"]
    line(
        "engine path sim->bus->bars (ticks through the BarBuilder)",
        published / result["bars_s"],
        "ticks/s",
        f"{published:,} ticks in {result['bars_s']:.2f} s; {result['sim_minutes']:,.0f} simulated minutes",
    )
    line(
        "engine path sim->bus->bars->store (until the store has every bar)",
        published / result["store_s"],
        "ticks/s",
        f"{result['store_s']:.2f} s; {result['flushes']} flushes",
    )
    line(
        "engine path excluding generation",
        published / max(1e-9, result["bars_s"] - result["generate_s"]),
        "ticks/s",
        f"generation took {result['generate_s']:.2f} s of {result['bars_s']:.2f} s",
    )
    line("bars stored", bars_stored, "bars")
    line("ticks stored", ticks_stored, "ticks")
    line("duplicate (instrument, ts) in bars_1m", duplicates, "", "should be 0")
    line(
        "sum(trades) of stored bars vs ticks used by the builder",
        f"{trades_sum:,} vs {result['builder_ticks']:,}",
        "",
        "equal" if trades_sum == result["builder_ticks"] else "MISMATCH",
    )
    line("late ticks", result["late"], "ticks")
    if args.ui:
        line("ui subscriber dropped", result["dropped_ui"], "events")
    return 0


if __name__ == "__main__":
    sys.exit(main())
