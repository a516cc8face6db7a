"""connect(): the one place that decides which engine answers a caller. Without a daemon
a command gets this process's engine with only its store open (nothing streams); with
one, the daemon over its API; both answer the same calls the same way."""

from __future__ import annotations

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
