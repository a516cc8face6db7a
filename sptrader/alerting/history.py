"""The ``alert_history`` table (migration 010): blocking DuckDB work, called through
``sptrader.threads.run_in_thread`` from async code."""

from __future__ import annotations

import json
from typing import Any

from sptrader.alerting.notice import Notice
from sptrader.store import Store


def record(store: Store, notices: list[tuple[Notice, list[str]]]) -> None:
    """Store each notice with the channels it went to (one transaction)."""
    if not notices:
        return
    rows = [
        (
            notice.ts_us,
            notice.rule,
            notice.kind,
            notice.title,
            notice.text,
            ",".join(channels),
            json.dumps(notice.data, default=str),
        )
        for notice, channels in notices
    ]
    with store._write_lock:  # the store's one-writer-at-a-time lock
        store.cursor().executemany(
            "INSERT INTO alert_history VALUES (make_timestamp(?), ?, ?, ?, ?, ?, ?)", rows
        )


def read(store: Store, limit: int = 50, rule: str | None = None) -> list[dict[str, Any]]:
    """The newest ``limit`` notices (of ``rule``), newest first."""
    where, params = ("", []) if rule is None else (" WHERE rule = ?", [rule])
    rows = (
        store.cursor()
        .execute(
            "SELECT epoch_us(ts), rule, kind, title, text, channels, data FROM alert_history"
            f"{where} ORDER BY ts DESC LIMIT ?",
            [*params, limit],
        )
        .fetchall()
    )
    return [
        {
            "ts_us": int(ts),
            "rule": name,
            "kind": kind,
            "title": title,
            "text": text,
            "channels": [c for c in channels.split(",") if c],
            "data": json.loads(data),
        }
        for ts, name, kind, title, text, channels, data in rows
    ]
