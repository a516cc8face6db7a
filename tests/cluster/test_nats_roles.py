"""Collectors and writers in separate processes and homes over a real nats-server: what
the collectors stored, the writer stored, once, whatever crashes in between."""

from __future__ import annotations

import asyncio
import itertools
import time

import duckdb
from nats_harness import poll

from sptrader.client.connection import call_daemon

pytest_plugins = ["nats_harness"]  # its fixtures: nats_server, make_host


def _settled(writer, collectors) -> None:
    """Collectors stopped (their queues sent), the writer caught up, then stopped."""
    for collector in collectors:
        collector.stop()
    poll(
        lambda: (
            writer.service("nats-in")["counters"].get("lag_messages", 0) == 0 and _quiet(writer)
        ),
        30,
        "the writer to catch up",
    )
    writer.stop()


def _quiet(writer, seconds: float = 1.5) -> bool:
    before = writer.service("nats-in")["counters"].get("consumed", 0)
    time.sleep(seconds)
    return writer.service("nats-in")["counters"].get("consumed", 0) == before


def _with_running(writer, roles: list[str]) -> dict | None:
    """The writer's status if exactly ``roles`` are running, else None."""
    status = writer.status()
    running = sorted(host["role"] for host in status["cluster"] if host.get("state") == "running")
    return status if running == roles else None


def _stale(writer) -> set[str]:
    """What the writer's engine counts stale (its API, as the TUI asks it)."""
    return set(asyncio.run(call_daemon(writer.home, "stale_instruments")))


def _closed(bars: list[tuple]) -> dict[tuple, tuple]:
    """Bars by (instrument, ts), without each instrument's last (maybe forming) one."""
    last: dict[str, int] = {}
    for row in bars:
        last[row[0]] = max(last.get(row[0], 0), row[1])
    return {(row[0], row[1]): row[2:] for row in bars if row[1] < last[row[0]]}


def test_what_a_collector_stores_the_writer_stores(nats_server, make_host):
    collector = make_host("collector", "collector", [nats_server.url])
    writer = make_host("writer", "writer", [nats_server.url])
    collector.start()
    writer.start()
    poll(
        lambda: writer.service("nats-in")["counters"].get("consumed", 0) > 50, 30, "bars to arrive"
    )
    # (Polled: on a loaded machine a beat can come late and a host look gone a moment.)
    status = poll(lambda: _with_running(writer, ["collector", "writer"]), 20, "both hosts")
    assert status["role"] == "writer"
    # The writer runs no feed and builds no bars: its market data is the collector's.
    names = {service["name"] for service in status["services"]}
    assert "sim" not in names and "bars" not in names
    _settled(writer, [collector])
    theirs, ours = _closed(collector.bars()), _closed(writer.bars())
    assert len(theirs) > 60  # the seeded history (0.03 days) and the live minutes
    assert ours == theirs


def test_a_writer_killed_mid_stream_catches_up_with_every_bar_once(nats_server, make_host):
    collector = make_host("collector", "collector", [nats_server.url])
    writer = make_host("writer", "writer", [nats_server.url])
    collector.start()
    writer.start()
    poll(lambda: writer.service("nats-in")["counters"].get("consumed", 0) > 20, 30, "messages")
    writer.kill()
    time.sleep(3)  # the collector goes on publishing to the stream meanwhile
    writer.start()
    poll(lambda: writer.service("nats-in")["counters"].get("consumed", 0) > 0, 30, "catch-up")
    _settled(writer, [collector])
    rows = writer.bars()
    assert len({(row[0], row[1]) for row in rows}) == len(rows)  # none twice
    assert _closed(rows) == _closed(collector.bars())  # none missing


