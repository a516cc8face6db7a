"""Scanners: strategies run on a cron schedule over stored bars, with lineage.

``service`` holds the Scanner (one run, blocking) and its ScannerService (schedule,
no overlap, coalescing); ``lineage`` the run/step/signal tables; ``schedule`` cron and
clocks. Every signal a run raises goes out on the bus as ``sptrader.models.SignalRaised``.
"""

from __future__ import annotations

# Only for sptrader.app, which still imports it from here: import it from sptrader.models
# (this line goes when the app does).
from sptrader.models import SignalRaised  # noqa: F401
