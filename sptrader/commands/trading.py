"""``sptrader order | orders | positions | cancel | close``: the paper account.

While a daemon runs it holds the store and streams the quotes: every command goes
through its API. Without one:

- ``orders``, ``positions`` and ``cancel`` work on the store directly (positions are
  marked at each instrument's last stored 1m close, and the output says so);
- ``order`` and ``close`` need a live quote: they start an engine in this process that
  streams just the order's instrument (the saved watchlist is left alone), wait up to
  ``--wait`` seconds for its first quote, hand the order to the paper broker and stop
  the engine. An order that does not fill at once (a limit or stop, an entry's
  stop-loss and take-profit) stays stored and is worked whenever an engine runs next
  (``sptrader tui`` or ``sptrader start``).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import dataclasses
import json
import math
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from sptrader.client.connection import call_daemon
from sptrader.client.local import BROKER_DISABLED
from sptrader.client.paths import running_pid
from sptrader.clock import format_us
from sptrader.config import LIVE_FEEDS, Settings, feed_config
from sptrader.errors import SptraderError, UsageError
from sptrader.models import normalize_instrument, parse_instrument
from sptrader.threads import run_in_thread

OFFLINE_MARKS = "no engine running: positions marked at their last stored 1m close"
RESTING_OFFLINE = "stored, and worked whenever an engine runs (`sptrader tui` or `sptrader start`)"


# --- shared helpers (also used by sptrader.commands.journal) ------------------------------


def daemon_running(settings: Settings) -> bool:
    return running_pid(settings.home) is not None


def call(settings: Settings, method: str, **params: Any) -> Any:
    """One API call to the running daemon."""
    return asyncio.run(call_daemon(settings.home, method, **params))


def open_store(settings: Settings) -> Any:
    """The store, migrated (no engine: nothing streams)."""
    from sptrader.store import Store

    store = Store(settings.store_path)
    try:
        store.migrate()
    except BaseException:
        store.close()
        raise
    return store


def number(text: str | None, what: str) -> float | None:
    """A positive finite number from the command line, or a one-line UsageError."""
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        raise UsageError(f"{what} must be a number, not {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise UsageError(f"{what} must be a positive number, not {text}")
    return value


def fmt_num(value: float | None, decimals: int = 8) -> str:
    """A price or quantity with the digits it has (up to ``decimals``), grouped."""
    if value is None:
        return ""
    text = f"{value:,.{decimals}f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


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
    }
    if args.limit is not None:
        request.update(type="limit", price=number(args.limit, "--limit"))
    elif args.stop is not None:
        request.update(type="stop", price=number(args.stop, "--stop"))
    validate(OrderRequest(**request))
    return request


def run_order(settings: Settings, args: argparse.Namespace) -> int:
    request = order_request(args)
    if daemon_running(settings):
        result = call(settings, "place_order", request=request)
        children = _children(call(settings, "open_orders"), result)
        return print_result(result, children, settings, args.json, resting="working in the daemon")

    async def place(engine: Any) -> dict[str, Any]:
        return (await engine.broker.place(request)).to_dict()

    result, children = asyncio.run(in_process(settings, request["instrument"], args.wait, place))
    return print_result(result, children, settings, args.json, resting=RESTING_OFFLINE)


def run_close(settings: Settings, args: argparse.Namespace) -> int:
    instrument = normalize_instrument(args.instrument)
    if daemon_running(settings):
        result = call(settings, "close_position", instrument=instrument)
        return print_result(result, [], settings, args.json, resting="working in the daemon")

    async def close(engine: Any) -> dict[str, Any]:
        return (await engine.broker.close_position(instrument)).to_dict()

    def has_position(engine: Any) -> None:
        held = {position["instrument"] for position in engine.broker.positions()}
        if instrument not in held:
            raise UsageError(f"no open position in {instrument}")

    result, _children = asyncio.run(
        in_process(settings, instrument, args.wait, close, before_quote=has_position)
    )
    return print_result(result, [], settings, args.json, resting=RESTING_OFFLINE)


def _children(open_orders: list[dict[str, Any]], result: dict[str, Any]) -> list[dict]:
    """The stop-loss and take-profit orders an entry's fill made."""
    order = result.get("order")
    if order is None:
        return []
    return [o for o in open_orders if o.get("parent_id") == order["order_id"]]


