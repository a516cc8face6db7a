"""``sptrader db compact``: tick retention and the rewrite that gives space back."""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import numpy as np
import polars as pl
import pytest
from conftest import holding_database

from sptrader.cli import main
from sptrader.client import paths
from sptrader.config import parse_config
from sptrader.errors import ConfigError, SptraderError, StoreLockedError
from sptrader.store import Store, retention
from sptrader.store.retention import compact, lock_path, temp_path, wal_path

NOW = datetime(2026, 11, 20, 12, 0)  # naive UTC, like the stored ts
DAYS = 10
INSTRUMENTS = ["SIM:EURUSD", "SIM:BTCUSD", "BINANCE:BTCUSDT", "SIM:AAPL"]
TICKS = 2_000_000


def make_ticks(rows: int, end: datetime, days: float = DAYS) -> pl.DataFrame:
    """``rows`` ticks spread evenly over ``days`` before ``end``, in time order (as a
    live feed stores them), round-robin over INSTRUMENTS: quotes, and every 8th a trade
    with its taker side (1, -1, or NULL unknown)."""
    start = np.datetime64(end - timedelta(days=days), "us")
    step = int(days * 86_400_000_000 / rows)
    ts = start + np.arange(rows, dtype=np.int64).astype("timedelta64[us]") * step
    rng = np.random.default_rng(7)
    bid = 1.0 + rng.random(rows)
    trade = np.arange(rows) % 8 == 5
    side = rng.choice(np.array([1, -1, 0], dtype=np.int8), rows)
    return pl.DataFrame(
        {
            "instrument": np.array(INSTRUMENTS)[np.arange(rows) % len(INSTRUMENTS)],
            "ts": ts,
            "bid": np.where(trade, np.nan, bid),
            "ask": np.where(trade, np.nan, bid + 0.0002),
            "bid_size": np.where(trade, np.nan, rng.random(rows)),
            "ask_size": np.where(trade, np.nan, rng.random(rows)),
            "price": np.where(trade, bid + 0.0001, np.nan),
            "size": np.where(trade, rng.random(rows), np.nan),
            "side": pl.Series(np.where(trade & (side != 0), side, 0)).replace(0, None),
        },
        nan_to_null=True,
    )


def make_bars(end: datetime) -> list[pl.DataFrame]:
    """A day of 1m bars per instrument per batch, for DAYS days: stored day by day,
    so the file holds them interleaved by instrument (not clustered)."""
    batches = []
    for day in range(DAYS):
        start = end - timedelta(days=DAYS - day)
        minutes = 24 * 60
        for index, name in enumerate(INSTRUMENTS):
            opens = 100.0 + index + np.sin(np.arange(minutes) / 50.0)
            batches.append(
                pl.DataFrame(
                    {
                        "instrument": [name] * minutes,
                        "ts": pl.datetime_range(
                            start,
                            start + timedelta(minutes=minutes - 1),
                            "1m",
                            time_unit="us",
                            eager=True,
                        ),
                        "open": opens,
                        "high": opens + 0.5,
                        "low": opens - 0.5,
                        "close": opens + 0.1,
                        "volume": np.arange(minutes, dtype=np.float64) + 1,
                        "trades": np.arange(minutes, dtype=np.int64) + day,
                        # Order flow on the crypto bars only (NULL on the others).
                        "buy_volume": np.arange(minutes) * 0.25 if ":BTC" in name else None,
                        "sell_volume": np.arange(minutes) * 0.5 if ":BTC" in name else None,
                    }
                )
            )
    return batches


