"""The Alpaca venue against a fake Alpaca Trading API (tests/fake_alpaca_trading.py):
REST orders and reads, the trade_updates stream, errors as one sentence."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest
from conftest import wait_until
from fake_alpaca_trading import FakeAlpacaTrading

from sptrader.config import AlpacaBrokerConfig
from sptrader.venues.alpaca import AlpacaVenue
from sptrader.venues.base import (
    StreamReady,
    VenueAuthError,
    VenueFill,
    VenueOrder,
    VenueOrderRequest,
    VenueRejected,
    VenueUnavailable,
    VenueUncertain,
)


@pytest.fixture
def fake() -> Any:
    with FakeAlpacaTrading(timeout_s=0.5) as venue:
        yield venue


def make_venue(fake: FakeAlpacaTrading, **env: str) -> AlpacaVenue:
    config = msgspec.convert(fake.config, AlpacaBrokerConfig)
    return AlpacaVenue(config, env={**fake.env, **env})


@pytest.fixture
async def venue(fake: FakeAlpacaTrading) -> AsyncIterator[AlpacaVenue]:
    venue = make_venue(fake)
    await venue.connect()
    yield venue
    await venue.close()


def order(cid: str, **fields: Any) -> VenueOrderRequest:
    return VenueOrderRequest(
        fields.pop("client_order_id", cid),
        fields.pop("instrument", "ALPACA:AAPL"),
        **{"side": "buy", "qty": 10, **fields},
    )


def posted(fake: FakeAlpacaTrading) -> list[dict[str, Any]]:
    return [json.loads(r.body) for r in fake.http.requests if r.method == "POST"]


class Stream:
    """The venue's stream read in the background, events collected."""

    def __init__(self, venue: AlpacaVenue) -> None:
        self.events: list[Any] = []
        self.error: BaseException | None = None
        self.ready = asyncio.Event()
        self.task = asyncio.create_task(self._read(venue))

    async def _read(self, venue: AlpacaVenue) -> None:
        try:
            async for event in venue.stream():
                if isinstance(event, StreamReady):
                    self.ready.set()
                self.events.append(event)
        except Exception as error:
            self.error = error

    async def until(self, predicate: Any, timeout: float = 3.0) -> list[Any]:
        async with asyncio.timeout(timeout):
            while not any(predicate(event) for event in self.events):
                await asyncio.sleep(0.01)
        return self.events

    async def stop(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


# --- auth -------------------------------------------------------------------------------


async def test_the_key_headers_are_sent_and_checked(fake: FakeAlpacaTrading) -> None:
    venue = make_venue(fake)
    await venue.connect()
    await venue.close()
    first = fake.http.requests[0]
    assert first.headers["apca-api-key-id"] == fake.env["FAKE_APCA_KEY_ID"]
    assert fake.auth_failures == 0

    wrong = make_venue(fake, FAKE_APCA_SECRET_KEY="not-the-secret")
    with pytest.raises(VenueAuthError) as refused:
        await wrong.connect()
    await wrong.close()
    assert fake.auth_failures == 1
    assert (
        str(refused.value)
        == "Alpaca 40110000: the API key was refused (check the key id and secret key)"
    )
    assert "not-the-secret" not in str(refused.value)


async def test_a_missing_key_names_the_variable(fake: FakeAlpacaTrading) -> None:
    venue = make_venue(fake, FAKE_APCA_KEY_ID="")
    with pytest.raises(VenueAuthError, match="FAKE_APCA_KEY_ID"):
        await venue.connect()
    assert fake.http.requests == []


async def test_the_stream_refuses_a_wrong_secret(fake: FakeAlpacaTrading) -> None:
    venue = make_venue(fake, FAKE_APCA_SECRET_KEY="wrong")
    with pytest.raises(VenueAuthError, match="refused the API key"):
        async for _ in venue.stream():
            pass
    assert fake.auth_failures == 1


# --- orders -----------------------------------------------------------------------------


async def test_market_order_fills_and_the_stream_reports_it(
    fake: FakeAlpacaTrading, venue: AlpacaVenue
) -> None:
    stream = Stream(venue)
    await asyncio.wait_for(stream.ready.wait(), 3)
    placed = await venue.place(order("m1", tif="day"))
    assert placed.status == "filled" and placed.filled_qty == 10 and placed.avg_price == 190.0
    assert placed.client_order_id == "m1" and placed.venue_order_id == fake.orders["m1"]["id"]
    assert posted(fake)[-1] == {
        "symbol": "AAPL",
        "qty": "10",
        "side": "buy",
        "type": "market",
        "time_in_force": "day",
        "client_order_id": "m1",
    }
    events = await stream.until(lambda e: isinstance(e, VenueOrder) and e.status == "filled")
    await stream.stop()
    fills = [e for e in events if isinstance(e, VenueFill)]
    assert [(f.client_order_id, f.qty, f.price, f.instrument) for f in fills] == [
        ("m1", 10, 190.0, "ALPACA:AAPL")
    ]
    statuses = [e.status for e in events if isinstance(e, VenueOrder)]
    assert statuses == ["accepted", "filled"]
    # The execution comes before the order's filled state.
    assert events.index(fills[0]) < len(events) - 1
    assert fake.placed == 1


async def test_text_frames_are_read_too() -> None:
    with FakeAlpacaTrading(timeout_s=0.5, binary_frames=False) as fake:
        venue = make_venue(fake)
        await venue.connect()
        stream = Stream(venue)
        await asyncio.wait_for(stream.ready.wait(), 3)
        await venue.place(order("t1", qty=1))
        await stream.until(lambda e: isinstance(e, VenueFill))
        await stream.stop()
        await venue.close()


async def test_limit_order_rests_then_fills_in_parts(
    fake: FakeAlpacaTrading, venue: AlpacaVenue
) -> None:
    stream = Stream(venue)
    await asyncio.wait_for(stream.ready.wait(), 3)
    placed = await venue.place(order("l1", type="limit", price=185.5, tif="gtc"))
    assert placed.status == "accepted" and placed.price == 185.5 and placed.tif == "gtc"
    assert posted(fake)[-1]["limit_price"] == "185.5"

    fake.fill("l1", qty=4)
    events = await stream.until(
        lambda e: isinstance(e, VenueOrder) and e.status == "partially_filled"
    )
    partial = [e for e in events if isinstance(e, VenueFill)]
    assert [(f.qty, f.price) for f in partial] == [(4, 185.5)]
    assert events[-1].filled_qty == 4

    fake.fill("l1")
    events = await stream.until(lambda e: isinstance(e, VenueOrder) and e.status == "filled")
    await stream.stop()
    fills = [e for e in events if isinstance(e, VenueFill)]
    assert [f.qty for f in fills] == [4, 6]
    assert len({f.venue_fill_id for f in fills}) == 2
    assert events[-1].filled_qty == 10 and events[-1].avg_price == 185.5


async def test_marketable_limit_fills_at_once(fake: FakeAlpacaTrading, venue: AlpacaVenue) -> None:
    placed = await venue.place(order("l2", type="limit", price=200.0, side="buy"))
    assert placed.status == "filled" and placed.avg_price == 190.0


async def test_stop_order_rests_until_filled(fake: FakeAlpacaTrading, venue: AlpacaVenue) -> None:
    placed = await venue.place(order("s1", type="stop", price=180.0, side="sell", qty=3))
    assert placed.status == "accepted" and placed.type == "stop" and placed.price == 180.0
    assert posted(fake)[-1]["stop_price"] == "180" and "limit_price" not in posted(fake)[-1]
    fake.fill("s1", price=179.9)
    found = await venue.lookup("s1", "ALPACA:AAPL")
    assert found is not None and found.status == "filled" and found.avg_price == 179.9


async def test_bracket_and_oto_orders_attach_their_legs(
    fake: FakeAlpacaTrading, venue: AlpacaVenue
) -> None:
    assert venue.attached_protection
    await venue.place(order("b1", type="limit", price=180.0, sl=170.0, tp=200.0))
    body = posted(fake)[-1]
    assert {key: body[key] for key in ("order_class", "take_profit", "stop_loss")} == {
        "order_class": "bracket",
        "take_profit": {"limit_price": "200"},
        "stop_loss": {"stop_price": "170"},
    }
    await venue.place(order("o1", type="limit", price=181.0, sl=171.0))
    assert posted(fake)[-1]["order_class"] == "oto" and "take_profit" not in posted(fake)[-1]

    # Held legs are listed as orders of their own, the exit side.
    listed = await venue.open_orders()
    legs = [o for o in listed if o.client_order_id not in ("b1", "o1")]
    assert sorted((o.type, o.side, o.price) for o in legs) == [
        ("limit", "sell", 200.0),
        ("stop", "sell", 170.0),
        ("stop", "sell", 171.0),
    ]
    # The entry fills: its exits work (and are still listed); the take-profit fills and
    # the stop is cancelled.
    fake.fill("b1")
    take_profit = next(leg for leg in fake.orders["b1"]["legs"] if leg["type"] == "limit")
    working = {o.client_order_id: o.status for o in await venue.open_orders()}
    assert "b1" not in working and working[take_profit["client_order_id"]] == "accepted"
    fake.fill(take_profit["client_order_id"])
    stop = next(leg for leg in fake.orders["b1"]["legs"] if leg["type"] == "stop")
    assert stop["status"] == "canceled"
    listed = {o.client_order_id for o in await venue.open_orders()}
    assert "b1" not in listed and stop["client_order_id"] not in listed and "o1" in listed


async def test_a_rejection_is_one_sentence(fake: FakeAlpacaTrading, venue: AlpacaVenue) -> None:
    with pytest.raises(VenueRejected) as refused:
        await venue.place(order("big", qty=1000))  # 190,000 of 100,000 cash
    assert str(refused.value) == "Alpaca 40310000: insufficient buying power for 1000 AAPL"
    fake.fail_next(42210000, "qty must be <= 10000")
    with pytest.raises(VenueRejected) as refused:
        await venue.place(order("r2"))
    assert str(refused.value) == "Alpaca 42210000: qty must be <= 10000"
    assert refused.value.code == 42210000
    with pytest.raises(VenueRejected, match="40410000"):
        await venue.place(order("r3", instrument="ALPACA:NOPE"))
    assert fake.placed == 0


async def test_a_client_id_is_never_placed_twice(
    fake: FakeAlpacaTrading, venue: AlpacaVenue
) -> None:
    await venue.place(order("d1", qty=1))
    with pytest.raises(VenueRejected) as refused:
        await venue.place(order("d1", qty=1))
    assert (
        str(refused.value) == "Alpaca 40010001: an order with this client order id already exists"
    )
    assert fake.placed == 1


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"qty": 0.5, "type": "limit", "price": 180.0, "tif": "day"}, "fractional quantities"),
        ({"qty": 0.5, "tif": "gtc"}, "only on market day orders"),
        ({"qty": 0.5, "tif": "day", "sl": 150.0}, "needs whole shares"),
        ({"type": "limit", "price": 180.123}, "finer than Alpaca allows"),
        ({"type": "limit"}, "needs a price"),
        ({"qty": -1}, "more than 0"),
        ({"instrument": "BINANCE:BTCUSDT"}, "not an Alpaca instrument"),
        ({"client_order_id": "x" * 49}, "not 1 to 48 characters"),
    ],
)
async def test_local_checks_refuse_before_sending(
    fake: FakeAlpacaTrading, venue: AlpacaVenue, fields: dict, words: str
) -> None:
    with pytest.raises(VenueRejected, match=words):
        await venue.place(order("c1", **fields))
    assert posted(fake) == []


