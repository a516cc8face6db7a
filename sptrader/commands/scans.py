"""``sptrader scan [NAME]``, ``sptrader runs [--last N]`` and ``sptrader runs show ID``.

Without a daemon these work on the store directly. While the daemon runs it holds the
database (DuckDB allows one writing process), so they ask it through the API ("scan",
"runs", "run_detail"); both paths print the same.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
from dataclasses import asdict
from typing import Any

from sptrader.client.connection import DaemonUnavailable, call_daemon
from sptrader.client.paths import running_pid
from sptrader.clock import format_us, now_us
from sptrader.config import Settings
from sptrader.errors import SptraderError, UsageError

log = logging.getLogger(__name__)


def _daemon_running(settings: Settings) -> bool:
    return running_pid(settings.home) is not None


def _call(settings: Settings, method: str, **params: Any) -> Any:
    return asyncio.run(call_daemon(settings.home, method, **params))


def scan_result_dict(result: Any) -> dict[str, Any]:
    """A ScanResult as plain JSON-able data (what the daemon's "scan" method returns)."""
    return json.loads(json.dumps(asdict(result), default=str))


def _chosen(settings: Settings, name: str | None) -> list[Any]:
    configs = settings.config.scanners
    if not configs:
        raise UsageError("no scanners configured (add a [[scanners]] table to the config)")
    if name:
        chosen = [config for config in configs if config.name == name]
        if not chosen:
            known = ", ".join(config.name for config in configs)
            raise UsageError(f"unknown scanner {name!r} (scanners: {known})")
    else:
        chosen = [config for config in configs if config.enabled]
        if not chosen:
            raise UsageError("every scanner is disabled (name one to run it anyway)")
    return chosen


def run_scan(settings: Settings, args: argparse.Namespace) -> int:
    chosen = _chosen(settings, args.name)
    if _daemon_running(settings):
        return _scan_with_daemon(settings, chosen)

    from sptrader.alerts import Alerter
    from sptrader.engine import Engine
    from sptrader.scanners.service import Scanner, alert_payload
    from sptrader.strategies import registry

    engine = Engine(settings)
    store = engine.open_store()
    alerter = Alerter(settings.config.alerts)
    failed = 0
    try:
        # One window end for every scanner: the history fetched below covers it.
        at = now_us()
        instruments = list(dict.fromkeys(name for config in chosen for name in config.instruments))
        for instrument in instruments:
            try:
                engine.seed_history([instrument])
            except Exception as error:  # scanning what is stored still makes sense
                log.warning("could not fetch recent history of %s: %s", instrument, error)
        for config in chosen:
            try:
                strategy = registry.build(
                    config.strategy, dict(config.params), settings.config.strategies.modules
                )
            except registry.StrategyLoadError as error:
                if error.details:
                    log.error("%s\n%s", error, error.details)
                print(f"{config.name}: cannot load its strategy: {error}")
                failed += 1
                continue
            result = Scanner(engine, config, strategy).scan("manual", at_us=at)
            for signal in result.signals:
                alerter.submit(alert_payload(signal))
            if not _print_result(config.name, scan_result_dict(result)):
                failed += 1
        alerter.wait_idle(timeout=settings.config.alerts.timeout_s * 2)
    finally:
        store.close()
    return 1 if failed else 0


def _scan_with_daemon(settings: Settings, chosen: list[Any]) -> int:
    """Each scanner run by the daemon (which publishes and alerts the signals itself)."""
    failed = 0
    for config in chosen:
        try:
            result = _call(settings, "scan", name=config.name)
        except DaemonUnavailable:
            raise
        except SptraderError as error:
            if error.exit_code == 2:
                raise UsageError(str(error)) from None
            # Its strategy does not load (or the run broke): say so, go on with the next.
            print(f"{config.name}: {error}")
            failed += 1
            continue
        if not _print_result(config.name, result):
            failed += 1
    return 1 if failed else 0


def _print_result(name: str, result: dict[str, Any]) -> bool:
    """Print one scan's summary; True when it went ok."""
    signals = result["signals"]
    print(
        f"{name}: run {result['run_id']} {result['status']}:"
        f" {len(result['scanned'])} scanned, {len(result['skipped'])} skipped,"
        f" {len(result['failed'])} failed, {len(signals)} signal"
        f"{'s' if len(signals) != 1 else ''}"
    )
    for instrument, reason in result["skipped"]:
        print(f"  skipped {instrument}: {reason}")
    for instrument, error in result["failed"]:
        print(f"  failed  {instrument}: {error.splitlines()[0] if error else ''}")
    for signal in signals:
        extra = "".join(
            f" {key} {signal[key]:g}" for key in ("stop", "target") if signal[key] is not None
        )
        print(
            f"  {signal['side'].upper():<4} {signal['instrument']} bar {signal['ts']}"
            f" {signal['reason']}{extra}"
        )
    return result["status"] == "ok"


def run_runs(settings: Settings, args: argparse.Namespace) -> int:
    if _daemon_running(settings):
        if args.runs_command == "show":
            detail = _call(settings, "run_detail", run_id=args.id)
            return _print_detail(args.id, detail["run"], detail["steps"], detail["signals"])
        return _print_runs(_call(settings, "runs", last=args.last or 20))

    from sptrader.engine import Engine
    from sptrader.scanners import lineage

    engine = Engine(settings)
    store = engine.open_store()
    try:
        if args.runs_command == "show":
            run, steps, signals = lineage.run_detail(store, args.id)
            return _print_detail(args.id, run, steps.to_dicts(), signals.to_dicts())
        runs = lineage.recent_runs(store, args.last or 20)
    finally:
        store.close()
    return _print_runs(runs.to_dicts())


def _print_runs(rows: list[dict[str, Any]]) -> int:
    """The listing, newest last (``rows`` come newest first)."""
    if not rows:
        print("no scanner runs yet")
        return 0
    header = (
        f"{'ID':>5}  {'SCANNER':<16} {'START':<20} {'DURATION':>9}  {'STATUS':<8} {'SIGNALS':>7}"
    )
    print(header)
    for row in reversed(rows):
        print(
            f"{row['run_id']:>5}  {row['scanner']:<16} {format_us(row['started_us']):<20}"
            f" {_ms(row['duration_ms']):>9}  {row['status']:<8} {row['signals']:>7}"
        )
    return 0


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.0f} ms" if value < 10_000 else f"{value / 1000:.1f} s"


