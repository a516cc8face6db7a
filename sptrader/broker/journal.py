"""The trader's journal: daily notes, the trades the fills make, their statistics.

- Notes (table ``journal_notes``): free text about one UTC day (today unless given).
- Trades: the round trips of the paper fills (``performance.round_trips``: flat to flat
  per instrument, P&L net of fees). A trade belongs to the UTC day it closed on.
- Statistics of the trades in a range of days (``performance.trade_stats``) and the
  largest drawdown of the cumulative realized P&L over them.
- The cumulative realized P&L, one point per closed trade, and a per-day summary.

Blocking DuckDB work (call it from a thread in async code). Everything returned is
plain JSON-able data; times are integer UTC microseconds (``*_us``), days ISO dates.
A profit factor with wins and no losing trade is infinite: it is None here (strict JSON
has no infinity), ``wins``/``losses`` tell that case apart from "no trades".
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import date, timedelta
from typing import Any

import polars as pl

from sptrader.broker import performance, records
from sptrader.clock import now_us
from sptrader.errors import UsageError
from sptrader.models import US_PER_DAY
from sptrader.schema import FILL_SCHEMA
from sptrader.store import Store

MAX_NOTE_CHARS = 10_000

#: The fields of a trade dict.
TRADE_FIELDS = (
    "instrument",
    "side",
    "qty",
    "entry_time_us",
    "entry_price",
    "exit_time_us",
    "exit_price",
    "pnl",
    "fees",
    "day",
    "venue",
)


# --- days -------------------------------------------------------------------------------


def today(now: int | None = None) -> date:
    """The UTC day of ``now`` (µs; default the current time)."""
    return day_of_us(now_us() if now is None else now)


def day_of_us(ts_us: int) -> date:
    return date(1970, 1, 1) + timedelta(days=ts_us // US_PER_DAY)


def day_start_us(day: date) -> int:
    return (day - date(1970, 1, 1)).days * US_PER_DAY


def parse_day(text: str | date | None, what: str = "day", *, now: int | None = None) -> date | None:
    """A UTC day from ``YYYY-MM-DD`` (or ``today``/``yesterday``); None stays None. A
    bad one is a one-line UsageError."""
    if text is None or isinstance(text, date):
        return text
    cleaned = str(text).strip().lower()
    if cleaned == "today":
        return today(now)
    if cleaned == "yesterday":
        return today(now) - timedelta(days=1)
    try:
        return date.fromisoformat(cleaned)
    except ValueError:
        raise UsageError(f"bad {what} {text!r}: use a UTC date such as 2026-03-02") from None


def _range(
    day_from: str | date | None, day_to: str | date | None, now: int | None = None
) -> tuple[date | None, date | None]:
    first = parse_day(day_from, "--from day", now=now)
    last = parse_day(day_to, "--to day", now=now)
    if first is not None and last is not None and last < first:
        raise UsageError(f"the --to day {last} is before the --from day {first}")
    return first, last


def _in_range(day: date, first: date | None, last: date | None) -> bool:
    return (first is None or day >= first) and (last is None or day <= last)


# --- notes ------------------------------------------------------------------------------


def add_note(
    store: Store, text: str, day: str | date | None = None, *, now: int | None = None
) -> dict[str, Any]:
    """Store a note about ``day`` (default: today, UTC); returns it as ``notes`` does."""
    if not isinstance(text, str) or not text.strip():
        raise UsageError("a journal note needs some text")
    text = text.strip()
    if len(text) > MAX_NOTE_CHARS:
        raise UsageError(f"a journal note is at most {MAX_NOTE_CHARS:,} characters")
    created = now_us() if now is None else now
    the_day = parse_day(day, now=created) or today(created)
    cursor = store.cursor()
    with store._write_lock:  # the store's one-writer-at-a-time lock
        note_id = int(
            cursor.execute("SELECT coalesce(max(note_id), 0) + 1 FROM journal_notes").fetchall()[0][
                0
            ]
        )
        cursor.execute(
            "INSERT INTO journal_notes VALUES (?, ?, make_timestamp(?), ?)",
            [note_id, the_day, created, text],
        )
    return {"note_id": note_id, "day": the_day.isoformat(), "created_us": created, "text": text}


def notes(
    store: Store, day_from: str | date | None = None, day_to: str | date | None = None
) -> list[dict[str, Any]]:
    """Notes about the days from ``day_from`` to ``day_to`` (both included; open ends
    when None), by day, then in the order they were written."""
    first, last = _range(day_from, day_to)
    where, params = [], []
    if first is not None:
        where.append("day >= ?")
        params.append(first)
    if last is not None:
        where.append("day <= ?")
        params.append(last)
    clause = f" WHERE {' AND '.join(where)}" if where else ""
    rows = (
        store.cursor()
        .execute(
            "SELECT note_id, day, epoch_us(created), text FROM journal_notes"
            f"{clause} ORDER BY day, created, note_id",
            params,
        )
        .fetchall()
    )
    return [
        {"note_id": int(note_id), "day": day.isoformat(), "created_us": int(created), "text": text}
        for note_id, day, created, text in rows
    ]


# --- trades and statistics --------------------------------------------------------------


def trades(fills: Iterable[dict[str, Any]] | pl.DataFrame) -> list[dict[str, Any]]:
    """Every closed round trip of ``fills`` (fill dicts as ``records.fills`` gives them),
    in the order they closed, with the UTC ``day`` each closed on."""
    frame = fills if isinstance(fills, pl.DataFrame) else _fills_frame(list(fills))
    if frame.is_empty():
        return []
    if "venue" not in frame.columns:
        frame = frame.with_columns(pl.lit("paper").alias("venue"))
    result = []
    # Each venue is its own account: a paper and a live position in one instrument are
    # two positions, never netted.
    for (venue,), part in frame.group_by("venue", maintain_order=True):
        for row in performance.round_trips(part).iter_rows(named=True):
            trade = {name: row[name] for name in TRADE_FIELDS if name not in ("day", "venue")}
            trade["day"] = day_of_us(row["exit_time_us"]).isoformat()
            trade["venue"] = venue
            result.append(trade)
    result.sort(key=lambda trade: trade["exit_time_us"])  # stable: ties keep their order
    return result


def _fills_frame(fills: list[dict[str, Any]]) -> pl.DataFrame:
    if not fills:
        return pl.DataFrame(schema=FILL_SCHEMA)
    return pl.DataFrame(
        [[fill[name] for name in FILL_SCHEMA] for fill in fills], schema=FILL_SCHEMA, orient="row"
    )


def stats(trade_list: list[dict[str, Any]], start_equity: float = 0.0) -> dict[str, Any]:
    """Statistics of ``trade_list`` (``trade_stats``'s figures: trades, wins, losses,
    win_rate, avg_win, avg_loss, profit_factor, expectancy, net_pnl ...), plus ``fees``
    and the largest drawdown of the cumulative realized P&L: ``max_drawdown`` (money,
    from a peak of the running total, which starts at 0 before the first trade) and
    ``max_drawdown_pct`` (that fall as a share of the equity at the peak, the equity
    being ``start_equity`` plus the running total; None when ``start_equity`` is 0)."""
    pnl = [trade["pnl"] for trade in trade_list]
    figures = performance.trade_stats(pnl)
    if figures["profit_factor"] is not None and math.isinf(figures["profit_factor"]):
        figures["profit_factor"] = None
    running = [0.0]
    for value in pnl:
        running.append(running[-1] + value)
    amount, _ = performance.max_drawdown(running)
    figures["max_drawdown"] = amount
    if start_equity > 0:
        _, fraction = performance.max_drawdown([start_equity + value for value in running])
        figures["max_drawdown_pct"] = fraction * 100
    else:
        figures["max_drawdown_pct"] = None
    figures["fees"] = sum((trade["fees"] for trade in trade_list), 0.0)
    return figures


def cumulative(trade_list: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The running realized P&L: one point per closed trade, at its exit time."""
    points = []
    total = 0.0
    for trade in trade_list:
        total += trade["pnl"]
        points.append({"time_us": trade["exit_time_us"], "pnl": trade["pnl"], "cum_pnl": total})
    return points


