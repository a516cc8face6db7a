"""``sptrader start|stop|restart|status`` and ``sptrader service ...``."""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

from sptrader.client.connection import DaemonUnavailable, call_daemon
from sptrader.client.paths import TUI, running_pid
from sptrader.config import Settings
from sptrader.daemon import run_foreground, start_background, stop_daemon
from sptrader.formatting import format_age, service_notes
from sptrader.wording import counted

NOT_RUNNING = 3


def run_daemon_command(settings: Settings, args: argparse.Namespace) -> int:
    if args.command == "start":
        if args.foreground:
            return run_foreground(settings, args.role)
        return start_background(settings, settings.config_path, args.role)
    if args.command == "stop":
        return stop_daemon(settings)
    if args.command == "restart":
        stop_daemon(settings)
        return start_background(settings, settings.config_path, args.role)
    if args.command == "status":
        return _status(settings, as_json=args.json)
    return _service(settings, args.service_command, getattr(args, "name", None))


def iso_times(value: Any) -> Any:
    """``value`` with every ``*_us`` time (at any depth) as an ISO 8601 UTC string named
    without the suffix (``last_event_us`` -> ``last_event``), as every command's JSON."""
    from sptrader.clock import format_us

    if isinstance(value, list):
        return [iso_times(item) for item in value]
    if not isinstance(value, dict):
        return value
    out: dict[str, Any] = {}
    for key, item in value.items():
        if key.endswith("_us") and (item is None or isinstance(item, int)):
            out[key[:-3]] = format_us(item) if item else None
        else:
            out[key] = iso_times(item)
    return out


def _status(settings: Settings, *, as_json: bool) -> int:
    if running_pid(settings.home) is None:
        if as_json:
            print(json.dumps({"running": False}))
        else:
            print(f"sptrader daemon is not running (home {settings.home})")
        return NOT_RUNNING
    try:
        status = asyncio.run(call_daemon(settings.home, "status"))
    except DaemonUnavailable as error:
        print(f"sptrader daemon is not answering: {error}")
        return NOT_RUNNING
    if as_json:
        print(json.dumps({"running": True, **iso_times(status)}))
        return 0
    rows = status["store"]["rows"]
    print(
        f"{_host_line(status)}, up {format_age(status['uptime_s'])}, "
        f"{status['clients']} client(s)\n"
        f"store {status['store']['path']}: {status['store']['size_bytes'] / 1e6:.1f} MB, "
        f"{counted(rows['bars_1m'], 'bar')}, {counted(rows['ticks'], 'tick')},"
        f" {counted(rows['service_events'], 'event')}"
    )
    _print_services(status["services"])
    if "cluster" in status:
        _print_cluster(status["cluster"])
    return 0


def _host_line(status: dict) -> str:
    """Who hosts the engine: the daemon, or a TUI (an older daemon does not say)."""
    role = status.get("role", "all")
    as_role = "" if role == "all" else f" ({role})"
    if role == "all" and "cluster" in status:
        as_role = " (writer + collector, over NATS)"
    if status.get("host") == TUI:
        return f"sptrader engine hosted by a TUI (pid {status['pid']}){as_role}"
    return f"sptrader daemon pid {status['pid']}{as_role}"


def _print_cluster(hosts: list[dict]) -> None:
    """The collectors and writers NATS knows about: host, state, lag and what they carry."""
    print(f"\nNATS: {counted(len(hosts), 'host')}")
    if not hosts:
        return
    now = time.time()
    width = max(len("host"), *(len(f"{host['host']}:{host['pid']}") for host in hosts))
    print(f"{'role':<9} {'host':<{width}} {'state':<8} {'seen':>6}  notes")
    for host in hosts:
        seen = format_age(max(0.0, now - host.get("ts_us", 0) / 1e6))
        if host.get("role") == "writer":
            notes = (
                f"lag {host.get('lag_messages', 0):,} msgs / {host.get('lag_s', 0):.1f}s,"
                f" consumed {host.get('consumed', 0):,}"
            )
            if host.get("malformed"):
                notes += f", malformed {host['malformed']:,}"
        else:
            stale = host.get("stale", [])
            notes = f"{counted(len(host.get('instruments', [])), 'instrument')}, published {host.get('published', 0):,}"
            if host.get("unacked"):
                notes += f", unacked {host['unacked']:,}"
            if stale:
                notes += f", stale: {', '.join(stale)}"
        name = f"{host['host']}:{host['pid']}"
        print(
            f"{host.get('role', '?'):<9} {name:<{width}} {host.get('state', '?'):<8} {seen:>6}  {notes}"
        )


def _print_services(services: list[dict]) -> None:
    now = time.time()
    # As wide as the longest name (scanner:<name> can be long), never cut.
    width = max([len("service"), *(len(service["name"]) for service in services)])
    print(
        f"{'service':<{width}} {'state':<9} {'ev/s':>9} {'last':>6} {'errors':>6} {'restarts':>8}  notes"
    )
    for service in services:
        last = service["last_event_us"]
        age = None if last is None else max(0.0, now - last / 1e6)
        # A service that is not running has no rate (its last one would be stale).
        idle = service["state"] in ("stopped", "failed")
        rate = f"{'-' if idle else format(service['events_per_s'], ',.0f'):>9}"
        print(
            f"{service['name']:<{width}} {service['state']:<9} {rate} "
            f"{format_age(age):>6} {service['errors']:>6} {service['restarts']:>8}  "
            f"{service_notes(service.get('counters', {}), service.get('last_error', ''))}"
        )


def _service(settings: Settings, action: str, name: str | None) -> int:
    if running_pid(settings.home) is None:
        print(
            f"sptrader daemon is not running (home {settings.home}); start it with `sptrader start`"
        )
        return NOT_RUNNING
    if action == "list":
        _print_services(asyncio.run(call_daemon(settings.home, "services")))
        return 0
    asyncio.run(call_daemon(settings.home, f"service_{action}", name=name))
    print(f"{action}: {name}")
    return 0
