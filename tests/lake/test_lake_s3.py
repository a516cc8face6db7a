"""The lake on an S3-compatible store: moto's S3 server on a loopback port stands in for
AWS, MinIO or R2. What works on a local directory works there, through the same
``[lake]`` settings: export (twice, each bar once), the engine's sink, candles and
coverage read back, compaction, and conditional-put commits; a missing bucket is one
line that names the lake and never the keys."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Iterator
from pathlib import Path

import boto3
import msgspec
import polars as pl
import pytest
from conftest import make_config, wait_until
from moto.server import ThreadedMotoServer  # moto[server], in .[dev]
from test_lake_commands import bars, fill_store, one_line_error

from sptrader.bus import Bus
from sptrader.config import LakeConfig, SupervisorConfig
from sptrader.lake.append import append_bars
from sptrader.lake.location import LakeError, lake_of
from sptrader.lake.maintain import compact
from sptrader.lake.read import coverage, read_bars
from sptrader.lake.sink import lake_service
from sptrader.models import Bar, BarClosed
from sptrader.supervisor import Supervisor

KEY, SECRET = "AKIATESTLAKE", "lake-secret-do-not-log"
MINUTE_US = 60_000_000
START_US = 1_767_225_600_000_000  # 2026-01-01T00:00Z


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    s3 = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=KEY,
        aws_secret_access_key=SECRET,
    )
    s3.create_bucket(Bucket="lake")
    yield endpoint
    server.stop()


@pytest.fixture
def s3_lake(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch, request) -> LakeConfig:
    """A fresh prefix in the bucket per test, keys only in the env vars [lake] names."""
    monkeypatch.setenv("LAKE_KEY", KEY)
    monkeypatch.setenv("LAKE_SECRET", SECRET)
    return LakeConfig(
        uri=f"s3://lake/{request.node.name}",
        endpoint=s3_endpoint,
        region="us-east-1",
        allow_http=True,
        access_key_env="LAKE_KEY",
        secret_key_env="LAKE_SECRET",
    )


def _lake_toml(config: LakeConfig) -> str:
    return (
        f'[lake]\nuri = "{config.uri}"\nendpoint = "{config.endpoint}"\nregion = "us-east-1"\n'
        'allow_http = true\naccess_key_env = "LAKE_KEY"\nsecret_key_env = "LAKE_SECRET"\n'
    )


def test_export_candles_and_status_through_s3(run, cli_home: Path, s3_lake: LakeConfig) -> None:
    stored = pl.concat([bars("SIM:EURUSD", 0, 1440 + 30, 1.0), bars("KRAKEN:BTC/USD", 0, 5, 9.0)])
    fill_store(cli_home, stored)
    (cli_home / "config.toml").write_text(_lake_toml(s3_lake))
    args = ["export", "SIM:EURUSD", "KRAKEN:BTC/USD", "--from", "2026-01-01", "--to", "2026-01-03"]
    for _ in range(2):  # the second export finds every bar there: still once each
        done = run(*args, "--format", "delta", "--out", s3_lake.uri)
        assert done.code == 0, done.err
        assert "exported 1,475 1m bars of 2 instruments" in done.out
    lake = lake_of(s3_lake)
    held = {row.instrument: row.rows for row in coverage(lake)}
    assert held == {"SIM:EURUSD": 1470, "KRAKEN:BTC/USD": 5}
    want = stored.filter(pl.col("instrument") == "SIM:EURUSD").drop("instrument")
    assert read_bars(lake, "SIM:EURUSD", 0, 2**62).equals(want)
    # --source lake reads S3, not the local store.
    candles = run(
        "candles",
        "SIM:EURUSD",
        "--from",
        "2026-01-01T00:00Z",
        "--to",
        "2026-01-01T00:10Z",
        "--source",
        "lake",
        "--format",
        "json",
        "--wait",
        "0",
    )
    assert candles.code == 0, candles.err
    assert len(json.loads(candles.out)) == 10
    status = run("data", "status", "SIM:EURUSD")
    assert status.code == 0, status.err
    assert f"lake {s3_lake.uri}:" in status.out and "1,470 bars on 2 days" in status.out
    assert SECRET not in status.out + status.err + done.out + done.err


def test_compaction_on_s3_keeps_every_row(s3_lake: LakeConfig) -> None:
    for day in range(3):
        append_bars(s3_lake, bars("SIM:EURUSD", day * 1440, 60, float(day)))
    before = read_bars(s3_lake, "SIM:EURUSD", 0, 2**62)
    compact(s3_lake)
    after = read_bars(s3_lake, "SIM:EURUSD", 0, 2**62)
    assert after.equals(before) and after.height == 180


def test_concurrent_appends_to_s3_lose_nothing(s3_lake: LakeConfig) -> None:
    """Two writers committing at once: a put-if-absent commit means one retries rather
    than one overwriting the other's log entry."""
    append_bars(s3_lake, bars("SIM:EURUSD", 0, 1, 0.0))  # the table exists first

    async def both() -> None:
        await asyncio.gather(
            asyncio.to_thread(append_bars, s3_lake, bars("SIM:EURUSD", 10, 50, 1.0)),
            asyncio.to_thread(append_bars, s3_lake, bars("SIM:GBPUSD", 10, 50, 2.0)),
        )

    asyncio.run(both())
    assert read_bars(s3_lake, "SIM:EURUSD", 0, 2**62).height == 51
    assert read_bars(s3_lake, "SIM:GBPUSD", 0, 2**62).height == 50