def _print_detail(
    run_id: int,
    run: dict[str, Any] | None,
    steps: list[dict[str, Any]],
    signals: list[dict[str, Any]],
) -> int:
    if run is None:
        raise UsageError(f"no scanner run {run_id} (see `sptrader runs`)")
    print(
        f"run {run['run_id']}  {run['scanner']}  {run['trigger']}  started"
        f" {format_us(run['started_us'])}  {_ms(run['duration_ms'])}  {run['status']}"
    )
    print(f"  {run['instruments']} instruments, {run['skipped']} skipped, {run['signals']} signals")
    if run["error"]:
        print(f"  error: {run['error']}")
    instrument = object()
    for step in steps:
        if step["instrument"] != instrument:
            instrument = step["instrument"]
            print(f"  {instrument or '(run: all instruments)'}")
        line = f"    {step['step_no']:>3}. {step['step']:<10} {_ms(step['duration_ms']):>8}"
        if step["input_summary"]:
            line += f"  in: {step['input_summary']}"
        if step["output_summary"]:
            line += f"  out: {step['output_summary']}"
        print(line)
        if step["error"]:
            for error_line in step["error"].rstrip().splitlines():
                print(f"         ! {error_line}")
    if signals:
        print("  signals")
        for signal in signals:
            print(
                f"    {signal['side'].upper():<4} {signal['instrument']} bar"
                f" {format_us(signal['ts_us'])} {signal['reason'] or ''}"
            )
    return 0
