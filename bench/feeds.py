"""Live feed throughput: wire messages to events, and wire to bus, for the Binance,
Coinbase, Kraken and OANDA feeds.

    .venv/bin/python bench/feeds.py [--messages 200000] [--runs 3] [--feeds binance,...]
        [--policy block|drop_oldest] [--deflate] [--profile]

Each feed gets ``--messages`` pre-built trade messages in its wire format, one trade
each (OANDA: PRICE lines, one quote each), made by the fakes in tests/
(``fake_*.live_messages``):

(a) parse only: ``feed.parse(raw, context)`` over every message with a ServiceContext,
    median of ``--runs`` runs (a fresh feed each run);
(b) parse to bus: a fake server in a child process (so its sending does not share
    this process's CPU) serves the messages -- a websockets server on 127.0.0.1 that
    does the fake's subscribe handshake, then writes every frame as fast as the socket
    takes them; for OANDA the fake's chunked HTTP pricing stream, one chunk per line --
    while the real ``feed.stream()`` runs under Supervisor + FeedService in this
    process. A bus subscriber (maxsize 10M, ``--policy``) counts the ticks that reach
    it; the rate is ticks after the first batch / time from the first to the last one.

Prints a table (feed, parse-only ticks/s, parse-to-bus ticks/s, messages, ticks) and,
per feed, when the server had written everything relative to the first and last event
(a server done long before the last event means the feed, not the server, is the
limit) and the subscriber's drops. The websocket server offers no compression unless
``--deflate``. ``--profile`` adds one run of (b) under cProfile (left out of the
figures) and prints where this process's time goes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import io
import multiprocessing
import pstats
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import fake_binance
import fake_coinbase
import fake_kraken
import fake_oanda
from fakes import FakeHttpServer

from sptrader.bus import Bus
from sptrader.config import (
    BinanceFeedConfig,
    CoinbaseFeedConfig,
    KrakenFeedConfig,
    OandaFeedConfig,
    SupervisorConfig,
)
from sptrader.feeds.base import Feed, FeedService
from sptrader.feeds.binance import BinanceFeed
from sptrader.feeds.coinbase import CoinbaseFeed
from sptrader.feeds.kraken import KrakenFeed
from sptrader.feeds.oanda import OandaFeed
from sptrader.models import QuoteReceived, TradeReceived
from sptrader.supervisor import ServiceContext, Supervisor

FEEDS = ("binance", "coinbase", "kraken", "oanda")
# An hour ago, on the minute: feeds reject live messages stamped far from their clock.
START_US = (time.time_ns() // 60_000_000_000 - 60) * 60_000_000
TICK_TYPES = (TradeReceived, QuoteReceived)


# --- wire messages ----------------------------------------------------------------------


def crypto_ticks(count: int, seed: int = 1) -> list[tuple[int, float, float]]:
    """(ts_us, price, size): 1 ms apart, a random walk on a 0.01 grid."""
    rng = np.random.default_rng(seed)
    prices = np.round(16_500 + np.cumsum(rng.integers(-3, 4, count)) * 0.01, 2)
    sizes = np.round(rng.lognormal(-3, 1.2, count), 6)
    times = START_US + np.arange(count, dtype=np.int64) * 1000
    return list(zip(times.tolist(), prices.tolist(), sizes.tolist(), strict=True))


def fx_ticks(count: int, seed: int = 2) -> list[tuple[int, float, float]]:
    """(ts_us, bid, liquidity) for OANDA: 5-decimal prices, whole-unit liquidity."""
    rng = np.random.default_rng(seed)
    prices = np.round(1.08 + np.cumsum(rng.integers(-2, 3, count)) * 0.00001, 5)
    sizes = (rng.integers(1, 50, count) * 100_000).astype(np.float64)
    times = START_US + np.arange(count, dtype=np.int64) * 1000
    return list(zip(times.tolist(), prices.tolist(), sizes.tolist(), strict=True))


def build_messages(name: str, count: int) -> list[str]:
    if name == "binance":
        return fake_binance.live_messages(crypto_ticks(count))
    if name == "coinbase":
        return fake_coinbase.live_messages(crypto_ticks(count))
    if name == "kraken":
        return fake_kraken.live_messages(crypto_ticks(count))
    return fake_oanda.live_messages(fx_ticks(count))


def make_feed(name: str, url: str = "ws://127.0.0.1:1") -> Feed:
    if name == "binance":
        config = BinanceFeedConfig(**fake_binance.config_section(url, url))
        return BinanceFeed([fake_binance.INSTRUMENT], config)
    if name == "coinbase":
        config = CoinbaseFeedConfig(**fake_coinbase.config_section(url, url))
        return CoinbaseFeed([fake_coinbase.INSTRUMENT], config)
    if name == "kraken":
        config = KrakenFeedConfig(**fake_kraken.config_section(url, url))
        return KrakenFeed([fake_kraken.INSTRUMENT], config)
    config = OandaFeedConfig(**fake_oanda.config_section(url, url))
    return OandaFeed([fake_oanda.INSTRUMENT], config)


# --- (a) parse only ---------------------------------------------------------------------


def parse_only(name: str, messages: list[str], runs: int) -> tuple[float, int]:
    """Median ticks/s of ``feed.parse`` over ``messages``, and the ticks per pass."""
    rates = []
    ticks = 0
    for _ in range(runs):
        feed = make_feed(name)
        context = ServiceContext(name, Bus())
        parse = feed.parse
        ticks = 0
        started = time.perf_counter()
        for raw in messages:
            ticks += len(parse(raw, context))
        rates.append(ticks / (time.perf_counter() - started))
        if context.counters.get("malformed") or context.counters.get("unexpected"):
            raise SystemExit(f"{name}: parse skipped messages: {context.counters}")
    return statistics.median(rates), ticks


# --- (b) the fake server, in a child process --------------------------------------------


async def write_frames(websocket: Any, payloads: list[bytes], batch: int = 512) -> None:
    """Every payload as a text frame, through the connection's protocol, a batch per
    transport write; waits while the socket is backed up (what ``send`` does per
    message, without its per-message locking and task switches)."""
    protocol = websocket.protocol
    for offset in range(0, len(payloads), batch):
        for payload in payloads[offset : offset + batch]:
            protocol.send_text(payload)
        websocket.send_data()
        await websocket.drain()
    transport = websocket.transport
    while transport.get_write_buffer_size():
        await asyncio.sleep(0.001)


async def serve_websocket(
    name: str, payloads: list[str], queue: Any, stop: Any, deflate: bool
) -> None:
    from websockets.asyncio.server import serve

    frames = [payload.encode() for payload in payloads]

    async def handler(websocket: Any) -> None:
        # The fake's handshake (subscriptions, acks; Binance: the URL's streams), then
        # the messages, faster than the fake's one ``send`` per message would.
        if name == "coinbase":
            if not await fake_coinbase.FakeSession(websocket).accept_subscriptions():
                return
        elif name == "kraken":
            await fake_kraken.serve_session(websocket, [])
        else:
            await fake_binance.serve_session(websocket, [])
        started = time.perf_counter()
        await write_frames(websocket, frames)
        queue.put(("sent", started, time.perf_counter()))
        await websocket.wait_closed()

    compression = "deflate" if deflate else None
    async with serve(handler, "127.0.0.1", 0, compression=compression) as server:
        port = server.sockets[0].getsockname()[1]
        queue.put(("url", f"ws://127.0.0.1:{port}"))
        await asyncio.get_running_loop().run_in_executor(None, stop.wait, 600)


def serve_oanda(payloads: list[str], queue: Any, stop: Any) -> None:
    inner = fake_oanda.stream_route(payloads)

    def route(request: Any) -> Any:
        response = inner(request)
        if response is not None and response.stream is not None:
            chunks = response.stream

            def timed() -> Any:
                started = time.perf_counter()
                yield from chunks
                queue.put(("sent", started, time.perf_counter()))

            response.stream = timed()
        return response

    with FakeHttpServer(route) as server:
        queue.put(("url", server.url))
        stop.wait(600)


def server_main(name: str, payloads: list[str], queue: Any, stop: Any, deflate: bool) -> None:
    if name == "oanda":
        serve_oanda(payloads, queue, stop)
    else:
        asyncio.run(serve_websocket(name, payloads, queue, stop, deflate))


# --- (b) the feed under the supervisor --------------------------------------------------


@dataclass(slots=True)
class EndToEnd:
    ticks: int = 0
    first_batch: int = 0
    first_s: float = 0.0
    last_s: float = 0.0
    dropped: int = 0
    problem: str = ""

    @property
    def rate(self) -> float:
        elapsed = self.last_s - self.first_s
        return (self.ticks - self.first_batch) / elapsed if elapsed > 0 else float("nan")


async def count_ticks(subscription: Any, expected: int, result: EndToEnd) -> None:
    while result.ticks + subscription.dropped < expected:
        batch = await subscription.get()
        now = time.perf_counter()
        ticks = sum(1 for event in batch if type(event) in TICK_TYPES)
        if not ticks:
            continue
        if not result.first_s:
            result.first_s = now
            result.first_batch = ticks
        result.ticks += ticks
        result.last_s = now


async def parse_to_bus(
    feed: Feed, expected: int, policy: str, timeout: float, profiler: cProfile.Profile | None
) -> EndToEnd:
    bus = Bus()
    subscription = bus.subscribe("bench", maxsize=10_000_000, policy=policy)  # type: ignore[arg-type]
    # A stream that ends (OANDA's fake closes it) must not be reconnected mid-measurement.
    supervisor = Supervisor(bus, SupervisorConfig(backoff_initial_s=600.0, backoff_jitter=0.0))
    supervisor.add(FeedService(feed))
    result = EndToEnd()
    counter = asyncio.create_task(count_ticks(subscription, expected, result))
    if profiler is not None:
        profiler.enable()
    supervisor.start(feed.name)
    try:
        async with asyncio.timeout(timeout):
            await counter
    except TimeoutError:
        [status] = supervisor.status()
        result.problem = (
            f"timed out after {timeout:.0f}s with {result.ticks:,} of {expected:,} ticks; "
            f"service {status.state.value} {status.last_error}"
        )
    finally:
        if profiler is not None:
            profiler.disable()
        counter.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await counter
        await supervisor.stop_all()
    result.dropped = subscription.dropped
    return result


def run_end_to_end(
    name: str, messages: list[str], expected: int, args: argparse.Namespace
) -> tuple[list[EndToEnd], list[tuple[float, float] | None], str]:
    """``args.bus_runs`` connections to one server process: each run's result, when
    the server started and finished writing, and (``--profile``) the text of one more,
    profiled run."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    stop = context.Event()
    process = context.Process(
        target=server_main, args=(name, messages, queue, stop, args.deflate), daemon=True
    )
    process.start()
    results: list[EndToEnd] = []
    sends: list[tuple[float, float] | None] = []
    text = ""
    try:
        kind, url = queue.get(timeout=60)
        assert kind == "url", kind
        # With --profile, one more run under cProfile, left out of the figures.
        for run in range(args.bus_runs + args.profile):
            profiler = cProfile.Profile() if run == args.bus_runs else None
            feed = make_feed(name, url)
            result = asyncio.run(parse_to_bus(feed, expected, args.policy, args.timeout, profiler))
            sent = None
            with contextlib.suppress(Exception):
                kind, started, finished = queue.get(timeout=5)
                sent = (started, finished)
            if profiler is None:
                results.append(result)
                sends.append(sent)
            else:
                out = io.StringIO()
                pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(
                    args.profile_lines
                )
                text = out.getvalue()
            if result.problem:
                break
    finally:
        stop.set()
        process.join(10)
        if process.is_alive():
            process.terminate()
            process.join(5)
    return results, sends, text


