"""Order flow end to end (issue 12): the taker side of each trade becomes buy and sell
volume in the live bars, the stored bars and their rollups, Binance's history, the
``candles`` output and the API's candles, so cumulative volume delta can be drawn."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime
from pathlib import Path

import httpx
import polars as pl
import pytest

from sptrader.bars import BarBuilder, bars_to_frame
from sptrader.bus import Bus
from sptrader.client.wire import candles_frame
from sptrader.clock import datetime_to_us
from sptrader.config import BinanceFeedConfig, StoreConfig
from sptrader.feeds.binance import BinanceFeed
from sptrader.models import (
    SIDE_BUY,
    SIDE_SELL,
    SIDE_UNKNOWN,
    US_PER_MINUTE,
    BarClosed,
    HistoryBarsReady,
    HistoryFetched,
    TradeReceived,
)
from sptrader.store import Store, queries
from sptrader.store.writer import StoreWriter

T0 = datetime_to_us(datetime(2026, 3, 2, 14, 0, tzinfo=UTC))
BTC = "BINANCE:BTCUSDT"


def trades(minutes: int) -> list[TradeReceived]:
    """Trades over ``minutes`` minutes: sides cycle buy, sell, buy, unknown."""
    sides = [SIDE_BUY, SIDE_SELL, SIDE_BUY, SIDE_UNKNOWN]
    events = []
    for index in range(minutes * 6):
        ts = T0 + index * 10_000_000  # every 10 s
        size = 0.5 + (index % 5) * 0.25
        events.append(TradeReceived(BTC, ts, 100.0 + index % 7, size, sides[index % 4]))
    return events


def delta_by_hand(events: list[TradeReceived], minutes: int) -> list[float]:
    """Cumulative (buy - sell) volume at the end of each ``minutes`` bucket."""
    width = minutes * US_PER_MINUTE
    per_bucket: dict[int, float] = {}
    for event in events:
        bucket = event.ts_us - event.ts_us % width
        signed = event.size if event.side == SIDE_BUY else -event.size if event.side else 0.0
        per_bucket[bucket] = per_bucket.get(bucket, 0.0) + signed
    total, out = 0.0, []
    for bucket in sorted(per_bucket):
        total += per_bucket[bucket]
        out.append(total)
    return out


@pytest.fixture
def store(home: Path):
    opened = Store(home / "sptrader.duckdb")
    opened.migrate()
    yield opened
    opened.close()


async def test_live_trades_to_stored_bars_give_the_cumulative_delta(store: Store) -> None:
    """Trades -> BarBuilder -> bus -> StoreWriter -> bars_1m; the delta of the stored 1m
    and 5m bars is the trades' own, and Binance history without live bars is kept
    as fetched."""
    events = trades(12)
    builder = BarBuilder(lambda _: "trade")
    out = builder.process(events)
    bars = [event for event in [*out, *builder.close_all()] if type(event) is BarClosed]
    assert len(bars) == 12
    bus = Bus()
    writer = StoreWriter(store, bus, StoreConfig())
    # A minute before, fetched from a source that does not say (no flow columns).
    history = (
        bars_to_frame([bars[0].bar])
        .with_columns(pl.col("ts") - pl.duration(minutes=1))
        .drop("buy_volume", "sell_volume")
    )
    fetched = HistoryFetched(BTC, T0 - US_PER_MINUTE, T0, history)
    bus.publish_nowait([HistoryBarsReady(fetched), *bars])
    assert await writer.drain() >= 13

    one = queries.bars_between(store, BTC, "1m", T0, None)
    delta = (one["buy_volume"] - one["sell_volume"]).cum_sum()
    assert delta.to_list() == pytest.approx(delta_by_hand(events, 1))
    five = queries.bars_between(store, BTC, "5m", T0, None)
    assert five.height == 3
    assert (five["buy_volume"] - five["sell_volume"]).cum_sum().to_list() == pytest.approx(
        delta_by_hand(events, 5)
    )
    # Known sides only: the unknown quarter of the trades is in volume, not in the flow.
    assert (five["buy_volume"] + five["sell_volume"] < five["volume"]).all()
    before = queries.bars_between(store, BTC, "1m", T0 - US_PER_MINUTE, T0)
    assert before.select("buy_volume", "sell_volume").rows() == [(None, None)]


def test_binance_history_takes_the_taker_buy_volume() -> None:
    """klines row[9] is the taker buy base volume: buy = row[9], sell = volume - row[9],
    the difference taken on the decimals Binance sends (0.3 - 0.1 is 0.2, not
    0.19999999999999998)."""
    start_ms = T0 // 1000

    def respond(request: httpx.Request) -> httpx.Response:
        rows = [
            [start_ms, "1.0", "2.0", "0.5", "1.5", "0.30000000", start_ms + 59_999, "0.45",
             7, "0.10000000", "0.15", "0"],
            [start_ms + 60_000, "1.0", "2.0", "0.5", "1.5", "12.5", start_ms + 119_999, "1",
             3, "12.5", "1", "0"],
            [start_ms + 120_000, "1.0", "2.0", "0.5", "1.5", "0", start_ms + 179_999, "0",
             0, "0", "0", "0"],
        ]  # fmt: skip
        return httpx.Response(200, json=rows)

    feed = BinanceFeed(
        [BTC], BinanceFeedConfig(enabled=True), transport=httpx.MockTransport(respond)
    )
    bars = feed.history(BTC, T0, T0 + 3 * US_PER_MINUTE)
    assert bars is not None
    assert bars.columns[-2:] == ["buy_volume", "sell_volume"]
    assert bars.select("volume", "buy_volume", "sell_volume").rows() == [
        (0.3, 0.1, 0.2),
        (12.5, 12.5, 0.0),
        (0.0, 0.0, 0.0),
    ]


def test_candles_output_carries_the_order_flow(
    run, cli_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = Store(cli_home / "sptrader.duckdb")
    store.migrate()
    minutes = 10
    frame = pl.DataFrame(
        {
            "instrument": ["SIM:EURUSD"] * minutes,
            "ts": pl.Series([T0 + m * US_PER_MINUTE for m in range(minutes)]).cast(
                pl.Datetime("us")
            ),
            "open": [1.1] * minutes,
            "high": [1.2] * minutes,
            "low": [1.0] * minutes,
            "close": [1.15] * minutes,
            "volume": [10.0] * minutes,
            "trades": [4] * minutes,
            "buy_volume": [0.1] * 5 + [None] * 5,
            "sell_volume": [0.2] * 5 + [None] * 5,
        }
    )
    store.upsert_bars(frame)
    store.add_coverage("SIM:EURUSD", "1m", "sim", T0, T0 + minutes * US_PER_MINUTE)
    store.close()
    window = ["--from", "2026-03-02T14:00Z", "--to", "2026-03-02T14:10Z", "--wait", "0"]

    result = run("candles", "SIM:EURUSD", "--tf", "5m", "--format", "json", *window)
    assert result.code == 0, result
    rows = json.loads(result.out)
    assert [(row["buy_volume"], row["sell_volume"]) for row in rows] == [(0.5, 1.0), (None, None)]

    result = run("candles", "SIM:EURUSD", "--format", "csv", *window)
    assert result.code == 0, result
    rows = list(csv.DictReader(io.StringIO(result.out)))
    assert list(rows[0])[-2:] == ["buy_volume", "sell_volume"]
    assert (rows[0]["buy_volume"], rows[0]["sell_volume"]) == ("0.1", "0.2")
    assert (rows[-1]["buy_volume"], rows[-1]["sell_volume"]) == ("", "")


def test_api_candles_rows_keep_the_order_flow(store: Store) -> None:
    """The daemon sends a candles frame as rows (the server's encoding) and the client
    rebuilds it with candles_frame: the flow columns and their NULLs survive."""
    builder = BarBuilder(lambda _: "trade")
    events = trades(3)
    builder.process(events)
    store.upsert_bars(bars_to_frame(event.bar for event in builder.close_all()))
    store.upsert_bars(
        bars_to_frame(event.bar for event in BarBuilder(lambda _: "trade").process(
            [TradeReceived(BTC, T0 + 5 * US_PER_MINUTE, 1.0, 1.0)]
        ))
    )  # fmt: skip
    frame = queries.bars_between(store, BTC, "1m", None, None)
    rows = frame.with_columns(frame["ts"].dt.epoch("us")).rows()
    rebuilt = candles_frame(json.loads(json.dumps(rows)))
    assert rebuilt.equals(frame)
    assert rebuilt["buy_volume"].to_list()[-1] is None
