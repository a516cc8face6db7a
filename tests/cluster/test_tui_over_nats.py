"""The TUI on another machine: live quotes from NATS, queries and commands from a
writer's TCP API ([api] url and its token), driven with Pilot."""

from __future__ import annotations

import asyncio

from nats_harness import free_port, poll

from sptrader.app import SptraderApp
from sptrader.client.connect import client_for
from sptrader.client.connection import ApiConnection
from sptrader.config import load_settings
from sptrader.models import MARKET_DATA_EVENTS, QuoteReceived
from sptrader.screens import WatchlistPane

pytest_plugins = ["nats_harness"]  # its fixtures: nats_server, make_host

NAMES = ["SIM:EURUSD", "SIM:BTCUSD"]


async def _wait(pilot, condition, what: str, timeout: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await pilot.pause(0.05)


async def test_a_remote_tui_takes_quotes_from_nats_and_the_rest_from_the_writer(
    nats_server, make_host, monkeypatch
):
    port = free_port()
    writer = make_host("writer", "writer", [nats_server.url], extra=f"\n[api]\ntcp_port = {port}\n")
    collector = make_host("collector", "collector", [nats_server.url])
    await asyncio.to_thread(writer.start)
    await asyncio.to_thread(collector.start)
    await asyncio.to_thread(
        poll, lambda: (writer.home / "api.token").exists(), 10, "the writer's token"
    )
    # The TUI's own home holds no store and runs no engine: it only points elsewhere.
    viewer = make_host(
        "viewer", "all", [nats_server.url], extra=f'\n[api]\nurl = "ws://127.0.0.1:{port}"\n'
    )
    monkeypatch.setenv("SPTRADER_API_TOKEN", (writer.home / "api.token").read_text().strip())
    settings = load_settings(viewer.home, viewer.config)
    client = await asyncio.to_thread(client_for, settings, run="everything")
    app = SptraderApp(settings, client=client)
    async with app.run_test(size=(120, 36)) as pilot:
        await _wait(pilot, lambda: app.engine_ready, "the app to attach")
        assert app.engine is None
        watchlist = app.query_one(WatchlistPane)
        await _wait(
            pilot,
            lambda: all(watchlist.row_values(name)["bid"] != "…" for name in NAMES),
            "quotes",
        )
        assert client._market is not None and client._market.received > 0  # from NATS
        # A query answered by the writer over TCP: its stored bars.
        bars = await client.candles("SIM:BTCUSD", "1m", last=5)
        assert bars.height == 5
    assert not list(viewer.home.glob("*.duckdb"))


async def test_a_subscriber_that_takes_market_data_from_nats_gets_none_from_the_api(
    nats_server, make_host
):
    port = free_port()
    writer = make_host("writer", "writer", [nats_server.url], extra=f"\n[api]\ntcp_port = {port}\n")
    collector = make_host("collector", "collector", [nats_server.url])
    await asyncio.to_thread(writer.start)
    await asyncio.to_thread(collector.start)
    await asyncio.to_thread(
        poll, lambda: writer.service("nats-in")["counters"].get("consumed", 0) > 20, 30, "bars"
    )
    token = (writer.home / "api.token").read_text().strip()
    seen: dict[bool, list[object]] = {True: [], False: []}
    for market_data in (True, False):
        connection = ApiConnection(
            writer.home,
            tcp=("127.0.0.1", port, token),
            on_events=lambda events, dropped, kept=seen[market_data]: kept.extend(events),
        )
        await connection.open()
        await connection.call("subscribe", market_data=market_data)
        await asyncio.sleep(2.5)
        await connection.close()
    kinds = {flag: {type(event) for event in events} for flag, events in seen.items()}
    assert QuoteReceived in kinds[True]
    assert not kinds[False] & set(MARKET_DATA_EVENTS)


async def test_a_tui_hosting_writer_and_collector_shows_both_and_nothing_stale(
    nats_server, make_host
):
    """`sptrader tui` with [nats] enabled and no [api] url: the TUI's engine is a writer
    with its collector beside it. The collector's services are listed, and once its
    heartbeat says they are delivered, they are not marked stale (they were, for good:
    the screens heard only of a collector coming or going, not of its instruments
    turning fresh)."""
    from sptrader.screens.services import ServicesPane

    host = make_host("tui", "all", [nats_server.url])
    settings = load_settings(host.home, host.config)
    client = await asyncio.to_thread(client_for, settings, run="everything")
    app = SptraderApp(settings, client=client)
    async with app.run_test(size=(120, 36)) as pilot:
        await _wait(pilot, lambda: app.engine_ready, "the engine")
        watchlist = app.query_one(WatchlistPane)
        await _wait(
            pilot,
            lambda: all(watchlist.row_values(name)["bid"] != "…" for name in NAMES),
            "quotes",
        )
        await _wait(
            pilot,
            lambda: not any(watchlist._rows[name].stale for name in NAMES),
            "the instruments to count as delivered",
        )
        names = {status.name for status in await client.services()}
        assert {"nats-in", "collector/sim", "collector/nats-out"} <= names
        table = app.query_one(ServicesPane).query_one("DataTable")
        await _wait(pilot, lambda: "collector/sim" in {key.value for key in table.rows}, "rows")
