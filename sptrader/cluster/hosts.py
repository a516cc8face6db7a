"""Which collectors and writers NATS knows about: each host puts a heartbeat into the
hosts bucket (a JetStream key-value store) every ``heartbeat_s``; ``status`` reads them
all back. A host silent for three beats is shown as gone (its instruments stale)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
from collections.abc import Callable
from typing import Any

from nats.js.errors import NoKeysError

from sptrader.clock import now_us

log = logging.getLogger(__name__)

#: Beats a host may miss before it counts as gone.
MISSED_BEATS = 3


def host_key(role: str) -> str:
    """Unique per process: role, machine and pid (dots would split the key's tokens)."""
    host = socket.gethostname().replace(".", "-")
    return f"{role}.{host}.{os.getpid()}"


def beat_payload(role: str, started_us: int, **figures: Any) -> bytes:
    return json.dumps(
        {
            "role": role,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started_us": started_us,
            "ts_us": now_us(),
            **figures,
        }
    ).encode()


async def keep_beating(
    bucket: Any,
    role: str,
    started_us: int,
    heartbeat_s: float,
    figures: Callable[[], dict[str, Any]],
    on_hosts: Callable[[list[dict[str, Any]]], None],
) -> None:
    """Put this host's beat every ``heartbeat_s`` and hand every host's beats to
    ``on_hosts``; cancelled (the host stopping), delete its key, so only a host that
    died shows as gone."""
    key = host_key(role)
    failing = False
    while True:
        try:
            await bucket.put(key, beat_payload(role, started_us, state="running", **figures()))
            on_hosts(await read_hosts(bucket, heartbeat_s))
        except Exception as error:  # a node lost, a leader being elected: beat again
            if not failing:
                log.warning("nats: %s heartbeat not sent (%s); still trying", role, error)
            failing = True
        else:
            if failing:
                log.info("nats: %s heartbeat sent again", role)
            failing = False
        try:
            await asyncio.sleep(heartbeat_s)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1.0):
                    await bucket.delete(key)
            raise


async def read_hosts(bucket: Any, heartbeat_s: float) -> list[dict[str, Any]]:
    """Every host's last beat, with ``state`` ``gone`` for one silent for 3 beats."""
    try:
        keys = await bucket.keys()
    except NoKeysError:
        return []
    now = now_us()
    hosts = []
    for key in keys:
        try:
            entry = await bucket.get(key)
            beat = json.loads(entry.value)
        except (ValueError, TypeError, AttributeError):
            continue
        except Exception:  # deleted or expired between keys() and get()
            continue
        if now - beat.get("ts_us", 0) > MISSED_BEATS * heartbeat_s * 1_000_000:
            beat["state"] = "gone"
        hosts.append(beat)
    hosts.sort(key=lambda beat: (beat.get("role", ""), beat.get("host", ""), beat.get("pid", 0)))
    return hosts


def stale_from_hosts(hosts: list[dict[str, Any]], instruments: list[str]) -> set[str]:
    """Instruments no live collector delivers: none streams it, or every one that does
    says it is stale, or is gone."""
    delivering: set[str] = set()
    for beat in hosts:
        if beat.get("role") != "collector" or beat.get("state") == "gone":
            continue
        stale = set(beat.get("stale", []))
        delivering.update(name for name in beat.get("instruments", []) if name not in stale)
    return {name for name in instruments if name not in delivering}
