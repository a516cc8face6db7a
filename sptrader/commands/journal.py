"""``sptrader journal [--from DAY] [--to DAY]``, ``journal add TEXT [--day DAY]``,
``journal stats`` and ``journal equity [--tf 1h]``: the trader's notes, the paper trades
with their statistics, and the account's equity curve.

Through the engine client (``connect``): the daemon's while one runs (it holds the
store), otherwise this process's engine with only its store open. Days are UTC dates
(YYYY-MM-DD, or ``today``/``yesterday``); ``--to`` is included.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from sptrader.client.connect import connect
from sptrader.commands.trading import (
    decimals_for,
    fmt_money,
    fmt_num,
    fmt_price,
    iso_fields,
    print_table,
    write_csv,
    write_json,
)
from sptrader.config import Settings
from sptrader.errors import UsageError

TRADE_COLUMNS = (
    "day",
    "venue",
    "instrument",
    "side",
    "qty",
    "entry_time",
    "entry_price",
    "exit_time",
    "exit_price",
    "pnl",
    "fees",
)
STAT_KEYS = (
    "trades",
    "wins",
    "losses",
    "breakeven",
    "win_rate",
    "avg_win",
    "avg_loss",
    "profit_factor",
    "expectancy",
    "net_pnl",
    "gross_profit",
    "gross_loss",
    "largest_win",
    "largest_loss",
    "fees",
    "max_drawdown",
    "max_drawdown_pct",
)


def run_journal(settings: Settings, args: argparse.Namespace) -> int:
    if args.journal_command == "add":
        return _add(settings, args.text, args.day)
    last_day = last_day_before(args.start, args.end)
    if args.journal_command == "equity":
        points = read_equity(
            settings,
            args.start,
            last_day,
            getattr(args, "timeframe", "1h"),
            getattr(args, "venue", None) or "paper",
        )
        return _print_equity(points, args.format, settings.config.broker.currency)
    data = read_journal(settings, args.start, last_day, getattr(args, "venue", None))
    if args.journal_command == "stats":
        return _print_stats(data, args.format, settings.config.broker.currency)
    return _print_journal(data, args.format, settings.config.broker.currency)


def last_day_before(day_from: str | None, day_to: str | None) -> str | None:
    """The last UTC day included: ``--to`` is exclusive, as in every command (candles,
    export, backtest: [--from, --to)), so ``--from 2026-03-01 --to 2026-03-03`` is two days."""
    from datetime import timedelta

    from sptrader.broker import journal

    end = journal.parse_day(day_to, "--to day")
    if end is None:
        return None
    first = journal.parse_day(day_from, "--from day")
    if first is not None and end <= first:
        raise UsageError(
            f"--to {end} must be later than --from {first} (--to is exclusive: one day is"
            f" --from {first} --to {first + timedelta(days=1)})"
        )
    return (end - timedelta(days=1)).isoformat()


def read_journal(
    settings: Settings, day_from: str | None, day_to: str | None, venue: str | None = None
) -> dict[str, Any]:
    from sptrader.broker import journal

    # Checked here too: a bad day is the same one line with or without a daemon.
    first = journal.parse_day(day_from, "--from day")
    last = journal.parse_day(day_to, "--to day")
    day_from = None if first is None else first.isoformat()
    day_to = None if last is None else last.isoformat()

    async def read() -> dict[str, Any]:
        async with connect(settings) as client:
            data = await client.journal(day_from, day_to, venue)
            # The trades table's prices at each instrument's decimals (not in --format json).
            instruments = (trade["instrument"] for trade in data["trades"])
            data["price_decimals"] = await decimals_for(client, instruments)
            return data

    return asyncio.run(read())


EQUITY_COLUMNS = ("ts", "equity", "cash", "unrealized", "exposure")


def read_equity(
    settings: Settings,
    day_from: str | None,
    day_to: str | None,
    timeframe: str,
    venue: str = "paper",
) -> list[dict[str, Any]]:
    """The equity curve of UTC days ``day_from``..``day_to`` (open ends: the first fill,
    now)."""
    from sptrader.broker import journal
    from sptrader.clock import now_us
    from sptrader.models import US_PER_DAY, timeframe_minutes

    timeframe_minutes(timeframe)  # the same one line with or without a daemon
    first, last = journal._range(day_from, day_to)
    now = now_us()
    start_us = None if first is None else journal.day_start_us(first)
    # Up to the end of the last day, never past now (the last bucket is valued as of now).
    end_us = now + 1 if last is None else min(journal.day_start_us(last) + US_PER_DAY, now + 1)
    if start_us is not None and end_us <= start_us:
        return []

    async def read() -> list[dict[str, Any]]:
        async with connect(settings) as client:
            return await client.equity_curve(start_us, end_us, timeframe, venue)

    return asyncio.run(read())


def _print_equity(points: list[dict[str, Any]], output_format: str, currency: str) -> int:
    rows = [iso_fields(point) for point in points]
    if output_format == "csv":
        write_csv(rows, EQUITY_COLUMNS)
        return 0
    if output_format == "json":
        write_json(rows)
        return 0
    if not rows:
        print("no equity curve: no fills in this range")
        return 0
    print_table(
        f"equity ({currency}, each bucket valued at its end)",
        ("BUCKET (UTC)", "EQUITY", "CASH", "UNREALIZED", "EXPOSURE"),
        [
            (
                row["ts"],
                fmt_money(row["equity"]),
                fmt_money(row["cash"]),
                fmt_money(row["unrealized"], signed=True),
                fmt_money(row["exposure"]),
            )
            for row in rows
        ],
        left=("BUCKET (UTC)",),
        width=120,
    )
    return 0


def _add(settings: Settings, text: str, day: str | None) -> int:
    from sptrader.broker import journal

    if day is not None:
        day = journal.parse_day(day).isoformat()  # type: ignore[union-attr]

    async def add() -> dict[str, Any]:
        async with connect(settings) as client:
            return await client.add_journal_note(text, day)

    note = asyncio.run(add())
    print(f"note {note['note_id']} for {note['day']} saved")
    return 0


def _range_title(data: dict[str, Any]) -> str:
    first, last = data.get("from"), data.get("to")
    if first and last:
        return f"{first} to {last}" if first != last else first
    if first:
        return f"from {first}"
    if last:
        return f"up to {last}"
    return "all days"


def _print_journal(data: dict[str, Any], output_format: str, currency: str) -> int:
    trades = [iso_fields(trade) for trade in data["trades"]]
    if output_format == "csv":
        write_csv(trades, TRADE_COLUMNS)
        return 0
    if output_format == "json":
        write_json(
            {
                "from": data["from"],
                "to": data["to"],
                "stats": iso_fields(data["stats"]),
                "days": data["days"],
                "trades": trades,
                "notes": [iso_fields(note) for note in data["notes"]],
                "cumulative": [iso_fields(point) for point in data["cumulative"]],
            }
        )
        return 0
    print(f"journal: {_range_title(data)} (UTC days)")
    if not data["days"]:
        print("no trades closed and no notes in this range")
        return 0
    rows = [
        (
            day["day"],
            str(day["trades"]),
            f"{day['wins']}/{day['losses']}",
            fmt_money(day["pnl"], signed=True) if day["trades"] else "",
            " | ".join(day["notes"]),
        )
        for day in data["days"]
    ]
    print_table(
        None, ("DAY", "TRADES", "WON/LOST", "P&L", "NOTES"), rows, left=("DAY", "NOTES"), width=120
    )
    if data["trades"]:
        places = data.get("price_decimals") or {}
        print()
        print_table(
            "trades",
            (
                "CLOSED (UTC)",
                "VENUE",
                "INSTRUMENT",
                "SIDE",
                "QTY",
                "ENTRY",
                "EXIT",
                "P&L",
                "FEES",
                "CUM P&L",
            ),
            [
                (
                    trade["exit_time"],
                    trade.get("venue", "paper"),
                    trade["instrument"],
                    trade["side"],
                    fmt_num(trade["qty"]),
                    fmt_price(trade["entry_price"], places.get(trade["instrument"])),
                    fmt_price(trade["exit_price"], places.get(trade["instrument"])),
                    fmt_money(trade["pnl"], signed=True),
                    fmt_money(trade["fees"]),
                    fmt_money(point["cum_pnl"], signed=True),
                )
                for trade, point in zip(trades, data["cumulative"], strict=True)
            ],
            left=("CLOSED (UTC)", "VENUE", "INSTRUMENT", "SIDE"),
            width=130,
        )
    print()
    for line in stats_lines(data["stats"], currency):
        print(line)
    return 0


def _print_stats(data: dict[str, Any], output_format: str, currency: str) -> int:
    stats = iso_fields(data["stats"])
    if output_format == "json":
        write_json({"from": data["from"], "to": data["to"], **stats})
    elif output_format == "csv":
        write_csv([stats], STAT_KEYS)
    else:
        print(f"journal: {_range_title(data)} (UTC days)")
        for line in stats_lines(data["stats"], currency):
            print(line)
    return 0


def stats_lines(stats: dict[str, Any], currency: str) -> list[str]:
    """The statistics, a few lines of text."""
    count = stats["trades"]
    if not count:
        return ["no closed trades"]

    def money(key: str, signed: bool = True) -> str:
        value = stats.get(key)
        return "-" if value is None else fmt_money(value, signed=signed)

    win_rate = stats["win_rate"]
    factor = stats["profit_factor"]
    if factor is None:
        factor_text = "∞ (no losing trade)" if stats["wins"] else "-"
    else:
        factor_text = f"{factor:.2f}"
    drawdown = money("max_drawdown", signed=False)
    if stats.get("max_drawdown_pct") is not None:
        drawdown += f" ({stats['max_drawdown_pct']:.2f}% of equity)"
    return [
        f"trades {count}: {stats['wins']} won, {stats['losses']} lost"
        + (f", {stats['breakeven']} even" if stats["breakeven"] else "")
        + f" · win rate {win_rate * 100:.1f}%",
        f"net P&L {money('net_pnl')} {currency} (fees {money('fees', signed=False)})"
        f" · average win {money('avg_win')} · average loss {money('avg_loss')}",
        f"profit factor {factor_text} · expectancy {money('expectancy')} per trade"
        f" · max drawdown {drawdown}",
    ]
