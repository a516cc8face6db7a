"""What the TUI's event routing costs per refresh (sptrader/screens/routing.py): one
refresh's batch of engine events sorted by type and handed to the app's 13 routes (the
same kinds, no-op handlers), for a batch as a fast market makes it: mostly quotes, a
forming bar per instrument and tick, a few closed bars and log lines.

    .venv/bin/python bench/event_routing.py
"""

from __future__ import annotations

import asyncio
import time

from sptrader.models import (
    BackfillProgressed,
    Bar,
    BarClosed,
    BarUpdated,
    EngineLogged,
    FillExecuted,
    HistoryStored,
    OrderUpdated,
    QuoteReceived,
    ServiceStateChanged,
    SignalRaised,
    WatchlistChanged,
)
from sptrader.screens.routing import EventRouter, Route

INSTRUMENTS = [f"SIM:I{number}" for number in range(20)]
ROUTE_KINDS = [
    (QuoteReceived,),
    (OrderUpdated, FillExecuted),
    (SignalRaised, ServiceStateChanged),
    (QuoteReceived, BarUpdated, BarClosed),
    (BarClosed, BarUpdated),
    (EngineLogged,),
    (SignalRaised,),
    (BackfillProgressed,),
    (HistoryStored, BackfillProgressed),
    (HistoryStored, BackfillProgressed),
    (WatchlistChanged,),
    (HistoryStored, WatchlistChanged),
    (ServiceStateChanged,),
]


def batch(size: int) -> list[object]:
    events: list[object] = []
    for number in range(size):
        name = INSTRUMENTS[number % len(INSTRUMENTS)]
        if number % 10 == 9:
            bar = Bar(name, "1m", number * 1000, 1.0, 1.1, 0.9, 1.05, 10.0, 3)
            events.append(BarUpdated(bar))
        elif number % 1000 == 999:
            events.append(EngineLogged(number, "INFO", "sim", "a line"))
        else:
            events.append(QuoteReceived(name, number, 1.0, 1.0001, 1.0, 1.0))
    events.append(BarClosed(Bar(INSTRUMENTS[0], "1m", 0, 1.0, 1.1, 0.9, 1.05, 10.0, 3)))
    return events


async def main() -> None:
    def handler(_batch: object) -> None:
        return None

    router = EventRouter([Route(kinds, handler) for kinds in ROUTE_KINDS])
    print("events per refresh | µs per refresh (best of 7 x 200) | ns per event")
    for size in (100, 1000, 3000, 10000):
        events = batch(size)
        best = float("inf")
        for _ in range(7):
            started = time.perf_counter()
            for _ in range(200):
                await router.dispatch(events)
            best = min(best, (time.perf_counter() - started) / 200)
        print(f"{size:>18,} | {best * 1e6:>33,.1f} | {best * 1e9 / size:>12.0f}")


if __name__ == "__main__":
    asyncio.run(main())
