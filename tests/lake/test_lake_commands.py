"""The lake from the command line: ``sptrader export --format delta`` (idempotent,
local paths and file:// URIs), ``sptrader candles --source lake|auto``, and bad URIs
refused in one line with a non-zero exit."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from sptrader.lake.append import append_bars
from sptrader.lake.read import coverage, read_bars
from sptrader.schema import STORED_BAR_SCHEMA
from sptrader.store import Store

MINUTE_US = 60_000_000
DAY_US = 1440 * MINUTE_US
START_US = 1_767_225_600_000_000  # 2026-01-01T00:00Z


def bars(instrument: str, first_minute: int, count: int, close: float) -> pl.DataFrame:
    ts = START_US + (first_minute + np.arange(count, dtype=np.int64)) * MINUTE_US
    return pl.DataFrame(
        {
            "instrument": [instrument] * count,
            "ts": pl.Series(ts).cast(pl.Datetime("us")),
            "open": close,
            "high": close + 1,
            "low": close - 1,
            "close": close,
            "volume": 1.0,
            "trades": 2,
            "buy_volume": None,
            "sell_volume": None,
        }
    ).cast(STORED_BAR_SCHEMA)


def fill_store(home: Path, frame: pl.DataFrame) -> None:
    home.mkdir(parents=True, exist_ok=True)
    store = Store(home / "sptrader.duckdb")
    try:
        store.migrate()
        store.upsert_bars(frame)
    finally:
        store.close()


def with_lake(home: Path, lake: Path) -> None:
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text(f'[lake]\nuri = "{lake}"\n')


def one_line_error(result) -> str:
    assert result.code != 0, result
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sptrader: "), result.err
    assert "Traceback" not in result.err + result.out
    return lines[0]


def test_export_to_delta_twice_keeps_each_bar_once(run, cli_home: Path, tmp_path: Path) -> None:
    stored = pl.concat([bars("KRAKEN:BTC/USD", 0, 3 * 1440, 5.0), bars("SIM:EURUSD", 60, 10, 1.0)])
    fill_store(cli_home, stored)
    lake = tmp_path / "lake"
    args = ["export", "KRAKEN:BTC/USD", "SIM:EURUSD", "--from", "2026-01-01", "--to", "2026-01-04"]
    result = run(*args, "--format", "delta", "--out", str(lake))
    assert result.code == 0, result.err
    assert "exported 4,330 1m bars of 2 instruments" in result.out
    assert f"{lake}/bars_1m" in result.out
    again = run(*args, "--format", "delta", "--out", f"file://{lake}")
    assert again.code == 0, again.err
    held = {row.instrument: row.rows for row in coverage(str(lake))}
    assert held == {"KRAKEN:BTC/USD": 3 * 1440, "SIM:EURUSD": 10}
    read = read_bars(str(lake), "KRAKEN:BTC/USD", 0, 2**62)
    want = stored.filter(pl.col("instrument") == "KRAKEN:BTC/USD").drop("instrument")
    assert read.equals(want)


@pytest.mark.parametrize(
    ("out", "words"), [("gs://bucket/x", "unsupported scheme"), ("s3:///x", "names no bucket")]
)
def test_export_to_a_bad_uri_is_one_line(run, cli_home: Path, out: str, words: str) -> None:
    fill_store(cli_home, bars("SIM:EURUSD", 0, 10, 1.0))
    result = run("export", "SIM:EURUSD", "--from", "2026-01-01", "--format", "delta", "--out", out)
    assert words in one_line_error(result)


def test_export_delta_is_1m_only(run, cli_home: Path, tmp_path: Path) -> None:
    fill_store(cli_home, bars("SIM:EURUSD", 0, 10, 1.0))
    result = run(
        "export",
        "SIM:EURUSD",
        "--from",
        "2026-01-01",
        "--format",
        "delta",
        "--out",
        str(tmp_path / "l"),
        "--tf",
        "5m",
    )
    assert "1m bars" in one_line_error(result)


def _candles(run, *extra: str):
    return run(
        "candles",
        "SIM:EURUSD",
        "--from",
        "2026-01-01T00:00Z",
        "--to",
        "2026-01-01T00:20Z",
        "--format",
        "json",
        "--wait",
        "0",
        *extra,
    )


def test_candles_from_the_lake_and_auto(run, cli_home: Path, tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    with_lake(cli_home, lake)
    # The lake holds minutes 0..19 (close 1); the store 10..19 (close 2) only.
    append_bars(str(lake), bars("SIM:EURUSD", 0, 20, 1.0))
    fill_store(cli_home, bars("SIM:EURUSD", 10, 10, 2.0))

    from_lake = _candles(run, "--source", "lake")
    assert from_lake.code == 0, from_lake.err
    rows = json.loads(from_lake.out)
    assert [row["close"] for row in rows] == [1.0] * 20
    assert rows[0]["ts"] == "2026-01-01T00:00:00Z"

    auto = _candles(run, "--source", "auto")
    assert auto.code == 0, auto.err
    assert [row["close"] for row in json.loads(auto.out)] == [1.0] * 10 + [2.0] * 10

    store_only = _candles(run)  # the default: today's behaviour
    assert [row["close"] for row in json.loads(store_only.out)] == [2.0] * 10

    # A higher timeframe is rolled up from the merged minutes.
    five = _candles(run, "--source", "auto", "--tf", "5m")
    assert [(r["open"], r["close"], r["trades"]) for r in json.loads(five.out)] == [
        (1.0, 1.0, 10),
        (1.0, 1.0, 10),
        (2.0, 2.0, 10),
        (2.0, 2.0, 10),
    ]
    # --last N from the lake: its newest N.
    last = run("candles", "SIM:EURUSD", "--last", "3", "--format", "json", "--source", "lake")
    assert last.code == 0, last.err
    assert [row["ts"][11:16] for row in json.loads(last.out)] == ["00:17", "00:18", "00:19"]


def test_candles_source_lake_errors(run, cli_home: Path, tmp_path: Path) -> None:
    assert "[lake] uri" in one_line_error(_candles(run, "--source", "lake"))
    with_lake(cli_home, tmp_path / "nothing-here")
    assert "no bars table" in one_line_error(_candles(run, "--source", "lake"))
    (cli_home / "config.toml").write_text('[lake]\nuri = "gs://bucket/x"\n')
    assert "unsupported scheme" in one_line_error(_candles(run, "--source", "lake"))


def test_backtest_from_the_lake(run, cli_home: Path, tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    with_lake(cli_home, lake)
    minutes = 2 * 1440
    wave = 1.1 + 0.01 * np.sin(np.arange(minutes) / 50)
    frame = bars("SIM:EURUSD", 0, minutes, 1.0).with_columns(
        pl.Series("open", wave),
        pl.Series("close", wave),
        pl.Series("high", wave + 0.001),
        pl.Series("low", wave - 0.001),
    )
    append_bars(str(lake), frame)
    fill_store(cli_home, bars("SIM:EURUSD", 0, 1, 1.1).head(0))
    window = ["--from", "2026-01-01T06:00Z", "--to", "2026-01-02T12:00Z", "--format", "json"]
    result = run("backtest", "sma_cross", "SIM:EURUSD", *window, "--source", "lake")
    assert result.code == 0, result.err
    report = json.loads(result.out)
    assert report["coverage"]["gaps"] == 0, report["coverage"]
    assert report["coverage"]["coverage_pct"] == 100.0
    # A hole of the lake inside the window is a gap (refused without --allow-gaps).
    from deltalake import DeltaTable

    DeltaTable(str(lake / "bars_1m")).delete(
        "ts >= '2026-01-01 12:00:00' AND ts < '2026-01-01 14:00:00'"
    )
    holed = run("backtest", "sma_cross", "SIM:EURUSD", *window, "--source", "lake")
    assert holed.code != 0 and "minutes of open market time" in holed.err


def test_data_status_counts_the_lake(run, cli_home: Path, tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    with_lake(cli_home, lake)
    append_bars(str(lake), bars("SIM:EURUSD", 0, 1440 + 5, 1.0))
    append_bars(str(lake), bars("KRAKEN:BTC/USD", 0, 3, 1.0))
    fill_store(cli_home, bars("SIM:EURUSD", 0, 3, 1.0))
    table = run("data", "status", "SIM:EURUSD")
    assert table.code == 0, table.err
    assert f"lake {lake}:" in table.out
    assert "SIM:EURUSD: 1,445 bars on 2 days, 2026-01-01 00:00 → 2026-01-02 00:04" in table.out
    assert "KRAKEN" not in table.out  # only the instruments asked for
    listed = json.loads(run("data", "status", "--json").out)
    lake_of = {row["instrument"]: row.get("lake") for row in listed}
    assert lake_of["KRAKEN:BTC/USD"] == {
        "first": "2026-01-01T00:00:00Z",
        "last": "2026-01-01T00:02:00Z",
        "bars": 3,
        "days": 1,
    }
    assert lake_of["SIM:EURUSD"]["bars"] == 1445
