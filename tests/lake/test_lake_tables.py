"""The lake's tables on real deltalake in temporary directories: appends are one commit
each and idempotent (any sequence of overlapping ranges reads back as their union, the
last version of each bar winning), a writer killed mid-append leaves a readable table,
reads give the store's layout, coverage comes from the log, compaction keeps the rows,
and URIs and S3 options are built from [lake] (no S3 is contacted)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from deltalake import DeltaTable
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sptrader.config import LakeConfig
from sptrader.errors import SptraderError, UsageError
from sptrader.lake.append import append_bars, append_ticks
from sptrader.lake.location import lake_of, s3_options
from sptrader.lake.maintain import compact
from sptrader.lake.read import coverage, read_bars
from sptrader.schema import CANDLE_COLUMNS, STORED_BAR_SCHEMA

MINUTE_US = 60_000_000
DAY_US = 1440 * MINUTE_US
START_US = 1_767_225_600_000_000  # 2026-01-01T00:00Z


def bars(instrument: str, first_minute: int, count: int, version: float) -> pl.DataFrame:
    """``count`` 1m bars from minute ``first_minute`` after START_US; ``close`` carries
    ``version`` so the winner of a re-append can be told."""
    ts = START_US + (first_minute + np.arange(count, dtype=np.int64)) * MINUTE_US
    return pl.DataFrame(
        {
            "instrument": [instrument] * count,
            "ts": pl.Series(ts).cast(pl.Datetime("us")),
            "open": 1.0,
            "high": 2.0 + version,
            "low": 0.5,
            "close": version,
            "volume": 3.0,
            "trades": pl.Series(np.arange(count, dtype=np.int64)),
            "buy_volume": None,
            "sell_volume": 1.0,
        }
    ).cast(STORED_BAR_SCHEMA)


def all_bars(lake: Path, instrument: str) -> pl.DataFrame:
    return read_bars(str(lake), instrument, 0, 2**62)


def test_a_round_trip_reads_the_store_layout_and_a_range(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    written = pl.concat([bars("KRAKEN:BTC/USD", 0, 3000, 1.0), bars("SIM:EURUSD", 0, 10, 2.0)])
    assert append_bars(str(lake), written) == 3010
    read = all_bars(lake, "KRAKEN:BTC/USD")
    assert read.columns == CANDLE_COLUMNS
    assert read.equals(written.filter(pl.col("instrument") == "KRAKEN:BTC/USD").drop("instrument"))
    # [start, end): across a day boundary, the end excluded.
    window = read_bars(
        str(lake),
        "KRAKEN:BTC/USD",
        START_US + DAY_US - 5 * MINUTE_US,
        START_US + DAY_US + 5 * MINUTE_US,
    )
    assert window.height == 10
    assert window["ts"].dt.epoch("us").item(0) == START_US + DAY_US - 5 * MINUTE_US
    # Partitioned by instrument and date, as the layout says.
    table = DeltaTable(str(lake / "bars_1m"))
    assert table.metadata().partition_columns == ["instrument", "date"]
    # polars reads it as a Delta table, with the exact instrument names.
    assert sorted(pl.read_delta(str(lake / "bars_1m"))["instrument"].unique()) == [
        "KRAKEN:BTC/USD",
        "SIM:EURUSD",
    ]


def test_coverage_per_instrument(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    append_bars(str(lake), bars("SIM:EURUSD", 0, 2 * 1440 + 1, 1.0))
    append_bars(str(lake), bars("SIM:GBPUSD", 100, 5, 1.0))
    append_bars(str(lake), bars("SIM:EURUSD", 0, 10, 2.0))  # a re-append counts once
    held = {row.instrument: row for row in coverage(f"file://{lake}")}
    assert set(held) == {"SIM:EURUSD", "SIM:GBPUSD"}
    eurusd = held["SIM:EURUSD"]
    assert (eurusd.first_us, eurusd.last_us) == (START_US, START_US + 2 * DAY_US)
    assert (eurusd.rows, eurusd.days) == (2 * 1440 + 1, 3)
    assert (held["SIM:GBPUSD"].rows, held["SIM:GBPUSD"].days) == (5, 1)
    assert coverage(str(tmp_path / "empty")) == []


@settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["SIM:EURUSD", "KRAKEN:BTC/USD"]),
            st.integers(0, 1440 + 30),  # first minute: ranges cross a day boundary
            st.integers(1, 60),
            st.integers(0, 3),  # every Nth minute missing (0: none): several runs
        ),
        min_size=1,
        max_size=5,
    )
)
def test_appending_overlapping_ranges_is_their_union_with_the_last_winning(
    tmp_path_factory: pytest.TempPathFactory, ranges: list[tuple[str, int, int]]
) -> None:
    lake = tmp_path_factory.mktemp("lake")
    expected: dict[tuple[str, int], float] = {}
    for version, (instrument, first, count, holes) in enumerate(ranges, start=1):
        frame = bars(instrument, first, count, float(version))
        if holes:
            frame = frame.filter(pl.int_range(pl.len()) % (holes + 1) != holes)
        append_bars(str(lake), frame)
        if version == 1:
            append_bars(str(lake), frame)  # a writer re-sending after a commit
        for ts in frame["ts"].dt.epoch("us"):
            expected[(instrument, ts)] = float(version)
    for instrument in ("SIM:EURUSD", "KRAKEN:BTC/USD"):
        read = all_bars(lake, instrument)
        want = sorted((ts, v) for (name, ts), v in expected.items() if name == instrument)
        assert list(zip(read["ts"].dt.epoch("us"), read["close"], strict=True)) == want
        assert read["high"].to_list() == [2.0 + v for _, v in want]


def test_a_sparse_batch_takes_the_merge_with_the_same_result(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    append_bars(str(lake), bars("SIM:EURUSD", 0, 400, 1.0))
    sparse = bars("SIM:EURUSD", 0, 400, 2.0).filter(pl.int_range(pl.len()) % 2 == 0)
    append_bars(str(lake), sparse)  # 200 runs: more than MAX_RUNS
    closes = all_bars(lake, "SIM:EURUSD")["close"].to_list()
    assert closes == [2.0 if minute % 2 == 0 else 1.0 for minute in range(400)]


def test_ticks_sent_twice_are_stored_once(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    ticks = pl.DataFrame(
        {
            "instrument": ["BINANCE:BTCUSDT"] * 4,
            "ts": pl.Series([START_US, START_US, START_US + 5, DAY_US + START_US]).cast(
                pl.Datetime("us")
            ),
            "bid": [None] * 4,
            "ask": [None] * 4,
            "bid_size": [None] * 4,
            "ask_size": [None] * 4,
            "price": [1.0, 1.0, 2.0, 3.0],  # two identical trades in one microsecond
            "size": [0.5, 0.5, 1.0, 1.0],
            "side": [1, 1, -1, 0],
        }
    )
    assert append_ticks(str(lake), ticks) == 4
    append_ticks(str(lake), ticks)
    stored = pl.read_delta(str(lake / "ticks")).sort("ts", "price")
    assert stored.height == 4
    assert stored["side"].to_list() == [1, 1, -1, None]


def test_compaction_keeps_every_row(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    for minute in range(20):  # twenty small commits into one partition
        append_bars(str(lake), bars("SIM:EURUSD", minute, 1, 1.0))
    before = all_bars(lake, "SIM:EURUSD")
    done = compact(str(lake))
    assert [(d.files_removed, d.files_added) for d in done] == [(20, 1)]
    assert all_bars(lake, "SIM:EURUSD").equals(before)
    # Vacuum respects the 7-day retention: the replaced files stay for older readers.
    assert done[0].vacuumed == 0


_KILLED_WRITER = """
import sys, numpy as np, polars as pl
from sptrader.lake.append import append_bars
lake, rows = sys.argv[1], int(sys.argv[2])
ts = 1_767_225_600_000_000 + np.arange(rows, dtype=np.int64) * 60_000_000
frame = pl.DataFrame({"instrument": "SIM:EURUSD", "ts": pl.Series(ts).cast(pl.Datetime("us")),
    "open": 1.0, "high": 1.0, "low": 1.0, "close": 7.0, "volume": 1.0, "trades": 1})
