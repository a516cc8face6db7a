"""The paper broker's tables (migrations 005, 009, 013): orders, fills, and the reads
around them.

Blocking DuckDB work: from async code call these through
``sptrader.threads.run_in_thread``. Writes take the store's write lock (one writer at a
time, like every other writer of the store) and each ``save_changes`` is one transaction,
so a killed process leaves either the whole batch or none of it.

Rows come back as dicts with the ``Order``/``Fill`` field names (times as integer UTC
microseconds: ``created_us``, ``updated_us``, ``expires_us``, ``ts_us``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import polars as pl

from sptrader.broker.book import Changes, day_start
from sptrader.broker.ledger import Ledger
from sptrader.broker.orders import OPEN, WORKING_STATUSES, Fill, Order
from sptrader.clock import now_us
from sptrader.config import BrokerConfig
from sptrader.models import US_PER_DAY
from sptrader.schema import FILL_SCHEMA
from sptrader.store import Store

ORDER_FIELDS = (
    "order_id",
    "instrument",
    "side",
    "qty",
    "type",
    "price",
    "tif",
    "created_us",
    "sl",
    "tp",
    "role",
    "parent_id",
    "source",
    "status",
    "filled_qty",
    "avg_price",
    "updated_us",
    "reason",
    "expires_us",
    "venue",
    "client_order_id",
    "venue_order_id",
    "trail",
    "trail_pct",
)
# A fill's values in the fills table's column order (the time third, as ``ts``).
FILL_FIELDS = (
    "fill_id",
    "order_id",
    "ts_us",
    "instrument",
    "side",
    "qty",
    "price",
    "fee",
    "venue",
    "venue_fill_id",
)

_ORDER_SCHEMA = {
    "order_id": pl.Int64,
    "instrument": pl.String,
    "side": pl.String,
    "qty": pl.Float64,
    "type": pl.String,
    "price": pl.Float64,
    "tif": pl.String,
    "created": pl.Int64,
    "sl": pl.Float64,
    "tp": pl.Float64,
    "role": pl.String,
    "parent_id": pl.Int64,
    "source": pl.String,
    "status": pl.String,
    "filled_qty": pl.Float64,
    "avg_price": pl.Float64,
    "updated": pl.Int64,
    "reason": pl.String,
    "expires": pl.Int64,
    "venue": pl.String,
    "client_order_id": pl.String,
    "venue_order_id": pl.String,
    "trail": pl.Float64,
    "trail_pct": pl.Float64,
}
# The rows written to fills: sptrader.schema's fill types, named as the table's columns.
_FILL_SCHEMA = {"ts" if name == "ts_us" else name: FILL_SCHEMA[name] for name in FILL_FIELDS}
_TIME_COLUMNS = ("created", "updated", "expires", "ts")

SELECT_ORDERS = (
    "SELECT order_id, instrument, side, qty, type, price, tif, epoch_us(created),"
    " sl, tp, role, parent_id, source, status, filled_qty, avg_price, epoch_us(updated),"
    " reason, epoch_us(expires), venue, client_order_id, venue_order_id, trail, trail_pct"
    " FROM orders"
)
SELECT_FILLS = (
    "SELECT fill_id, order_id, epoch_us(ts), instrument, side, qty, price, fee, venue,"
    " venue_fill_id FROM fills"
)
# Up to this many rows go in as parameterised INSERTs; more as one registered frame
# (a frame costs about a millisecond to build and register, a row about a third of one).
_ROWS_AS_PARAMETERS = 4


# --- rows -------------------------------------------------------------------------------


def order_row(order: Order) -> tuple[Any, ...]:
    """An order's state now, as a row of the ``orders`` table (times in µs). Taken on the
    loop: the thread that writes must not read an order the book is changing."""
    return (
        order.order_id,
        order.instrument,
        order.side,
        order.qty,
        order.type,
        order.price,
        order.tif,
        order.created_us,
        order.sl,
        order.tp,
        order.role,
        order.parent_id,
        order.source,
        order.status,
        order.filled_qty,
        order.avg_price,
        order.updated_us,
        order.reason,
        order.expires_us,
        order.venue,
        order.client_order_id,
        order.venue_order_id,
        order.trail,
        order.trail_pct,
    )


def fill_row(fill: Fill) -> tuple[Any, ...]:
    return (
        fill.fill_id,
        fill.order_id,
        fill.ts_us,
        fill.instrument,
        fill.side,
        fill.qty,
        fill.price,
        fill.fee,
        fill.venue,
        fill.venue_fill_id,
    )


def snapshot(changes: Changes) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """(order rows, fill rows) of a batch of changes, frozen as they are now."""
    return [order_row(order) for order in changes.orders.values()], [
        fill_row(fill) for fill in changes.fills
    ]


def order_from_row(row: Sequence[Any]) -> Order:
    return Order(**dict(zip(ORDER_FIELDS, row, strict=True)))


def fill_from_row(row: Sequence[Any]) -> Fill:
    data = dict(zip(FILL_FIELDS, row, strict=True))
    return Fill(
        data["fill_id"],
        data["order_id"],
        data["instrument"],
        data["side"],
        data["qty"],
        data["price"],
        data["fee"],
        data["ts_us"],
        data["venue"],
        data["venue_fill_id"],
    )


# --- writes -----------------------------------------------------------------------------


def save_changes(store: Store, changes: Changes | tuple[list[tuple], list[tuple]]) -> int:
    """Upsert the changed orders and insert the new fills, in one transaction. Takes a
    ``Changes`` or its ``snapshot``; returns the rows written."""
    if isinstance(changes, Changes):
        order_rows, fill_rows = snapshot(changes)
    else:
        order_rows, fill_rows = changes
    if not order_rows and not fill_rows:
        return 0
    # The newest state of each order wins within a batch (an upsert may not touch a row
    # twice in one statement).
    order_rows = list({row[0]: row for row in order_rows}.values())
    cursor = store.cursor()
    with store._write_lock:  # the store's one-writer-at-a-time lock
        cursor.execute("BEGIN TRANSACTION")
        try:
            # An upsert as a delete and an insert: 2x faster than INSERT OR REPLACE here
            # (one order and its fill: about 4 ms a transaction instead of 6).
            _write(cursor, "orders", order_rows, _ORDER_SCHEMA, "order_id")
            # A fill never changes: one written again (the retry of a write that was
            # interrupted after all) is the same row, replaced the same way.
            _write(cursor, "fills", fill_rows, _FILL_SCHEMA, "fill_id")
            cursor.execute("COMMIT")
        except BaseException:
            cursor.execute("ROLLBACK")
            raise
    return len(order_rows) + len(fill_rows)


def _write(cursor: Any, table: str, rows: list[tuple], schema: dict[str, Any], key: str) -> None:
    """Replace the rows of ``table`` with these ``key`` values (inside the caller's
    transaction)."""
    if not rows:
        return
    columns = list(schema)
    if len(rows) <= _ROWS_AS_PARAMETERS:
        cursor.execute(
            f"DELETE FROM {table} WHERE {key} IN (SELECT unnest($1))", [[row[0] for row in rows]]
        )
        values = ", ".join(
            f"make_timestamp(${i + 1})" if name in _TIME_COLUMNS else f"${i + 1}"
            for i, name in enumerate(columns)
        )
        for row in rows:
            cursor.execute(f"INSERT INTO {table} VALUES ({values})", list(row))
        return
    frame = pl.DataFrame(rows, schema=schema, orient="row")
    frame = frame.with_columns(
        pl.col(name).cast(pl.Datetime("us")) for name in columns if name in _TIME_COLUMNS
    )
    view = f"incoming_{table}"
    cursor.register(view, frame)
    try:
        cursor.execute(f"DELETE FROM {table} WHERE {key} IN (SELECT {key} FROM {view})")
        cursor.execute(f"INSERT INTO {table} SELECT * FROM {view}")
    finally:
        cursor.unregister(view)


# --- reads ------------------------------------------------------------------------------


def load_state(store: Store, venue: str = "paper") -> tuple[list[Order], list[Fill], int, int]:
    """(``venue``'s working orders, its every fill in order, next order id, next fill id).
    Ids are shared by every venue (one orders table), so the next ones are the table's."""
    cursor = store.cursor()
    open_orders = [
        order_from_row(row)
        for row in cursor.execute(
            f"{SELECT_ORDERS} WHERE status IN (SELECT unnest(?)) AND venue = ? ORDER BY order_id",
            [list(WORKING_STATUSES), venue],
        ).fetchall()
    ]
    fills = all_fills(store, venue)
    return open_orders, fills, *next_ids(store)


def next_ids(store: Store) -> tuple[int, int]:
    """(next order id, next fill id) over every venue."""
    cursor = store.cursor()
    next_order = cursor.execute("SELECT coalesce(max(order_id), 0) + 1 FROM orders").fetchall()
    next_fill = cursor.execute("SELECT coalesce(max(fill_id), 0) + 1 FROM fills").fetchall()
    return int(next_order[0][0]), int(next_fill[0][0])


def _where(conditions: list[tuple[str, Any]]) -> tuple[str, list[Any]]:
    """A WHERE clause of the conditions whose value is not None, and its parameters."""
    used = [(sql, value) for sql, value in conditions if value is not None]
    if not used:
        return "", []
    return " WHERE " + " AND ".join(sql for sql, _ in used), [value for _, value in used]


def orders(
    store: Store, status: str | None = None, limit: int = 100, venue: str | None = None
) -> list[dict[str, Any]]:
    """Orders, newest first; only those with ``status`` (``open``: every working status)
    and of ``venue`` when given."""
    statuses = None
    if status is not None:
        statuses = list(WORKING_STATUSES) if status == OPEN else [status]
    where, params = _where([("status IN (SELECT unnest(?))", statuses), ("venue = ?", venue)])
    rows = (
        store.cursor()
        .execute(f"{SELECT_ORDERS}{where} ORDER BY order_id DESC LIMIT ?", [*params, limit])
        .fetchall()
    )
    return [dict(zip(ORDER_FIELDS, row, strict=True)) for row in rows]


def fills(
    store: Store, since_us: int | None = None, limit: int | None = None, venue: str | None = None
) -> list[dict[str, Any]]:
    """Fills at or after ``since_us`` (all when None) of ``venue`` (every venue when None),
    oldest first; with ``limit``, the newest ``limit`` of them (still oldest first)."""
    where, params = _where([("ts >= make_timestamp(?)", since_us), ("venue = ?", venue)])
    query = f"{SELECT_FILLS}{where} ORDER BY ts, fill_id"
    if limit is not None:
        query = f"SELECT * FROM ({SELECT_FILLS}{where} ORDER BY ts DESC, fill_id DESC LIMIT ?)"
        query += " ORDER BY 3, 1"
        params = [*params, limit]
    rows = store.cursor().execute(query, params).fetchall()
    return [dict(zip(FILL_FIELDS, row, strict=True)) for row in rows]


def all_fills(store: Store, venue: str = "paper") -> list[Fill]:
    """Every fill of ``venue``, in order (a venue's positions are derived from them)."""
    rows = (
        store.cursor()
        .execute(f"{SELECT_FILLS} WHERE venue = ? ORDER BY ts, fill_id", [venue])
        .fetchall()
    )
    return [fill_from_row(row) for row in rows]


# Look this far back first (a lower time bound keeps the read fast); instruments with no
# bar in that window (a market closed for a while) are looked up without one.
_RECENT_US = 7 * US_PER_DAY


def last_closes(store: Store, instruments: Iterable[str], before_us: int) -> dict[str, float]:
    """Each instrument's newest stored 1m close before ``before_us`` (the close of the bar
    that opened before it: at a midnight, the 23:59 bar's). Instruments with no bar
    before then are left out."""
    names = sorted(set(instruments))
    if not names:
        return {}
    cursor = store.cursor()
    query = (
        "SELECT instrument, arg_max(close, ts) FROM bars_1m"
        " WHERE instrument IN (SELECT unnest(?)) AND ts < make_timestamp(?){}"
        " GROUP BY instrument"
    )
    found = dict(
        cursor.execute(
            query.format(" AND ts >= make_timestamp(?)"),
            [names, before_us, before_us - _RECENT_US],
        ).fetchall()
    )
    missing = [name for name in names if name not in found]
    if missing:
        found.update(cursor.execute(query.format(""), [missing, before_us]).fetchall())
    return {name: float(close) for name, close in found.items() if close is not None}


def day_start_equity(store: Store, fills: Iterable[Fill], starting_cash: float, now: int) -> float:
    """The account's equity at 00:00 UTC of ``now``'s day: the fills before then, marked
    at the last stored closes before then (the day's P&L starts from it)."""
    midnight = day_start(now)
    at_midnight = Ledger.from_fills((f for f in fills if f.ts_us < midnight), starting_cash)
    held = [p.instrument for p in at_midnight.open_positions()]
    return at_midnight.equity(last_closes(store, held, midnight))


def offline_account(
    store: Store, broker: BrokerConfig, now: int | None = None, venue: str = "paper"
) -> tuple[Ledger, dict[str, float]]:
    """An account without an engine (the CLI on a store no daemon holds): the ledger
    from every fill of ``venue`` (a live venue's from 0: SPtrader keeps no cash of it),
    and its open positions' marks at their last stored close."""
    starting_cash = broker.starting_cash if venue == "paper" else 0.0
    ledger = Ledger.from_fills(all_fills(store, venue), starting_cash)
    instruments = [position.instrument for position in ledger.open_positions()]
    marks = last_closes(store, instruments, now_us() if now is None else now)
    return ledger, marks
