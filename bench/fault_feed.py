"""The long fault test: a fake Binance that makes its own market (tests/fault_binance.py)
streams ``--symbols`` symbols to a real Engine for ``--minutes`` (fake) minutes while it
injects faults at random: repeated trades, silences shorter than the watchdog (trades
withheld), impossible and unreadable messages, closes (1000/1001), serverShutdown, TCP
resets, refused connections, REST 503s and 429s. Then every stored 1m bar is compared
with the venue's record of its trades.

    .venv/bin/python bench/fault_feed.py [--minutes 10] [--symbols 4] [--speed 10] [--seed 1]

Against the daemon, as a user runs it (real time; the venue in one terminal, the daemon
in another, ``kill -9`` it whenever you like):

    .venv/bin/python bench/fault_feed.py --serve /tmp/venue --minutes 10
    # prints a config.toml section; put it in $H/config.toml, then
    sptrader --home $H start; sptrader --home $H status; ... sptrader --home $H stop
    .venv/bin/python bench/fault_feed.py --check $H --truth /tmp/venue/truth.json

``--speed`` runs the engine's and the venue's clock that many times faster than the
wall clock (1 is real time). Prints faults injected by kind, minutes compared, missing,
duplicate and differing bars, malformed/invalid messages counted against sent,
restarts, owed re-fetches, venue bars matched/replaced, data check's gaps, and the
process RSS at start and end.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from conftest import make_settings
from fault_binance import BAD_MESSAGES, FastClock, FaultyBinance, compare_bars, stored_minutes

from sptrader.engine import Engine
from sptrader.models import US_PER_MINUTE

SYMBOLS = ["BTCUSDT", "ETHUSDT", "BNBUSDT", "SOLUSDT", "XRPUSDT", "ADAUSDT", "DOGEUSDT"]


async def inject(venue: FaultyBinance, until_us: int, rng: random.Random) -> None:
    """One fault every 5-25 fake seconds until ``until_us``."""
    clock = venue.clock
    kinds = ["duplicate", "silence", "bad", "close_1000", "close_1001", "shutdown", "reset"]
    kinds += ["refuse", "rest_503", "rest_429", "bad", "duplicate", "silence"]
    while clock.now_us() < until_us:
        await asyncio.sleep(clock.seconds(rng.uniform(5, 25)))
        kind = rng.choice(kinds)
        if kind == "duplicate":
            venue.duplicate(rng.randint(1, 10))
        elif kind == "silence":
            venue.silence(clock.seconds(rng.uniform(5, 25)))
        elif kind == "bad":
            for name in rng.sample(list(BAD_MESSAGES), 4):
                venue.bad(name)
        elif kind.startswith("close_"):
            await venue.close(int(kind[6:]))
        elif kind == "shutdown":
            venue.shutdown()
        elif kind == "reset":
            venue.reset()
        elif kind == "refuse":
            await venue.refuse(clock.seconds(rng.uniform(5, 30)))
        elif kind.startswith("rest_"):
            venue.rest_down(clock.seconds(rng.uniform(10, 40)), int(kind[5:]))


async def run(args: argparse.Namespace) -> None:
    process = psutil.Process()
    clock = FastClock(args.speed).install()
    rng = random.Random(args.seed)
    symbols = SYMBOLS[: args.symbols]
    home = Path(tempfile.mkdtemp(prefix="sptrader-fault-"))
    try:
        venue = FaultyBinance(symbols, clock, seed=args.seed, trades_per_s=args.rate)
        async with venue.running():
            settings = make_settings(
                home,
                watchlist=[f"BINANCE:{symbol}" for symbol in symbols],
                feeds={"binance": venue.config_section()},
                store={"seed_days": 0.01},
            )
            engine = Engine(settings)
            started = time.monotonic()
            await engine.start()
            rss_start = process.memory_info().rss
            first_us = clock.now_us()
            end_us = first_us + int(args.minutes * US_PER_MINUTE)
            await inject(venue, end_us, rng)
            # Quiet for a (fake) minute and a half: the last minutes close and settle.
            await asyncio.sleep(clock.seconds(90))
            deadline = time.monotonic() + 120
            while engine.catching_up() and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
            await engine.settle_bars()
            last_us = clock.now_us() - US_PER_MINUTE
            last_us -= last_us % US_PER_MINUTE
            store = engine.require_store()
            stored, duplicates = stored_minutes(store, 0, last_us)
            comparison = compare_bars(venue, stored, 0, last_us)
            statuses = {status.name: status for status in engine.supervisor.status()}
            gaps = sum(
                len(engine.data.gaps(f"BINANCE:{s}", first_us - first_us % US_PER_MINUTE, last_us))
                for s in symbols
            )
            owed_left = engine.owed.count()
            refetched = engine.owed.fetched
            rss_end = process.memory_info().rss
            await engine.stop()
            elapsed = time.monotonic() - started
    finally:
        clock.restore()

    feed = statuses["binance"]
    counters = feed.counters
    bars = statuses["bars"].counters
    counted = counters.get("malformed", 0) + counters.get("invalid", 0)
    print(
        f"fault test: {len(symbols)} symbols, {args.minutes:g} fake minutes at {args.speed:g}x"
        f" ({elapsed:.0f} s), {sum(len(t) for t in venue.trades.values())} trades made"
    )
    print("faults injected:")
    for kind, count in sorted(venue.faults.injected.items()):
        print(f"  {kind:28s} {count}")
    print(f"  trades withheld in silences  {venue.faults.trades_withheld}")
    print(
        f"minutes compared {comparison['compared']}: missing {comparison['missing']},"
        f" duplicate {duplicates}, differing {comparison['differing']}"
    )
    for example in comparison["examples"]:
        print("  e.g.", example)
    print(f"bad messages counted {counted} of {venue.faults.bad_sent} sent")
    print(
        f"duplicate trades dropped {counters.get('duplicate_trades', 0)};"
        f" trades proven lost {counters.get('lost_trades', 0)}"
    )
    print(
        f"restarts {feed.restarts} (disconnects {counters.get('disconnects', 0)},"
        f" errors {feed.errors}); store restarts {statuses['store'].restarts},"
        f" bars restarts {statuses['bars'].restarts}"
    )
    print(
        f"venue bars matched {bars.get('venue_bars_matched', 0)},"
        f" replaced {bars.get('venue_bars_replaced', 0)};"
        f" owed re-fetches done {refetched}, left {owed_left}; data check gaps {gaps}"
    )
    print(f"RSS start {rss_start / 2**20:.0f} MB, end {rss_end / 2**20:.0f} MB")


async def serve(args: argparse.Namespace) -> None:
    """The venue alone, in real time, injecting faults for ``--minutes``, then quiet
    until Ctrl-C; its record of trades goes to DIR/truth.json as 1m bars."""
    import json
    import signal

    out = Path(args.serve)
    out.mkdir(parents=True, exist_ok=True)
    clock = FastClock(args.speed)
    rng = random.Random(args.seed)
    symbols = SYMBOLS[: args.symbols]
    venue = FaultyBinance(symbols, clock, seed=args.seed, trades_per_s=args.rate)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGINT, stop.set)
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with venue.running():
        section = venue.config_section()
        print("watchlist = [" + ", ".join(f'"BINANCE:{s}"' for s in symbols) + "]")
        print("[feeds.binance]")
        for key, value in section.items():
            print(f"{key} = {json.dumps(value)}")
        print(f"(faults for {args.minutes:g} minutes, then quiet; Ctrl-C writes {out}/truth.json)")
        faults = asyncio.ensure_future(
            inject(venue, clock.now_us() + int(args.minutes * US_PER_MINUTE), rng)
        )
        await stop.wait()
        faults.cancel()
    truth = {
        f"BINANCE:{symbol}": {
            str(minute): [float(v) for v in bar[:5]] + [bar[5]]
            for minute, bar in venue.venue_bars(symbol, 0, clock.now_us()).items()
        }
        for symbol in symbols
    }
    (out / "truth.json").write_text(json.dumps({"faults": venue.faults.injected, "bars": truth}))
    print(f"wrote {out}/truth.json: faults {venue.faults.injected}")


def check(args: argparse.Namespace) -> None:
    """Compare a home's store with a served venue's truth.json (closed minutes only)."""
    import json

    from sptrader.store import Store

    truth = json.loads(Path(args.truth).read_text())
    store = Store(Path(args.check) / "sptrader.duckdb", read_only=True)
    now = time.time_ns() // 1000
    last = now - now % US_PER_MINUTE - US_PER_MINUTE
    stored, duplicates = stored_minutes(store, 0, last)
    compared = missing = differing = 0
    for instrument, bars in truth["bars"].items():
        minutes = sorted(int(minute) for minute in bars)
        for minute in minutes[1:]:  # the first minute began before the daemon saw it
            if minute >= last:
                continue
            compared += 1
            got = stored.get(instrument, {}).get(minute)
            want = tuple(bars[str(minute)])
            if got is None:
                missing += 1
            elif (
                got[:4] != want[:4]
                or got[5] != want[5]
                or abs(got[4] - want[4]) > 1e-9 * max(want[4], 1)
            ):
                differing += 1
                print("  differs:", instrument, minute, got, want)
    print(
        f"minutes compared {compared}: missing {missing}, duplicate {duplicates}, differing {differing}"
    )
    store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--symbols", type=int, default=4)
    parser.add_argument(
        "--speed", type=float, default=None, help="clock speed-up (default 10; --serve: 1)"
    )
    parser.add_argument("--rate", type=float, default=4.0, help="trades per (fake) second")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--serve", metavar="DIR", help="serve the faulty venue in real time")
    parser.add_argument("--check", metavar="HOME", help="compare HOME's store with --truth")
    parser.add_argument("--truth", metavar="FILE")
    args = parser.parse_args()
    if args.check:
        check(args)
    elif args.serve:
        args.speed = args.speed or 1.0  # a daemon runs on the real clock
        asyncio.run(serve(args))
    else:
        args.speed = args.speed or 10.0
        asyncio.run(run(args))


if __name__ == "__main__":
    main()
