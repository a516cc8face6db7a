"""``sptrader order | orders | positions | cancel | close``: the paper account, through
the engine client (``connect``): the daemon's engine while one runs (it holds the store
and streams the quotes), otherwise this process's.

Without a daemon:

- ``orders``, ``positions`` and ``cancel`` work on the store (positions are marked at
  each instrument's last stored 1m close, and the output says so);
- ``order`` and ``close`` need a live quote: an engine starts here streaming just the
  order's instrument (the saved watchlist is left alone), waits up to ``--wait``
  seconds for its first quote, hands the order to the paper broker and stops. An order
  that does not fill at once (a limit or stop, an entry's stop-loss and take-profit)
  stays stored and is worked whenever an engine runs next (``sptrader tui`` or
  ``sptrader start``).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import math
import sys
from collections.abc import Iterable, Sequence
from typing import Any

from sptrader.client.connect import connect
from sptrader.client.protocol import EngineClient
from sptrader.clock import format_us
from sptrader.commands.instruments import refuse_unknown
from sptrader.config import KNOWN_FEEDS, Settings
from sptrader.errors import UsageError
from sptrader.formatting import format_price
from sptrader.models import normalize_instrument
from sptrader.quantities import parse_number

OFFLINE_MARKS = "no engine running: positions marked at their last stored 1m close"
RESTING_ATTACHED = "working in the daemon"
RESTING_OFFLINE = "stored, and worked whenever an engine runs (`sptrader tui` or `sptrader start`)"


# --- shared helpers (also used by sptrader.commands.journal) ------------------------------


def number(text: str | None, what: str) -> float | None:
    """A positive finite number from the command line (``1,000``, ``10k``, ``1.5m`` as in
    the order ticket), or a one-line UsageError."""
    if text is None:
        return None
    value = parse_number(text, what)
    if value is None:
        raise UsageError(f"{what} must be a number, not {text!r}")
    if value <= 0:
        raise UsageError(f"{what} must be a positive number, not {text}")
    return value


def fmt_num(value: float | None, decimals: int = 8) -> str:
    """A price or quantity with the digits it has (up to ``decimals``), grouped."""
    if value is None:
        return ""
    text = f"{value:,.{decimals}f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def fmt_price(value: float | None, decimals: int | None) -> str:
    """A price at its instrument's decimals (``client.price_decimals``), grouped:
    48,109.96 · 1.06685; blank when there is none."""
    return format_price(value, decimals, missing="")


async def decimals_for(client: EngineClient, instruments: Iterable[str]) -> dict[str, int]:
    """The price decimals of the instruments a command prints (feed metadata first)."""
    names = sorted(set(instruments))
    return await client.price_decimals(names) if names else {}


def fmt_money(value: float | None, signed: bool = False) -> str:
    if value is None:
        return ""
    if abs(value) < 0.005:
        value = 0.0
    return f"{value:+,.2f}" if signed else f"{value:,.2f}"


def iso_fields(row: dict[str, Any]) -> dict[str, Any]:
    """A row with its ``*_us`` times as ISO 8601 UTC strings (``created_us`` ->
    ``created``), for CSV and JSON output; infinite numbers become None."""
    out: dict[str, Any] = {}
    for key, value in row.items():
        if key.endswith("_us"):
            out[key[:-3]] = None if value is None else format_us(int(value))
        elif isinstance(value, float):
            # Float noise off (1.0560443849999999): 12 significant digits.
            out[key] = float(f"{value:.12g}") if math.isfinite(value) else None
        else:
            out[key] = value
    return out


def write_json(data: Any) -> None:
    json.dump(data, sys.stdout, allow_nan=False)
    sys.stdout.write("\n")


def write_csv(rows: list[dict[str, Any]], columns: Sequence[str]) -> None:
    writer = csv.DictWriter(sys.stdout, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({name: "" if row.get(name) is None else row[name] for name in columns})


def print_table(
    title: str | None,
    headers: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    left: Sequence[str] = (),
    width: int = 0,
) -> None:
    """A borderless rich table (columns right-aligned unless named in ``left``)."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, title_justify="left", box=None)
    for header in headers:
        table.add_column(header, justify="left" if header in left else "right")
    for row in rows:
        table.add_row(*row)
    console = Console(file=sys.stdout, soft_wrap=True)
    if width:
        console = Console(file=sys.stdout, soft_wrap=True, width=max(console.width, width))
    console.print(table)


