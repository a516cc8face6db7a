"""Messages on the wire: every event kind round-trips, a bar's id is its identity, a
resend is dropped by JetStream, and a message the writer cannot read is counted and
skipped while the rest is stored."""

from __future__ import annotations

import itertools

import polars as pl
import pytest
from hypothesis import given
from hypothesis import strategies as st
from nats_harness import poll

from sptrader.cluster import codec, link, subjects
from sptrader.cluster.codec import MalformedMessage, decode_message, encode_events
from sptrader.config import NatsConfig
from sptrader.models import (
    Bar,
    BarClosed,
    BarUpdated,
    HistoryBarsReady,
    HistoryFetched,
    LiveCoverageRecorded,
    QuoteReceived,
    TradeReceived,
)

pytest_plugins = ["nats_harness"]  # its fixtures: nats_server, make_host

prices = st.floats(min_value=1e-8, max_value=1e9, allow_nan=False)
bars = st.builds(
    Bar,
    instrument=st.sampled_from(["SIM:EURUSD", "BINANCE:BTCUSDT", "KRAKEN:BTC/USD", "X:BRK.B"]),
    timeframe=st.just("1m"),
    ts_us=st.integers(0, 2**52).map(lambda value: value * 60_000_000 // 60_000_000),
    open=prices,
    high=prices,
    low=prices,
    close=prices,
    volume=st.floats(0, 1e12, allow_nan=False),
    trades=st.integers(0, 10**9),
    buy_volume=st.none() | st.floats(0, 1e12, allow_nan=False),
    sell_volume=st.none() | st.floats(0, 1e12, allow_nan=False),
)


@given(bars)
def test_a_closed_bar_round_trips_and_its_id_names_it(bar):
    (message,) = encode_events("SPTRADER", [BarClosed(bar)])
    assert decode_message(message.payload) == [BarClosed(bar)]
    assert message.stream == "SPTRADER_BARS"
    assert message.subject.startswith("SPTRADER.bars.1m.")
    assert len(message.subject.split(".")) == 5  # a dot in a symbol does not add a token
    (again,) = encode_events("SPTRADER", [BarClosed(Bar(*_fields(bar)))])
    assert again.message_id == message.message_id
    changed = Bar(*_fields(bar))
    changed.close = bar.close * 2
    (other,) = encode_events("SPTRADER", [BarClosed(changed)])
    assert other.message_id != message.message_id  # a new version is a new message


def _fields(bar: Bar) -> tuple:
    return tuple(getattr(bar, name) for name in Bar.__slots__)


def test_ticks_history_forming_and_coverage_round_trip():
    bar = Bar("SIM:EURUSD", "1m", 60_000_000, 1.1, 1.2, 1.0, 1.15, 10.0, 5)
    frame = pl.DataFrame(
        {
            "instrument": ["SIM:EURUSD"] * 25_000,
            "ts": pl.int_range(25_000, eager=True).cast(pl.Int64) * 60_000_000,
            "close": [1.0] * 25_000,
        }
    ).with_columns(pl.col("ts").cast(pl.Datetime("us")))
    fetched = HistoryFetched("SIM:EURUSD", 0, 25_000 * 60_000_000, frame)
    events = [
        QuoteReceived("SIM:EURUSD", 1, 1.0, 1.1, 2.0, 3.0),
        TradeReceived("BINANCE:BTCUSDT", 2, 50_000.0, 0.1, 1, 77),
        BarUpdated(bar),
        HistoryBarsReady(fetched),
        LiveCoverageRecorded(
            5, [("SIM:EURUSD", "1m", "sim", 0, 60_000_000)], {"SIM:EURUSD": [(0, 1)]}
        ),
    ]
    messages = encode_events("SPTRADER", events)
    decoded = [event for message in messages for event in decode_message(message.payload)]
    history = [event for event in decoded if type(event) is HistoryBarsReady]
    # 25k rows in 10k-row chunks whose ranges tile [start, end) exactly.
    assert [event.fetched.bars.height for event in history] == [10_000, 10_000, 5_000]
    assert history[0].fetched.start_us == 0 and history[-1].fetched.end_us == fetched.end_us
    assert all(a.fetched.end_us == b.fetched.start_us for a, b in itertools.pairwise(history))
    assert pl.concat([event.fetched.bars for event in history]).equals(frame)
    others = [event for event in decoded if type(event) is not HistoryBarsReady]
    assert sorted(map(repr, others)) == sorted(
        map(repr, [event for event in events if type(event) is not HistoryBarsReady])
    )


@pytest.mark.parametrize("payload", [b"", b"\xc1", b"\x92\xa6closed\x90", b"\x91\xa5bogus"])
def test_a_message_not_ours_is_malformed(payload):
    with pytest.raises(MalformedMessage):
        decode_message(payload)


async def test_a_resent_bar_is_one_message_in_the_stream(nats_server):
    config = NatsConfig(enabled=True, url=nats_server.url)
    client = await link.connect(config, "test")
    try:
        js = client.jetstream()
        await link.ensure_streams(js, config)
        bar = Bar("SIM:EURUSD", "1m", 60_000_000, 1.1, 1.2, 1.0, 1.15, 10.0, 5)
        acks = []
        for _ in range(2):  # a collector that reconnected and sent its batch again
            (message,) = codec.encode_events("SPTRADER", [BarClosed(bar)])
            acks.append(
                await js.publish(
                    message.subject, message.payload, headers={"Nats-Msg-Id": message.message_id}
                )
            )
        assert [bool(ack.duplicate) for ack in acks] == [False, True]
        info = await js.stream_info(subjects.BARS_STREAM.format(prefix="SPTRADER"))
        assert info.state.messages == 1
        assert info.config.duplicate_window == config.duplicate_window_s
    finally:
        await client.close()


def test_a_malformed_message_is_counted_and_skipped(nats_server, make_host):
    import asyncio

    writer = make_host("writer", "writer", [nats_server.url])
    collector = make_host("collector", "collector", [nats_server.url])
    writer.start()
    poll(lambda: writer.service("nats-in")["state"] == "running", 30, "the writer's consumer")

    async def publish_garbage() -> None:
        config = NatsConfig(enabled=True, url=nats_server.url)
        client = await link.connect(config, "test")
        try:
            await client.jetstream().publish("SPTRADER.bars.1m.SIM.EURUSD", b"not msgpack \xc1")
        finally:
            await client.close()

    asyncio.run(publish_garbage())
    poll(
        lambda: writer.service("nats-in")["counters"].get("malformed") == 1,
        20,
        "the malformed message to be counted",
    )
    collector.start()  # and the writer goes on storing what follows
    poll(lambda: writer.service("nats-in")["counters"].get("consumed", 0) > 20, 30, "bars")
    service = writer.service("nats-in")
    assert service["state"] == "running", service
    assert service["restarts"] == 0, service
