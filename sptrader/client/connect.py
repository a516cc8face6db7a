"""``connect()``: the one place that asks whether an engine already serves this home.

A daemon or a TUI serving the home holds the store (DuckDB allows one writing process) and the
streams, so every caller (the TUI, each command) talks to it through its API. Without
one, the caller gets an engine in this process: only its store opened (``"store"``:
reads and one-shot work, nothing streams), every service running (``"everything"``: the
TUI), or just some instruments streaming (``streaming=[...]``: a one-shot order).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Sequence
from typing import Literal
from urllib.parse import urlsplit

from sptrader.client.local import LocalEngineClient
from sptrader.client.paths import running_pid
from sptrader.client.protocol import EngineClient
from sptrader.config import Settings
from sptrader.errors import UsageError

Run = Literal["store", "everything"]


def client_for(
    settings: Settings,
    *,
    run: Run = "store",
    streaming: Sequence[str] | None = None,
    venue: str = "paper",
) -> EngineClient:
    """The client for this home, not started yet (the caller starts and closes it, as
    the TUI does in its own lifecycle). ``streaming``: an engine that streams just these
    instruments, without scanners, leaving the saved watchlist as it is, to trade at
    ``venue`` (paper, or a live venue it then connects to)."""
    remote = remote_writer(settings)
    # An attached TUI takes live data from NATS when there is one ([nats] enabled).
    nats = settings.config.nats
    live_data = nats if nats.enabled and run == "everything" else None
    if remote is not None:
        from sptrader.client.remote import RemoteEngineClient

        return RemoteEngineClient(
            settings.home,
            reconnect=run == "everything",
            start_timeout_s=settings.config.daemon.start_timeout_s,
            tcp=remote,
            nats=live_data,
        )
    if running_pid(settings.home) is not None:
        from sptrader.client.remote import RemoteEngineClient

        # A caller with a running loop (a command) connects once in start(); the TUI,
        # before its loop runs, is greeted now and stays attached.
        return RemoteEngineClient(
            settings.home,
            reconnect=run == "everything",
            # Claimed but not answering yet: its engine is starting; wait for it.
            host_starting=lambda: running_pid(settings.home) is not None,
            start_timeout_s=settings.config.daemon.start_timeout_s,
            nats=live_data,
        )
    if streaming is not None:
        # Checked (live quotes, the broker enabled) before its engine is made.
        return LocalEngineClient.streaming(settings, streaming, venue)
    from sptrader.engine import Engine

    return LocalEngineClient(Engine(settings), run_services=run == "everything")


def remote_writer(settings: Settings) -> tuple[str, int, str] | None:
    """(host, port, token) of the writer [api] url names, or None for this home's."""
    url = settings.config.api.url
    if not url:
        return None
    parsed = urlsplit(url)
    if parsed.scheme != "ws" or not parsed.hostname or not parsed.port:
        raise UsageError(f"api.url: {url!r} must be ws://HOST:PORT (the writer's tcp_port)")
    token = os.environ.get(settings.config.api.token_env, "").strip()
    if not token:
        raise UsageError(
            f"api.url is set: put the writer's HOME/api.token in ${settings.config.api.token_env}"
            " (api.token_env)"
        )
    return parsed.hostname, parsed.port, token


@contextlib.asynccontextmanager
async def connect(
    settings: Settings,
    *,
    run: Run = "store",
    streaming: Sequence[str] | None = None,
    venue: str = "paper",
) -> AsyncIterator[EngineClient]:
    """``async with connect(settings) as client:`` the started client for this home,
    closed (a local engine stopped, its store flushed) when the block ends."""
    client = client_for(settings, run=run, streaming=streaming, venue=venue)
    await client.start()
    try:
        yield client
    finally:
        await client.close()
