"""The watchlist is the cluster's: an instrument added or removed on the writer (as the
TUI does, through its API) is streamed or dropped by the collectors in other processes
and homes, and a collector started later takes the shared list, not its own config's."""

from __future__ import annotations

import asyncio
import json

import pytest
from nats_harness import poll

from sptrader.client.connection import call_daemon
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
