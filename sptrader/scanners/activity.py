"""What a scanner did in a window, as stored: its runs, the instruments it skipped and
why, the signals it raised, and the orders its signals became (source ``scanner:NAME``,
their stop-losses, take-profits and closes included) with their fills. ``sptrader
divergence`` sets this beside a backtest of the same window."""

from __future__ import annotations

from typing import Any

from sptrader.broker import records
from sptrader.store import Store

__all__ = ["scanner_activity"]


def scanner_activity(store: Store, scanner: str, start_us: int, end_us: int) -> dict[str, Any]:
    """The scanner's activity with times in [start_us, end_us): ``runs`` (run_id,
    started_us, status, error), ``skips`` (run_id, instrument, started_us, reason),
    ``signals`` (run_id, instrument, ts_us, side, stop, target), ``orders`` (the
    records' order fields, ``fills`` in each, oldest first)."""
    cursor = store.cursor()
    window = [start_us, end_us]
    runs = cursor.execute(
        "SELECT run_id, epoch_us(started), status, error FROM scan_runs"
        " WHERE scanner = ? AND started >= make_timestamp(?) AND started < make_timestamp(?)"
        " ORDER BY started",
        [scanner, *window],
    ).fetchall()
    skips = cursor.execute(
        "SELECT s.run_id, s.instrument, epoch_us(s.started), s.output_summary"
        " FROM scan_steps s JOIN scan_runs r USING (run_id)"
        " WHERE r.scanner = ? AND s.step = 'skip'"
        " AND s.started >= make_timestamp(?) AND s.started < make_timestamp(?)"
        " ORDER BY s.started",
        [scanner, *window],
    ).fetchall()
    signals = cursor.execute(
        "SELECT run_id, instrument, epoch_us(ts), side, stop, target FROM signals"
        " WHERE scanner = ? AND ts >= make_timestamp(?) AND ts < make_timestamp(?)"
        " ORDER BY ts, instrument",
        [scanner, *window],
    ).fetchall()
    source = f"scanner:{scanner}"
    orders = [
        dict(zip(records.ORDER_FIELDS, row, strict=True))
        for row in cursor.execute(
            f"{records.SELECT_ORDERS} WHERE source = ?"
            " AND created >= make_timestamp(?) AND created < make_timestamp(?)"
            " ORDER BY created, order_id",
            [source, *window],
        ).fetchall()
    ]
    by_id = {order["order_id"]: {**order, "fills": []} for order in orders}
    if by_id:
        for row in cursor.execute(
            f"{records.SELECT_FILLS} WHERE order_id IN (SELECT unnest(?)) ORDER BY ts, fill_id",
            [list(by_id)],
        ).fetchall():
            fill = dict(zip(records.FILL_FIELDS, row, strict=True))
            by_id[fill["order_id"]]["fills"].append(fill)
    return {
        "runs": [{"run_id": r[0], "started_us": r[1], "status": r[2], "error": r[3]} for r in runs],
        "skips": [
            {"run_id": s[0], "instrument": s[1], "started_us": s[2], "reason": s[3] or ""}
            for s in skips
        ],
        "signals": [
            {
                "run_id": s[0],
                "instrument": s[1],
                "ts_us": s[2],
                "side": s[3],
                "stop": s[4],
                "target": s[5],
            }
            for s in signals
        ],
        "orders": list(by_id.values()),
    }
