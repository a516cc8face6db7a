"""The lake sink as the engine runs it: a service on the bus that appends closed 1m
bars, fetched history and kept ticks every flush interval; a lake that cannot be
reached keeps the rows and writes them once it can, saying so once per outage."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import polars as pl
import pytest
from conftest import make_config, wait_until

from sptrader.bus import Bus
from sptrader.config import SupervisorConfig
from sptrader.lake.location import lake_of
from sptrader.lake.read import read_bars
from sptrader.lake.sink import LakeSink, lake_service
from sptrader.models import (
    Bar,
    BarClosed,
    HistoryBarsReady,
    HistoryFetched,
    QuoteReceived,
    TradeReceived,
)
from sptrader.schema import stored_bars
from sptrader.supervisor import Supervisor

MINUTE_US = 60_000_000
START_US = 1_767_225_600_000_000


def bar(instrument: str, minute: int, close: float, timeframe: str = "1m") -> Bar:
    return Bar(instrument, timeframe, START_US + minute * MINUTE_US, 1.0, 2.0, 0.5, close, 3.0, 4)


def lake_rows(lake: Path, instrument: str) -> pl.DataFrame:
    if not (lake / "bars_1m" / "_delta_log").is_dir():
        return pl.DataFrame()
    return read_bars(str(lake), instrument, 0, 2**62)


def test_no_sink_without_a_uri() -> None:
    assert lake_service(Bus(), make_config()) is None


async def test_the_sink_appends_closed_1m_bars_history_and_kept_ticks(tmp_path: Path) -> None:
    bus = Bus()
    config = make_config(
        lake={"uri": "lake", "flush_interval_s": 0.05},
        store={"keep_ticks": ["BINANCE:BTCUSDT"]},
    )
    sink = lake_service(bus, config, home=tmp_path)
    assert isinstance(sink, LakeSink) and sink.lake.uri == str(tmp_path / "lake")
    supervisor = Supervisor(bus, SupervisorConfig())
    supervisor.add(sink)
    supervisor.start("lake")
    history = stored_bars(
        pl.DataFrame(
            {
                "instrument": ["SIM:EURUSD"] * 2,
                "ts": pl.Series([START_US, START_US + MINUTE_US]).cast(pl.Datetime("us")),
                "open": 1.0,
                "high": 1.0,
                "low": 1.0,
                "close": [5.0, 6.0],
                "volume": 1.0,
                "trades": 1,
            }
        )
    )
    await bus.publish(
        [
            BarClosed(bar("SIM:EURUSD", 0, 1.0)),
            BarClosed(bar("SIM:EURUSD", 0, 9.0, timeframe="5m")),  # not a 1m bar
            # History after the live bar: its version of minute 0 wins.
            HistoryBarsReady(
                HistoryFetched("SIM:EURUSD", START_US, START_US + 2 * MINUTE_US, history)
            ),
            BarClosed(bar("SIM:EURUSD", 2, 7.0)),
            QuoteReceived("BINANCE:BTCUSDT", START_US, 1.0, 1.1, 1.0, 1.0),
            TradeReceived("BINANCE:BTCUSDT", START_US + 1, 1.05, 0.1, 1),
            QuoteReceived("SIM:EURUSD", START_US, 1.0, 1.1, 1.0, 1.0),  # ticks not kept
        ]
    )
    lake = tmp_path / "lake"
    await wait_until(lambda: lake_rows(lake, "SIM:EURUSD").height == 3, timeout=20)
    assert lake_rows(lake, "SIM:EURUSD")["close"].to_list() == [5.0, 6.0, 7.0]
    await wait_until(lambda: (lake / "ticks" / "_delta_log").is_dir(), timeout=20)
    ticks = pl.read_delta(str(lake / "ticks"))
    assert ticks["instrument"].unique().to_list() == ["BINANCE:BTCUSDT"]
    assert ticks.height == 2
    await supervisor.stop_all()


async def test_an_unreachable_lake_keeps_the_rows_and_says_so_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "blocked"
    blocker.write_text("not a directory")  # the lake under it cannot be created
    bus = Bus()
    sink = LakeSink(lake_of(str(blocker / "lake")), bus, 0.02, 0, [])
    task = asyncio.create_task(_run(sink, bus))
    caplog.set_level(logging.INFO, logger="sptrader.lake.sink")
    await bus.publish([BarClosed(bar("SIM:EURUSD", minute, 1.0)) for minute in range(3)])
    await wait_until(lambda: sink.failures >= 3, timeout=20)
    await bus.publish([BarClosed(bar("SIM:EURUSD", 3, 1.0))])
    await wait_until(lambda: sink.failures >= 5, timeout=20)
    assert sink.held_rows() == 4
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "holding 3 rows" in warnings[0].getMessage()
    blocker.unlink()  # the lake is back
    await wait_until(lambda: sink.rows_written == 4, timeout=20)
    assert sink.held_rows() == 0
    assert lake_rows(blocker / "lake", "SIM:EURUSD").height == 4
    assert any("reachable again" in r.getMessage() for r in caplog.records)
    task.cancel()


async def test_drain_appends_what_is_queued(tmp_path: Path) -> None:
    bus = Bus()
    sink = LakeSink(lake_of(str(tmp_path / "lake")), bus, 3600, 0, [])
    await bus.publish([BarClosed(bar("SIM:EURUSD", 0, 1.0))])
    assert await sink.drain() == 1
    assert lake_rows(tmp_path / "lake", "SIM:EURUSD").height == 1


async def _run(sink: LakeSink, bus: Bus) -> None:
    from sptrader.supervisor import ServiceContext

    await sink.run(ServiceContext("lake", bus))
