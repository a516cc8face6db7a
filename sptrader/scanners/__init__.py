"""Scanners: strategies run on a cron schedule over stored bars, with lineage.

``service`` holds the Scanner (one run, blocking) and its ScannerService (schedule,
no overlap, coalescing); ``lineage`` the run/step/signal tables; ``schedule`` cron and
clocks. Every signal a run raises goes out on the bus as ``sptrader.models.SignalRaised``.
"""
