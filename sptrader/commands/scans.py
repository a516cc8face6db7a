"""``sptrader scan [NAME]``, ``sptrader runs [--last N]`` and ``sptrader runs show ID``.

These work on the store directly. While the daemon runs it holds the database (DuckDB
allows one writing process) and runs the scanners on their schedule itself; the API has
no scan or runs method yet, so these commands then say so and exit 1.
"""

from __future__ import annotations

import argparse
import logging

from sptrader.clock import format_us, now_us
from sptrader.config import Settings
from sptrader.daemon import running_pid
from sptrader.errors import SptraderError, UsageError

log = logging.getLogger(__name__)


def _refuse_if_daemon(settings: Settings, what: str) -> None:
    if running_pid(settings.home) is not None:
        raise SptraderError(
            f"the daemon is running and holds the database: {what} is not available through"
            " it yet (the daemon runs the scanners on their schedule; stop it with"
            " `sptrader stop` to use this command)"
        )


def run_scan(settings: Settings, args: argparse.Namespace) -> int:
    _refuse_if_daemon(settings, "`sptrader scan`")
    configs = settings.config.scanners
    if not configs:
        raise UsageError("no scanners configured (add a [[scanners]] table to the config)")
    if args.name:
        chosen = [config for config in configs if config.name == args.name]
        if not chosen:
            known = ", ".join(config.name for config in configs)
            raise UsageError(f"unknown scanner {args.name!r} (scanners: {known})")
    else:
        chosen = [config for config in configs if config.enabled]
        if not chosen:
            raise UsageError("every scanner is disabled (name one to run it anyway)")

    from sptrader.alerts import Alerter
    from sptrader.engine import Engine
    from sptrader.scanners.service import Scanner
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
            from sptrader.scanners.service import alert_payload

            for signal in result.signals:
                alerter.submit(alert_payload(signal))
            print(
                f"{config.name}: run {result.run_id} {result.status}:"
                f" {len(result.scanned)} scanned, {len(result.skipped)} skipped,"
                f" {len(result.failed)} failed, {len(result.signals)} signal"
                f"{'s' if len(result.signals) != 1 else ''}"
            )
            for instrument, reason in result.skipped:
                print(f"  skipped {instrument}: {reason}")
            for instrument, error in result.failed:
                print(f"  failed  {instrument}: {error.splitlines()[0] if error else ''}")
            for signal in result.signals:
                extra = "".join(
                    f" {key} {signal[key]:g}"
                    for key in ("stop", "target")
                    if signal[key] is not None
                )
                print(
                    f"  {signal['side'].upper():<4} {signal['instrument']} bar {signal['ts']}"
                    f" {signal['reason']}{extra}"
                )
            if result.status != "ok":
                failed += 1
        alerter.wait_idle(timeout=settings.config.alerts.timeout_s * 2)
    finally:
        store.close()
    return 1 if failed else 0


def run_runs(settings: Settings, args: argparse.Namespace) -> int:
    _refuse_if_daemon(settings, "`sptrader runs`")
    from sptrader.engine import Engine
    from sptrader.scanners import lineage

    engine = Engine(settings)
    store = engine.open_store()
    try:
        if args.runs_command == "show":
            return _show(store, args.id)
        if args.last is not None and args.last <= 0:
            raise UsageError(f"--last must be positive, got {args.last}")
        runs = lineage.recent_runs(store, args.last or 20)
    finally:
        store.close()
    if runs.is_empty():
        print("no scanner runs yet")
        return 0
    header = (
        f"{'ID':>5}  {'SCANNER':<16} {'START':<20} {'DURATION':>9}  {'STATUS':<8} {'SIGNALS':>7}"
    )
    print(header)
    for row in reversed(runs.rows(named=True)):
        print(
            f"{row['run_id']:>5}  {row['scanner']:<16} {format_us(row['started_us']):<20}"
            f" {_ms(row['duration_ms']):>9}  {row['status']:<8} {row['signals']:>7}"
        )
    return 0


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.0f} ms" if value < 10_000 else f"{value / 1000:.1f} s"


def _show(store, run_id: int) -> int:
    from sptrader.scanners import lineage

    run, steps, signals = lineage.run_detail(store, run_id)
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
    for step in steps.rows(named=True):
        if step["instrument"] != instrument:
            instrument = step["instrument"]
            print(f"  {instrument}")
        line = f"    {step['step_no']:>3}. {step['step']:<10} {_ms(step['duration_ms']):>8}"
        if step["input_summary"]:
            line += f"  in: {step['input_summary']}"
        if step["output_summary"]:
            line += f"  out: {step['output_summary']}"
        print(line)
        if step["error"]:
            for error_line in step["error"].rstrip().splitlines():
                print(f"         ! {error_line}")
    if not signals.is_empty():
        print("  signals")
        for signal in signals.rows(named=True):
            print(
                f"    {signal['side'].upper():<4} {signal['instrument']} bar"
                f" {format_us(signal['ts_us'])} {signal['reason'] or ''}"
            )
    return 0