async def test_the_engines_sink_appends_to_s3(s3_lake: LakeConfig) -> None:
    bus = Bus()
    config = make_config(
        lake={
            "uri": s3_lake.uri,
            "endpoint": s3_lake.endpoint,
            "region": "us-east-1",
            "allow_http": True,
            "access_key_env": "LAKE_KEY",
            "secret_key_env": "LAKE_SECRET",
            "flush_interval_s": 0.05,
        }
    )
    sink = lake_service(bus, config)
    assert sink is not None
    supervisor = Supervisor(bus, SupervisorConfig())
    supervisor.add(sink)
    supervisor.start("lake")
    await bus.publish(
        [
            BarClosed(Bar("SIM:EURUSD", "1m", START_US + m * MINUTE_US, 1, 2, 0.5, m, 3, 4))
            for m in range(5)
        ]
    )

    def stored() -> int:
        try:
            return read_bars(s3_lake, "SIM:EURUSD", 0, 2**62).height
        except LakeError:
            return 0

    await wait_until(lambda: stored() == 5, timeout=20)
    await supervisor.stop_all()


def test_a_missing_bucket_is_one_line_without_the_keys(
    run, cli_home: Path, s3_lake: LakeConfig
) -> None:
    fill_store(cli_home, bars("SIM:EURUSD", 0, 10, 1.0))
    (cli_home / "config.toml").write_text(_lake_toml(s3_lake).replace("lake/", "no-such-bucket/"))
    missing = s3_lake.uri.replace("lake/", "no-such-bucket/")
    export = ["export", "SIM:EURUSD", "--from", "2026-01-01", "--format", "delta", "--out"]
    done = run(*export, missing)
    line = one_line_error(done)
    assert "s3://no-such-bucket/" in line
    assert line.endswith("cannot open: NoSuchBucket: The specified bucket does not exist")
    assert SECRET not in done.err + done.out and KEY not in done.err + done.out


def test_an_unreachable_endpoint_is_one_line(s3_lake: LakeConfig) -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    gone = msgspec.structs.replace(s3_lake, endpoint=f"http://127.0.0.1:{port}")
    with pytest.raises(LakeError) as raised:
        coverage(gone)
    line = str(raised.value)
    assert "\n" not in line and "\x1b" not in line and SECRET not in line
    assert line.startswith(f"lake {s3_lake.uri}: ")
