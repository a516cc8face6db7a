"""``sptrader alerts list | history | test NAME``: the ``[[alerts.rules]]`` rules, the
notices they sent (``alert_history``), and a test notice through a rule's channels.
Through the engine client: the daemon's (or the TUI's) engine while one runs, else this
process's store (rules then show no state: nothing fired here)."""

from __future__ import annotations

import argparse
import asyncio

from sptrader.client.connect import connect
from sptrader.clock import format_us
from sptrader.commands.trading import iso_fields, print_table, write_json
from sptrader.config import Settings


def run_alerts(settings: Settings, args: argparse.Namespace) -> int:
    action = args.alerts_command or "list"

    async def call() -> object:
        async with connect(settings) as client:
            if action == "history":
                return await client.alert_history(args.last, args.rule)
            if action == "test":
                return await client.test_alert(args.name)
            return await client.alert_rules()

    result = asyncio.run(call())
    as_json = getattr(args, "json", False)
    if action == "test":
        sent = list(result)  # type: ignore[call-overload]
        if as_json:
            write_json(sent)
        elif sent:
            print(f"test notice of {args.name} sent to {', '.join(sent)}")
        else:
            print(f"test notice of {args.name}: none of its channels is available here")
        return 0 if sent else 1
    rows: list[dict] = list(result)  # type: ignore[call-overload]
    if as_json:
        write_json([iso_fields(row) for row in rows])
        return 0
    if action == "history":
        if not rows:
            print("no alerts sent yet")
            return 0
        table = [
            (
                format_us(row["ts_us"]),
                row["rule"] or "-",
                row["kind"],
                row["title"],
                ", ".join(row["channels"]) or "-",
            )
            for row in rows
        ]
        headers = ("SENT (UTC)", "RULE", "KIND", "ALERT", "CHANNELS")
        print_table("alerts (newest first)", headers, table, left=headers, width=120)
        return 0
    if not rows:
        print("no alert rules ([[alerts.rules]] in the config)")
        return 0
    table = [
        (
            row["name"],
            row["kind"],
            "on" if row["enabled"] else "paused",
            ", ".join(row["channels"]),
            f"{row['cooldown_s']:g}s",
            str(row["fired"]),
            format_us(row["last_sent_us"]) if row["last_sent_us"] else "",
        )
        for row in rows
    ]
    headers = ("RULE", "KIND", "STATE", "CHANNELS", "COOLDOWN", "FIRED", "LAST (UTC)")
    print_table("alert rules", headers, table, left=headers[:4], width=120)
    return 0
