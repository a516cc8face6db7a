"""Asyncio pub/sub with a bounded queue per subscriber.

Events travel in batches (one ``publish`` call = one list), because per-event queue
operations would cost more than the rest of the tick path together. Each subscriber has
a bound counted in events and one of two policies:

- ``drop_oldest`` (UI and API clients): a full queue drops its oldest events and counts
  them; the publisher never waits.
- ``block`` (the store writer): a full queue makes ``publish`` wait, which slows the
  feeds down (backpressure) instead of losing data.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import Literal

log = logging.getLogger(__name__)

Policy = Literal["drop_oldest", "block"]


class Subscription:
    """One subscriber's queue. ``get`` returns every queued event at once, oldest first."""

    def __init__(
        self,
        bus: Bus,
        name: str,
        maxsize: int,
        policy: Policy,
        accepts: Callable[[object], bool] | None,
    ) -> None:
        self.bus = bus
        self.name = name
        self.maxsize = maxsize
        self.policy = policy
        self.accepts = accepts
        self.dropped = 0
        self.delivered = 0
        self.closed = False
        self._events: deque[object] = deque()
        self._ready = asyncio.Event()
        self._space = asyncio.Event()
        self._space.set()

    def __len__(self) -> int:
        return len(self._events)

    def __bool__(self) -> bool:
        # A subscription is an object, not a container: an empty one is still "set".
        return True

    def _offer(self, events: Sequence[object]) -> None:
        if self.accepts is not None:
            events = [event for event in events if self.accepts(event)]
            if not events:
                return
        queue = self._events
        queue.extend(events)
        overflow = len(queue) - self.maxsize
        if overflow > 0 and self.policy == "drop_oldest":
            for _ in range(overflow):
                queue.popleft()
            self.dropped += overflow
        elif overflow >= 0:
            self._space.clear()
        self._ready.set()

    def get_nowait(self, limit: int | None = None) -> list[object]:
        """Take up to ``limit`` queued events (all when None) without waiting."""
        queue = self._events
        if limit is None or limit >= len(queue):
            batch = list(queue)
            queue.clear()
        else:
            batch = [queue.popleft() for _ in range(limit)]
        if not queue:
            self._ready.clear()
        if len(queue) < self.maxsize:
            self._space.set()
        self.delivered += len(batch)
        return batch

    async def get(self, limit: int | None = None) -> list[object]:
        """Wait until at least one event is queued, then take up to ``limit`` of them."""
        while not self._events:
            if self.closed:
                return []
            await self._ready.wait()
        return self.get_nowait(limit)

    async def get_within(self, timeout: float, limit: int | None = None) -> list[object]:
        """Like ``get``, but return an empty batch after ``timeout`` seconds.

        Uses ``asyncio.timeout``: ``asyncio.wait_for`` on Python 3.11 can swallow a
        cancellation that arrives as the inner wait completes, leaving the task running.
        """
        try:
            async with asyncio.timeout(timeout):
                return await self.get(limit)
        except TimeoutError:
            return []

    async def _wait_for_space(self) -> None:
        while len(self._events) >= self.maxsize and not self.closed:
            await self._space.wait()

    def close(self) -> None:
        self.closed = True
        self._ready.set()
        self._space.set()
        self.bus._unsubscribe(self)


class Bus:
    def __init__(self) -> None:
        self._subscriptions: list[Subscription] = []
        self.published = 0

    @property
    def subscriptions(self) -> list[Subscription]:
        return list(self._subscriptions)

    def subscribe(
        self,
        name: str,
        *,
        maxsize: int = 10_000,
        policy: Policy = "drop_oldest",
        types: type | tuple[type, ...] | None = None,
        accepts: Callable[[object], bool] | None = None,
    ) -> Subscription:
        """Subscribe to events, optionally only those of ``types`` or passing ``accepts``."""
        if types is not None and accepts is None:
            wanted = types

            def accepts(event: object) -> bool:
                return isinstance(event, wanted)

        subscription = Subscription(self, name, maxsize, policy, accepts)
        self._subscriptions.append(subscription)
        return subscription

    def _unsubscribe(self, subscription: Subscription) -> None:
        if subscription in self._subscriptions:
            self._subscriptions.remove(subscription)

    def publish_nowait(self, events: Iterable[object]) -> bool:
        """Queue events for every subscriber; return False if a blocking one is now full.

        Callers that must not lose data await ``wait_for_space`` when this returns False.
        """
        batch = events if isinstance(events, list) else list(events)
        if not batch:
            return True
        self.published += len(batch)
        has_space = True
        for subscription in self._subscriptions:
            subscription._offer(batch)
            if subscription.policy == "block" and len(subscription) >= subscription.maxsize:
                has_space = False
        return has_space

    async def wait_for_space(self) -> None:
        for subscription in list(self._subscriptions):
            if subscription.policy == "block":
                await subscription._wait_for_space()

    async def publish(self, events: Iterable[object]) -> None:
        """Queue events for every subscriber, waiting while a blocking one is full."""
        if not self.publish_nowait(events):
            await self.wait_for_space()