print("writing", flush=True)
while True:
    append_bars(lake, frame)
"""


def test_a_writer_killed_mid_append_leaves_a_readable_table(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    append_bars(str(lake), bars("SIM:EURUSD", 0, 100, 1.0))
    writer = subprocess.Popen(
        [sys.executable, "-c", _KILLED_WRITER, str(lake), str(200 * 1440)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert writer.stdout is not None and writer.stdout.readline().strip() == "writing"
        # Kill it once it has started writing data files (mid-commit, most likely).
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if len(list((lake / "bars_1m").rglob("*.parquet"))) > 110:
                break
            time.sleep(0.01)
        os.kill(writer.pid, signal.SIGKILL)
    finally:
        writer.wait(timeout=10)
    read = all_bars(lake, "SIM:EURUSD")
    # Either no commit of the killed writer landed (the first 100 bars) or whole ones.
    assert read.height in (100, 200 * 1440)
    assert read["ts"].is_unique().all()
    closes = set(read["close"].to_list())
    assert closes in ({1.0}, {7.0})
    # And the next append works on it.
    append_bars(str(lake), bars("SIM:EURUSD", 0, 1, 9.0))
    assert all_bars(lake, "SIM:EURUSD")["close"].item(0) == 9.0


# --- where the lake is -------------------------------------------------------------------


def test_paths_and_file_uris(tmp_path: Path) -> None:
    assert lake_of(f"file://{tmp_path}/x").uri == f"{tmp_path}/x"
    assert lake_of("lake", home=tmp_path).uri == str(tmp_path / "lake")
    assert lake_of(str(tmp_path / "y")).storage_options == {}


def test_s3_options_come_from_the_config_and_the_named_env_vars(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LAKE_KEY", "AKIDEXAMPLE")
    monkeypatch.setenv("LAKE_SECRET", "s3cr3t")
    config = LakeConfig(
        uri="s3://bucket/history/",
        endpoint="http://127.0.0.1:9000",
        region="eu-west-1",
        access_key_env="LAKE_KEY",
        secret_key_env="LAKE_SECRET",
        allow_http=True,
    )
    lake = lake_of(config)
    assert lake.uri == "s3://bucket/history"
    assert lake.bars_uri == "s3://bucket/history/bars_1m"
    assert lake.storage_options == {
        "AWS_ENDPOINT_URL": "http://127.0.0.1:9000",
        "AWS_REGION": "eu-west-1",
        "AWS_ACCESS_KEY_ID": "AKIDEXAMPLE",
        "AWS_SECRET_ACCESS_KEY": "s3cr3t",
        "AWS_ALLOW_HTTP": "true",
        "aws_conditional_put": "etag",
    }
    # Never shown: not in the lake's text nor its repr.
    assert "s3cr3t" not in str(lake) + repr(lake)
    monkeypatch.delenv("LAKE_SECRET")
    assert "AWS_SECRET_ACCESS_KEY" not in s3_options(config)


@pytest.mark.parametrize(
    ("uri", "words"),
    [
        ("", "no lake"),
        ("gs://bucket/x", "unsupported scheme"),
        ("s3:///nobucket", "names no bucket"),
        ("file://otherhost/x", "local path"),
    ],
)
def test_bad_uris_are_one_line_usage_errors(uri: str, words: str) -> None:
    with pytest.raises(UsageError, match=words) as raised:
        lake_of(uri)
    assert "\n" not in str(raised.value)


def test_a_file_where_the_lake_should_be_and_a_missing_table(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(UsageError, match="is a file"):
        lake_of(str(tmp_path / "file"))
    with pytest.raises(SptraderError, match="no bars table"):
        read_bars(str(tmp_path), "SIM:EURUSD", 0, 1)