async def in_process(
    settings: Settings,
    instrument: str,
    wait_s: float,
    action: Callable[[Any], Awaitable[dict[str, Any]]],
    *,
    before_quote: Callable[[Any], None] | None = None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Start an engine streaming just ``instrument`` (no scanners), wait for its first
    quote, run ``action(engine)`` (an OrderResult dict), note the stop-loss and
    take-profit it made, stop the engine (everything stored)."""
    import msgspec

    from sptrader.engine import Engine
    from sptrader.models import QuoteReceived

    prefix = parse_instrument(instrument)[0]
    if prefix not in LIVE_FEEDS:
        raise UsageError(
            f"{instrument}: {prefix} has no live quotes to fill a paper order"
            f" (live feeds: {', '.join(LIVE_FEEDS)})"
        )
    config = settings.config
    if not config.broker.enabled:
        raise SptraderError(BROKER_DISABLED)
    if not feed_config(config, prefix).enabled:
        raise UsageError(f"{instrument} needs feeds.{prefix.lower()}.enabled = true in the config")
    # A one-shot engine: the scanners are not this command's business.
    quiet = dataclasses.replace(settings, config=msgspec.structs.replace(config, scanners=[]))
    engine = Engine(quiet, instruments=[instrument])
    quoted = asyncio.Event()

    def tap(event: object) -> bool:
        if type(event) is QuoteReceived and event.instrument == instrument:
            quoted.set()
        return False  # nothing queued: a tap, as the broker's

    subscription = engine.bus.subscribe("cli-order", maxsize=1, accepts=tap)
    try:
        await engine.start()
        assert engine.broker is not None
        if before_quote is not None:
            before_quote(engine)
        unknown = await run_in_thread(engine.symbols.unknown, [instrument])
        if unknown:
            raise UsageError(
                f"unknown symbol {instrument} (see `sptrader symbols --feed {prefix.lower()}`)"
            )
        try:
            async with asyncio.timeout(wait_s):
                await quoted.wait()
        except TimeoutError:
            raise SptraderError(_no_quote(engine, instrument, wait_s)) from None
        result = await action(engine)
        children = _children(engine.broker.open_orders(), result)
        return result, children
    finally:
        subscription.close()
        await engine.stop()


def _no_quote(engine: Any, instrument: str, wait_s: float) -> str:
    feed = next((f for f in engine.feeds.values() if instrument in f.instruments), None)
    status = next(
        (s for s in engine.supervisor.status() if feed is not None and s.name == feed.name), None
    )
    why = ""
    if status is not None:
        why = f" (feed {status.name} is {status.state.value}"
        why += f": {status.last_error})" if status.last_error else ")"
    return f"no quote for {instrument} within {wait_s:g}s{why}; nothing was placed (try --wait)"


def print_result(
    result: dict[str, Any],
    children: list[dict[str, Any]],
    settings: Settings,
    as_json: bool,
    *,
    resting: str,
) -> int:
    """Print an OrderResult dict; 1 when it was rejected."""
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
    print(f"order {order['order_id']}: {describe_order(order)}")
    for fill in result["fills"]:
        print(
            f"  filled {fmt_num(fill['qty'])} at {fmt_num(fill['price'])}"
            f" (fee {fmt_money(fill['fee'])} {currency}) at {format_us(fill['ts_us'])}"
        )
    if order["status"] not in ("open", "filled"):
        print(f"  {order['status']}{': ' + order['reason'] if order['reason'] else ''}")
    for child in children:
        role = "stop-loss" if child["role"] == "sl" else "take-profit"
        print(f"  {role}: order {child['order_id']} {describe_order(child)}")
    waiting = [o["order_id"] for o in [order, *children] if o["status"] == "open"]
    if waiting:
        which = " and ".join(map(str, waiting))
        print(f"  order{'s' if len(waiting) > 1 else ''} {which} open: {resting}")
    return 0


def describe_order(order: dict[str, Any]) -> str:
    """e.g. ``buy 1,000 SIM:EURUSD limit 1.075 gtc, sl 1.07, tp 1.09``."""
    text = f"{order['side']} {fmt_num(order['qty'])} {order['instrument']} {order['type']}"
    if order.get("price") is not None:
        text += f" {fmt_num(order['price'])}"
    if order.get("role") == "close":
        text += " (closing the position)"
    elif order.get("role") == "entry" and (order["type"] != "market" or order["tif"] == "day"):
        text += f" {order['tif']}"
    for key in ("sl", "tp"):
        if order.get(key) is not None:
            text += f", {key} {fmt_num(order[key])}"
    return text


# --- orders -------------------------------------------------------------------------------

ORDER_COLUMNS = (
    "order_id",
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
)


def run_orders(settings: Settings, args: argparse.Namespace) -> int:
    if daemon_running(settings):
        if args.all:
            rows = call(settings, "order_history", limit=args.limit)
        else:
            rows = call(settings, "open_orders")
    else:
        _require_broker(settings)
        from sptrader.broker import offline

        store = open_store(settings)
        try:
            rows = offline.orders(store, every=args.all, limit=args.limit)
        finally:
            store.close()
    write_orders(rows, args.format, every=args.all)
    return 0


def _require_broker(settings: Settings) -> None:
    if not settings.config.broker.enabled:
        raise SptraderError(BROKER_DISABLED)


def write_orders(rows: list[dict[str, Any]], output_format: str, *, every: bool) -> None:
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
    headers = ("ID", "CREATED (UTC)", "INSTRUMENT", "SIDE", "QTY", "TYPE", "PRICE", "TIF")
    headers += ("ROLE", "STATUS", "FILLED AT", "NOTE")
    table = []
    for row in rows:
        role = row["role"]
        if row.get("parent_id") is not None:
            role = f"{role} of {row['parent_id']}"
        note = row["reason"] if row["status"] not in ("open", "filled") else ""
        extras = [f"{key} {fmt_num(row[key])}" for key in ("sl", "tp") if row.get(key) is not None]
        if row["source"] not in ("manual", "close"):
            extras.append(row["source"])
        if note:
            extras.append(note)
        table.append(
            (
                str(row["order_id"]),
                format_us(row["created_us"]),
                row["instrument"],
                row["side"],
                fmt_num(row["qty"]),
                row["type"],
                fmt_num(row["price"]),
                row["tif"],
                role,
                row["status"],
                fmt_num(row["avg_price"]) if row["status"] == "filled" else "",
                ", ".join(extras),
            )
        )
    title = "orders (newest first)" if every else "open orders"
    left = ("CREATED (UTC)", "INSTRUMENT", "SIDE", "TYPE", "TIF", "ROLE", "STATUS", "NOTE")
    print_table(title, headers, table, left=left, width=150)


# --- positions ----------------------------------------------------------------------------

POSITION_COLUMNS = (
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
    if daemon_running(settings):
        account = call(settings, "account")
        positions = call(settings, "positions")
        marked = "live quotes"
    else:
        _require_broker(settings)
        from sptrader.broker import offline

        store = open_store(settings)
        try:
            account, positions = offline.account(store, settings.config.broker)
        finally:
            store.close()
        marked = "last stored close"
    if args.format == "json":
        write_json(
            {
                "marked_at": marked,
                "account": iso_fields(account),
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
                p["instrument"],
                p["side"],
                fmt_num(abs(p["qty"])),
                fmt_num(p["avg_price"]),
                fmt_num(p["mark"]),
                fmt_money(p["unrealized"], signed=True),
                fmt_money(p["realized"], signed=True),
                fmt_money(p["fees"]),
                fmt_money(p["notional"]),
                format_us(p["opened_us"]) if p.get("opened_us") else "",
            )
            for p in positions
        ]
        headers = ("INSTRUMENT", "SIDE", "QTY", "AVG PRICE", "MARK", "UNREALIZED", "REALIZED")
        headers += ("FEES", "NOTIONAL", "OPENED (UTC)")
        print_table(
            "positions", headers, rows, left=("INSTRUMENT", "SIDE", "OPENED (UTC)"), width=130
        )
    else:
        print("no open positions")
    print(account_line(account))
    if marked != "live quotes":
        print(f"({OFFLINE_MARKS})")
    return 0


def account_line(account: dict[str, Any]) -> str:
    currency = account.get("currency", "")
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
    if daemon_running(settings):
        order = call(settings, "cancel_order", order_id=order_id)
    else:
        _require_broker(settings)
        from sptrader.broker import offline

        store = open_store(settings)
        try:
            order = offline.cancel(store, order_id)
        finally:
            store.close()
    if args.json:
        write_json(iso_fields(order))
    else:
        print(f"cancelled order {order['order_id']}: {describe_order(order)}")
    return 0