# --- order --------------------------------------------------------------------------------


def order_request(args: argparse.Namespace) -> dict[str, Any]:
    """The OrderRequest fields of ``sptrader order`` (checked: a malformed one is a
    one-line UsageError before anything starts)."""
    from sptrader.broker.orders import OrderRequest, validate

    side = str(args.side).lower()
    if side not in ("buy", "sell"):
        raise UsageError(f"bad side {args.side!r}: use buy or sell")
    if args.limit is not None and args.stop is not None:
        raise UsageError("give --limit or --stop, not both")
    qty = number(args.qty, "the quantity")
    risk = number(args.risk, "--risk")
    if qty is not None and risk is not None:
        raise UsageError("give a quantity or --risk PCT, not both")
    if qty is None and risk is None:
        raise UsageError("give a quantity, or --risk PCT with --sl to size the order")
    request: dict[str, Any] = {
        "instrument": normalize_instrument(args.instrument),
        "side": side,
        "qty": qty,
        "risk_pct": risk,
        "type": "market",
        "price": None,
        "tif": "day" if args.day else "gtc",
        "sl": number(args.sl, "--sl"),
        "tp": number(args.tp, "--tp"),
        "venue": getattr(args, "venue", "paper") or "paper",
    }
    if args.limit is not None:
        request.update(type="limit", price=number(args.limit, "--limit"))
    elif args.stop is not None:
        request.update(type="stop", price=number(args.stop, "--stop"))
    validate(OrderRequest(**request))
    return request


def run_order(settings: Settings, args: argparse.Namespace) -> int:
    request = order_request(args)
    instrument = request["instrument"]

    async def place() -> tuple[dict[str, Any], list[dict[str, Any]], bool, int | None]:
        # Without a daemon: an engine streaming just this instrument, stopped (everything
        # stored) when the block ends.
        async with connect(settings, streaming=[instrument], venue=args.venue) as client:
            if instrument.split(":", 1)[0] in KNOWN_FEEDS:  # IBKR: has no symbol list
                await refuse_unknown(client, [instrument])
            await client.wait_for_quote(instrument, args.wait)
            result = await client.place_order(request)
            children = _children(await client.open_orders(), result)
            decimals = (await decimals_for(client, [instrument])).get(instrument)
            return result, children, client.attached, decimals

    result, children, attached, decimals = asyncio.run(place())
    return print_result(
        result, children, settings, args.json, resting=_resting(attached), decimals=decimals
    )


def run_close(settings: Settings, args: argparse.Namespace) -> int:
    instrument = normalize_instrument(args.instrument)

    async def close() -> tuple[dict[str, Any], bool, int | None]:
        async with connect(settings, streaming=[instrument], venue=args.venue) as client:
            # Before waiting for a quote: nothing to close is said at once.
            held = {p["instrument"] for p in await client.positions(args.venue)}
            if instrument not in held:
                where = "" if args.venue == "paper" else f" {args.venue}"
                raise UsageError(f"no open{where} position in {instrument}")
            await client.wait_for_quote(instrument, args.wait)
            result = await client.close_position(instrument, args.venue)
            decimals = (await decimals_for(client, [instrument])).get(instrument)
            return result, client.attached, decimals

    result, attached, decimals = asyncio.run(close())
    return print_result(
        result, [], settings, args.json, resting=_resting(attached), decimals=decimals
    )


def _resting(attached: bool) -> str:
    """Where an order that did not fill at once is worked."""
    return RESTING_ATTACHED if attached else RESTING_OFFLINE