async def test_fractional_market_day_order_is_sent(
    fake: FakeAlpacaTrading, venue: AlpacaVenue
) -> None:
    placed = await venue.place(order("f1", qty=0.25, tif="day"))
    assert placed.status == "filled" and placed.filled_qty == 0.25
    assert posted(fake)[-1]["qty"] == "0.25"


async def test_cancel(fake: FakeAlpacaTrading, venue: AlpacaVenue) -> None:
    placed = await venue.place(order("x1", type="limit", price=150.0))
    after = await venue.cancel(placed)
    assert (
        after is not None and after.status == "cancelled" and after.reason == "cancelled at Alpaca"
    )
    with pytest.raises(VenueRejected) as refused:
        await venue.cancel(placed)
    assert refused.value.code == 42210000 and "not cancelable" in str(refused.value)
    # Without the venue's id, the order is found by its client id first.
    other = await venue.place(order("x2", type="limit", price=150.0))
    other.venue_order_id = None
    assert (await venue.cancel(other)).status == "cancelled"


async def test_lookup_known_and_unknown(fake: FakeAlpacaTrading, venue: AlpacaVenue) -> None:
    await venue.place(order("k1", type="limit", price=150.0))
    found = await venue.lookup("k1", "ALPACA:AAPL")
    assert found is not None and found.status == "accepted" and found.qty == 10
    assert await venue.lookup("never-sent", "ALPACA:AAPL") is None