def daily(trade_list: list[dict[str, Any]], note_list: list[dict[str, Any]]) -> list[dict]:
    """Per UTC day with a closed trade or a note, oldest first: trades, wins, losses,
    P&L (net of fees), fees and the day's note texts."""
    days: dict[str, dict[str, Any]] = {}

    def entry(day: str) -> dict[str, Any]:
        if day not in days:
            days[day] = {
                "day": day,
                "trades": 0,
                "wins": 0,
                "losses": 0,
                "pnl": 0.0,
                "fees": 0.0,
                "notes": [],
            }
        return days[day]

    for trade in trade_list:
        row = entry(trade["day"])
        row["trades"] += 1
        row["wins"] += trade["pnl"] > 0
        row["losses"] += trade["pnl"] < 0
        row["pnl"] += trade["pnl"]
        row["fees"] += trade["fees"]
    for note in note_list:
        entry(note["day"])["notes"].append(note["text"])
    return [days[day] for day in sorted(days)]


def summarize(
    fills: Iterable[dict[str, Any]] | pl.DataFrame,
    note_list: list[dict[str, Any]],
    day_from: str | date | None = None,
    day_to: str | date | None = None,
    starting_cash: float = 0.0,
) -> dict[str, Any]:
    """The journal of the days from ``day_from`` to ``day_to`` (both included, open ends
    when None) from every fill (trades are rebuilt from all of them, so one opened
    before the range and closed in it is whole) and the range's notes:
    ``{"from", "to", "notes", "trades", "stats", "cumulative", "days"}``."""
    first, last = _range(day_from, day_to)
    every = trades(fills)
    chosen: list[dict[str, Any]] = []
    before = 0.0
    for trade in every:
        day = date.fromisoformat(trade["day"])
        if first is not None and day < first:
            before += trade["pnl"]
        elif _in_range(day, first, last):
            chosen.append(trade)
    note_list = [
        note for note in note_list if _in_range(date.fromisoformat(note["day"]), first, last)
    ]
    return {
        "from": None if first is None else first.isoformat(),
        "to": None if last is None else last.isoformat(),
        "notes": note_list,
        "trades": chosen,
        "stats": stats(chosen, starting_cash + before),
        "cumulative": cumulative(chosen),
        "days": daily(chosen, note_list),
    }


def read(
    store: Store,
    day_from: str | date | None = None,
    day_to: str | date | None = None,
    starting_cash: float = 0.0,
    venue: str | None = None,
) -> dict[str, Any]:
    """``summarize`` over the stored fills (of ``venue``; every venue when None) and
    notes (blocking)."""
    first, last = _range(day_from, day_to)
    fills = records.fills(store, venue=venue)
    return summarize(fills, notes(store, first, last), first, last, starting_cash)
