"""The cluster's watchlist: one key in a JetStream key-value bucket (``PREFIX_WATCHLIST``).

Writers own it: adding or removing an instrument on a writer (TUI, CLI, API) changes
the shared list, and every collector streams the instruments of it whose feed it has
enabled (a collector near OANDA, with only ``feeds.oanda`` on, takes the OANDA ones). A
writer that starts with nothing there creates it from its own list; one that finds a
list adopts it, so writers and collectors agree. Until a writer has put one, a
collector streams its own watchlist.

Two writers may change it at once: a change is applied to the list as it is in the
bucket (what was added and removed, not the writer's whole list) and written only if the
key is still at the revision it was read at, else read and applied again; creating it
succeeds only where there is none. So neither writer's change overwrites the other's.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError

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


#: Tries of a change against other writers' changes made between its read and write.
CHANGE_TRIES = 50


async def create(bucket: Any, instruments: list[str], role: str) -> bool:
    """Put ``instruments`` as the shared list unless there is one already; whether it did."""
    try:
        await bucket.create(KEY, encode(instruments, role))
    except KeyWrongLastSequenceError:
        return False  # another writer's came first: it is adopted
    return True


async def change(
    bucket: Any, added: list[str], removed: list[str], mine: list[str], role: str
) -> list[str]:
    """Add ``added`` to and take ``removed`` from the shared list, keeping whatever other
    writers changed meanwhile (compare-and-set on the key's revision); where there is no
    list, ``mine`` (the writer's whole list) is it. The list as written."""
    for _ in range(CHANGE_TRIES):
        try:
            entry = await bucket.get(KEY)
        except KeyNotFoundError:  # never put, or deleted by hand
            entry = None
        current = None
        if entry is not None and entry.operation not in _CLEARED:
            current = decode(entry.value)
        if current is None:
            merged = list(mine)
        else:
            merged = [name for name in current if name not in removed]
            merged += [name for name in added if name not in merged]
        try:
            if entry is None:
                await bucket.create(KEY, encode(merged, role))
            else:
                await bucket.update(KEY, encode(merged, role), last=entry.revision)
        except KeyWrongLastSequenceError:
            continue  # changed since it was read: apply the change to the newer list
        return merged
    raise RuntimeError(f"the shared watchlist changed {CHANGE_TRIES} times while being changed")


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
