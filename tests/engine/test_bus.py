"""The bus: lossy subscribers drop their oldest events, blocking ones push back."""

from __future__ import annotations

import asyncio

import pytest

from sptrader.bus import Bus
from sptrader.models import EngineLogged, QuoteReceived, TradeReceived


def quote(index: int, instrument: str = "SIM:EURUSD") -> QuoteReceived:
    return QuoteReceived(instrument, index, 1.0 + index, 1.1 + index, 1.0, 1.0)


def trade(index: int, instrument: str = "SIM:BTCUSD") -> TradeReceived:
    return TradeReceived(instrument, index, 100.0 + index, 0.5)


async def test_drop_oldest_keeps_newest_and_counts_drops() -> None:
    bus = Bus()
    lossy = bus.subscribe("ui", maxsize=5, policy="drop_oldest")

    await bus.publish([quote(i) for i in range(3)])
    await bus.publish([quote(i) for i in range(3, 8)])

    assert lossy.dropped == 3
    batch = await lossy.get()
    assert [event.ts_us for event in batch] == [3, 4, 5, 6, 7]
    assert lossy.delivered == 5
    assert len(lossy) == 0


async def test_drop_oldest_publisher_never_waits() -> None:
    bus = Bus()
    lossy = bus.subscribe("ui", maxsize=2, policy="drop_oldest")
    # Nobody consumes: publish must still return at once, every time.
    for start in range(0, 100, 10):
        await asyncio.wait_for(bus.publish([quote(i) for i in range(start, start + 10)]), 0.5)
    assert lossy.dropped == 98
    assert [event.ts_us for event in lossy.get_nowait()] == [98, 99]
    assert bus.published == 100


async def test_drop_counts_accumulate_per_subscriber() -> None:
    bus = Bus()
    small = bus.subscribe("small", maxsize=1)
    large = bus.subscribe("large", maxsize=100)
    await bus.publish([quote(i) for i in range(10)])
    assert small.dropped == 9
    assert large.dropped == 0
    assert len(large.get_nowait()) == 10


async def test_block_makes_publish_wait_until_consumer_takes_events() -> None:
    bus = Bus()
    writer = bus.subscribe("store", maxsize=4, policy="block")

    await bus.publish([quote(0), quote(1)])  # below the bound: returns at once
    publishing = asyncio.create_task(bus.publish([quote(2), quote(3), quote(4)]))
    await asyncio.sleep(0.01)
    assert not publishing.done(), "publish must wait while the blocking queue is full"
    assert len(writer) == 5  # the batch is queued whole, nothing dropped

    first = await writer.get(limit=1)
    await asyncio.sleep(0.01)
    assert not publishing.done(), "still at the bound (4 queued): keep waiting"
    assert [event.ts_us for event in first] == [0]

    rest = await writer.get()
    await asyncio.wait_for(publishing, 0.5)
    assert [event.ts_us for event in rest] == [1, 2, 3, 4]
    assert writer.dropped == 0


async def test_block_loses_nothing_under_a_fast_producer() -> None:
    bus = Bus()
    writer = bus.subscribe("store", maxsize=8, policy="block")
    received: list[int] = []
    total = 1000

    async def consume() -> None:
        while len(received) < total:
            batch = await writer.get(limit=3)
            received.extend(event.ts_us for event in batch)
            await asyncio.sleep(0)

    consumer = asyncio.create_task(consume())
    for start in range(0, total, 5):
        await bus.publish([quote(i) for i in range(start, start + 5)])
        # Backpressure: the queue never grows far past its bound.
        assert len(writer) < writer.maxsize + 5
    await asyncio.wait_for(consumer, 2.0)
    assert received == list(range(total))
    assert writer.dropped == 0


async def test_blocking_and_lossy_subscribers_together() -> None:
    bus = Bus()
    writer = bus.subscribe("store", maxsize=3, policy="block")
    lossy = bus.subscribe("ui", maxsize=2, policy="drop_oldest")

    assert bus.publish_nowait([quote(0), quote(1)]) is True
    assert bus.publish_nowait([quote(2)]) is False  # the blocking one is now full
    waiting = asyncio.create_task(bus.wait_for_space())
    await asyncio.sleep(0.01)
    assert not waiting.done()
    writer.get_nowait(limit=1)
    await asyncio.wait_for(waiting, 0.5)
    assert lossy.dropped == 1
    assert [event.ts_us for event in lossy.get_nowait()] == [1, 2]


async def test_closing_a_blocking_subscriber_releases_the_publisher() -> None:
    bus = Bus()
    writer = bus.subscribe("store", maxsize=1, policy="block")
    publishing = asyncio.create_task(bus.publish([quote(0), quote(1)]))
    await asyncio.sleep(0.01)
    assert not publishing.done()
    writer.close()
    await asyncio.wait_for(publishing, 0.5)
    assert writer not in bus.subscriptions
    assert await writer.get() == [quote(0), quote(1)]  # what was queued is still there
    assert await asyncio.wait_for(writer.get(), 0.5) == []  # then closed: empty, no wait


async def test_type_filter_only_delivers_wanted_events() -> None:
    bus = Bus()
    quotes_only = bus.subscribe("quotes", types=QuoteReceived)
    market = bus.subscribe("market", types=(QuoteReceived, TradeReceived))
    everything = bus.subscribe("all")
    log = EngineLogged(5, "INFO", "test", "hello")

    await bus.publish([quote(1), trade(2), log, quote(3)])

    assert quotes_only.get_nowait() == [quote(1), quote(3)]
    assert market.get_nowait() == [quote(1), trade(2), quote(3)]
    assert everything.get_nowait() == [quote(1), trade(2), log, quote(3)]


async def test_accepts_predicate_and_filtered_batches_do_not_wake() -> None:
    bus = Bus()
    btc = bus.subscribe("btc", accepts=lambda event: event.instrument == "SIM:BTCUSD")
    await bus.publish([quote(1)])  # nothing wanted: nothing queued
    assert len(btc) == 0
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(btc.get(), 0.02)
    await bus.publish([trade(2), quote(3), trade(4)])
    assert [event.ts_us for event in await btc.get()] == [2, 4]


async def test_get_returns_batches_in_order() -> None:
    bus = Bus()
    subscription = bus.subscribe("reader", maxsize=1000)
    for start in (0, 3, 6):
        await bus.publish([quote(i) for i in range(start, start + 3)])

    first = await subscription.get(limit=4)
    second = await subscription.get(limit=4)
    third = await subscription.get()
    assert [event.ts_us for event in first] == [0, 1, 2, 3]
    assert [event.ts_us for event in second] == [4, 5, 6, 7]
    assert [event.ts_us for event in third] == [8]
    assert subscription.delivered == 9


async def test_get_waits_for_the_next_publish() -> None:
    bus = Bus()
    subscription = bus.subscribe("reader")
    waiting = asyncio.create_task(subscription.get())
    await asyncio.sleep(0.01)
    assert not waiting.done()
    await bus.publish([quote(7), quote(8)])
    assert [event.ts_us for event in await asyncio.wait_for(waiting, 0.5)] == [7, 8]


async def test_empty_publish_is_a_no_op() -> None:
    bus = Bus()
    subscription = bus.subscribe("reader")
    assert bus.publish_nowait([]) is True
    await bus.publish(iter([]))
    assert bus.published == 0
    assert len(subscription) == 0
