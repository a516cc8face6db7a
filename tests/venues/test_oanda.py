"""OandaVenue against FakeOandaTrading: OANDA's v20 wire format on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import msgspec
import pytest
from fake_oanda import TOKEN, TOKEN_ENV
from fake_oanda_trading import FakeOandaTrading

from sptrader.clock import now_us
from sptrader.config import OandaBrokerConfig
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
from sptrader.venues.oanda import OandaVenue
from sptrader.venues.registry import venue_class

EUR_USD = "OANDA:EUR_USD"


@pytest.fixture
def fake():
    with FakeOandaTrading() as venue:
        yield venue


@pytest.fixture
async def venue(fake: FakeOandaTrading) -> AsyncIterator[OandaVenue]:
    oanda = make_venue(fake)
    await oanda.connect()
    yield oanda
    await oanda.close()


def make_venue(fake: FakeOandaTrading, env: dict[str, str] | None = None, **config) -> OandaVenue:
    section = msgspec.convert({**fake.config, **config}, OandaBrokerConfig)
    return OandaVenue(section, env=fake.env if env is None else env)


def order(client_id: str, side: str = "buy", qty: float = 1000, **fields) -> VenueOrderRequest:
    return VenueOrderRequest(client_id, fields.pop("instrument", EUR_USD), side, qty, **fields)


def sent_orders(fake: FakeOandaTrading) -> list[dict]:
    return [
        json.loads(r.body)["order"]
        for r in fake.rest.requests
        if r.method == "POST" and r.path.endswith("/orders")
    ]


async def next_events(stream: AsyncIterator, count: int) -> list:
    """The next ``count`` events (order updates and fills) of the stream."""
    return [await asyncio.wait_for(anext(stream), 5) for _ in range(count)]


async def open_stream(venue: OandaVenue) -> AsyncIterator:
    stream = venue.stream()
    assert isinstance(await asyncio.wait_for(anext(stream), 5), StreamReady)
    return stream


# --- the session ----------------------------------------------------------------------


def test_the_registry_finds_the_venue():
    assert venue_class("oanda") is OandaVenue
    assert OandaVenue.prefix == "OANDA" and OandaVenue.attached_protection


async def test_every_request_carries_the_bearer_token(fake, venue):
    await venue.place(order("c-1"))
    await venue.account()
    assert fake.auth_failures == 0
    assert {r.headers["authorization"] for r in fake.rest.requests} == {f"Bearer {TOKEN}"}


async def test_a_wrong_token_is_refused_with_a_clear_error(fake):
    oanda = make_venue(fake, env={TOKEN_ENV: "not-the-token"})
    with pytest.raises(VenueAuthError) as refused:
        await oanda.connect()
    assert fake.auth_failures == 1
    message = str(refused.value)
    assert message.startswith("OANDA: OANDA refused the token in SPTRADER_FAKE_OANDA_TOKEN")
    assert "Insufficient authorization" in message and "not-the-token" not in message


async def test_a_missing_token_or_account_names_what_to_set(fake):
    with pytest.raises(VenueAuthError, match=f"set the environment variable {TOKEN_ENV}"):
        await make_venue(fake, env={}).connect()
    with pytest.raises(VenueAuthError, match=r"brokers\.oanda\.account_id"):
        await make_venue(fake, account_id="").connect()
    assert fake.rest.requests == []


async def test_an_unreachable_venue_is_unavailable(fake):
    oanda = make_venue(fake, rest_url="http://127.0.0.1:9")  # nothing listens on port 9
    with pytest.raises(VenueUnavailable, match="cannot reach OANDA"):
        await oanda.connect()


# --- placing --------------------------------------------------------------------------


async def test_a_market_order_fills_at_once_in_full(fake, venue):
    placed = await venue.place(order("c-1", qty=2500))
    assert placed.status == "filled"
    assert placed.filled_qty == 2500 and placed.avg_price == pytest.approx(1.1)
    assert placed.venue_order_id == fake.orders["c-1"]["id"]
    [sent] = sent_orders(fake)
    assert sent == {
        "type": "MARKET",
        "instrument": "EUR_USD",
        "units": "2500",
        "timeInForce": "FOK",
        "positionFill": "DEFAULT",
        "clientExtensions": {"id": "c-1", "tag": "sptrader"},
    }
    sold = await venue.place(order("c-2", "sell", 500, reduce_only=True))
    assert sold.status == "filled" and sold.side == "sell"
    assert sent_orders(fake)[1]["units"] == "-500"
    assert sent_orders(fake)[1]["positionFill"] == "REDUCE_ONLY"


async def test_a_limit_order_rests_and_a_marketable_one_fills_at_the_market(fake, venue):
    resting = await venue.place(order("c-1", type="limit", price=1.05, tif="day"))
    assert resting.status == "accepted" and resting.filled_qty == 0
    assert resting.price == 1.05 and resting.tif == "day"
    assert sent_orders(fake)[0]["price"] == "1.05000"
    assert sent_orders(fake)[0]["timeInForce"] == "GFD"
    crossing = await venue.place(order("c-2", type="limit", price=1.2))
    assert crossing.status == "filled" and crossing.avg_price == pytest.approx(1.1)


async def test_a_stop_order_with_attached_protection_rests_until_triggered(fake, venue):
    stop = await venue.place(order("c-1", type="stop", price=1.12, sl=1.1, tp=1.15))
    assert stop.status == "accepted"
    sent = sent_orders(fake)[0]
    assert sent["type"] == "STOP" and sent["timeInForce"] == "GTC"
    assert sent["stopLossOnFill"] == {"price": "1.10000", "timeInForce": "GTC"}
    assert sent["takeProfitOnFill"] == {"price": "1.15000", "timeInForce": "GTC"}
    fake.fill("c-1")
    found = await venue.lookup("c-1", EUR_USD)
    assert found is not None and found.status == "filled" and found.avg_price == pytest.approx(1.12)
    # The trade's stop-loss and take-profit are OANDA's pending orders, not ours.
    assert {o["type"] for o in (await venue._get("/pendingOrders", "x"))["orders"]} == {
        "STOP_LOSS",
        "TAKE_PROFIT",
    }
    assert await venue.open_orders() == []


async def test_a_fok_market_order_without_margin_comes_back_rejected(fake, venue):
    placed = await venue.place(order("c-1", qty=50_000_000))
    assert placed.status == "rejected" and placed.filled_qty == 0
    assert placed.reason == "not enough margin available for this order (INSUFFICIENT_MARGIN)"
    assert fake.placed == 1 and fake.orders["c-1"]["state"] == "CANCELLED"


async def test_a_rejection_is_one_sentence_with_oandas_code(fake, venue):
    fake.fail_next("MARKET_HALTED", "The market is halted")
    with pytest.raises(VenueRejected) as halted:
        await venue.place(order("c-1"))
    assert (
        str(halted.value)
        == "OANDA MARKET_HALTED: the market is closed or halted for this instrument"
    )
    assert halted.value.code == "MARKET_HALTED"
    fake.fail_next("SOME_NEW_REASON", "Something OANDA says")
    with pytest.raises(VenueRejected, match=r"^OANDA SOME_NEW_REASON: Something OANDA says$"):
        await venue.place(order("c-2"))
    await venue.place(order("c-3"))
    with pytest.raises(VenueRejected, match="CLIENT_ORDER_ID_ALREADY_EXISTS: an order with this"):
        await venue.place(order("c-3"))
    assert fake.placed == 1


async def test_oanda_failing_on_an_order_is_uncertain(fake, venue):
    fake.fail_next(503, "Service unavailable")
    with pytest.raises(VenueUncertain, match="HTTP 503"):
        await venue.place(order("c-1"))


async def test_orders_oanda_would_refuse_are_rejected_before_sending(fake, venue):
    for request, words in [
        (order("c-1", qty=1000.5), "OANDA trades EUR_USD in whole units: 1000.5 is not one"),
        (order("c-2", type="limit", price=1.123456), "EUR_USD to 5 decimals: the price 1.123456"),
        (order("c-3", sl=1.0000001), "the stop-loss 1.0000001 has more"),
        (order("c-4", type="limit"), "a limit order needs a price"),
        (order("c-5", instrument="BINANCE:BTCUSDT"), "BINANCE:BTCUSDT is not an OANDA instrument"),
        (order("c-6", instrument="OANDA:EUR_XYZ"), "this account cannot trade EUR_XYZ"),
        (order("c-7", qty=0), "positive number of units"),
    ]:
        with pytest.raises(VenueRejected, match=words):
            await venue.place(request)
    assert sent_orders(fake) == []
    # A CFD trading in tenths takes them.
    venue.check(order("c-8", qty=0.5, instrument="OANDA:SPX500_USD"))


# --- cancel and lookup ----------------------------------------------------------------


async def test_cancel_a_working_order_then_again(fake, venue):
    resting = await venue.place(order("c-1", type="limit", price=1.05))
    cancelled = await venue.cancel(resting)
    assert cancelled is not None and cancelled.status == "cancelled"
    assert fake.orders["c-1"]["state"] == "CANCELLED"
    assert [r.path for r in fake.rest.requests if r.method == "PUT"] == [
        f"/v3/accounts/{fake.config['account_id']}/orders/@c-1/cancel"
    ]
    with pytest.raises(VenueRejected) as again:
        await venue.cancel(resting)
    assert again.value.code == "ORDER_DOESNT_EXIST"
    assert "cannot cancel c-1: the order is not pending" in str(again.value)


async def test_lookup_of_a_known_and_an_unknown_client_id(fake, venue):
    await venue.place(order("c-1", type="limit", price=1.05, qty=3000))
    fresh = make_venue(fake)  # a restarted broker: nothing remembered
    await fresh.connect()
    found = await fresh.lookup("c-1", EUR_USD)
    assert found is not None
    assert (found.status, found.qty, found.side, found.type, found.price) == (
        "accepted",
        3000,
        "buy",
        "limit",
        1.05,
    )
    assert await fresh.lookup("never-sent", EUR_USD) is None
    await fresh.place(order("c-2", qty=50_000_000))  # cancelled for margin
    again = make_venue(fake)
    await again.connect()
    rejected = await again.lookup("c-2", EUR_USD)
    assert rejected is not None and rejected.status == "rejected"
    assert "INSUFFICIENT_MARGIN" in rejected.reason
    await fresh.close()
    await again.close()


async def test_an_answer_that_times_out_after_acceptance_is_uncertain(fake, venue):
    fake.accept_then_time_out()
    with pytest.raises(VenueUncertain, match="may have been done"):
        await venue.place(order("c-1", qty=700))
    found = await venue.lookup("c-1", EUR_USD)
    assert found is not None and found.status == "filled"
    assert found.filled_qty == 700 and found.avg_price == pytest.approx(1.1)
    assert fake.placed == 1


# --- reconciling ----------------------------------------------------------------------


async def test_open_orders_include_those_placed_elsewhere(fake, venue):
    await venue.place(order("c-1", type="limit", price=1.05))
    await venue.place(order("c-2"))  # filled: not open
    web = fake.place_elsewhere(EUR_USD, "sell", 2000, "limit", 1.2)
    bare = fake.place_elsewhere(EUR_USD, "buy", 1000, "stop", 1.3, with_client_id=False)
    opened = {o.client_order_id: o for o in await venue.open_orders()}
    assert set(opened) == {"c-1", web, f"oanda:{bare}"}
    assert (opened[web].side, opened[web].qty, opened[web].price) == ("sell", 2000, 1.2)
    assert opened[f"oanda:{bare}"].venue_order_id == bare
    # An order without a client id is looked up and cancelled by its OANDA id.
    found = await venue.lookup(f"oanda:{bare}", EUR_USD)
    assert found is not None and found.type == "stop"
    cancelled = await venue.cancel(opened[f"oanda:{bare}"])
    assert cancelled is not None and cancelled.status == "cancelled"
    assert fake._by_id[bare]["state"] == "CANCELLED"


async def test_fills_since_reads_every_page_oldest_first(fake, venue):
    fake.commission = 0.25
    await venue.place(order("c-1", qty=1000))
    middle = now_us()
    await asyncio.sleep(0.002)
    fake.prices[EUR_USD] = 1.2
    await venue.place(order("c-2", "sell", 400))
    await venue.place(order("c-3", qty=100))
    venue.page_size = 2  # three fills: two pages
    every = await venue.fills_since(None, [EUR_USD])
    assert [f.client_order_id for f in every] == ["c-1", "c-2", "c-3"]
    assert [(f.side, f.qty, f.price) for f in every] == [
        ("buy", 1000, pytest.approx(1.1)),
        ("sell", 400, pytest.approx(1.2)),
        ("buy", 100, pytest.approx(1.2)),
    ]
    assert all(f.fee == pytest.approx(0.25) and f.fee_asset == "USD" for f in every)
    assert every[0].venue_order_id == fake.orders["c-1"]["id"]
    idranges = [r for r in fake.rest.requests if r.path.endswith("/transactions/idrange")]
    assert len(idranges) == 2 and all(r.query["type"] == "ORDER_FILL" for r in idranges)
    later = await venue.fills_since(middle, [EUR_USD])
    assert [f.client_order_id for f in later] == ["c-2", "c-3"]


async def test_positions_and_account(fake, venue):
    await venue.place(order("c-1", qty=3000))
    fake.prices[EUR_USD] = 1.2
    await venue.place(order("c-2", qty=1000))
    await venue.place(order("c-3", "sell", 1000, instrument="OANDA:USD_JPY"))
    positions = {p.instrument: p for p in await venue.positions()}
    assert positions[EUR_USD].qty == 4000
    assert positions[EUR_USD].avg_price == pytest.approx(1.125)
    assert positions["OANDA:USD_JPY"].qty == -1000
    assert positions["OANDA:USD_JPY"].avg_price == pytest.approx(150.0)
    account = await venue.account()
    summary = fake.summary()
    assert account.currency == "USD"
    assert account.equity == pytest.approx(float(summary["NAV"]))
    assert account.equity == pytest.approx(100_000 + 3000 * 0.1)
    assert account.cash == pytest.approx(100_000)
    assert account.buying_power == pytest.approx(float(summary["marginAvailable"]))
    assert account.balances == {"USD": pytest.approx(100_000)}
    await venue.place(order("c-4", "sell", 4000))  # closes the EUR_USD trades
    assert [p.instrument for p in await venue.positions()] == ["OANDA:USD_JPY"]
    assert (await venue.account()).cash == pytest.approx(100_000 + 3000 * 0.1 - 1000 * 0.0)


# --- the transaction stream -----------------------------------------------------------


async def test_a_partial_fill_then_the_rest_come_through_the_stream(fake, venue):
    stream = await open_stream(venue)
    await venue.place(order("c-1", qty=10_000, type="limit", price=1.05))
    [created] = await next_events(stream, 1)
    assert isinstance(created, VenueOrder) and created.status == "accepted"
    fake.fill("c-1", 4000)
    part, partial = await next_events(stream, 2)
    assert isinstance(part, VenueFill)
    assert (part.client_order_id, part.side, part.qty, part.price) == ("c-1", "buy", 4000, 1.05)
    assert part.venue_order_id == fake.orders["c-1"]["id"]
    assert isinstance(partial, VenueOrder)
    assert (partial.status, partial.filled_qty, partial.avg_price) == (
        "partially_filled",
        4000,
        1.05,
    )
    fake.fill("c-1", price=1.04)
    rest, whole = await next_events(stream, 2)
    assert isinstance(rest, VenueFill) and rest.qty == 6000 and rest.price == 1.04
    assert rest.venue_fill_id != part.venue_fill_id
    assert whole.status == "filled" and whole.filled_qty == 10_000
    assert whole.avg_price == pytest.approx((4000 * 1.05 + 6000 * 1.04) / 10_000)
    await stream.aclose()


async def test_the_stream_reports_market_fills_cancels_and_orders_made_elsewhere(fake, venue):
    stream = await open_stream(venue)
    await venue.place(order("c-1", qty=1000))
    echoed, fill, filled = await next_events(stream, 3)
    # MARKET_ORDER (its creation) comes before or after place's answer: either state.
    assert isinstance(echoed, VenueOrder) and echoed.client_order_id == "c-1"
    assert isinstance(fill, VenueFill) and fill.qty == 1000
    assert (filled.client_order_id, filled.status) == ("c-1", "filled")
    resting = await venue.place(order("c-2", type="limit", price=1.0))
    await venue.cancel(resting)
    created, cancelled = await next_events(stream, 2)
    assert created.client_order_id == "c-2" and created.type == "limit"
    assert (cancelled.client_order_id, cancelled.status) == ("c-2", "cancelled")
    web = fake.place_elsewhere(EUR_USD, "sell", 300, "market")
    created, web_fill, web_filled = await next_events(stream, 3)
    assert (created.client_order_id, created.status) == (web, "accepted")
    assert web_fill.client_order_id == web and web_fill.side == "sell"
    assert (web_filled.client_order_id, web_filled.status) == (web, "filled")
    await stream.aclose()


async def test_a_dropped_stream_ends_the_iterator(fake, venue):
    stream = await open_stream(venue)
    await asyncio.sleep(fake.heartbeat_s * 2.5)  # heartbeats are read and skipped
    fake.drop_stream()
    with pytest.raises((StopAsyncIteration, VenueUnavailable)):
        await asyncio.wait_for(anext(stream), 5)


async def test_the_stream_refuses_a_wrong_token(fake):
    oanda = make_venue(fake)
    await oanda.connect()
    oanda._headers = {"Authorization": "Bearer wrong"}
    with pytest.raises(VenueAuthError, match="HTTP 401"):
        await anext(oanda.stream())
    assert fake.auth_failures == 1
    await oanda.close()
