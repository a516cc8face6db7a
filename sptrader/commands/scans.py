"""``sptrader scan [NAME]``, ``sptrader runs [--last N]`` and ``sptrader runs show ID``.

Through the engine client (``connect``): while a daemon runs it holds the database
(DuckDB allows one writing process) and runs the scan itself, publishing and alerting
its signals; without one, this process fetches the scanners' recent history and runs
them. Both print the same.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from sptrader.client.connect import connect
from sptrader.client.connection import DaemonUnavailable
from sptrader.clock import format_us
from sptrader.commands.trading import decimals_for, fmt_price, trail_words
from sptrader.config import Settings
from sptrader.errors import SptraderError, UsageError
from sptrader.wording import counted


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

    async def scan_each() -> int:
        failed = 0
        async with connect(settings) as client:
            for config in chosen:
                try:
                    result = await client.scan(config.name)
                except DaemonUnavailable:
                    raise
                except SptraderError as error:
                    if error.exit_code == 2:
                        raise UsageError(str(error)) from None
                    # Its strategy does not load (or the run broke): say so, go on.
                    print(f"{config.name}: {error}")
                    failed += 1
                    continue
                names = [signal["instrument"] for signal in result["signals"]]
                if not _print_result(config.name, result, await decimals_for(client, names)):
                    failed += 1
        return 1 if failed else 0

    return asyncio.run(scan_each())


def _print_result(
    name: str, result: dict[str, Any], decimals: dict[str, int] | None = None
) -> bool:
    """Print one scan's summary (stops and targets at each instrument's ``decimals``);
    True when it went ok."""
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
        places = (decimals or {}).get(signal["instrument"])
        print(
            f"  {signal['side'].upper():<4} {signal['instrument']} bar {signal['ts']}"
            f" {signal['reason']}{_levels(signal, places)}"
        )
    return result["status"] == "ok"


def _levels(signal: dict[str, Any], places: int | None) -> str:
    """`` stop 1.06649 target 1.08000, trailing 0.5%``: what the signal protects with."""
    text = "".join(
        f" {key} {fmt_price(signal[key], places)}"
        for key in ("stop", "target")
        if signal.get(key) is not None
    )
    trailing = trail_words(signal, places)
    return f"{text}, {trailing}" if trailing else text


def run_runs(settings: Settings, args: argparse.Namespace) -> int:
    async def read() -> Any:
        async with connect(settings) as client:
            if args.runs_command == "show":
                detail = await client.run_detail(args.id)
                names = [signal["instrument"] for signal in detail["signals"]]
                return detail, await decimals_for(client, names)
            return await client.runs(args.last or 20)

    if args.runs_command == "show":
        detail, decimals = asyncio.run(read())
        return _print_detail(args.id, detail["run"], detail["steps"], detail["signals"], decimals)
    return _print_runs(asyncio.run(read()))


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
    decimals: dict[str, int] | None = None,
) -> int:
    if run is None:
        raise UsageError(f"no scanner run {run_id} (see `sptrader runs`)")
    print(
        f"run {run['run_id']}  {run['scanner']}  {run['trigger']}  started"
        f" {format_us(run['started_us'])}  {_ms(run['duration_ms'])}  {run['status']}"
    )
    print(
        f"  {counted(run['instruments'], 'instrument')}, {run['skipped']} skipped,"
        f" {counted(run['signals'], 'signal')}"
    )
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
            places = (decimals or {}).get(signal["instrument"])
            print(
                f"    {signal['side'].upper():<4} {signal['instrument']} bar"
                f" {format_us(signal['ts_us'])} {signal['reason'] or ''}"
                f"{_levels(signal, places)}"
            )
    return 0