def test_a_killed_collector_heals_its_gap_on_restart(nats_server, make_host):
    collector = make_host("collector", "collector", [nats_server.url])
    writer = make_host("writer", "writer", [nats_server.url])
    collector.start()
    writer.start()
    poll(lambda: writer.service("nats-in")["counters"].get("consumed", 0) > 20, 30, "messages")
    collector.kill()
    # Its instruments go stale at the writer once its heartbeats stop.
    poll(
        lambda: all(
            host.get("state") == "gone"
            for host in writer.status()["cluster"]
            if host["role"] == "collector"
        ),
        15,
        "the collector to be shown gone",
    )
    poll(lambda: "SIM:BTCUSD" in _stale(writer), 10, "the writer to count its instruments stale")
    assert "is gone: its instruments are stale" in (writer.home / "sptrader.log").read_text()
    collector.start()
    _settled(writer, [collector])
    ours = writer.bars()
    assert _closed(ours) == _closed(collector.bars())
    minutes = sorted(row[1] for row in ours if row[0] == "SIM:BTCUSD")
    assert all(b - a == 60_000_000 for a, b in itertools.pairwise(minutes))


def test_two_collectors_of_one_instrument_do_not_double_its_bars(nats_server, make_host):
    first = make_host("first", "collector", [nats_server.url], watchlist=("SIM:BTCUSD",))
    second = make_host("second", "collector", [nats_server.url], watchlist=("SIM:BTCUSD",))
    writer = make_host("writer", "writer", [nats_server.url], watchlist=("SIM:BTCUSD",))
    first.start()
    second.start()
    writer.start()
    poll(lambda: writer.service("nats-in")["counters"].get("consumed", 0) > 50, 30, "bars")
    _settled(writer, [first, second])
    rows = writer.bars()
    keys = [(row[0], row[1]) for row in rows]
    assert len(keys) == len(set(keys))
    # Each minute is one of the collectors' versions of it.
    versions = [_closed(first.bars()), _closed(second.bars())]
    for key, values in _closed(rows).items():
        assert any(version.get(key) == values for version in versions), key


def test_two_writers_on_one_machine_each_store_every_bar(nats_server, make_host):
    collector = make_host("collector", "collector", [nats_server.url])
    first = make_host("first", "writer", [nats_server.url])
    second = make_host("second", "writer", [nats_server.url])
    collector.start()
    first.start()
    poll(lambda: first.service("nats-in")["counters"].get("consumed", 0) > 50, 30, "bars")
    second.start()  # later: it starts from the stream's beginning, not where first is
    collector.stop()
    for writer in (first, second):
        poll(
            lambda writer=writer: (
                writer.service("nats-in")["counters"].get("lag_messages", 0) == 0 and _quiet(writer)
            ),
            30,
            "the writer to catch up",
        )
        writer.stop()
    theirs = _closed(collector.bars())
    assert _closed(first.bars()) == theirs
    assert _closed(second.bars()) == theirs


def test_all_with_nats_enabled_is_a_collector_and_a_writer_in_one_process(nats_server, make_host):
    both = make_host("both", "all", [nats_server.url])
    both.start()
    poll(lambda: both.service("nats-in")["counters"].get("consumed", 0) > 50, 30, "bars")

    def running() -> set[tuple[str, int]]:
        status = both.status()
        return {
            (host["role"], host["pid"]) for host in status["cluster"] if host["state"] == "running"
        }

    # The hosts are known from their first heartbeats, which may come after the first bars.
    poll(lambda: {role for role, _ in running()} == {"collector", "writer"}, 30, "both beats")
    pids = running()
    status = both.status()
    assert len({pid for _, pid in pids}) == 1  # one process
    # Both sides' services show (the collector's by its own names), and answer commands.
    assert status["role"] == "all"
    names = {service["name"] for service in status["services"]}
    assert {"nats-in", "store", "collector/sim", "collector/nats-out", "collector/bars"} <= names
    asyncio.run(call_daemon(both.home, "service_stop", name="collector/sim"))
    assert both.service("collector/sim")["state"] == "stopped"
    asyncio.run(call_daemon(both.home, "service_start", name="collector/sim"))
    poll(lambda: both.service("collector/sim")["state"] == "running", 20, "the feed again")
    assert "(writer + collector, over NATS)" in both.run("status").stdout
    both.stop()
    # The writer's store holds what the collector's heard (each store in the same home).
    with duckdb.connect(str(both.home / "collector.duckdb"), read_only=True) as db:
        heard = db.execute("SELECT count(*) FROM bars_1m").fetchone()[0]
    stored = both.bars()
    assert heard > 60 and len(stored) >= heard - 2
