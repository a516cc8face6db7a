"""``sptrader alerts list | add | remove | pause | resume | history | test NAME``: the alert
rules (the config file's ``[[alerts.rules]]`` and those added here, kept in the store),
the notices they sent (``alert_history``), and a test notice through a rule's channels.
Through the engine client: the daemon's (or the TUI's) engine while one runs, else this
process's store (rules then show no state: nothing fired here)."""

from __future__ import annotations

import argparse
import asyncio

from sptrader.client.connect import connect
from sptrader.clock import format_us
from sptrader.commands.trading import iso_fields, print_table, write_json
from sptrader.config import Settings


def rule_fields(args: argparse.Namespace) -> dict[str, object]:
    """The AlertRuleConfig fields ``alerts add`` was given (the rest take their defaults)."""
    fields: dict[str, object] = {"name": args.name, "kind": args.kind}
    for key in ("instrument", "level", "pct", "window_s", "threshold", "scope", "venue"):
        if getattr(args, key) is not None:
            fields[key] = getattr(args, key)
    for key in ("after_s", "scanner", "cooldown_s"):
        if getattr(args, key) is not None:
            fields[key] = getattr(args, key)
    for key in ("events", "channels"):
        if getattr(args, key):
            fields[key] = [part.strip() for part in getattr(args, key).split(",") if part.strip()]
    if isinstance(fields.get("instrument"), str):
        fields["instrument"] = str(fields["instrument"]).upper()
    return fields


def run_alerts(settings: Settings, args: argparse.Namespace) -> int:
    action = args.alerts_command or "list"

    async def call() -> object:
        async with connect(settings) as client:
            if action == "add":
                return await client.add_alert_rule(rule_fields(args))
            if action == "remove":
                return await client.remove_alert_rule(args.name)
            if action in ("pause", "resume"):
                return await client.pause_alert_rule(args.name, action == "pause")
            if action == "history":
                return await client.alert_history(args.last, args.rule)
            if action == "test":
                return await client.test_alert(args.name)
            return await client.alert_rules()

    result = asyncio.run(call())
    as_json = getattr(args, "json", False)
    if action == "add":
        if as_json:
            write_json(result)
        else:
            print(f"alert rule {args.name} ({args.kind}) saved")
        return 0
    if action == "remove":
        print(f"alert rule {args.name} removed")
        return 0
    if action in ("pause", "resume"):
        print(f"alert rule {args.name} {'paused' if action == 'pause' else 'resumed'}")
        return 0
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
            "paused" if row["paused"] else ("on" if row["enabled"] else "off"),
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
