"""The connection to NATS and the streams SPtrader's hosts share.

Servers and auth come from [nats]: the URLs (a cluster's list), a .creds file or a token
named by env vars (the secret itself is never in the config, nor logged). The streams
are made or brought in line with the config by whichever host connects first; every
host does the same, so none depends on another having started.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

import nats
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import BadRequestError, NotFoundError

from sptrader.cluster import subjects
from sptrader.config import NatsConfig
from sptrader.errors import SptraderError

log = logging.getLogger(__name__)

#: Seconds the first connection may take before it counts as refused.
CONNECT_WITHIN_S = 8.0
#: Seconds a host's heartbeat stays in the hosts bucket after its last beat.
HOSTS_TTL_S = 3600.0


def servers(config: NatsConfig) -> list[str]:
    return [config.url] if isinstance(config.url, str) else list(config.url)


def connect_options(config: NatsConfig, name: str) -> dict[str, Any]:
    """nats.connect's keyword arguments (a missing env var is a clear error)."""
    options: dict[str, Any] = {
        "servers": servers(config),
        "name": name,
        "connect_timeout": 5,
        "reconnect_time_wait": 0.5,
        "max_reconnect_attempts": -1,
        "allow_reconnect": True,
    }
    for key, env in (("user_credentials", config.creds_env), ("token", config.token_env)):
        if not env:
            continue
        value = os.environ.get(env)
        if not value:
            raise SptraderError(f"nats: env var {env} is not set (nats.{key.split('_')[0]}_env)")
        options[key] = value
    return options


async def connect(config: NatsConfig, name: str) -> Client:
    """Connected, or ConnectionError within CONNECT_WITHIN_S naming the last
    reason (a refused token, no server listening): the caller's service then retries
    with backoff. Once connected, the client reconnects by itself."""
    errors: list[BaseException] = []

    async def on_error(error: BaseException) -> None:
        errors.append(error)
        if connected:
            log.warning("nats: %s", error or type(error).__name__)

    async def on_disconnect() -> None:
        log.info("nats: disconnected; reconnecting")

    async def on_reconnect() -> None:
        log.info("nats: reconnected to %s", client.connected_url.netloc if client else "?")

    connected = False
    client: Client | None = None
    options = connect_options(config, name)
    options.update(error_cb=on_error, disconnected_cb=on_disconnect, reconnected_cb=on_reconnect)
    try:
        async with asyncio.timeout(CONNECT_WITHIN_S):
            client = await nats.connect(**options)
    except (TimeoutError, nats.errors.NoServersError):
        # The server's own reason (a refused token) over the socket closing after it.
        said = [error for error in errors if not isinstance(error, OSError)] or errors
        reason = f" ({said[-1] or type(said[-1]).__name__})" if said else ""
        # A ConnectionError (a disconnect, retried with backoff) whose text is the reason.
        raise ConnectionError(
            f"no NATS server took the connection at {', '.join(servers(config))}{reason}"
        ) from None
    connected = True
    return client


def stream_configs(config: NatsConfig) -> list[StreamConfig]:
    prefix = config.stream_prefix
    common = {
        "retention": RetentionPolicy.LIMITS,
        "storage": StorageType.FILE,
        "discard": DiscardPolicy.OLD,
        "num_replicas": config.replicas,
        "duplicate_window": config.duplicate_window_s,
    }
    return [
        StreamConfig(
            name=subjects.BARS_STREAM.format(prefix=prefix),
            subjects=subjects.bar_stream_subjects(prefix),
            max_age=config.bars_max_age_days * 86400,
            **common,
        ),
        StreamConfig(
            name=subjects.TICKS_STREAM.format(prefix=prefix),
            subjects=subjects.tick_stream_subjects(prefix),
            max_age=config.ticks_max_age_hours * 3600,
            **common,
        ),
    ]


async def ensure_streams(js: JetStreamContext, config: NatsConfig) -> None:
    """Make the streams, or update their limits to the config's."""
    for stream in stream_configs(config):
        try:
            info = await js.stream_info(stream.name)
        except NotFoundError:
            await js.add_stream(stream)
            continue
        if _same_limits(info.config, stream):
            continue  # an update would disturb the consumers' pulls for nothing
        try:
            await js.update_stream(stream)
        except BadRequestError as error:
            # Replicas or storage cannot always change in place: say so, keep running.
            raise SptraderError(
                f"nats: stream {stream.name} differs from [nats] and cannot be updated: {error.description}"
            ) from None


def _same_limits(current: StreamConfig, wanted: StreamConfig) -> bool:
    return (
        sorted(current.subjects or []) == sorted(wanted.subjects or [])
        and current.num_replicas == wanted.num_replicas
        and abs((current.max_age or 0) - (wanted.max_age or 0)) < 1
        and abs((current.duplicate_window or 0) - (wanted.duplicate_window or 0)) < 1
    )


async def hosts_bucket(js: JetStreamContext, config: NatsConfig) -> Any:
    return await _bucket(js, config, subjects.HOSTS_BUCKET, ttl=HOSTS_TTL_S)


async def watchlist_bucket(js: JetStreamContext, config: NatsConfig) -> Any:
    """The shared watchlist (sptrader.cluster.watchlist): kept until replaced."""
    return await _bucket(js, config, subjects.WATCHLIST_BUCKET, ttl=None)


async def _bucket(js: JetStreamContext, config: NatsConfig, name: str, ttl: float | None) -> Any:
    bucket = name.format(prefix=config.stream_prefix)
    try:
        return await js.key_value(bucket)
    except (NotFoundError, nats.js.errors.BucketNotFoundError):
        return await js.create_key_value(
            bucket=bucket, history=1, ttl=ttl, replicas=config.replicas
        )
