"""``sptrader report [--kind health|pnl|all] [--format text|json|markdown]``: the report
the ``[[reports]]`` schedules send, printed now.

Through the engine client (``connect``): the daemon's while one runs, otherwise this
process's engine with only its store open (no services: the health part says nothing
streams here).
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from sptrader.client.connect import connect
from sptrader.clock import now_us
from sptrader.config import Settings


def run_report(settings: Settings, args: argparse.Namespace) -> int:
    from sptrader.alerting.reports import render

    report = read_report(settings, args.kind)
    print(render(report, args.format))
    return 0


def read_report(settings: Settings, kind: str) -> dict[str, Any]:
    from sptrader.alerting.reports import build_report

    async def read() -> dict[str, Any]:
        async with connect(settings) as client:
            return await build_report(client, kind, now_us(), settings.config.llm)

    return asyncio.run(read())
