"""The daemon's local API, in process: an Engine and an ApiServer on the test's loop,
clients through ``ApiConnection`` (what the TUI and CLI use) or raw websockets."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import stat
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from conftest import make_settings, wait_for_history, wait_until
from fakes import free_port
from websockets.asyncio.client import connect, unix_connect
from websockets.exceptions import InvalidStatus

from sptrader.api.server import ApiServer
from sptrader.client import paths
from sptrader.client.connection import ApiConnection, DaemonUnavailable
from sptrader.client.wire import (
    PROTOCOL_VERSION,
    ProtocolError,
    decode_event,
    decode_status,
    encode_event,
)
from sptrader.engine import Engine
from sptrader.errors import SptraderError
from sptrader.models import (
    EVENT_TYPES,
    AlertRaised,
    BackfillProgressed,
    Bar,
    BarClosed,
    BarUpdated,
    EngineLogged,
    EventsDropped,
    FillExecuted,
    HistoryStored,
    LastPriceReceived,
    OrderUpdated,
    QuoteReceived,
    ServiceState,
    ServiceStateChanged,
    SignalRaised,
    TradeReceived,
    WatchlistChanged,
)

WATCHLIST = ["SIM:EURUSD", "SIM:BTCUSD", "SIM:ETHUSD"]
US_PER_MINUTE = 60_000_000


@contextlib.asynccontextmanager
async def serving(
    home: Path, *, tick_rate: float = 20.0, api: dict[str, Any] | None = None
) -> AsyncIterator[tuple[Engine, ApiServer]]:
    """A started Engine (an hour of seeded history) with its ApiServer listening."""
    settings = make_settings(
        home,
        watchlist=WATCHLIST,
        store={"seed_days": 0.05, "flush_interval_ms": 50},
        feeds={"sim": {"tick_rate": tick_rate}},
        api=api or {},
    )
    engine = Engine(settings)
    server = ApiServer(engine)
    try:
        await engine.start()
        await wait_for_history(engine, WATCHLIST)
        await server.start()
        yield engine, server
    finally:
        await server.close()
        await engine.stop()


@contextlib.asynccontextmanager
async def connected(home: Path, **options: Any) -> AsyncIterator[ApiConnection]:
    connection = ApiConnection(home, **options)
    try:
        await connection.open()
        yield connection
    finally:
        await connection.close()


def one_line(error: pytest.ExceptionInfo[BaseException]) -> str:
    text = str(error.value)
    assert text and "\n" not in text, repr(text)
    assert "Traceback" not in text
    return text


def service_states(engine: Engine) -> dict[str, ServiceState]:
    return {status.name: status.state for status in engine.supervisor.status()}


# --- hello, queries, commands ------------------------------------------------------------


def test_every_event_a_client_sees_crosses_the_wire_and_no_other() -> None:
    bar = Bar("SIM:EURUSD", "1m", 60_000_000, 1.0, 2.0, 0.5, 1.5, 3.0, 4, 1.0, 2.0)
    samples = [
        QuoteReceived("SIM:EURUSD", 1, 1.1, 1.2, 1.0, 2.0),
        TradeReceived("BINANCE:BTCUSDT", 2, 100.5, 0.25, -1, 42),
        BarUpdated(bar),
        BarClosed(bar),
        ServiceStateChanged("sim", 3, ServiceState.RUNNING, ServiceState.STARTING, "up"),
        EngineLogged(4, "INFO", "sim", "hello"),
        EventsDropped(5, "ui", 7, 9),
        HistoryStored(6, "SIM:EURUSD", 0, 60_000_000, 1),
        WatchlistChanged(7, ["SIM:EURUSD"]),
        BackfillProgressed(8, "SIM:EURUSD", 1, 2, 0, 1440, 0.5, "running"),
        SignalRaised(9, "mine", 3, "SIM:EURUSD", 0, "buy", 0.5, "cross", None, 1.3, True),
        OrderUpdated(10, {"order_id": 1, "status": "open"}),
        FillExecuted(11, {"fill_id": 1, "price": 1.1}),
        AlertRaised(12, "btc-50k", "price_cross", "BINANCE:BTCUSDT crossed 50,000", "above"),
    ]
    assert [type(event) for event in samples] == list(EVENT_TYPES)
    for event in samples:
        assert decode_event(json.loads(json.dumps(encode_event(event)))) == event
    # The engine's own events stay home; an unknown kind is the peer's mistake.
    assert encode_event(LastPriceReceived("SIM:EURUSD", 1, 1.0)) is None
    with pytest.raises(ProtocolError, match="unknown event kind 'zz'"):
        decode_event(["zz", 1])
    with pytest.raises(ProtocolError, match=r"unknown event kind \['q'\]"):
        decode_event([["q"], 1])


async def test_welcome_status_services_and_candles(home: Path) -> None:
    async with serving(home) as (engine, _server):
        connection = ApiConnection(home)
        try:
            welcome = await connection.open()
            assert welcome["type"] == "welcome"
            assert welcome["pid"] == os.getpid()
            assert welcome["watchlist"] == WATCHLIST
            assert welcome["protocol"] == PROTOCOL_VERSION

            status = await connection.call("status")
            assert status["pid"] == os.getpid()
            assert 0 <= status["uptime_s"] < 120
            assert status["clients"] == 1
            assert [service["name"] for service in status["services"]] == [
                "store",
                "bars",
                "broker",
                "sim",
            ]
            assert status["store"]["rows"]["bars_1m"] >= len(WATCHLIST)
            assert status["store"]["size_bytes"] > 0
            json.dumps(status)  # plain JSON all the way down

            services = [decode_status(data) for data in await connection.call("services")]
            assert {service.name for service in services} == {"store", "bars", "broker", "sim"}
            assert {service.name: service.stoppable for service in services}["store"] is False

            rows = await connection.call("candles", instrument="SIM:EURUSD", timeframe="1m", last=5)
            assert len(rows) == 5
            now_minute = time.time_ns() // 1000 // US_PER_MINUTE * US_PER_MINUTE
            times = [row[0] for row in rows]
            assert all(isinstance(ts, int) for ts in times)
            assert [b - a for a, b in itertools.pairwise(times)] == [US_PER_MINUTE] * 4
            assert now_minute - 2 * US_PER_MINUTE <= times[-1] <= now_minute + US_PER_MINUTE
            for _ts, open_, high, low, close, volume, trades, *_flow in rows:
                assert low <= min(open_, close) <= max(open_, close) <= high
                assert volume >= 0 and trades >= 0

            hourly = await connection.call(
                "candles", instrument="sim:eurusd", timeframe="1h", last=2
            )
            assert 1 <= len(hourly) <= 2
            assert all(row[0] % (60 * US_PER_MINUTE) == 0 for row in hourly)
        finally:
            await connection.close()
        assert engine.started


async def test_subscribe_streams_quotes_and_a_client_stops_a_service(home: Path) -> None:
    received: list[object] = []
    drops: list[int] = []

    def on_events(events: list[object], dropped: int) -> None:
        received.extend(events)
        drops.append(dropped)

    async with serving(home) as (engine, _server), connected(home, on_events=on_events) as api:
        assert await api.call("subscribe") is True

        def quotes() -> list[QuoteReceived]:
            return [
                event
                for event in received
                if isinstance(event, QuoteReceived) and event.instrument == "SIM:EURUSD"
            ]

        await wait_until(lambda: len(quotes()) >= 3, timeout=15)
        now = time.time_ns() // 1000
        for quote in quotes():
            assert quote.bid < quote.ask
            assert now - 10_000_000 < quote.ts_us <= now
        assert sum(drops) == 0

        assert await api.call("service_stop", name="sim") is True
        assert service_states(engine)["sim"] is ServiceState.STOPPED

        def sim_stopped_event() -> bool:
            return any(
                isinstance(event, ServiceStateChanged)
                and event.service == "sim"
                and event.state is ServiceState.STOPPED
                for event in received
            )

        await wait_until(sim_stopped_event, timeout=5)
        listed = {data["name"]: data["state"] for data in await api.call("services")}
        assert listed["sim"] == "stopped"

        assert await api.call("service_start", name="sim") is True
        await wait_until(lambda: service_states(engine)["sim"] is ServiceState.RUNNING, 10)

        with pytest.raises(SptraderError) as refused:
            await api.call("service_stop", name="store")
        assert "cannot be stopped" in one_line(refused)
        assert service_states(engine)["store"] is ServiceState.RUNNING


async def test_bad_requests_get_one_line_errors_and_the_connection_survives(home: Path) -> None:
    async with serving(home), connected(home) as api:
        with pytest.raises(SptraderError) as unknown_method:
            await api.call("no_such_method")
        assert "unknown API method" in one_line(unknown_method)

        with pytest.raises(SptraderError) as unknown_instrument:
            await api.call("candles", instrument="NOPE:XYZ", timeframe="1m", last=5)
        assert "unknown instrument NOPE:XYZ" in one_line(unknown_instrument)
        assert unknown_instrument.value.exit_code == 2  # a usage error, as on the CLI

        with pytest.raises(SptraderError) as bad_instrument:
            await api.call("candles", instrument="eur usd", timeframe="1m", last=5)
        assert "bad instrument" in one_line(bad_instrument)

        with pytest.raises(SptraderError) as bad_timeframe:
            await api.call("candles", instrument="SIM:EURUSD", timeframe="2x", last=5)
        assert "unknown timeframe" in one_line(bad_timeframe)

        with pytest.raises(SptraderError) as unknown_service:
            await api.call("service_stop", name="nosuch")
        assert "unknown service" in one_line(unknown_service)

        status = await api.call("status")
        assert status["pid"] == os.getpid()


async def test_a_client_of_another_protocol_version_gets_a_clear_error(home: Path) -> None:
    async with serving(home):
        other = ApiConnection(home, protocol=99)
        try:
            with pytest.raises(SptraderError) as mismatch:
                await other.open()
        finally:
            await other.close()
        text = one_line(mismatch)
        assert "protocol version mismatch" in text
        assert str(PROTOCOL_VERSION) in text and "99" in text

        # A raw client: the error arrives as a message, then the server closes.
        async with unix_connect(str(paths.socket_path(home)), "ws://localhost/") as raw:
            await raw.send(json.dumps({"type": "hello", "protocol": PROTOCOL_VERSION + 1}))
            reply = json.loads(await asyncio.wait_for(raw.recv(), 5))
            assert reply["type"] == "error"
            assert "protocol version mismatch" in reply["error"]
            await asyncio.wait_for(raw.wait_closed(), 5)
            assert raw.close_code == 1008

        async with connected(home) as api:  # the right version still gets in
            assert (await api.call("status"))["pid"] == os.getpid()


# --- transports ----------------------------------------------------------------------------


async def test_unix_socket_is_private_and_goes_away_with_the_server(home: Path) -> None:
    async with serving(home) as (_engine, server):
        path = paths.socket_path(home)
        mode = path.stat().st_mode
        assert stat.S_ISSOCK(mode)
        assert stat.S_IMODE(mode) == 0o600
        assert not paths.token_path(home).exists()  # no TCP, no token

        api = ApiConnection(home)
        try:
            await api.open()
            await server.close()
            await asyncio.wait_for(api.closed.wait(), 10)
            with pytest.raises(DaemonUnavailable):
                await api.call("status")
        finally:
            await api.close()
        assert not path.exists()
        with pytest.raises(DaemonUnavailable):
            await ApiConnection(home).open(timeout=2)


async def test_tcp_needs_the_token(home: Path) -> None:
    port = free_port()
    async with serving(home, api={"tcp_port": port}):
        token_file = paths.token_path(home)
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        token = paths.read_or_create_token(home)
        assert token == token_file.read_text().strip()
        assert len(token) >= 32

        async with connected(home, tcp=("127.0.0.1", port, token)) as api:
            assert api.welcome["pid"] == os.getpid()
            assert (await api.call("status"))["pid"] == os.getpid()

        for wrong in ("not-the-token", token[:-1], ""):
            refused = ApiConnection(home, tcp=("127.0.0.1", port, wrong))
            try:
                with pytest.raises(SptraderError) as error:
                    await refused.open()
            finally:
                await refused.close()
            assert "HTTP 401" in one_line(error)

        # No Authorization header at all.
        with pytest.raises(InvalidStatus) as missing:
            async with connect(f"ws://127.0.0.1:{port}/", open_timeout=5):
                pass
        assert missing.value.response.status_code == 401

        # The unix socket needs no token.
        async with connected(home) as local:
            assert local.welcome["pid"] == os.getpid()


# --- a slow client -------------------------------------------------------------------------


async def test_a_slow_client_loses_events_and_is_told_but_never_slows_the_engine(
    home: Path,
) -> None:
    fast_quotes: list[int] = []

    def on_fast(events: list[object], dropped: int) -> None:
        fast_quotes.append(sum(isinstance(event, QuoteReceived) for event in events))

    async with (
        serving(home, tick_rate=100.0) as (engine, _server),
        connected(home, on_events=on_fast) as fast,
        # max_queue=1: the client library buffers one frame, then stops reading the
        # socket, so the server's writes back up once the kernel buffer is full.
        unix_connect(
            str(paths.socket_path(home)), "ws://localhost/", max_queue=1, close_timeout=0.5
        ) as slow,
    ):
        await slow.send(json.dumps({"type": "hello", "protocol": PROTOCOL_VERSION}))
        assert json.loads(await asyncio.wait_for(slow.recv(), 5))["type"] == "welcome"
        await slow.send(
            json.dumps(
                {"type": "request", "id": 1, "method": "subscribe", "params": {"maxsize": 100}}
            )
        )
        batches: list[dict[str, Any]] = []
        while True:
            message = json.loads(await asyncio.wait_for(slow.recv(), 5))
            if message["type"] == "response":
                assert message == {"type": "response", "id": 1, "result": True}
                break
            batches.append(message)
        assert await fast.call("subscribe") is True

        def slow_subscription():
            clients = [
                sub for sub in engine.bus.subscriptions if sub.name.startswith("api-client-")
            ]
            return next((sub for sub in clients if sub.maxsize == 100), None)

        await wait_until(lambda: slow_subscription() is not None, 5)
        subscription = slow_subscription()
        assert subscription is not None

        # Stop reading. The engine keeps publishing; the slow client's queue overflows.
        published = engine.bus.published
        fast_before = sum(fast_quotes)
        stalled = time.monotonic()
        # At least 1.5 s, so the supervisor has sampled the feed's rate during the stall.
        await wait_until(
            lambda: subscription.dropped > 1000 and time.monotonic() - stalled > 1.5, timeout=30
        )
        stall_s = time.monotonic() - stalled
        assert engine.bus.published - published > 1000
        sim = next(status for status in engine.supervisor.status() if status.name == "sim")
        assert sim.state is ServiceState.RUNNING
        assert sim.events_per_s > 0
        assert sim.last_event_us is not None and time.time_ns() // 1000 - sim.last_event_us < 2e6
        assert sum(fast_quotes) > fast_before, "the other client stopped receiving"
        assert len(subscription) <= subscription.maxsize
        # The bus stayed live during the stall: nothing waited on the slow client.
        assert (engine.bus.published - published) / stall_s > 500

        # Read again: a batch reports what this client lost.
        reported = 0
        deadline = time.monotonic() + 20
        while reported == 0:
            assert time.monotonic() < deadline, "no batch reported the drops"
            message = json.loads(await asyncio.wait_for(slow.recv(), 5))
            if message["type"] == "events":
                assert len(message["events"]) <= 5000
                reported += message["dropped"]
        assert 0 < reported <= subscription.dropped


# --- Prometheus metrics -------------------------------------------------------------------


async def test_metrics_endpoint_reports_services_and_store(home: Path) -> None:
    import httpx

    from sptrader.config import DaemonConfig
    from sptrader.metrics import serve_metrics

    async with serving(home) as (engine, server):
        # The bar-age gauge reads the forming bar, which the first live tick makes: a
        # stored bar may come from the seed backfill before any tick (so it is no proxy).
        await wait_until(lambda: engine.forming_bar("SIM:EURUSD") is not None, timeout=20)
        port = free_port()
        http_server = serve_metrics(engine, server, DaemonConfig(metrics_port=port))
        try:
            response = await asyncio.to_thread(
                httpx.get, f"http://127.0.0.1:{port}/metrics", timeout=5
            )
        finally:
            http_server.shutdown()
    assert response.status_code == 200
    text = response.text
    assert 'sptrader_service_events_per_second{service="sim"}' in text
    assert 'sptrader_service_errors_total{service="store"} 0.0' in text
    assert "sptrader_store_rows_written_total" in text
    assert "sptrader_bus_dropped_events_total" in text
    assert 'sptrader_instrument_last_bar_age_seconds{instrument="SIM:EURUSD"}' in text
