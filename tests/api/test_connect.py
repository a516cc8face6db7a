"""connect(): the one place that decides which engine answers a caller. Without a daemon
a command gets this process's engine with only its store open (nothing streams); with
one, the daemon over its API; both answer the same calls the same way."""

from __future__ import annotations

import inspect
import os
from pathlib import Path

import pytest
from conftest import make_settings
from test_api import WATCHLIST, serving

from sptrader.client import paths
from sptrader.client.connect import client_for, connect
from sptrader.client.local import LocalEngineClient
from sptrader.client.remote import RemoteEngineClient
from sptrader.errors import UsageError
from sptrader.models import US_PER_MINUTE


async def test_without_a_daemon_a_command_reads_the_store_and_nothing_streams(
    home: Path,
) -> None:
    settings = make_settings(home, watchlist=WATCHLIST)
    async with connect(settings) as client:
        assert isinstance(client, LocalEngineClient)
        assert not client.attached
        assert not client.engine.started  # no feed, no writer: reads only
        frame = await client.candles(WATCHLIST[0], "1m", last=5)
        assert frame.is_empty()
        assert [s.name for s in await client.services() if s.state.value == "running"] == []
        with pytest.raises(UsageError, match="unknown timeframe"):
            await client.candles(WATCHLIST[0], "7x", last=5)
    assert client.engine.store is None  # closed with the block


async def test_with_a_daemon_every_call_goes_to_it(home: Path) -> None:
    async with serving(home) as (engine, _server):
        # The pid file names a live process: this one, which serves the API.
        paths.pid_path(home).write_text(f"{os.getpid()}\n")
        settings = make_settings(home, watchlist=WATCHLIST)
        async with connect(settings) as client:
            assert isinstance(client, RemoteEngineClient)
            assert client.attached
            remote = await client.candles(WATCHLIST[0], "1m", last=10)
            local = await LocalEngineClient(engine).candles(WATCHLIST[0], "1m", last=10)
            assert remote.height == 10
            assert remote["ts"].to_list() == local["ts"].to_list()
            now = remote["ts"].dt.epoch("us")[-1]
            assert await client.data_gaps(WATCHLIST[0], now - 5 * US_PER_MINUTE, now) == []
            # A usage error on the daemon's side is the same usage error here.
            with pytest.raises(UsageError):
                await client.candles("NOPE:NOTHING", "1m", last=1)
            status = await client.status()
            assert status["pid"] == os.getpid() and status["store"]["rows"]


def test_the_tui_gets_an_engine_that_runs_everything(home: Path) -> None:
    client = client_for(make_settings(home), run="everything")
    assert isinstance(client, LocalEngineClient) and client.run_services


def test_both_clients_answer_every_call_of_the_protocol_with_its_signature() -> None:
    """A capability is one typed protocol method, implemented by both clients with the
    same parameters (so a caller never needs to know which engine answers)."""
    from sptrader.client.protocol import EngineClient

    names = [
        name
        for name, member in vars(EngineClient).items()
        if not name.startswith("_") and (callable(member) or isinstance(member, property))
    ]
    assert len(names) > 40
    for client_class in (LocalEngineClient, RemoteEngineClient):
        for name in names:
            member = getattr(client_class, name, None)
            assert member is not None, f"{client_class.__name__} lacks {name}"
            wanted = getattr(EngineClient, name)
            if callable(wanted):
                expected = list(inspect.signature(wanted).parameters)
                assert list(inspect.signature(member).parameters) == expected, (
                    f"{client_class.__name__}.{name}"
                )


def test_every_api_method_is_a_client_call_or_the_servers_own() -> None:
    from sptrader.api.methods import METHODS
    from sptrader.client.protocol import EngineClient

    servers_own = {name for name, method in METHODS.items() if method.call is None}
    assert servers_own == {"status", "subscribe"}
    # The rows named after a client method take its parameters (forming_bars and the
    # service_* rows are spelled for the wire).
    for name, method in METHODS.items():
        if method.call is None or not hasattr(EngineClient, name):
            continue
        takes = set(inspect.signature(getattr(EngineClient, name)).parameters) - {"self"}
        assert set(method.params) <= takes | {"wait_ms"}, name
