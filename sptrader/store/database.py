"""The DuckDB file: opening it (with a clear error when another process holds it),
versioned migrations, and the idempotent writes and reads everything else uses.

The store owns one connection; each thread works through its own ``cursor()``.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
import time
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import duckdb
import polars as pl

from sptrader.errors import SptraderError, StoreLockedError
from sptrader.schema import STORED_BAR_COLUMNS, STORED_TICK_COLUMNS, stored_bars, stored_ticks

log = logging.getLogger(__name__)

# Inserts name their columns: a SELECT * is positional, and a table's column order is
# the order migrations added them in.
_INSERT_BARS = (
    f"INSERT INTO bars_1m ({', '.join(STORED_BAR_COLUMNS)})"
    f" SELECT {', '.join(STORED_BAR_COLUMNS)} FROM incoming_bars"
)


def _insert_ticks(source: str) -> str:
    columns = ", ".join(STORED_TICK_COLUMNS)
    return f"INSERT INTO ticks ({columns}) SELECT {columns} FROM {source}"


_LOCK_PID_RE = re.compile(r"\(PID (\d+)\)")


def available_migrations() -> list[tuple[int, str, str]]:
    """(version, name, sql) for every numbered file in ``migrations/``, in order."""
    found = []
    for entry in resources.files("sptrader.store.migrations").iterdir():
        match = re.match(r"^(\d+)_(.+)\.sql$", entry.name)
        if match:
            found.append((int(match.group(1)), entry.name, entry.read_text("utf-8")))
    return sorted(found)


class Store:
    def __init__(self, path: Path, *, read_only: bool = False) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._connection = duckdb.connect(str(path), read_only=read_only)
        except duckdb.IOException as error:
            message = str(error)
            if "lock" in message.lower():
                pid = _LOCK_PID_RE.search(message)
                holder = f" by process {pid.group(1)}" if pid else " by another process"
                raise StoreLockedError(
                    f"database {path} is locked{holder}; stop it (or use `sptrader tui` to attach) and retry"
                ) from None
            raise SptraderError(f"cannot open database {path}: {message}") from None
        self._local = threading.local()
        self._write_lock = threading.Lock()
        self._closed = False

    @classmethod
    def for_reading(cls, path: Path) -> Store:
        """The store opened read-only, migrated first if an older SPtrader wrote it (the
        reads expect today's columns)."""
        store = cls(path, read_only=True)
        latest = max(version for version, _, _ in available_migrations())
        if store.schema_version() >= latest:
            return store
        store.close()
        writable = cls(path)
        try:
            writable.migrate()
        finally:
            writable.close()
        return cls(path, read_only=True)

    # --- connections ------------------------------------------------------------------

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """This thread's cursor on the one shared connection."""
        cursor = getattr(self._local, "cursor", None)
        if cursor is None:
            cursor = self._connection.cursor()
            self._local.cursor = cursor
        return cursor

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with self._write_lock:
            try:
                self._connection.execute("CHECKPOINT")
            except duckdb.Error:
                log.exception("checkpoint on close failed")
            # A read still running in another thread keeps the connection busy; give it
            # a moment rather than failing the shutdown (DuckDB refuses to close then).
            for _ in range(100):
                try:
                    self._connection.close()
                    return
                except duckdb.Error as error:
                    if "busy" not in str(error).lower() and "in use" not in str(error).lower():
                        raise
                    time.sleep(0.05)
            self._connection.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """This thread's cursor inside one write transaction (the store's one writer at
        a time): committed on leaving, rolled back on an error."""
        cursor = self.cursor()
        with self._write_lock:
            cursor.execute("BEGIN TRANSACTION")
            try:
                yield cursor
            except BaseException:
                cursor.execute("ROLLBACK")
                raise
            cursor.execute("COMMIT")

    # --- migrations -------------------------------------------------------------------

    def schema_version(self) -> int:
        cursor = self.cursor()
        exists = cursor.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = 'schema_version'"
        ).fetchall()[0][0]
        if not exists:
            return 0
        return cursor.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchall()[0][
            0
        ]

    def migrate(self) -> list[str]:
        """Apply every migration not yet applied, each in its own transaction."""
        cursor = self.cursor()
        cursor.execute(
            "CREATE TABLE IF NOT EXISTS schema_version ("
            " version INTEGER PRIMARY KEY, name VARCHAR NOT NULL,"
            " applied_at TIMESTAMP NOT NULL DEFAULT current_localtimestamp())"
        )
        current = self.schema_version()
        applied = []
        for version, name, sql in available_migrations():
            if version <= current:
                continue
            cursor.execute("BEGIN TRANSACTION")
            try:
                cursor.execute(sql)
                cursor.execute(
                    "INSERT INTO schema_version (version, name) VALUES (?, ?)", [version, name]
                )
                cursor.execute("COMMIT")
            except duckdb.Error as error:
                cursor.execute("ROLLBACK")
                raise SptraderError(f"migration {name} failed: {error}") from None
            log.info("applied migration %s", name)
            applied.append(name)
        return applied

    # --- writes -----------------------------------------------------------------------

    def upsert_bars(self, bars: pl.DataFrame) -> int:
        """Write 1m bars idempotently: a bar already stored (same instrument and ts) is
        replaced by the new version; within the batch the last version wins. ``bars``
        needs BAR_COLUMNS; buy_volume and sell_volume are NULL where it has none."""
        if bars.is_empty():
            return 0
        batch = (
            stored_bars(bars)
            .unique(subset=["instrument", "ts"], keep="last", maintain_order=True)
            .sort("instrument", "ts")
        )
        cursor = self.cursor()
        with self._write_lock:
            cursor.register("incoming_bars", batch)
            try:
                cursor.execute("BEGIN TRANSACTION")
                # The ts range lets zone maps skip row groups outside the batch's window.
                cursor.execute(
                    "DELETE FROM bars_1m USING incoming_bars AS b"
                    " WHERE bars_1m.instrument = b.instrument AND bars_1m.ts = b.ts"
                    " AND bars_1m.ts BETWEEN (SELECT min(ts) FROM incoming_bars)"
                    " AND (SELECT max(ts) FROM incoming_bars)"
                )
                cursor.execute(_INSERT_BARS)
                cursor.execute("COMMIT")
            except BaseException:
                cursor.execute("ROLLBACK")
                raise
            finally:
                cursor.unregister("incoming_bars")
        return batch.height

    def replace_symbols(self, feed: str, symbols: pl.DataFrame, fetched_us: int) -> None:
        """Swap one feed's cached instrument list, in one transaction."""
        cursor = self.cursor()
        with self._write_lock:
            cursor.register("incoming_symbols", symbols)
            try:
                cursor.execute("BEGIN TRANSACTION")
                cursor.execute("DELETE FROM symbols WHERE feed = ?", [feed])
                cursor.execute("DELETE FROM symbol_lists WHERE feed = ?", [feed])
                # BY NAME: a list without the optional columns (price_decimals) stores
                # them as NULL instead of failing on the column count.
                cursor.execute("INSERT INTO symbols BY NAME SELECT * FROM incoming_symbols")
                cursor.execute(
                    "INSERT INTO symbol_lists VALUES (?, make_timestamp(?), ?)",
                    [feed, fetched_us, symbols.height],
                )
                cursor.execute("COMMIT")
            except BaseException:
                cursor.execute("ROLLBACK")
                raise
            finally:
                cursor.unregister("incoming_symbols")

    def add_coverage(
        self, instrument: str, timeframe: str, source: str, start_us: int, end_us: int
    ) -> None:
        self.add_coverage_many([(instrument, timeframe, source, start_us, end_us)])

    def add_coverage_many(self, ranges: list[tuple[str, str, str, int, int]]) -> None:
        """Record stored ranges, merged with what each (instrument, timeframe, source)
        already covers, in one transaction."""
        from sptrader.intervals import merge

        added: dict[tuple[str, str, str], list[tuple[int, int]]] = {}
        for instrument, timeframe, source, start, end in ranges:
            if start < end:
                added.setdefault((instrument, timeframe, source), []).append((start, end))
        if not added:
            return
        cursor = self.cursor()
        with self._write_lock:
            cursor.execute("BEGIN TRANSACTION")
            try:
                for (instrument, timeframe, source), new in added.items():
                    key = [instrument, timeframe, source]
                    old = cursor.execute(
                        "SELECT epoch_us(start_ts), epoch_us(end_ts) FROM coverage"
                        " WHERE instrument = ? AND timeframe = ? AND source = ?",
                        key,
                    ).fetchall()
                    merged = merge([*old, *new])
                    if merged == sorted(old):
                        continue
                    cursor.execute(
                        "DELETE FROM coverage WHERE instrument = ? AND timeframe = ? AND source = ?",
                        key,
                    )
                    cursor.executemany(
                        "INSERT INTO coverage VALUES (?, ?, ?, make_timestamp(?), make_timestamp(?))",
                        [[*key, start, end] for start, end in merged],
                    )
                cursor.execute("COMMIT")
            except BaseException:
                cursor.execute("ROLLBACK")
                raise

    def coverage(self, instrument: str, timeframe: str = "1m") -> list[tuple[int, int]]:
        """Merged [start, end) ranges stored for ``instrument``, whatever their source."""
        from sptrader.intervals import merge

        rows = (
            self.cursor()
            .execute(
                "SELECT epoch_us(start_ts), epoch_us(end_ts) FROM coverage"
                " WHERE instrument = ? AND timeframe = ?",
                [instrument, timeframe],
            )
            .fetchall()
        )
        return merge(rows)

    def replace_ticks(
        self, instrument: str, start_us: int, end_us: int, ticks: pl.DataFrame
    ) -> int:
        """Store one instrument's ticks of [start, end) idempotently (a backfill rerun
        replaces them rather than appending twice)."""
        batch = stored_ticks(ticks)
        cursor = self.cursor()
        with self._write_lock:
            cursor.register("incoming_ticks", batch)
            try:
                cursor.execute("BEGIN TRANSACTION")
                cursor.execute(
                    "DELETE FROM ticks WHERE instrument = ?"
                    " AND ts >= make_timestamp(?) AND ts < make_timestamp(?)",
                    [instrument, start_us, end_us],
                )
                cursor.execute(_insert_ticks("incoming_ticks"))
                cursor.execute("COMMIT")
            except BaseException:
                cursor.execute("ROLLBACK")
                raise
            finally:
                cursor.unregister("incoming_ticks")
        return batch.height

    def append_ticks(self, ticks: pl.DataFrame) -> int:
        """Append quotes and trades (TICK_COLUMNS, and ``side`` where known)."""
        return self._append(stored_ticks(ticks), _insert_ticks("incoming"))

    def append_service_events(self, events: pl.DataFrame) -> int:
        return self._append(
            events, "INSERT INTO service_events SELECT ts, source, level, message FROM incoming"
        )

    def _append(self, frame: pl.DataFrame, insert_sql: str) -> int:
        """Insert a frame registered as ``incoming`` (no keys: append-only tables)."""
        if frame.is_empty():
            return 0
        cursor = self.cursor()
        with self._write_lock:
            cursor.register("incoming", frame)
            try:
                cursor.execute(insert_sql)
            finally:
                cursor.unregister("incoming")
        return frame.height