def _children(open_orders: list[dict[str, Any]], result: dict[str, Any]) -> list[dict]:
    """The stop-loss and take-profit orders an entry's fill made."""
    order = result.get("order")
    if order is None:
        return []
    return [o for o in open_orders if o.get("parent_id") == order["order_id"]]


def print_result(
    result: dict[str, Any],
    children: list[dict[str, Any]],
    settings: Settings,
    as_json: bool,
    *,
    resting: str,
    decimals: int | None = None,
) -> int:
    """Print an OrderResult dict (prices at the instrument's ``decimals``); 1 when it
    was rejected."""
    rejected = result.get("rejected")
    if as_json:
        write_json(
            {
                "order": None if result["order"] is None else iso_fields(result["order"]),
                "fills": [iso_fields(fill) for fill in result["fills"]],
                "rejected": rejected,
                "protective": [iso_fields(child) for child in children],
            }
        )
        return 1 if rejected else 0
    order = result["order"]
    currency = settings.config.broker.currency
    if rejected:
        what = f"order {order['order_id']} " if order else "order "
        print(
            f"sptrader: {what}rejected ({rejected['limit']}): {rejected['message']}",
            file=sys.stderr,
        )
        return 1
    venue = order.get("venue", "paper")
    where = "" if venue == "paper" else f" at {venue.upper()} (LIVE)"
    print(f"order {order['order_id']}{where}: {describe_order(order, decimals)}")
    if venue != "paper":
        print(
            f"  client id {order['client_order_id']} · venue id {order.get('venue_order_id') or '-'}"
            f" · {order['status']} · filled {fmt_num(order['filled_qty'])}"
        )
    for fill in result["fills"]:
        print(
            f"  filled {fmt_num(fill['qty'])} at {fmt_price(fill['price'], decimals)}"
            f" (fee {fmt_money(fill['fee'])} {currency}) at {format_us(fill['ts_us'])}"
        )
    if order["status"] not in ("open", "filled", "accepted", "partially_filled"):
        print(f"  {order['status']}{': ' + order['reason'] if order['reason'] else ''}")
    for child in children:
        role = "stop-loss" if child["role"] == "sl" else "take-profit"
        print(f"  {role}: order {child['order_id']} {describe_order(child, decimals)}")
    waiting = [o["order_id"] for o in [order, *children] if o["status"] == "open"]
    if venue != "paper" and order["status"] in ("new", "accepted", "partially_filled"):
        print(f"  order {order['order_id']} working at {venue}")
    if waiting:
        which = " and ".join(map(str, waiting))
        print(f"  order{'s' if len(waiting) > 1 else ''} {which} open: {resting}")
    return 0


def describe_order(order: dict[str, Any], decimals: int | None = None) -> str:
    """e.g. ``buy 1,000 SIM:EURUSD limit 1.07500 gtc, sl 1.07000, tp 1.09000`` (prices
    at the instrument's ``decimals``; None: guessed by each price's size)."""
    text = f"{order['side']} {fmt_num(order['qty'])} {order['instrument']} {order['type']}"
    if order.get("price") is not None:
        text += f" {fmt_price(order['price'], decimals)}"
    if order.get("role") == "close":
        text += " (closing the position)"
    elif order.get("role") == "entry" and (order["type"] != "market" or order["tif"] == "day"):
        text += f" {order['tif']}"
    for key in ("sl", "tp"):
        if order.get(key) is not None:
            text += f", {key} {fmt_price(order[key], decimals)}"
    trailing = trail_words(order, decimals)
    if trailing:
        text += f", {trailing}"
    return text


def trail_words(order: dict[str, Any], decimals: int | None = None) -> str:
    """ "trailing 0.00500" or "trailing 1%" for an order with a trail (a trailing
    stop-loss, whose price is its level now, or the entry it protects); else ""."""
    if order.get("trail") is not None:
        return f"trailing {fmt_price(order['trail'], decimals)}"
    if order.get("trail_pct") is not None:
        return f"trailing {order['trail_pct']:g}%"
    return ""


