"""The cluster's watchlist: one key in a JetStream key-value bucket (``PREFIX_WATCHLIST``).

Writers own it: adding or removing an instrument on a writer (TUI, CLI, API) puts the
new list, and every collector streams the instruments of it whose feed it has enabled
(a collector near OANDA, with only ``feeds.oanda`` on, takes the OANDA ones). A writer
that starts with nothing there puts its own list; one that finds a list adopts it, so
writers and collectors agree. Until a writer has put one, a collector streams its own
watchlist.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from nats.js.errors import KeyNotFoundError

from sptrader.clock import now_us
from sptrader.cluster import hosts
from sptrader.models import INSTRUMENT_RE

log = logging.getLogger(__name__)

KEY = "instruments"
#: Operations on the key that carry no list (a delete or purge by hand).
_CLEARED = ("DEL", "PURGE")


def encode(instruments: list[str], role: str) -> bytes:
    return json.dumps(
        {"instruments": instruments, "by": hosts.host_key(role), "ts_us": now_us()}
    ).encode()


def decode(value: bytes | None) -> list[str] | None:
    """The list, or None (logged) when the value is not one: a bad value must not
    empty every collector."""
    try:
        names = json.loads(value or b"")["instruments"]
        if not isinstance(names, list) or not all(
            isinstance(name, str) and INSTRUMENT_RE.match(name) for name in names
        ):
            raise TypeError("not a list of FEED:SYMBOL names")
    except (ValueError, KeyError, TypeError) as error:
        log.warning("nats: ignoring the shared watchlist (%s)", error)
        return None
    return list(dict.fromkeys(names))


async def read(bucket: Any) -> list[str] | None:
    try:
        entry = await bucket.get(KEY)
    except KeyNotFoundError:
        return None
    if entry.operation in _CLEARED:
        return None
    return decode(entry.value)


async def put(bucket: Any, instruments: list[str], role: str) -> None:
    await bucket.put(KEY, encode(instruments, role))


async def follow(bucket: Any, on_list: Callable[[list[str]], Awaitable[None]]) -> None:
    """Hand the shared list to ``on_list`` now (if there is one) and on every change,
    until cancelled."""
    watcher = await bucket.watch(KEY)
    try:
        async for entry in watcher:
            if entry is None or entry.operation in _CLEARED:
                continue  # None: the end of what was there when the watch began
            names = decode(entry.value)
            if names is not None:
                await on_list(names)
    finally:
        with contextlib.suppress(Exception):  # the connection is already gone
            await watcher.stop()
