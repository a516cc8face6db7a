"""``sptrader halt [VENUE]``, ``resume [VENUE]``, ``reconcile [VENUE]``: the kill switch
and the live venues' reconciliation, through the engine client (the daemon's or the
TUI's engine while one runs; otherwise this process's).

Without an engine running, ``halt`` records the halt in the store and cancels the paper
account's working orders there; a live venue's are cancelled the moment an engine
connects to it. ``reconcile`` needs the venue connected, so without a daemon an engine
starts here just for it (connect, reconcile, stop).
"""

from __future__ import annotations

import argparse
import asyncio

from sptrader.client.connect import connect
from sptrader.commands.trading import write_json
from sptrader.config import VENUES, Settings
from sptrader.errors import UsageError


def run_halt(settings: Settings, args: argparse.Namespace) -> int:
    async def halt() -> list[dict]:
        async with connect(settings) as client:
            return await client.halt(args.venue, args.reason)

    done = asyncio.run(halt())
    if args.json:
        write_json(done)
        return 0
    for row in done:
        cancelled = row["cancelled"]
        what = (
            "its working orders are cancelled when an engine connects to it"
            if cancelled is None
            else f"{cancelled} working order{'s' if cancelled != 1 else ''} cancelled"
        )
        print(f"{row['venue']}: HALTED, new entries refused until `sptrader resume`; {what}")
    return 0


def run_resume(settings: Settings, args: argparse.Namespace) -> int:
    async def resume() -> list[str]:
        async with connect(settings) as client:
            return await client.resume(args.venue)

    resumed = asyncio.run(resume())
    if args.json:
        write_json(resumed)
        return 0
    if not resumed:
        print(
            f"{args.venue} is not halted: nothing to resume"
            if args.venue
            else "no venue is halted: nothing to resume"
        )
    for venue in resumed:
        print(f"{venue}: trading resumed")
    return 0


def run_reconcile(settings: Settings, args: argparse.Namespace) -> int:
    venues = (
        [args.venue]
        if args.venue
        else [name for name in VENUES[1:] if getattr(settings.config.brokers, name).live]
    )
    if not venues:
        raise UsageError('no venue trades live ([brokers.NAME] trading = "live")')

    async def reconcile() -> list[dict]:
        # Without a daemon: an engine here that streams nothing and connects the venues.
        async with connect(settings, streaming=[], venue=venues[0]) as client:
            reports = []
            for venue in venues:
                await client.wait_venue_ready(venue, settings.config.daemon.start_timeout_s)
                reports.extend(await client.reconcile(venue))
            return reports

    reports = asyncio.run(reconcile())
    if args.json:
        write_json(reports)
        return 0
    for report in reports:
        print(
            f"{report['venue']}: {report['open_orders']} working at the venue,"
            f" {report['fills_checked']} fills checked ({report['new_fills']} new),"
            f" {report['adopted_orders']} orders adopted, {report['changed']} changed,"
            f" {len(report['differences'])} differences in {report['duration_ms']:.0f} ms"
        )
        for difference in report["differences"]:
            print(f"  {difference['kind']}: {difference['detail']}")
    return 1 if any(report["differences"] for report in reports) else 0