# --- orders -------------------------------------------------------------------------------

ORDER_COLUMNS = (
    "order_id",
    "venue",
    "created",
    "instrument",
    "side",
    "qty",
    "type",
    "price",
    "tif",
    "sl",
    "tp",
    "role",
    "parent_id",
    "source",
    "status",
    "filled_qty",
    "avg_price",
    "updated",
    "reason",
    "expires",
    "client_order_id",
    "venue_order_id",
    "trail",
    "trail_pct",
)


def run_orders(settings: Settings, args: argparse.Namespace) -> int:
    async def read() -> tuple[list[dict[str, Any]], dict[str, int]]:
        async with connect(settings) as client:
            if args.all:
                rows = await client.order_history(args.limit, args.venue)
            else:
                rows = await client.open_orders(args.venue)
            return rows, await decimals_for(client, (row["instrument"] for row in rows))

    rows, decimals = asyncio.run(read())
    write_orders(rows, args.format, every=args.all, decimals=decimals)
    return 0


def write_orders(
    rows: list[dict[str, Any]],
    output_format: str,
    *,
    every: bool,
    decimals: dict[str, int] | None = None,
) -> None:
    """The orders as JSON, CSV or a table (its prices at each instrument's ``decimals``)."""
    if output_format == "json":
        write_json([iso_fields(row) for row in rows])
        return
    if output_format == "csv":
        write_csv([iso_fields(row) for row in rows], ORDER_COLUMNS)
        return
    if not rows:
        print(
            "no orders yet"
            if every
            else "no open orders (`sptrader orders --all` lists every order)"
        )
        return
    headers = ("ID", "VENUE", "CREATED (UTC)", "INSTRUMENT", "SIDE", "QTY", "TYPE", "PRICE")
    headers += ("TIF", "ROLE", "STATUS", "FILLED", "AT", "NOTE")
    table = []
    for row in rows:
        places = (decimals or {}).get(row["instrument"])
        role = row["role"]
        if row.get("parent_id") is not None:
            role = f"{role} of {row['parent_id']}"
        note = row["reason"] if row["status"] not in ("open", "filled", "accepted") else ""
        extras = [
            f"{key} {fmt_price(row[key], places)}"
            for key in ("sl", "tp")
            if row.get(key) is not None
        ]
        trailing = trail_words(row, places)
        if trailing:
            extras.append(trailing)
        if row["source"] not in ("manual", "close"):
            extras.append(row["source"])
        if note:
            extras.append(note)
        venue = row.get("venue", "paper")
        table.append(
            (
                str(row["order_id"]),
                venue if venue == "paper" else f"{venue.upper()} LIVE",
                format_us(row["created_us"]),
                row["instrument"],
                row["side"],
                fmt_num(row["qty"]),
                row["type"],
                fmt_price(row["price"], places),
                row["tif"],
                role,
                row["status"],
                fmt_num(row["filled_qty"]) if row["filled_qty"] else "",
                fmt_price(row["avg_price"], places) if row["filled_qty"] else "",
                ", ".join(extras),
            )
        )
    title = "orders (newest first)" if every else "open orders"
    left = ("VENUE", "CREATED (UTC)", "INSTRUMENT", "SIDE", "TYPE", "TIF", "ROLE", "STATUS")
    print_table(title, headers, table, left=(*left, "NOTE"), width=170)


# --- positions ----------------------------------------------------------------------------

POSITION_COLUMNS = (
    "venue",
    "instrument",
    "side",
    "qty",
    "avg_price",
    "mark",
    "unrealized",
    "realized",
    "fees",
    "notional",
    "opened",
)