async def test_an_answer_that_times_out_is_uncertain_and_lookup_finds_it(
    fake: FakeAlpacaTrading, venue: AlpacaVenue
) -> None:
    fake.accept_then_time_out()
    with pytest.raises(VenueUncertain, match="no answer"):
        await venue.place(order("u1", type="limit", price=150.0))
    found = await venue.lookup("u1", "ALPACA:AAPL")
    assert found is not None and found.status == "accepted"
    assert fake.placed == 1


async def test_a_refused_connection_is_unavailable(fake: FakeAlpacaTrading) -> None:
    config = msgspec.convert({**fake.config, "rest_url": "http://127.0.0.1:9"}, AlpacaBrokerConfig)
    venue = AlpacaVenue(config, env=fake.env)
    with pytest.raises(VenueUnavailable):
        await venue.connect()
    await venue.close()


# --- reconciling ------------------------------------------------------------------------


async def test_open_orders_include_one_placed_elsewhere(
    fake: FakeAlpacaTrading, venue: AlpacaVenue
) -> None:
    await venue.place(order("mine", type="limit", price=150.0))
    await venue.place(order("done", qty=1))
    theirs = fake.place_elsewhere("ALPACA:MSFT", "sell", 2, "limit", 450.0)
    listed = {o.client_order_id: o for o in await venue.open_orders()}
    assert set(listed) == {"mine", theirs}
    assert listed[theirs].instrument == "ALPACA:MSFT" and listed[theirs].side == "sell"
    query = next(
        r.query for r in fake.http.requests if r.path == "/v2/orders" and r.method == "GET"
    )
    assert query == {"status": "open", "limit": "500", "nested": "false"}


