"""``sptrader divergence SCANNER --from T [--to T] [--tolerance N] [--format table|json]``:
the scanner's paper (or live) trades set beside a backtest of the same window, per
instrument: matched, missed and extra trades, slippage, the P&L difference and its
causes (:mod:`sptrader.backtest.divergence`).

The backtest is the scanner's strategy with its parameters on its timeframe, over the
stored bars (missing history fetched first, as ``sptrader backtest`` does; gaps are not
refused here: they are one of the causes), with the configured [broker] and [risk]."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from sptrader.client.connect import connect
from sptrader.clock import datetime_to_us, format_us, now_us, parse_time
from sptrader.config import Settings
from sptrader.errors import SptraderError, UsageError
from sptrader.models import US_PER_MINUTE, timeframe_minutes


def run_divergence_command(settings: Settings, args: argparse.Namespace) -> int:
    from sptrader.backtest import run_backtest
    from sptrader.backtest.divergence import compare, totals
    from sptrader.backtest.sweep import warmup_of
    from sptrader.backtest.window import load_bars
    from sptrader.commands.backtest import fetch_showing_progress
    from sptrader.strategies import registry
    from sptrader.strategies.informative import informative_warmup

    config = settings.config
    scanner = next((s for s in config.scanners if s.name == args.scanner), None)
    if scanner is None:
        known = ", ".join(s.name for s in config.scanners) or "none configured"
        raise UsageError(f"unknown scanner {args.scanner!r} (scanners: {known})")
    if not scanner.order_venue:
        raise UsageError(
            f"scanner {scanner.name} places no orders (its broker is not set): there are no"
            " trades to compare"
        )
    start = datetime_to_us(parse_time(args.start, what="--from time"))
    end = datetime_to_us(parse_time(args.end, what="--to time")) if args.end else now_us()
    if end <= start:
        raise UsageError("--to must be later than --from")
    strategy = registry.build(scanner.strategy, dict(scanner.params), config.strategies.modules)
    timeframe = scanner.timeframe
    bar_us = timeframe_minutes(timeframe) * US_PER_MINUTE
    warmup = warmup_of(strategy) + informative_warmup(strategy, timeframe)

    async def gather() -> tuple[dict[str, Any], list[Any]]:
        async with connect(settings) as client:
            # Orders the scanner placed just past --to still belong to its last signals.
            activity = await client.scanner_activity(
                scanner.name, start, end + args.tolerance * bar_us
            )
            loaded = [
                await load_bars(
                    client, instrument, timeframe, start, end, warmup, fetch_showing_progress
                )
                for instrument in scanner.instruments
            ]
            return activity, loaded

    activity, loaded = asyncio.run(gather())
    pairs = []
    for data in loaded:
        if data.bars.is_empty():
            continue
        try:
            result = run_backtest(
                strategy,
                data.bars,
                config.broker,
                config.risk,
                timeframe,
                instrument=data.instrument,
                start_us=start,
                gaps=data.gaps,
            )
        except Exception as error:
            first_line = (str(error).strip().splitlines() or [""])[0]
            raise SptraderError(
                f"strategy {strategy.name} failed on {data.instrument}:"
                f" {type(error).__name__}: {first_line}"
            ) from None
        pairs.extend(
            compare(
                data.instrument,
                result.trades,
                activity,
                bar_us=bar_us,
                tolerance=args.tolerance,
                gaps=data.gaps,
            )
        )
    pairs.sort(key=lambda pair: pair.time_us)
    summary = totals(pairs)
    header = {
        "scanner": scanner.name,
        "strategy": strategy.name,
        "venue": scanner.order_venue,
        "timeframe": timeframe,
        "from": format_us(start),
        "to": format_us(end),
        "runs": len(activity["runs"]),
    }
    if args.format == "json":
        from sptrader.backtest.report import clean, write_json

        write_json(
            clean({**header, "totals": summary, "trades": [_times(p.to_dict()) for p in pairs]})
        )
    else:
        _print(header, summary, pairs)
    return 0


def _times(pair: dict[str, Any]) -> dict[str, Any]:
    """A pair with its trades' times as ISO text beside the µs."""
    for side in ("backtest", "account"):
        trade = pair.get(side)
        if trade:
            trade["entry_time"] = format_us(trade["entry_time_us"])
            trade["exit_time"] = format_us(trade["exit_time_us"])
    return pair


def _print(header: dict[str, Any], summary: dict[str, Any], pairs: list[Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(file=sys.stdout, soft_wrap=True, highlight=False)
    if console.width < 120:
        console = Console(file=sys.stdout, soft_wrap=True, highlight=False, width=120)
    console.print(
        f"{header['scanner']} ({header['strategy']} {header['timeframe']}, {header['venue']})"
        f" {header['from']} → {header['to']}: {summary['matched']} matched,"
        f" {summary['missed']} missed, {summary['extra']} extra trades;"
        f" {header['runs']:,} scanner runs",
        markup=False,
    )

    def money(value: float | None) -> str:
        return "-" if value is None else f"{value:,.2f}"

    def bps(value: float | None) -> str:
        return "-" if value is None else f"{value:+.1f}"

    console.print(
        f"P&L: backtest {money(summary['backtest_pnl'])}, account"
        f" {money(summary['account_pnl'])}, difference {money(summary['difference'])}"
        f" (matched trades {money(summary['from_matched'])}, missed"
        f" {money(summary['from_missed'])}, extra {money(summary['from_extra'])});"
        f" mean slippage entry {bps(summary['mean_entry_slippage_bps'])} bps,"
        f" exit {bps(summary['mean_exit_slippage_bps'])} bps",
        markup=False,
    )
    if not pairs:
        console.print("no trades in the window, in the backtest or the account", markup=False)
        return
    table = Table(box=None)
    for column in ("entry (UTC)", "instrument", "side", "status"):
        table.add_column(column, no_wrap=True)
    for column in ("entry bps", "exit bps", "backtest P&L", "account P&L", "diff"):
        table.add_column(column, justify="right", no_wrap=True)
    for pair in pairs:
        table.add_row(
            format_us(pair.time_us)[:16].replace("T", " "),
            pair.instrument,
            pair.side,
            pair.status,
            bps(pair.entry_slippage_bps),
            bps(pair.exit_slippage_bps),
            money((pair.backtest or {}).get("pnl")),
            money((pair.account or {}).get("pnl")),
            money(pair.pnl_difference),
        )
    console.print(table)
    explained = [pair for pair in pairs if pair.causes]
    if explained:
        console.print("why:", markup=False)
    for pair in explained:
        console.print(
            f"  {format_us(pair.time_us)[:16].replace('T', ' ')} {pair.instrument}"
            f" {pair.status}: {'; '.join(pair.causes)}",
            markup=False,
        )