# --- main -------------------------------------------------------------------------------


def rate_text(value: float) -> str:
    return f"{value:,.0f}" if value == value else "n/a"


def table_row(cells: tuple[str, ...], widths: tuple[int, ...]) -> str:
    first, *rest = zip(cells, widths, strict=True)
    return f"{first[0]:<{first[1]}}" + "".join(f"{cell:>{width}}" for cell, width in rest)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=3, help="parse-only runs (median)")
    parser.add_argument("--bus-runs", type=int, default=3, help="parse-to-bus runs (median)")
    parser.add_argument("--feeds", default=",".join(FEEDS))
    parser.add_argument("--policy", choices=("block", "drop_oldest"), default="block")
    parser.add_argument("--deflate", action="store_true", help="permessage-deflate on")
    parser.add_argument("--timeout", type=float, default=60.0, help="per run of (b)")
    parser.add_argument("--profile", action="store_true", help="cProfile one more run of (b)")
    parser.add_argument("--profile-lines", type=int, default=25)
    args = parser.parse_args()
    names = [name.strip() for name in args.feeds.split(",") if name.strip()]
    unknown = set(names) - set(FEEDS)
    if unknown:
        parser.error(f"unknown feeds {sorted(unknown)}; choose from {', '.join(FEEDS)}")

    print(
        f"python {sys.version.split()[0]}; {args.messages:,} messages per feed, one tick each; "
        f"median of {args.runs} parse-only and {args.bus_runs} parse-to-bus runs; bus policy "
        f"{args.policy}; websocket compression {'deflate' if args.deflate else 'off'}",
        flush=True,
    )
    rows: list[tuple[str, ...]] = []
    notes: list[str] = []
    profiles: list[tuple[str, str]] = []
    for name in names:
        built = time.perf_counter()
        messages = build_messages(name, args.messages)
        build_s = time.perf_counter() - built
        parse_rate, ticks = parse_only(name, messages, args.runs)
        results, sends, profile = run_end_to_end(name, messages, ticks, args)
        rates = [result.rate for result in results]
        middle = sorted(range(len(rates)), key=rates.__getitem__)[len(rates) // 2]
        median = results[middle]
        rows.append(
            (
                name,
                rate_text(parse_rate),
                rate_text(median.rate),
                f"{len(messages):,}",
                f"{median.ticks:,}",
            )
        )
        note = (
            f"{name}: messages built in {build_s:.1f}s; parse-to-bus runs "
            f"{', '.join(rate_text(rate) for rate in rates)} ticks/s; median run: "
            f"{median.ticks:,} ticks reached the bus in {median.last_s - median.first_s:.2f}s, "
            f"dropped {median.dropped:,}"
        )
        sent = sends[middle]
        if sent is not None and median.first_s:
            note += (
                f"; the server had written everything after {sent[1] - sent[0]:.2f}s, "
                f"the last event came {median.last_s - sent[1]:.2f}s later"
            )
        for result in results:
            if result.problem:
                note += f"; PROBLEM: {result.problem}"
        notes.append(note)
        if profile:
            profiles.append((name, profile))

    widths = (10, 20, 22, 10, 10)
    print(
        table_row(
            ("feed", "parse-only ticks/s", "parse-to-bus ticks/s", "messages", "ticks"), widths
        )
    )
    for row in rows:
        print(table_row(row, widths))
    print()
    for note in notes:
        print(note)
    for name, profile in profiles:
        print(f"\n--- cProfile of {name} parse-to-bus (this process, by tottime) ---")
        print(profile.strip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
