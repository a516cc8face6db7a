"""``sptrader export`` and ``sptrader import`` as a user runs them (in-process, on a
temporary home): exact round trips in Parquet and CSV, what DuckDB and polars see when
they read an export, deterministic re-exports, and imports that reject bad rows whole."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import polars as pl
import pytest
from conftest import CliResult

from sptrader.data import transfer
from sptrader.schema import ORDER_FLOW_COLUMNS
from sptrader.schema import STORED_BAR_COLUMNS as BAR_COLUMNS
from sptrader.schema import STORED_BAR_SCHEMA as BAR_SCHEMA
from sptrader.store import Store, queries

DAY_US = 86_400_000_000
MINUTE_US = 60_000_000
START_US = 1_767_225_600_000_000  # 2026-01-01T00:00Z
SLASHED = "KRAKEN:BTC/USD"
INSTRUMENTS = [SLASHED, "SIM:EURUSD", "OANDA:EUR_USD"]


@pytest.fixture
def home(cli_home: Path) -> Path:
    """The CLI's home (see conftest's cli_home: an empty working directory, no env)."""
    return cli_home


def _assert_user_error(result: CliResult, code: int = 2) -> str:
    """Exit ``code``, the last stderr line starts with ``sptrader:``, no traceback."""
    assert result.code == code, result
    lines = result.err.strip().splitlines()
    assert lines and lines[-1].startswith("sptrader: "), result.err
    assert "Traceback" not in result.err + result.out
    return lines[-1]


def _one_line_error(result: CliResult, code: int = 2) -> str:
    line = _assert_user_error(result, code)
    assert len(result.err.strip().splitlines()) == 1, result.err
    return line


# --- data -----------------------------------------------------------------------------------


def _bars(instrument: str, start_us: int, minutes: int, seed: int) -> pl.DataFrame:
    """Valid 1m bars whose floats use every bit of the mantissa (and some edge values);
    about a third have no order flow (NULL buy/sell volume)."""
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 1e-3, minutes)))
    open_ = np.roll(close, 1) * (1 + rng.normal(0, 1e-4, minutes))
    high = np.maximum(open_, close) * (1 + rng.random(minutes) * 1e-3)
    low = np.minimum(open_, close) * (1 - rng.random(minutes) * 1e-3)
    volume = rng.random(minutes) * 10.0 ** rng.integers(-8, 9, minutes)
    volume[:4] = [0.0, 5e-324, 0.1 + 0.2, 3277.2887290000003]
    trades = rng.integers(0, 10_000, minutes)
    trades[0] = 2**53 + 1
    buy = volume * rng.random(minutes)
    sell = (volume - buy) * rng.random(minutes)
    known = rng.random(minutes) < 2 / 3
    return pl.DataFrame(
        {
            "instrument": [instrument] * minutes,
            "ts": pl.Series(start_us + np.arange(minutes, dtype=np.int64) * MINUTE_US).cast(
                pl.Datetime("us")
            ),
            "open": open_,
            "high": high,
            "low": low,
            "close": close,
            "volume": volume,
            "trades": trades,
            "buy_volume": np.where(known, buy, np.nan),
            "sell_volume": np.where(known, sell, np.nan),
        },
        nan_to_null=True,
    ).cast(BAR_SCHEMA)


def _fill(home: Path, frames: list[pl.DataFrame]) -> None:
    store = Store(home / "sptrader.duckdb")
    try:
        store.migrate()
        store.upsert_bars(pl.concat(frames))
    finally:
        store.close()


def _stored(home: Path) -> pl.DataFrame:
    store = Store(home / "sptrader.duckdb", read_only=True)
    try:
        return (
            store.cursor()
            .sql(f"SELECT {', '.join(BAR_COLUMNS)} FROM bars_1m ORDER BY instrument, ts")
            .pl()
            .cast(BAR_SCHEMA)
        )
    finally:
        store.close()


def _assert_bits_equal(left: pl.DataFrame, right: pl.DataFrame) -> None:
    assert left.columns == right.columns
    assert left.height == right.height
    assert left["instrument"].to_list() == right["instrument"].to_list()
    assert left["ts"].to_list() == right["ts"].to_list()
    assert left["trades"].to_list() == right["trades"].to_list()
    for name in ("open", "high", "low", "close", "volume"):
        ours = left[name].to_numpy().view(np.int64)
        theirs = right[name].to_numpy().view(np.int64)
        assert (ours == theirs).all(), name
    for name in ORDER_FLOW_COLUMNS:  # nulls where they were, the other values bit for bit
        assert left[name].is_null().to_list() == right[name].is_null().to_list(), name
        ours = left[name].fill_null(0.0).to_numpy().view(np.int64)
        theirs = right[name].fill_null(0.0).to_numpy().view(np.int64)
        assert (ours == theirs).all(), name


@pytest.fixture
def filled(home: Path) -> pl.DataFrame:
    """Three instruments (one with ':' and '/') over 2.5 days from 2025-12-31T12:00Z."""
    start = START_US - DAY_US // 2
    frames = [_bars(name, start, 3600, seed) for seed, name in enumerate(INSTRUMENTS)]
    _fill(home, frames)
    return pl.concat(frames).sort("instrument", "ts")


def _export(run, out: Path, *extra: str, fmt: str = "parquet") -> CliResult:
    return run(
        "export",
        *INSTRUMENTS,
        "--from",
        "2025-12-31",
        "--to",
        "2026-01-03",
        "--format",
        fmt,
        "--out",
        str(out),
        *extra,
    )


def _digests(root: Path) -> dict[str, str]:
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


# --- export then import -----------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_export_then_import_round_trips_exactly(
    run, home: Path, tmp_path: Path, filled: pl.DataFrame, fmt: str
) -> None:
    out = tmp_path / "export"
    result = _export(run, out, fmt=fmt)
    assert result.code == 0, result
    assert result.out.strip() == (
        f"exported 10,800 1m bars of 3 instruments (2025-12-31T12:00:00Z .. 2026-01-02T23:59:00Z)"
        f" to {out}: 9 {fmt} files"
    )
    slashed = out / "instrument=KRAKEN%3ABTC%2FUSD"
    assert sorted(path.name for path in slashed.iterdir()) == [
        "date=2025-12-31",
        "date=2026-01-01",
        "date=2026-01-02",
    ]
    assert (slashed / "date=2026-01-01" / f"bars-1m.{fmt}").is_file()
    # Nothing else next to the export: the staging directory is gone.
    assert sorted(path.name for path in tmp_path.iterdir()) == ["cwd", "export", "home"]

    other_home = tmp_path / "other-home"
    imported = run("--home", str(other_home), "import", str(out), with_home=False)
    assert imported.code == 0, imported
    assert imported.out.strip() == (
        "imported 10,800 bars of 3 instruments (2025-12-31T12:00:00Z .. 2026-01-02T23:59:00Z)"
    )
    _assert_bits_equal(_stored(other_home), filled)


def test_import_of_one_exported_file_takes_its_directory_names(
    run, tmp_path: Path, filled: pl.DataFrame
) -> None:
    out = tmp_path / "export"
    assert _export(run, out, fmt="csv").code == 0
    one = out / "instrument=KRAKEN%3ABTC%2FUSD" / "date=2026-01-01" / "bars-1m.csv"
    other_home = tmp_path / "other-home"
    result = run("--home", str(other_home), "import", str(one), with_home=False)
    assert result.code == 0, result
    assert "imported 1,440 bars of 1 instrument (2026-01-01T00:00:00Z .. 2026-01-01T23:59:00Z)" in (
        result.out
    )
    expected = filled.filter(
        (pl.col("instrument") == SLASHED) & (pl.col("ts").dt.date() == pl.date(2026, 1, 1))
    )
    _assert_bits_equal(_stored(other_home), expected)


def test_duckdb_and_polars_read_the_export_with_hive_partitioning(
    run, tmp_path: Path, filled: pl.DataFrame
) -> None:
    out = tmp_path / "export"
    assert _export(run, out).code == 0
    pattern = str(out / "**" / "*.parquet")

    with duckdb.connect() as connection:
        relation = connection.sql(
            f"SELECT * FROM read_parquet('{pattern}', hive_partitioning=true)"
        )
        types = dict(zip(relation.columns, map(str, relation.types), strict=True))
        assert types == {
            "ts": "TIMESTAMP",
            "open": "DOUBLE",
            "high": "DOUBLE",
            "low": "DOUBLE",
            "close": "DOUBLE",
            "volume": "DOUBLE",
            "trades": "BIGINT",
            "buy_volume": "DOUBLE",
            "sell_volume": "DOUBLE",
            "instrument": "VARCHAR",
            "date": "DATE",
        }
        seen = connection.sql(
            f"SELECT {', '.join(BAR_COLUMNS)}, date = ts::DATE AS same_day"
            f" FROM read_parquet('{pattern}', hive_partitioning=true) ORDER BY instrument, ts"
        ).pl()
    assert seen["same_day"].all()
    _assert_bits_equal(seen.drop("same_day").cast(BAR_SCHEMA), filled)

    scanned = pl.scan_parquet(pattern, hive_partitioning=True).collect()
    assert scanned.schema["instrument"] == pl.String
    assert scanned.schema["date"] == pl.Date
    assert scanned.schema["ts"] == pl.Datetime("us")
    assert sorted(scanned["instrument"].unique().to_list()) == sorted(INSTRUMENTS)
    _assert_bits_equal(scanned.select(BAR_COLUMNS).sort("instrument", "ts"), filled)


def test_duckdb_reads_the_csv_export_with_hive_partitioning(
    run, tmp_path: Path, filled: pl.DataFrame
) -> None:
    out = tmp_path / "export"
    assert _export(run, out, fmt="csv").code == 0
    header = (out / "instrument=SIM%3AEURUSD" / "date=2026-01-01" / "bars-1m.csv").read_text()
    assert header.splitlines()[0] == "ts,open,high,low,close,volume,trades,buy_volume,sell_volume"
    assert header.splitlines()[1].startswith("2026-01-01T00:00:00Z,")
    with duckdb.connect() as connection:
        seen = connection.sql(
            f"SELECT instrument, count(*) AS bars"
            f" FROM read_csv('{out}/**/*.csv', hive_partitioning=true) GROUP BY 1 ORDER BY 1"
        ).fetchall()
    assert seen == sorted((name, 3600) for name in INSTRUMENTS)


def test_partition_values_are_escaped_as_spark_does() -> None:
    assert transfer.escape_partition_value("KRAKEN:BTC/USD") == "KRAKEN%3ABTC%2FUSD"
    assert transfer.escape_partition_value("a=b%c d#") == "a%3Db%25c d%23"
    for value in ("KRAKEN:BTC/USD", "a=b%c d#?*", "OANDA:EUR_USD", "X:Y.Z-1"):
        escaped = transfer.escape_partition_value(value)
        assert "/" not in escaped and "=" not in escaped
        assert transfer.unescape_partition_value(escaped) == value


# --- re-exports -------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_a_re_export_writes_identical_files(
    run, home: Path, tmp_path: Path, filled: pl.DataFrame, fmt: str
) -> None:
    out = tmp_path / "export"
    assert _export(run, out, fmt=fmt).code == 0
    first = _digests(out)
    assert len(first) == 9
    assert _export(run, out, fmt=fmt).code == 0
    assert _digests(out) == first
    # And into a fresh directory.
    again = tmp_path / "again"
    assert _export(run, again, fmt=fmt).code == 0
    assert _digests(again) == first


def test_a_re_export_replaces_changed_days_and_keeps_the_others(
    run, home: Path, tmp_path: Path, filled: pl.DataFrame
) -> None:
    out = tmp_path / "export"
    assert _export(run, out).code == 0
    before = _digests(out)
    changed = filled.filter(pl.col("ts") == pl.datetime(2026, 1, 1, 5, 0)).with_columns(
        pl.col("volume") + 1
    )
    _fill(home, [changed])
    result = run(
        "export", "SIM:EURUSD", "--from", "2026-01-01", "--to", "2026-01-02", "--out", str(out)
    )
    assert result.code == 0, result
    after = _digests(out)
    assert after.keys() == before.keys()
    differ = [name for name in after if after[name] != before[name]]
    assert differ == ["instrument=SIM%3AEURUSD/date=2026-01-01/bars-1m.parquet"]


def test_a_day_without_bars_now_is_removed_from_the_export(
    run, home: Path, tmp_path: Path, filled: pl.DataFrame
) -> None:
    out = tmp_path / "export"
    assert _export(run, out).code == 0
    # Another home holding only 2026-01-01 of SIM:EURUSD exports the same range.
    other = tmp_path / "other-home"
    _fill(
        other,
        [filled.filter((pl.col("instrument") == "SIM:EURUSD") & (pl.col("ts").dt.day() == 1))],
    )
    result = run(
        "--home",
        str(other),
        "export",
        "SIM:EURUSD",
        "--from",
        "2025-12-31",
        "--to",
        "2026-01-03",
        "--out",
        str(out),
        with_home=False,
    )
    assert result.code == 0, result
    assert "2 stale day directories removed" in result.out
    days = sorted(path.name for path in (out / "instrument=SIM%3AEURUSD").iterdir())
    assert days == ["date=2026-01-01"]
    assert len(list((out / "instrument=KRAKEN%3ABTC%2FUSD").iterdir())) == 3


def test_an_export_refuses_to_mix_timeframes_or_formats(
    run, tmp_path: Path, filled: pl.DataFrame
) -> None:
    out = tmp_path / "export"
    assert _export(run, out).code == 0
    before = _digests(out)
    for extra, fmt in ((["--tf", "1h"], "parquet"), ([], "csv")):
        result = _export(run, out, *extra, fmt=fmt)
        line = _one_line_error(result, 2)
        assert "holds bars-1m.parquet" in line and "another --out" in line
    # Another instrument into the 1m parquet directory, hourly: refused as well.
    _fill(tmp_path / "home", [_bars("SIM:GBPUSD", START_US, 120, 9)])
    result = run("export", "SIM:GBPUSD", "--from", "2026-01-01", "--tf", "1h", "--out", str(out))
    assert "holds bars-1m.parquet, not bars-1h.parquet" in _one_line_error(result, 2)
    assert _digests(out) == before
    assert sorted(path.name for path in tmp_path.iterdir()) == ["cwd", "export", "home"]


def test_a_failed_export_leaves_the_directory_as_it_was(
    run, tmp_path: Path, filled: pl.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "export"
    assert _export(run, out, "--to", "2026-01-01").code == 0
    before = _digests(out)
    written = []
    real_write = transfer._write_file

    def failing_write(frame: pl.DataFrame, path: Path, output_format: str) -> None:
        if len(written) == 5:
            raise OSError(28, "No space left on device")
        written.append(path)
        real_write(frame, path, output_format)

    monkeypatch.setattr(transfer, "_write_file", failing_write)
    try:
        result = _export(run, out)
    except OSError as error:  # the CLI let it through
        assert "No space left" in str(error)
    else:  # the CLI said it in one line
        assert result.code == 1 and "No space left" in result.err, result
    assert _digests(out) == before
    assert sorted(path.name for path in tmp_path.iterdir()) == ["cwd", "export", "home"]


def test_an_hourly_export_holds_the_rolled_up_bars(
    run, home: Path, tmp_path: Path, filled: pl.DataFrame
) -> None:
    out = tmp_path / "hourly"
    result = _export(run, out, "--tf", "1h")
    assert result.code == 0, result
    assert "exported 180 1h bars of 3 instruments" in result.out
    exported = (
        pl.scan_parquet(str(out / "**" / "*.parquet"), hive_partitioning=True)
        .collect()
        .sort("instrument", "ts")
    )
    store = Store(home / "sptrader.duckdb", read_only=True)
    try:
        expected = pl.concat(
            [
                queries.bars_between(
                    store, name, "1h", START_US - DAY_US, START_US + 2 * DAY_US
                ).with_columns(pl.lit(name).alias("instrument"))
                for name in sorted(INSTRUMENTS)
            ]
        )
    finally:
        store.close()
    _assert_bits_equal(exported.select(BAR_COLUMNS), expected.select(BAR_COLUMNS).cast(BAR_SCHEMA))
    assert (out / "instrument=SIM%3AEURUSD" / "date=2026-01-01" / "bars-1h.parquet").is_file()


@pytest.mark.parametrize(
    ("args", "mentions"),
    [
        (["--from", "2026-01-01T05:00Z", "--to", "2026-01-02"], "give a date"),
        (["--from", "2026-01-02", "--to", "2026-01-01"], "--to must be later"),
        (["--from", "yesterday", "--to", "2026-01-01"], "bad --from date"),
        (["--from", "2026-01-01", "--tf", "7x"], "unknown timeframe"),
    ],
)
def test_export_mistakes_are_one_line(
    run, tmp_path: Path, filled: pl.DataFrame, args: list[str], mentions: str
) -> None:
    result = run("export", "SIM:EURUSD", "--out", str(tmp_path / "x"), *args)
    assert mentions in _one_line_error(result, 2)
    assert not (tmp_path / "x").exists()


def test_export_without_bars_or_database(run, tmp_path: Path) -> None:
    args = ["export", "SIM:EURUSD", "--from", "2026-01-01", "--out", str(tmp_path / "x")]
    assert "no database" in _one_line_error(run(*args), 1)
    _fill(tmp_path / "home", [_bars("SIM:GBPUSD", START_US, 10, 0)])
    line = _one_line_error(run(*args), 1)
    assert "no 1m bars of SIM:EURUSD" in line and "nothing written" in line
    assert not (tmp_path / "x").exists()


# --- import checks ----------------------------------------------------------------------------

HEADER = "ts,open,high,low,close,volume,trades,instrument"
GOOD = "2026-01-01T00:00:00Z,1.0,1.5,0.5,1.2,10,3,SIM:EURUSD"


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def test_import_with_bad_rows_writes_nothing_and_names_the_lines(
    run, home: Path, tmp_path: Path
) -> None:
    _fill(home, [_bars("SIM:EURUSD", START_US - DAY_US, 5, 0)])
    before = _stored(home)
    lines = [
        HEADER,  # line 1
        GOOD,  # 2
        "2026-01-01T00:01:00Z,1.0,1.5,0.5,1.2,10,3,SIM:EURUSD",  # 3 good
        "garbage,1.0,1.5,0.5,1.2,10,3,SIM:EURUSD",  # 4
        "2026-01-01T00:02:30Z,1.0,1.5,0.5,1.2,10,3,SIM:EURUSD",  # 5 off the minute
        "2026-01-01T00:03:00Z,abc,1.5,0.5,1.2,10,3,SIM:EURUSD",  # 6 not a number
        "2026-01-01T00:04:00Z,nan,1.5,0.5,1.2,10,3,SIM:EURUSD",  # 7 not finite
        "2026-01-01T00:05:00Z,1.0,1.5,1.1,1.2,10,3,SIM:EURUSD",  # 8 low > open
        "2026-01-01T00:06:00Z,1.0,1.1,0.5,1.2,10,3,SIM:EURUSD",  # 9 high < close
        "2026-01-01T00:07:00Z,1.0,1.5,0.5,1.2,-1,3,SIM:EURUSD",  # 10 volume < 0
        "2026-01-01T00:08:00Z,1.0,1.5,0.5,1.2,10,3,eurusd",  # 11 bad instrument
        "2026-01-01T00:09:00Z,1.0,1.5,0.5,,10,3,SIM:EURUSD",  # 12 close missing
        "2026-01-01T00:10:00Z,1.0,1.5,0.5,1.2,10,2.5,SIM:EURUSD",  # 13 trades not whole
        "2026-01-01T00:00:00Z,1.0,1.5,0.5,1.3,10,3,SIM:EURUSD",  # 14 conflicts with 2
        "2026-01-01T00:01:00Z,1.0,1.5,0.5,1.2,10,3,SIM:EURUSD",  # 15 identical to 3: fine
        "2026-01-01T00:11:00Z,1.0,inf,0.5,1.2,10,3,SIM:EURUSD",  # 16 not finite
    ]
    path = _write(tmp_path / "bars.csv", lines)
    result = run("import", str(path))
    last = _assert_user_error(result, 2)
    assert last == f"sptrader: 12 bad rows in {path}; nothing imported"
    listed = result.err.strip().splitlines()[:-1]
    assert [line.split(":")[0] for line in listed] == [
        f"line {number}" for number in (4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 16)
    ]
    assert "ts 'garbage' is not ISO 8601" in listed[0]
    assert "not on a minute boundary" in listed[1]
    assert "open 'abc' is not a number" in listed[2]
    assert "open" in listed[3] and "not finite" in listed[3]
    assert "low 1.1 > min(open, close) 1.0" in listed[4]
    assert "high 1.1 < max(open, close) 1.2" in listed[5]
    assert "volume -1" in listed[6] and "< 0" in listed[6]
    assert "instrument 'eurusd' is not FEED:SYMBOL" in listed[7]
    assert "close missing" in listed[8]
    assert "trades '2.5' is not a whole number" in listed[9]
    assert "same instrument and ts as line 2 but different values" in listed[10]
    assert "high" in listed[11] and "not finite" in listed[11]
    _assert_bits_equal(_stored(home), before)


def test_import_takes_order_flow_when_the_file_has_it(run, home: Path, tmp_path: Path) -> None:
    """buy_volume/sell_volume are optional (files from before them, or other tools);
    an empty field is unknown; a value must be a finite number >= 0 within the volume."""
    old = _write(tmp_path / "old.csv", [HEADER, GOOD])
    assert run("import", str(old)).code == 0, "an export from before order flow"
    flow_header = HEADER + ",buy_volume,sell_volume"
    lines = [
        flow_header,
        "2026-01-01T00:01:00Z,1.0,1.5,0.5,1.2,10,3,SIM:EURUSD,6,4",
        "2026-01-01T00:02:00Z,1.0,1.5,0.5,1.2,10,3,SIM:EURUSD,,",  # unknown
        "2026-01-01T00:03:00Z,1.0,1.5,0.5,1.2,10,3,SIM:EURUSD, 2.5 ,0",
    ]
    result = run("import", str(_write(tmp_path / "flow.csv", lines)))
    assert result.code == 0, result
    stored = _stored(home)
    assert stored.select("buy_volume", "sell_volume").rows() == [
        (None, None),
        (6.0, 4.0),
        (None, None),
        (2.5, 0.0),
    ]

    bad = [
        flow_header,
        "2026-01-01T00:04:00Z,1.0,1.5,0.5,1.2,10,3,SIM:EURUSD,-1,4",  # line 2
        "2026-01-01T00:05:00Z,1.0,1.5,0.5,1.2,10,3,SIM:EURUSD,lots,4",  # 3
        "2026-01-01T00:06:00Z,1.0,1.5,0.5,1.2,10,3,SIM:EURUSD,7,4",  # 4: 11 > 10
        "2026-01-01T00:07:00Z,1.0,1.5,0.5,1.2,10,3,SIM:EURUSD,inf,",  # 5
        "2026-01-01T00:01:00Z,1.0,1.5,0.5,1.2,10,3,SIM:EURUSD,,",  # 6: ok alone
        "2026-01-01T00:01:00Z,1.0,1.5,0.5,1.2,10,3,SIM:EURUSD,5,5",  # 7: conflicts with 6
    ]
    result = run("import", str(_write(tmp_path / "bad.csv", bad)))
    _assert_user_error(result, 2)
    listed = result.err.strip().splitlines()[:-1]
    assert [line.split(":")[0] for line in listed] == [f"line {n}" for n in (2, 3, 4, 5, 7)]
    assert "buy_volume -1.0 < 0" in listed[0]
    assert "buy_volume 'lots' is not a number" in listed[1]
    assert "buy_volume + sell_volume 11.0 > volume 10.0" in listed[2]
    assert "buy_volume inf is not finite" in listed[3]
    assert "same instrument and ts as line 6 but different values" in listed[4]
    assert _stored(home).equals(stored)


def test_parquet_without_or_with_empty_order_flow_imports(run, home: Path, tmp_path: Path) -> None:
    bars = _bars("SIM:EURUSD", START_US, 20, 5)
    bars.drop(ORDER_FLOW_COLUMNS).write_parquet(tmp_path / "bare.parquet")
    assert run("import", str(tmp_path / "bare.parquet")).code == 0
    assert _stored(home)["buy_volume"].null_count() == 20
    nulls = bars.with_columns(pl.lit(None).alias(name) for name in ORDER_FLOW_COLUMNS)
    assert nulls.schema["buy_volume"] == pl.Null
    nulls.write_parquet(tmp_path / "nulls.parquet")
    assert run("import", str(tmp_path / "nulls.parquet")).code == 0
    bars.write_parquet(tmp_path / "flow.parquet")
    assert run("import", str(tmp_path / "flow.parquet")).code == 0
    _assert_bits_equal(_stored(home), bars)


def test_import_lists_twenty_bad_rows_then_a_count(run, home: Path, tmp_path: Path) -> None:
    lines = [HEADER] + [
        f"2026-01-01T00:{minute:02d}:00Z,1.0,1.5,0.5,1.2,-{minute + 1},3,SIM:EURUSD"
        for minute in range(25)
    ]
    result = run("import", str(_write(tmp_path / "bars.csv", lines)))
    last = _assert_user_error(result, 2)
    assert "25 bad rows" in last
    listed = result.err.strip().splitlines()[:-1]
    assert len(listed) == 21
    assert listed[0].startswith("line 2: volume -1")
    assert listed[19].startswith("line 21: ")
    assert listed[20] == "... and 5 more"
    assert not (home / "sptrader.duckdb").exists() or _stored(home).is_empty()


def test_parquet_bad_rows_are_named_by_row_index(run, home: Path, tmp_path: Path) -> None:
    frame = _bars("SIM:EURUSD", START_US, 6, 1).drop("instrument")
    frame = frame.with_columns(
        pl.when(pl.int_range(pl.len()) == 2).then(-5.0).otherwise(pl.col("volume")).alias("volume"),
        pl.when(pl.int_range(pl.len()) == 4)
        .then(pl.col("ts") + pl.duration(seconds=1))
        .otherwise(pl.col("ts"))
        .alias("ts"),
    )
    path = tmp_path / "bars.parquet"
    frame.write_parquet(path)
    result = run("import", str(path), "--instrument", "sim:eurusd")
    assert _assert_user_error(result, 2).endswith(
        "2 bad rows in " + str(path) + "; nothing imported"
    )
    listed = result.err.strip().splitlines()[:-1]
    assert listed[0].startswith("row index 2: volume -5.0 < 0")
    assert listed[1].startswith("row index 4: ts ") and "minute boundary" in listed[1]


@pytest.mark.parametrize(
    ("header", "mentions"),
    [
        ("ts,open,high,low,close,instrument", "missing column volume"),
        ("ts,open,close,instrument", "missing columns high, low, volume"),
        ("ts,open,high,low,close,volume,instrument,vwap,note", "unknown columns 'vwap', 'note'"),
        ("time,open,high,low,close,volume,instrument", "missing column ts; unknown column 'time'"),
    ],
)
def test_import_column_mistakes_are_one_line(
    run, tmp_path: Path, header: str, mentions: str
) -> None:
    width = len(header.split(","))
    path = _write(tmp_path / "bars.csv", [header, ",".join(["1"] * width)])
    line = _one_line_error(run("import", str(path)), 2)
    assert str(path) in line and mentions in line


def test_import_without_an_instrument_asks_for_one(run, tmp_path: Path) -> None:
    path = _write(tmp_path / "bars.csv", ["ts,open,high,low,close,volume", "2026-01-01,1,1,1,1,1"])
    line = _one_line_error(run("import", str(path)), 2)
    assert line == f"sptrader: {path} has no instrument column: give --instrument NAME"
    assert run("import", str(path), "--instrument", SLASHED).code == 0


def test_import_accepts_epochs_offsets_a_date_column_and_identical_repeats(
    run, home: Path, tmp_path: Path
) -> None:
    lines = [
        "TS,Open,High,Low,Close,Volume,date",
        "1767225600,1,2,0.5,1.5,10,2026-01-01",  # epoch seconds
        "1767225660000,1,2,0.5,1.5,11,2026-01-01",  # milliseconds
        "1767225720000000,1,2,0.5,1.5,12,2026-01-01",  # microseconds
        "2026-01-01T01:03:00+01:00,1,2,0.5,1.5,13,2026-01-01",  # offset
        "2026-01-01 00:04,1,2,0.5,1.5,14,2026-01-01",  # no seconds, no zone
        "2026-01-01 00:04:00.000,1,2,0.5,1.5,14,2026-01-01",  # the same bar again
    ]
    result = run("import", str(_write(tmp_path / "x.csv", lines)), "--instrument", "OANDA:EUR_USD")
    assert result.code == 0, result
    assert result.out.strip() == (
        "imported 5 bars of 1 instrument (2026-01-01T00:00:00Z .. 2026-01-01T00:04:00Z);"
        " 1 repeated rows kept once"
    )
    stored = _stored(home)
    assert stored["volume"].to_list() == [10.0, 11.0, 12.0, 13.0, 14.0]
    assert stored["trades"].to_list() == [0] * 5
    assert set(stored["instrument"]) == {"OANDA:EUR_USD"}

    wrong_day = ["ts,open,high,low,close,volume,date", "2026-01-02T00:00Z,1,2,0.5,1.5,1,2026-01-01"]
    bad = run("import", str(_write(tmp_path / "y.csv", wrong_day)), "--instrument", "SIM:X")
    assert "line 2: ts is on 2026-01-02, not on its date 2026-01-01" in bad.err


def test_import_of_parquet_with_zoned_millisecond_times_and_float_trades(
    run, home: Path, tmp_path: Path
) -> None:
    bars = _bars(SLASHED, START_US, 30, 4).with_columns(pl.col("trades") % 10_000)
    zoned = bars.with_columns(
        pl.col("ts")
        .dt.cast_time_unit("ms")
        .dt.replace_time_zone("UTC")
        .dt.convert_time_zone("America/New_York"),
        pl.col("trades").cast(pl.Float64),
        pl.col("instrument").str.to_lowercase(),
    )
    path = tmp_path / "zoned.parquet"
    zoned.write_parquet(path)
    result = run("import", str(path))
    assert result.code == 0, result
    _assert_bits_equal(_stored(home), bars)

    fractional = zoned.with_columns(pl.col("trades") + 0.5)
    fractional.write_parquet(path)
    result = run("import", str(path))
    assert "row index 0: trades '" in result.err and "is not a whole number" in result.err


def test_import_refuses_to_merge_instruments_into_one(
    run, tmp_path: Path, filled: pl.DataFrame
) -> None:
    path = tmp_path / "all.parquet"
    filled.write_parquet(path)
    line = _one_line_error(run("import", str(path), "--instrument", "SIM:ONE"), 2)
    assert "holds 3 instruments" in line and "--instrument" in line


def test_import_records_coverage(run, home: Path, tmp_path: Path) -> None:
    if not hasattr(Store, "add_coverage"):
        pytest.skip("this store keeps no coverage")
    path = tmp_path / "bars.parquet"
    _bars(SLASHED, START_US, 90, 3).write_parquet(path)
    assert run("import", str(path)).code == 0
    store = Store(home / "sptrader.duckdb", read_only=True)
    try:
        rows = (
            store.cursor()
            .execute(
                "SELECT instrument, timeframe, epoch_us(start_ts), epoch_us(end_ts)"
                " FROM coverage WHERE source = 'import'"
            )
            .fetchall()
        )
    finally:
        store.close()
    assert rows == [(SLASHED, "1m", START_US, START_US + 90 * MINUTE_US)]


def test_import_mistakes(run, tmp_path: Path) -> None:
    assert "no such file" in _one_line_error(run("import", str(tmp_path / "nope.csv")), 2)
    odd = _write(tmp_path / "bars.txt", [HEADER, GOOD])
    assert "--format" in _one_line_error(run("import", str(odd)), 2)
    assert run("import", str(odd), "--format", "csv").code == 0
    empty = _write(tmp_path / "empty.csv", [HEADER])
    assert "no rows" in _one_line_error(run("import", str(empty)), 2)
    assert "bad instrument" in _one_line_error(
        run("import", str(odd), "--format", "csv", "--instrument", "nope"), 2
    )


# --- with a daemon running --------------------------------------------------------------------

DAEMON_CONFIG = """\
watchlist = ["SIM:EURUSD"]

