"""Blocking work (DuckDB, history generation) off the event loop."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


async def run_in_thread(function: Callable[..., T], *args: Any) -> T:
    """``asyncio.to_thread``, except that a cancelled caller waits for the thread to
    finish before the cancellation goes on: the engine closes the store right after
    stopping its services, and a read still running in a thread must not outlive it."""
    future = asyncio.ensure_future(asyncio.to_thread(function, *args))
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        await asyncio.wait([future])
        raise