def run_positions(settings: Settings, args: argparse.Namespace) -> int:
    async def read() -> tuple[list[dict[str, Any]], list[dict[str, Any]], bool, dict[str, int]]:
        async with connect(settings) as client:
            positions = await client.positions(args.venue)
            venues = [args.venue] if args.venue else ["paper"]
            if not args.venue and client.attached:
                venues += [v["venue"] for v in await client.trading_venues() if v["enabled"]][1:]
            accounts = [await client.account(venue) for venue in venues]
            decimals = await decimals_for(client, (p["instrument"] for p in positions))
            return accounts, positions, client.attached, decimals

    accounts, positions, attached, decimals = asyncio.run(read())
    account = accounts[0]
    # Only the daemon streams: without it the store's last closes are the marks.
    marked = "live quotes" if attached else "last stored close"
    if args.format == "json":
        write_json(
            {
                "marked_at": marked,
                "account": iso_fields(account),
                "accounts": [iso_fields(a) for a in accounts],
                "positions": [iso_fields(p) for p in positions],
            }
        )
        return 0
    if args.format == "csv":
        write_csv([iso_fields(p) for p in positions], POSITION_COLUMNS)
        return 0
    if positions:
        rows = [
            (
                _venue_label(p.get("venue", "paper")),
                p["instrument"],
                p["side"],
                fmt_num(abs(p["qty"])),
                fmt_price(p["avg_price"], decimals.get(p["instrument"])),
                fmt_price(p["mark"], decimals.get(p["instrument"])),
                fmt_money(p["unrealized"], signed=True),
                fmt_money(p["realized"], signed=True),
                fmt_money(p["fees"]),
                fmt_money(p["notional"]),
                format_us(p["opened_us"]) if p.get("opened_us") else "",
            )
            for p in positions
        ]
        headers = ("VENUE", "INSTRUMENT", "SIDE", "QTY", "AVG PRICE", "MARK", "UNREALIZED")
        headers += ("REALIZED", "FEES", "NOTIONAL", "OPENED (UTC)")
        print_table(
            "positions",
            headers,
            rows,
            left=("VENUE", "INSTRUMENT", "SIDE", "OPENED (UTC)"),
            width=140,
        )
    else:
        print("no open positions")
    for each in accounts:
        print(account_line(each))
    if marked != "live quotes":
        print(f"({OFFLINE_MARKS})")
    return 0


def _venue_label(venue: str) -> str:
    return venue if venue == "paper" else f"{venue.upper()} LIVE"


def account_line(account: dict[str, Any]) -> str:
    currency = account.get("currency", "")
    venue = account.get("venue", "paper")
    if venue != "paper":
        state = "connected" if account.get("connected") else "not connected"
        halted = f" · HALTED ({account['halted']})" if account.get("halted") else ""
        return (
            f"{_venue_label(venue)} ({state}{halted}): equity {fmt_money(account['equity'])}"
            f" {currency} · cash {fmt_money(account['cash'])}"
            f" · day P&L {fmt_money(account['day_pnl'], signed=True)}"
            f" · {account['open_orders']} working order{'s' if account['open_orders'] != 1 else ''}"
        )
    return (
        f"equity {fmt_money(account['equity'])} {currency} · cash {fmt_money(account['cash'])}"
        f" · exposure {fmt_money(account['exposure'])}"
        f" · day P&L {fmt_money(account['day_pnl'], signed=True)}"
        f" · unrealized {fmt_money(account['unrealized'], signed=True)}"
        f" · realized {fmt_money(account['realized'], signed=True)}"
        f" · fees {fmt_money(account['fees'])}"
        f" · {account['open_orders']} open order{'s' if account['open_orders'] != 1 else ''}"
    )


# --- cancel -------------------------------------------------------------------------------


def run_cancel(settings: Settings, args: argparse.Namespace) -> int:
    order_id = args.id  # arguments.whole_id

    async def cancel() -> tuple[dict[str, Any], int | None]:
        async with connect(settings) as client:
            order = await client.cancel_order(order_id)
            instrument = order["instrument"]
            return order, (await decimals_for(client, [instrument])).get(instrument)

    order, decimals = asyncio.run(cancel())
    if args.json:
        write_json(iso_fields(order))
    else:
        print(f"cancelled order {order['order_id']}: {describe_order(order, decimals)}")
    return 0