def build_store(path: Path, end: datetime, ticks: int = TICKS) -> None:
    store = Store(path)
    try:
        store.migrate()
        for batch in make_bars(end):
            store.upsert_bars(batch)
        all_ticks = make_ticks(ticks, end)
        for chunk in range(0, ticks, 500_000):
            store.append_ticks(all_ticks.slice(chunk, 500_000))
        store.append_service_events(
            pl.DataFrame(
                {
                    "ts": [end - timedelta(days=20), end],
                    "source": ["sim", "store"],
                    "level": ["INFO", "WARNING"],
                    "message": ["started", "slow flush"],
                }
            ).cast({"ts": pl.Datetime("us")})
        )
    finally:
        store.close()


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One 2M-tick store, built once and copied for each test."""
    path = tmp_path_factory.mktemp("template") / "sptrader.duckdb"
    build_store(path, NOW)
    return path


@pytest.fixture
def db(template: Path, home: Path) -> Path:
    path = home / "sptrader.duckdb"
    shutil.copy(template, path)
    return path


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def query(path: Path, sql: str) -> list[tuple]:
    store = Store(path, read_only=True)
    try:
        return store.cursor().execute(sql).fetchall()
    finally:
        store.close()


def frame(path: Path, sql: str) -> pl.DataFrame:
    store = Store(path, read_only=True)
    try:
        return store.cursor().sql(sql).pl()
    finally:
        store.close()


def table_counts(path: Path) -> dict[str, int]:
    """Rows of every table, whatever the migrations created (information_schema)."""
    store = Store(path, read_only=True)
    try:
        cursor = store.cursor()
        names = cursor.execute(
            "SELECT table_schema, table_name FROM information_schema.tables"
            " WHERE table_catalog = current_database() AND table_type = 'BASE TABLE'"
        ).fetchall()
        return {
            f"{schema}.{name}": cursor.execute(
                f'SELECT count(*) FROM "{schema}"."{name}"'
            ).fetchall()[0][0]
            for schema, name in names
        }
    finally:
        store.close()


def leftovers(path: Path) -> list[str]:
    return sorted(p.name for p in path.parent.iterdir() if p.name != path.name)


# --- compaction ---------------------------------------------------------------------------


def test_deletes_only_ticks_older_than_the_retention_and_keeps_every_bar(db: Path) -> None:
    bars_before = frame(db, "SELECT * FROM bars_1m ORDER BY instrument, ts")
    cutoff = NOW - timedelta(days=3)
    ticks = make_ticks(TICKS, NOW)
    expected_kept = ticks.filter(pl.col("ts") >= cutoff).height

    result = compact(db, 3, now=NOW)

    assert result.cutoff == cutoff
    assert result.ticks_total == TICKS
    assert result.ticks_deleted == TICKS - expected_kept
    assert 0 < expected_kept < TICKS
    kept = frame(db, "SELECT * FROM ticks ORDER BY ts, instrument")
    assert kept.height == expected_kept == result.rows["ticks"]
    assert kept["ts"].min() >= cutoff
    assert kept.equals(
        ticks.filter(pl.col("ts") >= cutoff)
        .cast(dict(kept.schema))
        .sort("ts", "instrument", maintain_order=True)
    )
    assert kept["side"].drop_nulls().unique().sort().to_list() == [-1, 1]  # trades' sides
    bars_after = frame(db, "SELECT * FROM bars_1m ORDER BY instrument, ts")
    assert bars_after.equals(bars_before)  # order flow included, NULLs where it was NULL
    assert bars_after["buy_volume"].null_count() == bars_after.height // 2
    assert bars_after.height == DAYS * 24 * 60 * len(INSTRUMENTS)
    # Older bars than the tick cutoff are all still there.
    assert bars_after["ts"].min() == NOW - timedelta(days=DAYS)


def test_the_file_shrinks_after_deleting_many_ticks(db: Path) -> None:
    size_before = db.stat().st_size
    result = compact(db, 1, now=NOW)  # keeps a tenth of the ticks
    assert result.size_before == size_before
    assert result.size_after == db.stat().st_size
    assert result.size_after < size_before / 3, (size_before, result.size_after)
    assert not result.dry_run
    assert result.seconds > 0
    assert leftovers(db) == []  # no WAL, no temporary copy, no lock file


def test_every_table_and_the_schema_version_survive(db: Path) -> None:
    counts = table_counts(db)
    assert {"main.schema_version", "main.bars_1m", "main.ticks", "main.service_events"} <= set(
        counts
    )
    schema = query(db, "SELECT schema_name, table_name, sql FROM duckdb_tables() ORDER BY 1, 2")
    versions = query(db, "SELECT * FROM schema_version ORDER BY version")
    events = frame(db, "SELECT * FROM service_events ORDER BY ts")

    result = compact(db, 3, now=NOW)

    after = table_counts(db)
    assert after == {**counts, "main.ticks": counts["main.ticks"] - result.ticks_deleted}
    assert query(db, "SELECT schema_name, table_name, sql FROM duckdb_tables() ORDER BY 1, 2") == (
        schema
    )
    assert query(db, "SELECT * FROM schema_version ORDER BY version") == versions
    assert frame(db, "SELECT * FROM service_events ORDER BY ts").equals(events)
    # The store opens as usual: schema version and migrations are as they were.
    store = Store(db)
    try:
        assert store.schema_version() == max(version for version, *_ in versions)
        assert store.migrate() == []
    finally:
        store.close()


def test_the_rewrite_keeps_constraints_and_defaults(db: Path) -> None:
    compact(db, 0, now=NOW)
    store = Store(db)
    try:
        cursor = store.cursor()
        cursor.execute("INSERT INTO schema_version (version, name) VALUES (999, 'x.sql')")
        assert cursor.execute(
            "SELECT applied_at IS NOT NULL FROM schema_version WHERE version = 999"
        ).fetchall() == [(True,)]
        with pytest.raises(duckdb.ConstraintException):
            cursor.execute("INSERT INTO schema_version (version, name) VALUES (999, 'y.sql')")
    finally:
        store.close()


def test_bars_come_out_clustered_by_instrument_and_time(db: Path) -> None:
    stored = query(db, "SELECT instrument, ts FROM bars_1m")
    assert stored != sorted(stored)  # day by day, instruments interleaved
    compact(db, 3, now=NOW)
    stored = query(db, "SELECT instrument, ts FROM bars_1m")
    assert stored == sorted(stored)
    assert len(stored) == DAYS * 24 * 60 * len(INSTRUMENTS)


def test_retention_zero_keeps_every_tick(db: Path) -> None:
    counts = table_counts(db)
    result = compact(db, 0, now=NOW)
    assert result.cutoff is None
    assert result.ticks_deleted == 0
    assert result.ticks_total == TICKS
    assert table_counts(db) == counts
    stored = query(db, "SELECT instrument, ts FROM bars_1m")
    assert stored == sorted(stored)


def test_dry_run_changes_nothing(db: Path) -> None:
    before = digest(db)
    mtime = db.stat().st_mtime_ns
    result = compact(db, 3, dry_run=True, now=NOW)
    assert result.dry_run
    assert (
        result.ticks_deleted
        == TICKS - make_ticks(TICKS, NOW).filter(pl.col("ts") >= NOW - timedelta(days=3)).height
    )
    assert result.size_after == result.size_before == db.stat().st_size
    assert digest(db) == before
    assert db.stat().st_mtime_ns == mtime
    assert leftovers(db) == []


def test_a_leftover_copy_from_a_killed_run_is_removed(db: Path) -> None:
    temp = temp_path(db)
    temp.write_bytes(b"half a database")
    wal_path(temp).write_bytes(b"half a wal")
    result = compact(db, 3, now=NOW)
    assert result.rows["ticks"] == TICKS - result.ticks_deleted
    assert leftovers(db) == []


def test_a_copy_that_does_not_verify_leaves_the_old_file(
    db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = digest(db)
    copy_rows = retention._copy_rows

    def lose_the_events(cursor, source, target, key, cutoff):
        if key != ("main", "service_events"):
            copy_rows(cursor, source, target, key, cutoff)

    monkeypatch.setattr(retention, "_copy_rows", lose_the_events)
    with pytest.raises(SptraderError, match="service_events has 0 rows in the copy, expected 2"):
        compact(db, 3, now=NOW)
    assert digest(db) == before
    assert leftovers(db) == []


def test_a_failing_copy_leaves_the_old_file(db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before = digest(db)

    def broken(cursor, source, target, key, cutoff):
        cursor.execute("SELECT * FROM no_such_table")

    monkeypatch.setattr(retention, "_copy_rows", broken)
    with pytest.raises(SptraderError, match="is unchanged"):
        compact(db, 3, now=NOW)
    assert digest(db) == before
    assert leftovers(db) == []


_CRASH_WITH_WAL = """
import os, sys, duckdb
connection = duckdb.connect(sys.argv[1])
connection.execute("SET checkpoint_threshold = '10GB'")
connection.execute(
    "INSERT INTO service_events VALUES (TIMESTAMP '2026-11-20 11:00', 'crash', 'ERROR', 'x')"
)
os._exit(0)  # killed: the row is only in the WAL
"""


def test_a_wal_left_by_a_crash_is_kept_and_not_left_behind(db: Path) -> None:
    subprocess.run([sys.executable, "-c", _CRASH_WITH_WAL, str(db)], check=True)
    assert wal_path(db).exists()
    compact(db, 3, now=NOW)
    assert not wal_path(db).exists()
    assert query(db, "SELECT count(*) FROM service_events WHERE source = 'crash'") == [(1,)]
    assert leftovers(db) == []


def test_refuses_while_another_process_holds_the_store(db: Path) -> None:
    before = digest(db)
    with holding_database(db) as holder:
        with pytest.raises(StoreLockedError, match=str(holder.pid)):
            compact(db, 3, now=NOW)
        with pytest.raises(StoreLockedError):
            compact(db, 3, dry_run=True, now=NOW)
    assert digest(db) == before
    assert leftovers(db) == []


def test_refuses_while_another_compaction_runs(db: Path) -> None:
    before = digest(db)
    descriptor = os.open(lock_path(db), os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        with pytest.raises(StoreLockedError, match="being compacted"):
            compact(db, 3, now=NOW)
    finally:
        os.close(descriptor)
    assert digest(db) == before


def test_a_missing_store_is_not_created(home: Path) -> None:
    with pytest.raises(SptraderError, match="no database"):
        compact(home / "sptrader.duckdb", 3)
    assert not (home / "sptrader.duckdb").exists()


# --- the command --------------------------------------------------------------------------


@pytest.fixture
def cli(home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys):
    """``sptrader --home HOME --config CONFIG ARGS...`` in-process -> (code, out, err)."""
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "config.toml"
    config.write_text("[store]\nticks_retention_days = 2.5\n")

    def run(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        try:
            code = main(["--home", str(home), "--config", str(config), *args])
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else 1
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


@pytest.fixture
def live_db(home: Path) -> Path:
    """A smaller store whose ticks end now (the command uses the real clock)."""
    path = home / "sptrader.duckdb"
    build_store(path, datetime.now(UTC).replace(tzinfo=None), ticks=200_000)
    return path


def test_command_compacts_and_prints_one_summary(cli, live_db: Path) -> None:
    code, out, err = cli("db", "compact")
    assert code == 0, err
    assert err == ""
    lines = out.strip().splitlines()
    assert len(lines) == 1
    # 7.5 of 10 days are older than 2.5 days: 150,000 of 200,000 ticks.
    assert lines[0].startswith(f"compacted {live_db}: deleted 150,")
    assert "of 200,000 ticks older than" in lines[0]
    assert "store.ticks_retention_days = 2.5" in lines[0]
    assert " MB -> " in lines[0]
    assert lines[0].endswith(" s")
    assert 49_000 <= query(live_db, "SELECT count(*) FROM ticks")[0][0] <= 51_000


def test_command_dry_run_changes_nothing(cli, live_db: Path) -> None:
    before = digest(live_db)
    code, out, err = cli("db", "compact", "--dry-run")
    assert code == 0, err
    assert out.startswith("dry run, nothing changed: would delete 150,")
    assert f"{live_db} is " in out and out.strip().endswith(" MB")
    assert digest(live_db) == before
    assert query(live_db, "SELECT count(*) FROM ticks") == [(200_000,)]


def test_command_refuses_while_the_daemon_runs(cli, home: Path, live_db: Path) -> None:
    before = digest(live_db)
    paths.pid_path(home).write_text(f"{os.getpid()}\n")  # a live process
    for args in (["db", "compact"], ["db", "compact", "--dry-run"]):
        code, out, err = cli(*args)
        assert code == 3
        assert out == ""
        assert len(err.strip().splitlines()) == 1
        assert f"daemon (pid {os.getpid()})" in err and "sptrader stop" in err
    assert digest(live_db) == before


def test_command_refuses_a_locked_store(cli, live_db: Path) -> None:
    before = digest(live_db)
    with holding_database(live_db) as holder:
        code, out, err = cli("db", "compact")
    assert code == 3
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "locked" in lines[0] and str(holder.pid) in lines[0]
    assert digest(live_db) == before


# --- configuration ------------------------------------------------------------------------


def test_retention_defaults_to_keeping_ticks_forever() -> None:
    assert parse_config({}, "t").store.ticks_retention_days == 0.0
    assert (
        parse_config({"store": {"ticks_retention_days": 30}}, "t").store.ticks_retention_days == 30
    )


def test_a_negative_retention_is_rejected() -> None:
    with pytest.raises(ConfigError, match=r"store\.ticks_retention_days: must be 0 .* got -1"):
        parse_config({"store": {"ticks_retention_days": -1.0}}, "t")
    with pytest.raises(ConfigError, match=r"store\.ticks_retention_days: must be 0"):
        parse_config({"store": {"ticks_retention_days": float("nan")}}, "t")


def test_an_endless_retention_deletes_nothing(db: Path) -> None:
    result = compact(db, float("inf"), dry_run=True, now=NOW)
    assert result.ticks_deleted == 0
    assert result.ticks_total == TICKS


def test_a_negative_config_value_is_a_config_error_on_the_command_line(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "bad.toml"
    config.write_text("[store]\nticks_retention_days = -2\n")
    assert main(["--home", str(home), "--config", str(config), "db", "compact"]) == 2
    err = capsys.readouterr().err
    assert "store.ticks_retention_days" in err and str(config) in err


def test_a_collector_forgets_old_rows_but_each_instruments_newest_bar(tmp_path: Path) -> None:
    """A collector's store is its memory: old bars, ticks and coverage go; each
    instrument's newest bar stays, even one older than the cutoff (a feed down for a
    week heals its gap from there)."""
    from conftest import make_settings

    from sptrader.engine import Engine
    from sptrader.models import US_PER_MINUTE

    day = 1440 * US_PER_MINUTE
    now_us = int(datetime.now(UTC).timestamp() * 1e6) // US_PER_MINUTE * US_PER_MINUTE

    def bars(instrument: str, last_us: int, count: int) -> pl.DataFrame:
        ts = [last_us - i * US_PER_MINUTE for i in range(count)][::-1]
        return pl.DataFrame(
            {
                "instrument": [instrument] * count,
                "ts": pl.Series(ts).cast(pl.Datetime("us")),
                "open": 1.0,
                "high": 1.0,
                "low": 1.0,
                "close": 1.0,
                "volume": 1.0,
                "trades": 1,
            }
        )

    settings = make_settings(tmp_path, nats={"enabled": True}, store={"seed_days": 0.5})
    engine = Engine(settings, role="collector")
    store = engine.open_store()
    # Live: the last 3 days, minute by minute. Gone: stopped 5 days ago.
    store.upsert_bars(bars("SIM:EURUSD", now_us, 3 * 1440))
    store.upsert_bars(bars("SIM:GBPUSD", now_us - 5 * day, 10))
    store.add_coverage("SIM:EURUSD", "1m", "sim", now_us - 3 * day, now_us)
    store.add_coverage("SIM:GBPUSD", "1m", "sim", now_us - 6 * day, now_us - 5 * day)
    store.append_ticks(make_ticks(1000, datetime.now(UTC).replace(tzinfo=None), days=4))
    gap_starts = {name: engine._gap_start(name, now_us) for name in ("SIM:EURUSD", "SIM:GBPUSD")}
    engine.forget_old_heard()  # remembers max(seed_days, 2) days
    cursor = store.cursor()
    cutoff = datetime.now(UTC).replace(tzinfo=None) - timedelta(days=2, minutes=1)
    kept = dict(cursor.execute("SELECT instrument, count(*) FROM bars_1m GROUP BY 1").fetchall())
    assert kept["SIM:GBPUSD"] == 1  # its newest bar
    assert 2 * 1440 <= kept["SIM:EURUSD"] <= 2 * 1440 + 2
    oldest = cursor.execute("SELECT min(ts) FROM ticks").fetchone()[0]
    assert oldest >= cutoff
    assert [row[0] for row in cursor.execute("SELECT instrument FROM coverage").fetchall()] == [
        "SIM:EURUSD"
    ]
    # Where each gap fill starts is as it was.
    assert {name: engine._gap_start(name, now_us) for name in gap_starts} == gap_starts
    store.close()