[store]
seed_days = 0.05
flush_interval_ms = 50

[feeds.sim]
tick_rate = 5.0
"""


@pytest.fixture
def daemon_home(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """A home with a running daemon (stopped, or killed, on the way out)."""
    home = tmp_path / "daemon-home"
    home.mkdir()
    config = home / "config.toml"
    config.write_text(DAEMON_CONFIG)
    started = _sptrader(home, config, "start")
    assert started.returncode == 0, started
    match = re.search(r"pid (\d+)", started.stdout)
    assert match, started
    pid = int(match.group(1))
    try:
        yield home, config
    finally:
        _sptrader(home, config, "stop")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.05)
        if _alive(pid):
            os.kill(pid, 9)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def _sptrader(home: Path, config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("SPTRADER_")}
    return subprocess.run(
        [sys.executable, "-m", "sptrader.cli", "--home", str(home), "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=home,
    )


def test_export_reads_through_a_running_daemon_and_import_refuses(
    daemon_home: tuple[Path, Path], tmp_path: Path
) -> None:
    home, config = daemon_home
    out = tmp_path / "export"
    # From the day before: the daemon seeded the last 72 minutes (seed_days 0.05), which
    # reach into yesterday between 00:00 and 01:12 UTC (`--from today` got < 60 bars then).
    day_before = time.strftime("%Y-%m-%d", time.gmtime(time.time() - 86_400))
    forming = datetime.fromtimestamp(time.time() // 60 * 60, UTC).replace(tzinfo=None)
    result = _sptrader(
        home, config, "export", "SIM:EURUSD", "--from", day_before, "--out", str(out)
    )
    assert result.returncode == 0, result
    assert re.match(r"exported \d+ 1m bars of 1 instrument", result.stdout), result
    exported = pl.scan_parquet(str(out / "**" / "*.parquet"), hive_partitioning=True).collect()
    assert exported.height >= 60

    csv_path = _write(tmp_path / "bars.csv", [HEADER, GOOD])
    refused = _sptrader(home, config, "import", str(csv_path))
    assert refused.returncode == 3, refused
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and "the daemon" in lines[0] and "sptrader stop" in lines[0], refused

    _sptrader(home, config, "stop")
    # The minute forming while the export ran goes on trading after it: compare the
    # bars that were closed by then.
    closed = exported.filter(pl.col("ts") < forming)
    stored = _stored(home).filter(pl.col("ts").is_in(closed["ts"].implode()))
    assert stored.height == closed.height >= 59
    _assert_bits_equal(stored, closed.select(BAR_COLUMNS).sort("instrument", "ts"))


def test_export_of_a_store_an_older_sptrader_wrote_migrates_it_first(
    cli_home: Path, run: Callable[..., Any], tmp_path: Path
) -> None:
    """A store at migration 005 (before order flow): export read it read-only and failed
    with a traceback on the missing buy_volume column."""
    import duckdb

    from sptrader.store.database import available_migrations

    cli_home.mkdir(parents=True, exist_ok=True)
    path = cli_home / "sptrader.duckdb"
    connection = duckdb.connect(str(path))
    connection.execute(
        "CREATE TABLE schema_version (version INTEGER PRIMARY KEY, name VARCHAR NOT NULL,"
        " applied_at TIMESTAMP NOT NULL DEFAULT current_localtimestamp())"
    )
    for version, name, sql in available_migrations():
        if version <= 5:
            connection.execute(sql)
            connection.execute(
                "INSERT INTO schema_version (version, name) VALUES (?, ?)", [version, name]
            )
    connection.execute(
        "INSERT INTO bars_1m VALUES ('SIM:EURUSD', TIMESTAMP '2026-11-20 14:00:00', 1.1, 1.2, 1.0, 1.15, 5, 3)"
    )
    connection.close()
    result = run(
        "export",
        "SIM:EURUSD",
        "--from",
        "2026-11-20",
        "--to",
        "2026-11-21",
        "--out",
        str(tmp_path / "out"),
    )
    assert result.code == 0, result.err
    assert "Traceback" not in result.err
    exported = pl.read_parquet(next((tmp_path / "out").rglob("*.parquet")))
    assert exported["close"].to_list() == [1.15]
    assert exported["buy_volume"].to_list() == [None]
