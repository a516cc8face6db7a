"""The watchlist is the cluster's: an instrument added or removed on the writer (as the
TUI does, through its API) is streamed or dropped by the collectors in other processes
and homes, a collector started later takes the shared list, not its own config's, and
two writers changing it at once both keep their changes."""

from __future__ import annotations

import asyncio
import json

import pytest
from nats_harness import poll

from sptrader.client.connection import call_daemon
from sptrader.cluster import link, watchlist
from sptrader.config import NatsConfig
from sptrader.errors import UsageError

pytest_plugins = ["nats_harness"]  # its fixtures: nats_server, make_host


def _collected(writer) -> list[list[str]]:
    """Each running collector's instruments, as the writer's status shows them."""
    return sorted(
        host.get("instruments", [])
        for host in writer.status()["cluster"]
        if host["role"] == "collector" and host.get("state") == "running"
    )


def _saved(host) -> list[str]:
    return json.loads((host.home / "watchlist.json").read_text())["instruments"]


def _call(host, method: str, **params):
    return asyncio.run(call_daemon(host.home, method, **params))


def test_a_writers_watchlist_change_reaches_the_collectors(nats_server, make_host):
    collector = make_host("collector", "collector", [nats_server.url])
    writer = make_host("writer", "writer", [nats_server.url])
    collector.start()
    writer.start()
    poll(lambda: _collected(writer) == [["SIM:BTCUSD", "SIM:EURUSD"]], 30, "the collector")

    _call(writer, "add_instrument", instrument="SIM:GBPUSD")
    poll(
        lambda: _collected(writer) == [["SIM:BTCUSD", "SIM:EURUSD", "SIM:GBPUSD"]],
        30,
        "the collector to stream the added instrument",
    )
    _call(writer, "remove_instrument", instrument="SIM:EURUSD")
    poll(
        lambda: _collected(writer) == [["SIM:BTCUSD", "SIM:GBPUSD"]],
        30,
        "the collector to drop the removed instrument",
    )
    # Kept in the collector's home too: its next start begins with the cluster's list.
    assert _saved(collector) == ["SIM:BTCUSD", "SIM:GBPUSD"]
    assert _saved(writer) == ["SIM:BTCUSD", "SIM:GBPUSD"]

    # A collector started now streams the shared list, whatever its config says.
    late = make_host("late", "collector", [nats_server.url], watchlist=("SIM:USDJPY",))
    late.start()
    poll(
        lambda: _collected(writer) == [["SIM:BTCUSD", "SIM:GBPUSD"]] * 2,
        30,
        "the late collector to take the shared list",
    )


def test_a_writer_refuses_an_instrument_no_collector_can_stream(nats_server, make_host):
    collector = make_host("collector", "collector", [nats_server.url])
    writer = make_host(
        "writer", "writer", [nats_server.url], extra="\n[feeds.binance]\nenabled = true\n"
    )
    collector.start()
    writer.start()
    poll(lambda: _collected(writer), 30, "the collector's heartbeat")
    # The writer's own config enables Binance; what counts is that no collector does.
    with pytest.raises(
        UsageError,
        match=r"no running collector has feeds.binance.enabled \(running collectors stream SIM\)",
    ):
        _call(writer, "add_instrument", instrument="BINANCE:ETHUSDT")
    assert not (writer.home / "watchlist.json").exists()


async def test_changes_made_at_once_are_all_kept(nats_server):
    """Twenty writers' changes at once against one list: compare-and-set on the key's
    revision keeps every one (a plain put kept the last writer's list only)."""
    config = NatsConfig(enabled=True, url=nats_server.url)
    clients = [await link.connect(config, f"writer-{i}") for i in range(4)]
    try:
        buckets = [await link.watchlist_bucket(client.jetstream(), config) for client in clients]
        first = ["SIM:EURUSD", "SIM:BTCUSD"]
        made = await asyncio.gather(*(watchlist.create(b, first, "writer") for b in buckets))
        assert sorted(made) == [False, False, False, True]  # one list, created once
        added = [f"SIM:X{i:02d}" for i in range(20)]
        await asyncio.gather(
            *(
                watchlist.change(buckets[i % 4], [name], [], first, "writer")
                for i, name in enumerate(added)
            ),
            watchlist.change(buckets[0], [], ["SIM:BTCUSD"], first, "writer"),
        )
        entry = await buckets[1].get(watchlist.KEY)
        shared = watchlist.decode(entry.value)
        assert shared is not None
        assert shared[0] == "SIM:EURUSD" and sorted(shared[1:]) == added
    finally:
        for client in clients:
            await client.close()


def test_two_writers_adding_at_once_keep_both_instruments(nats_server, make_host):
    collector = make_host("collector", "collector", [nats_server.url])
    first = make_host("first", "writer", [nats_server.url])
    second = make_host("second", "writer", [nats_server.url])
    collector.start()
    first.start()
    second.start()
    poll(lambda: _collected(first) and _collected(second), 30, "the collector's heartbeat")

    async def both() -> None:
        await asyncio.gather(
            call_daemon(first.home, "add_instrument", instrument="SIM:GBPUSD"),
            call_daemon(second.home, "add_instrument", instrument="SIM:USDJPY"),
        )

    asyncio.run(both())
    wanted = ["SIM:BTCUSD", "SIM:EURUSD", "SIM:GBPUSD", "SIM:USDJPY"]
    poll(lambda: [sorted(x) for x in _collected(first)] == [wanted], 30, "both instruments")
    poll(lambda: sorted(_saved(first)) == sorted(_saved(second)) == wanted, 30, "both writers")


async def test_a_change_made_before_the_first_connection_is_merged_in(nats_server, tmp_path):
    """A writer started while NATS was away, its user adding an instrument: once it
    connects, the addition goes into the cluster's list (another writer's meanwhile),
    which it then adopts; the writer's old list does not replace the cluster's."""
    from sptrader.bus import Bus
    from sptrader.cluster.consumer import NatsConsumer

    config = NatsConfig(enabled=True, url=nats_server.url)
    mine = ["SIM:EURUSD", "SIM:BTCUSD"]

    async def nothing(*_args) -> None:
        return None

    consumer = NatsConsumer(
        Bus(), config, store_queued=nothing, apply_coverage=nothing, home=tmp_path,
        watched=lambda: list(mine),
    )  # fmt: skip
    mine.append("SIM:GBPUSD")
    await consumer.share_watchlist(list(mine))  # not connected: kept for later
    other = await link.connect(config, "another writer")
    try:
        bucket = await link.watchlist_bucket(other.jetstream(), config)
        assert await watchlist.create(bucket, ["SIM:EURUSD", "SIM:USDJPY"], "writer")
        await consumer._share_on_connect(bucket)
        shared = watchlist.decode((await bucket.get(watchlist.KEY)).value)
        assert shared == ["SIM:EURUSD", "SIM:USDJPY", "SIM:GBPUSD"]
    finally:
        await other.close()