async def test_fills_since_pages_and_maps_client_ids(
    fake: FakeAlpacaTrading, venue: AlpacaVenue
) -> None:
    await venue.place(order("early", qty=1))
    since = (await venue.lookup("early", "ALPACA:AAPL")).updated_us + 1
    await asyncio.sleep(0.002)
    for index in range(102):  # more than one page of 100
        await venue.place(order(f"p{index}", qty=1))
    theirs = fake.place_elsewhere("ALPACA:MSFT", "buy", 1, "market")
    fresh = make_venue(fake)  # a restart: no order ids remembered
    await fresh.connect()
    fills = await fresh.fills_since(since, [])
    await fresh.close()
    assert [f.client_order_id for f in fills] == [f"p{i}" for i in range(102)] + [theirs]
    assert all(f.qty == 1 and f.fee == 0.0 for f in fills)
    assert [f.ts_us for f in fills] == sorted(f.ts_us for f in fills) and fills[0].ts_us >= since
    tokens = [r.query.get("page_token") for r in fake.http.requests if "activities" in r.path]
    assert tokens[-1] is not None
    everything = await venue.fills_since(None, [])
    assert len(everything) == 104


async def test_stream_and_activity_fill_ids_agree(
    fake: FakeAlpacaTrading, venue: AlpacaVenue
) -> None:
    stream = Stream(venue)
    await asyncio.wait_for(stream.ready.wait(), 3)
    await venue.place(order("same", qty=2))
    events = await stream.until(lambda e: isinstance(e, VenueFill))
    await stream.stop()
    streamed = next(e for e in events if isinstance(e, VenueFill))
    (reconciled,) = await venue.fills_since(None, [])
    assert streamed.venue_fill_id == reconciled.venue_fill_id


async def test_positions_and_account(fake: FakeAlpacaTrading, venue: AlpacaVenue) -> None:
    await venue.place(order("a1", qty=10))
    await venue.place(order("a2", instrument="ALPACA:MSFT", side="sell", qty=5))
    held = {p.instrument: p for p in await venue.positions()}
    assert held["ALPACA:AAPL"].qty == 10 and held["ALPACA:AAPL"].avg_price == 190.0
    assert held["ALPACA:MSFT"].qty == -5 and held["ALPACA:MSFT"].avg_price == 410.0
    account = await venue.account()
    assert account.currency == "USD"
    assert account.cash == pytest.approx(100_000 - 1900 + 2050)
    assert account.equity == pytest.approx(account.cash + 1900 - 2050)
    assert account.buying_power == pytest.approx(account.cash)


# --- the stream dropping ----------------------------------------------------------------


async def test_the_stream_drop_ends_the_iterator(
    fake: FakeAlpacaTrading, venue: AlpacaVenue
) -> None:
    stream = Stream(venue)
    await asyncio.wait_for(stream.ready.wait(), 3)
    # The fake's server thread counts the connection a moment after answering it.
    await wait_until(lambda: fake.streams_open() == 1, timeout=3)
    fake.drop_stream()
    await asyncio.wait_for(stream.task, 3)
    assert isinstance(stream.error, VenueUnavailable) and "dropped" in str(stream.error)
    # A new stream subscribes again.
    again = Stream(venue)
    await asyncio.wait_for(again.ready.wait(), 3)
    await again.stop()


async def test_no_stream_server_is_unavailable(fake: FakeAlpacaTrading) -> None:
    config = msgspec.convert(
        {**fake.config, "stream_url": "ws://127.0.0.1:9/stream"}, AlpacaBrokerConfig
    )
    venue = AlpacaVenue(config, env=fake.env)
    with pytest.raises(VenueUnavailable, match="cannot open"):
        async for _ in venue.stream():
            pass


async def test_a_server_error_on_placing_is_uncertain(
    fake: FakeAlpacaTrading, venue: AlpacaVenue
) -> None:
    fake.fail_next(500, "internal server error")
    with pytest.raises(VenueUncertain, match="HTTP 500"):
        await venue.place(order("e1"))
    assert await venue.lookup("e1", "ALPACA:AAPL") is None
