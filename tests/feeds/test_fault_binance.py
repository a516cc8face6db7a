"""A short fault test: a fake Binance that makes its own market streams two symbols to a
real Engine while it repeats trades, withholds them (a silence shorter than the
watchdog), sends impossible and unreadable messages, closes (1000, 1001,
serverShutdown), cuts the TCP connection, refuses connections and answers REST with
503. Afterwards every stored 1m bar equals the venue's record of its trades: none
missing, none twice, none different; every bad message was counted and skipped; and
``data check``'s coverage has no hole. Time runs 10x faster (``FastClock``) so several
minutes close in about half a minute. bench/fault_feed.py runs the long version."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from conftest import make_settings, wait_until
from fault_binance import BAD_MESSAGES, FastClock, FaultyBinance, compare_bars, stored_minutes

from sptrader.engine import Engine
from sptrader.models import US_PER_MINUTE

SYMBOLS = ["BTCUSDT", "ETHUSDT"]
SPEED = 10.0


@pytest.mark.timeout(180)
async def test_stored_bars_equal_the_venues_through_faults(home: Path) -> None:
    clock = FastClock(SPEED).install()
    try:
        venue = FaultyBinance(SYMBOLS, clock)
        async with venue.running():
            settings = make_settings(
                home,
                watchlist=[f"BINANCE:{symbol}" for symbol in SYMBOLS],
                feeds={"binance": venue.config_section()},
                store={"seed_days": 0.01, "flush_interval_ms": 50},
                supervisor={"backoff_initial_s": 0.1, "backoff_max_s": 1.0},
            )
            engine = Engine(settings)
            await engine.start()
            try:
                first_us = clock.now_us()
                await _inject_faults(venue)
                # A quiet (fake) minute and a half, so the last faulty minutes close and
                # their klines and re-fetches arrive.
                await asyncio.sleep(clock.seconds(90))
                last_us = clock.now_us() - US_PER_MINUTE
                last_us -= last_us % US_PER_MINUTE
                await wait_until(lambda: not engine.catching_up(), timeout=90)
                store = engine.require_store()
                # On a loaded machine the last minutes' re-fetches can land a moment after
                # the catch-up ends: compare again (a few times) until nothing is missing.
                for _ in range(20):
                    await engine.settle_bars()
                    stored, duplicates = stored_minutes(store, first_us - US_PER_MINUTE, last_us)
                    comparison = compare_bars(venue, stored, 0, last_us)
                    if comparison["missing"] == 0:
                        break
                    await asyncio.sleep(0.25)
                statuses = {status.name: status for status in engine.supervisor.status()}
                gaps = {
                    f"BINANCE:{symbol}": engine.data.gaps(
                        f"BINANCE:{symbol}", first_us - first_us % US_PER_MINUTE, last_us
                    )
                    for symbol in SYMBOLS
                }
            finally:
                await engine.stop()
    finally:
        clock.restore()

    assert comparison["compared"] >= 2 * 3, comparison
    assert comparison["missing"] == 0, comparison
    assert comparison["differing"] == 0, comparison
    assert duplicates == 0
    assert gaps == {name: [] for name in gaps}
    binance = statuses["binance"]
    counted = binance.counters.get("malformed", 0) + binance.counters.get("invalid", 0)
    assert counted == venue.faults.bad_sent
    # Repeats were dropped, the withheld trades were proven lost by their ids.
    assert binance.counters["duplicate_trades"] >= venue.faults.injected["duplicate"]
    assert binance.counters["lost_trades"] >= 1
    assert binance.restarts >= 5
    assert statuses["store"].restarts == 0
    assert statuses["bars"].restarts == 0


async def _inject_faults(venue: FaultyBinance) -> None:
    clock = venue.clock

    async def wait(fake_seconds: float) -> None:
        await asyncio.sleep(clock.seconds(fake_seconds))

    await wait(20)
    venue.duplicate(5)
    for kind in BAD_MESSAGES:
        venue.bad(kind)
    await wait(15)
    venue.silence(clock.seconds(25))  # trades go on; nothing is sent for 25 s
    await wait(40)
    await venue.close(1001)
    await wait(15)
    venue.reset()
    await wait(15)
    venue.shutdown()
    await wait(15)
    # REST is down when the next silence's minutes are due for a re-fetch.
    venue.silence(clock.seconds(20))
    venue.rest_down(clock.seconds(90))
    await wait(30)
    await venue.close(1000)
    await wait(15)
    await venue.refuse(clock.seconds(20))
    await wait(20)
    venue.duplicate(3)
