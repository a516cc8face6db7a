"""Engine events to the handlers that take them, one refresh at a time.

Each handler registers a Route: the event types it takes. Every refresh, the events
queued since the last one are sorted by type once (a dict lookup each), then each
route that got events of its types (or runs every refresh) is called with the batch,
in the order the routes were registered. A new pane adds a route; nothing switches
on event types.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from inspect import isawaitable
from typing import Any, TypeVar

from textual.widget import Widget

from sptrader.models import Bar, BarUpdated, QuoteReceived

E = TypeVar("E")


class EventBatch:
    """One refresh's events of the routed types, each type's in arrival order. Quotes
    are kept as the newest per instrument only (no pane shows an older one; they are
    most of the events, so they are coalesced as they are sorted)."""

    __slots__ = ("_by_type", "_forming", "arrived", "quotes")

    def __init__(self, events: Iterable[object], kinds: Iterable[type]) -> None:
        # No list for quotes: asking for one is an error, not an empty list.
        by_type: dict[type, list[Any]] = {kind: [] for kind in kinds if kind is not QuoteReceived}
        quotes: dict[str, QuoteReceived] = {}
        bucket_of = by_type.get
        for event in events:
            kind = type(event)
            if kind is QuoteReceived:
                quotes[event.instrument] = event
                continue
            bucket = bucket_of(kind)
            if bucket is not None:  # None: no route takes this type
                bucket.append(event)
        self._by_type = by_type
        self.quotes = quotes
        self._forming: dict[str, Bar] | None = None
        # The types that came this refresh (what decides which routes run).
        self.arrived = {kind for kind, bucket in by_type.items() if bucket}
        if quotes:
            self.arrived.add(QuoteReceived)

    def of(self, kind: type[E]) -> list[E]:
        """This refresh's events of one routed type, in arrival order (quotes: ``quotes``)."""
        return self._by_type[kind]

    @property
    def forming(self) -> dict[str, Bar]:
        """The newest forming bar of each instrument."""
        if self._forming is None:
            self._forming = {event.bar.instrument: event.bar for event in self.of(BarUpdated)}
        return self._forming


@dataclass(frozen=True, slots=True)
class Route:
    """A handler and the event types it takes. It runs on a refresh that brought one of
    them, or on every refresh with ``always`` (for what fades on its own). With
    ``pane``, it hands the events to that main-screen pane: once the pane is gone (the
    app shutting down), neither it nor any later route runs."""

    kinds: tuple[type, ...]
    handler: Callable[[EventBatch], Awaitable[None] | None]
    pane: Widget | None = None
    always: bool = False


class EventRouter:
    """``leaving``: true once the app is going away; no route runs after that (an async
    handler's await may see the app begin to close its widgets)."""

    def __init__(
        self, routes: Sequence[Route], leaving: Callable[[], bool] = lambda: False
    ) -> None:
        self.routes = tuple(routes)
        self.kinds = tuple(dict.fromkeys(kind for route in routes for kind in route.kinds))
        self.leaving = leaving

    async def dispatch(self, events: Iterable[object]) -> None:
        """Hand one refresh's events to the routes, in their order (an async handler is
        awaited before the next route runs)."""
        batch = EventBatch(events, self.kinds)
        arrived = batch.arrived
        for route in self.routes:
            if not route.always and arrived.isdisjoint(route.kinds):
                continue
            if self.leaving() or (route.pane is not None and not route.pane.is_attached):
                return
            result = route.handler(batch)
            if isawaitable(result):
                await result
