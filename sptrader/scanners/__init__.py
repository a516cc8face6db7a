"""Scanners: strategies run on a cron schedule over stored bars, with lineage.

``service`` holds the Scanner (one run, blocking) and its ScannerService (schedule,
no overlap, coalescing); ``lineage`` the run/step/signal tables; ``schedule`` cron and
clocks. The event below goes out on the bus for every signal a run raises.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class SignalRaised:
    """A scanner's signal on the newest closed bar (recorded in the ``signals`` table)."""

    ts_us: int  # when it was raised
    scanner: str
    run_id: int
    instrument: str
    bar_ts_us: int  # the closed bar it was computed on (its open time)
    side: str
    strength: float | None
    reason: str
    stop: float | None
    target: float | None
    paper: bool = False
