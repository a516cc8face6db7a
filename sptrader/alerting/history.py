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


def last_of_kind(store: Store, kind: str) -> dict[str, Any] | None:
    """The newest notice of ``kind`` (the daemon's last word, for "restarted")."""
    rows = (
        store.cursor()
        .execute(
            "SELECT epoch_us(ts), title FROM alert_history WHERE kind = ? ORDER BY ts DESC LIMIT 1",
            [kind],
        )
        .fetchall()
    )
    return {"ts_us": int(rows[0][0]), "title": rows[0][1]} if rows else None


# --- rules kept in the store (migration 011) ---------------------------------------------


def stored_rules(store: Store) -> tuple[list[dict[str, Any]], set[str]]:
    """(the rules added from the CLI or the TUI, as AlertRuleConfig dicts; the names of
    every paused rule)."""
    cursor = store.cursor()
    rules = [json.loads(spec) for (spec,) in cursor.execute(
        "SELECT spec FROM alert_rules ORDER BY name"
    ).fetchall()]  # fmt: skip
    paused = {name for (name,) in cursor.execute("SELECT name FROM alert_rules_paused").fetchall()}
    return rules, paused


def save_rule(store: Store, spec: dict[str, Any], now_us: int) -> None:
    with store._write_lock:
        store.cursor().execute(
            "INSERT OR REPLACE INTO alert_rules VALUES (?, ?, make_timestamp(?))",
            [spec["name"], json.dumps(spec), now_us],
        )


def delete_rule(store: Store, name: str) -> bool:
    with store._write_lock:
        cursor = store.cursor()
        found = cursor.execute("SELECT count(*) FROM alert_rules WHERE name = ?", [name]).fetchall()
        cursor.execute("DELETE FROM alert_rules WHERE name = ?", [name])
        cursor.execute("DELETE FROM alert_rules_paused WHERE name = ?", [name])
    return bool(found[0][0])


def set_paused(store: Store, name: str, paused: bool, now_us: int) -> None:
    with store._write_lock:
        cursor = store.cursor()
        if paused:
            cursor.execute(
                "INSERT OR REPLACE INTO alert_rules_paused VALUES (?, make_timestamp(?))",
                [name, now_us],
            )
        else:
            cursor.execute("DELETE FROM alert_rules_paused WHERE name = ?", [name])
