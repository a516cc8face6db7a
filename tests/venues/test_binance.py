"""The Binance spot venue against FakeBinanceTrading: signed REST, the trading rules,
orders and their fates, the user data stream, reconciliation queries."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import msgspec
import pytest
from conftest import wait_until
from fake_binance_trading import SECRET_ENV, FakeBinanceTrading

from sptrader.config import BinanceBrokerConfig
from sptrader.venues.base import (
    StreamReady,
    VenueAuthError,
    VenueFill,
    VenueOrder,
    VenueOrderRequest,
    VenuePosition,
    VenueRejected,
    VenueUnavailable,
    VenueUncertain,
)
from sptrader.venues.binance import BinanceVenue
from sptrader.venues.registry import venue_class

BTC = "BINANCE:BTCUSDT"


@pytest.fixture
def fake() -> Iterator[FakeBinanceTrading]:
    with FakeBinanceTrading(timeout_s=0.5) as fake:
        yield fake


def make_venue(fake: FakeBinanceTrading, **env: str) -> BinanceVenue:
    config = msgspec.convert(fake.config, BinanceBrokerConfig)
    return BinanceVenue(config, env={**fake.env, **env})


@pytest.fixture
async def venue(fake: FakeBinanceTrading) -> AsyncIterator[BinanceVenue]:
    venue = make_venue(fake)
    await venue.connect()
    yield venue
    await venue.close()


class Stream:
    """A venue's stream read in the background: events, and how it ended."""

    def __init__(self, venue: BinanceVenue) -> None:
        self.events: list[Any] = []
        self.ready = asyncio.Event()
        self.error: BaseException | None = None
        self.ended = False
        self.task = asyncio.create_task(self._read(venue))

    async def _read(self, venue: BinanceVenue) -> None:
        try:
            async for event in venue.stream():
                if isinstance(event, StreamReady):
                    self.ready.set()
                else:
                    self.events.append(event)
        except Exception as error:
            self.error = error
        self.ended = True

    async def started(self) -> Stream:
        await asyncio.wait_for(self.ready.wait(), 3)
        return self

    async def wait(self, condition: Callable[[list[Any]], bool]) -> list[Any]:
        await wait_until(lambda: condition(self.events), timeout=3)
        return self.events

    def orders(self, client_id: str) -> list[VenueOrder]:
        return [
            e for e in self.events if isinstance(e, VenueOrder) and e.client_order_id == client_id
        ]

    def fills(self) -> list[VenueFill]:
        return [event for event in self.events if isinstance(event, VenueFill)]

    async def stop(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


def order(client_id: str, side: str = "buy", qty: float = 0.01, **fields: Any) -> VenueOrderRequest:
    return VenueOrderRequest(
        client_order_id=client_id, instrument=BTC, side=side, qty=qty, **fields
    )  # type: ignore[arg-type]


# --- the session and its signatures ---------------------------------------------------


def test_registry_names_this_venue() -> None:
    assert venue_class("binance") is BinanceVenue
    assert (BinanceVenue.name, BinanceVenue.prefix) == ("binance", "BINANCE")


async def test_signed_requests_carry_key_timestamp_and_signature(fake, venue) -> None:
    await venue.open_orders()
    (request,) = fake.requests_to("/api/v3/openOrders")
    assert request.headers["x-mbx-apikey"] == fake.api_key
    assert request.query["recvWindow"] == "5000"
    assert abs(int(request.query["timestamp"]) - time.time() * 1000) < 5000
    assert len(request.query["signature"]) == 64
    assert fake.auth_failures == 0


async def test_a_wrong_secret_is_refused_in_one_sentence(fake) -> None:
    venue = make_venue(fake, **{SECRET_ENV: "not-the-secret"})
    with pytest.raises(VenueAuthError) as caught:
        await venue.connect()
    await venue.close()
    assert caught.value.code == -1022
    assert str(caught.value) == (
        f"Binance -1022: the request's signature was refused: check the secret in {SECRET_ENV}"
    )
    assert "not-the-secret" not in str(caught.value)
    assert fake.auth_failures == 1


async def test_a_wrong_key_and_a_missing_secret_are_auth_errors(fake) -> None:
    venue = make_venue(fake, FAKE_BINANCE_API_KEY="someone-else")
    with pytest.raises(VenueAuthError, match="-2015: the API key was refused"):
        await venue.connect()
    await venue.close()
    config = msgspec.convert(fake.config, BinanceBrokerConfig)
    with pytest.raises(VenueAuthError, match=f"set the environment variable {SECRET_ENV}"):
        await BinanceVenue(config, env={"FAKE_BINANCE_API_KEY": fake.api_key}).connect()


async def test_a_skewed_clock_is_synced_and_the_request_sent_once_more(fake, venue) -> None:
    fake.clock_skew_ms = -60_000  # the venue's clock a minute behind: our stamps are "ahead"
    assert await venue.open_orders() == []
    assert len(fake.requests_to("/api/v3/openOrders")) == 2  # -1021, then accepted
    assert len(fake.requests_to("/api/v3/time")) == 2  # at connect, after the -1021
    placed = await venue.place(order("skew-1", type="market"))
    assert placed.status == "filled"
    assert fake.placed == 1


# --- orders ---------------------------------------------------------------------------


async def test_market_order_fills_at_once_and_the_stream_reports_it(fake, venue) -> None:
    stream = await Stream(venue).started()
    placed = await venue.place(order("mkt-1", qty=0.5, type="market"))
    assert placed.status == "filled"
    assert (placed.filled_qty, placed.avg_price) == (0.5, 50_000.0)
    assert placed.venue_order_id == str(fake.orders["mkt-1"]["orderId"])
    sent = fake.requests_to("/api/v3/order")[0].query
    assert (sent["type"], sent["quantity"], sent["newOrderRespType"]) == ("MARKET", "0.5", "FULL")
    await stream.wait(
        lambda events: any(isinstance(e, VenueOrder) and e.status == "filled" for e in events)
    )
    (fill,) = stream.fills()
    assert (fill.client_order_id, fill.side, fill.qty, fill.price) == (
        "mkt-1",
        "buy",
        0.5,
        50_000.0,
    )
    assert (fill.fee, fill.fee_asset) == (pytest.approx(25.0), "BTC")
    assert fill.venue_fill_id == f"BTCUSDT:{fake.trades[0]['id']}"
    assert [o.status for o in stream.orders("mkt-1")] == ["accepted", "filled"]
    # The fill comes before the order update that it completes.
    assert stream.events.index(fill) < stream.events.index(stream.orders("mkt-1")[-1])
    await stream.stop()


async def test_limit_order_rests_then_fills_in_two_parts(fake, venue) -> None:
    stream = await Stream(venue).started()
    placed = await venue.place(order("lim-1", qty=0.4, type="limit", price=49_000.0))
    assert (placed.status, placed.price, placed.filled_qty) == ("accepted", 49_000.0, 0.0)
    sent = fake.requests_to("/api/v3/order")[0].query
    assert (sent["type"], sent["timeInForce"], sent["price"]) == ("LIMIT", "GTC", "49000")
    fake.fill("lim-1", qty=0.1)
    await stream.wait(lambda events: len(stream.orders("lim-1")) == 2)
    partial = stream.orders("lim-1")[-1]
    assert (partial.status, partial.filled_qty, partial.avg_price) == (
        "partially_filled",
        0.1,
        49_000.0,
    )
    fake.fill("lim-1", price=48_990.0)
    await stream.wait(lambda events: [o.status for o in stream.orders("lim-1")][-1:] == ["filled"])
    done = stream.orders("lim-1")[-1]
    assert done.filled_qty == pytest.approx(0.4)
    assert done.avg_price == pytest.approx((0.1 * 49_000 + 0.3 * 48_990) / 0.4)
    assert [(f.qty, f.price) for f in stream.fills()] == [(0.1, 49_000.0), (0.3, 48_990.0)]
    assert len({f.venue_fill_id for f in stream.fills()}) == 2
    await stream.stop()


async def test_marketable_limit_fills_at_the_market(fake, venue) -> None:
    placed = await venue.place(order("lim-2", side="sell", qty=0.2, type="limit", price=45_000.0))
    assert (placed.status, placed.avg_price) == ("filled", 50_000.0)


async def test_stop_order_is_a_stop_loss_that_rests_until_triggered(fake, venue) -> None:
    stream = await Stream(venue).started()
    placed = await venue.place(order("stop-1", side="sell", qty=0.3, type="stop", price=47_500.0))
    assert (placed.type, placed.status, placed.price) == ("stop", "accepted", 47_500.0)
    sent = fake.requests_to("/api/v3/order")[0].query
    assert (sent["type"], sent["stopPrice"]) == ("STOP_LOSS", "47500")
    assert "price" not in sent
    fake.prices[BTC] = 47_400.0
    fake.fill("stop-1")
    await stream.wait(lambda events: [o.status for o in stream.orders("stop-1")][-1:] == ["filled"])
    assert stream.fills()[0].price == 47_400.0
    assert (stream.fills()[0].fee_asset, stream.fills()[0].fee) == ("USDT", pytest.approx(14.22))
    await stream.stop()


async def test_insufficient_balance_is_one_plain_sentence(fake, venue) -> None:
    with pytest.raises(VenueRejected) as caught:
        await venue.place(order("big-1", side="sell", qty=5.0, type="market"))
    assert str(caught.value) == "Binance -2010: insufficient balance for 5 BTC"
    assert fake.placed == 0
    assert await venue.lookup("big-1", BTC) is None  # nothing placed: safe to send again


async def test_duplicate_client_id_of_an_open_order(fake, venue) -> None:
    await venue.place(order("dup-1", type="limit", price=40_000.0))
    with pytest.raises(VenueRejected, match="-2010: an open order already has the client id dup-1"):
        await venue.place(order("dup-1", type="limit", price=40_000.0))
    assert fake.placed == 1


async def test_other_refusals_keep_binances_words(fake, venue) -> None:
    fake.fail_next(-1013, "Filter failure: PERCENT_PRICE_BY_SIDE")
    with pytest.raises(VenueRejected) as caught:
        await venue.place(order("pct-1", type="limit", price=40_000.0))
    assert str(caught.value) == "Binance -1013: Filter failure: PERCENT_PRICE_BY_SIDE"
    with pytest.raises(VenueRejected) as caught:
        await venue.place(order("stop-2", side="sell", type="stop", price=51_000.0))
    assert str(caught.value) == "Binance -2010: Stop price would trigger immediately"
    assert fake.placed == 0


@pytest.mark.parametrize(
    ("fields", "sentence"),
    [
        ({"qty": 0.00001}, "Binance LOT_SIZE: 0.00001 BTC is below the minimum quantity 0.0001"),
        ({"qty": 0.00015}, "Binance LOT_SIZE: 0.00015 is not a multiple of the step 0.0001"),
        ({"qty": 10_000.0}, "Binance LOT_SIZE: 10000 BTC is above the maximum quantity 9000"),
        (
            {"qty": 200.0, "type": "market"},
            "Binance MARKET_LOT_SIZE: 200 BTC is above the maximum quantity 100",
        ),
        (
            {"type": "limit", "price": 50_000.005},
            "Binance PRICE_FILTER: price 50000.005 is not a multiple of the tick size 0.01",
        ),
        (
            {"qty": 0.0001, "type": "limit", "price": 40_000.0},
            "Binance NOTIONAL: the order's value 4 USDT is below the minimum 5 USDT",
        ),
        ({"type": "limit", "price": 40_000.0, "tif": "day"}, "Binance: Binance spot has no day"),
        ({"client_order_id": "has space"}, "Binance: client order id 'has space' is not one"),
    ],
)
async def test_trading_rules_refuse_locally(fake, venue, fields, sentence) -> None:
    request = order(fields.pop("client_order_id", "rule-1"), **fields)
    with pytest.raises(VenueRejected) as caught:
        await venue.place(request)
    assert str(caught.value).startswith(sentence)
    with pytest.raises(VenueRejected):
        venue.check(request)  # the rules are loaded now: check says the same
    assert fake.requests_to("/api/v3/order") == []


async def test_float_noise_is_not_off_the_step(fake, venue) -> None:
    placed = await venue.place(order("noise-1", qty=0.1 + 0.2, type="market"))
    assert fake.requests_to("/api/v3/order")[0].query["quantity"] == "0.3"
    assert placed.filled_qty == 0.3


async def test_check_before_the_rules_are_loaded_lets_place_decide(fake) -> None:
    venue = make_venue(fake)
    venue.check(order("early-1", qty=0.00001))  # nothing known yet: no verdict
    await venue.connect()
    with pytest.raises(VenueRejected, match="LOT_SIZE"):
        await venue.place(order("early-1", qty=0.00001))
    await venue.close()
    assert fake.requests_to("/api/v3/order") == []


async def test_an_unknown_symbol(fake, venue) -> None:
    request = VenueOrderRequest("sym-1", "BINANCE:NOPEUSDT", "buy", 1.0)
    with pytest.raises(VenueRejected, match="BINANCE:NOPEUSDT is not a Binance spot symbol"):
        await venue.place(request)


# --- cancel, lookup and uncertain answers ---------------------------------------------


async def test_cancel_a_working_order_then_again(fake, venue) -> None:
    stream = await Stream(venue).started()
    placed = await venue.place(order("can-1", type="limit", price=45_000.0))
    assert fake.balances["USDT"][1] == 450  # held for the order
    cancelled = await venue.cancel(placed)
    assert cancelled is not None
    assert (cancelled.client_order_id, cancelled.status) == ("can-1", "cancelled")
    assert fake.balances["USDT"][1] == 0
    # The stream's cancel report names the order by its id (C), not the cancel's (c).
    await stream.wait(lambda events: any(o.status == "cancelled" for o in stream.orders("can-1")))
    with pytest.raises(VenueRejected) as caught:
        await venue.cancel(placed)
    assert caught.value.code == -2011
    assert "not open at Binance" in str(caught.value)
    await stream.stop()


async def test_lookup_a_known_and_an_unknown_client_id(fake, venue) -> None:
    await venue.place(order("look-1", type="limit", price=44_000.0))
    found = await venue.lookup("look-1", BTC)
    assert found is not None
    assert (found.status, found.qty, found.price, found.side) == ("accepted", 0.01, 44_000.0, "buy")
    assert await venue.lookup("never-sent", BTC) is None


async def test_an_answer_that_times_out_is_uncertain_and_lookup_finds_the_order(
    fake, venue
) -> None:
    fake.accept_then_time_out()
    with pytest.raises(VenueUncertain, match="may have been done"):
        await venue.place(order("slow-1", type="market", qty=0.1))
    found = await venue.lookup("slow-1", BTC)
    assert found is not None and found.status == "filled"
    assert fake.placed == 1


async def test_server_errors_and_rate_limits(fake, venue) -> None:
    fake.fail_next(503, "Service Unavailable.")
    with pytest.raises(VenueUncertain, match="fate is unknown"):
        await venue.place(order("err-1", type="market"))
    fake.fail_next(429, "Too many requests; current limit of IP is 6000 requests per minute.")
    with pytest.raises(VenueUnavailable) as caught:
        await venue.place(order("err-2", type="market"))
    assert str(caught.value) == "Binance 429: too many requests: retry after 7 s"
    assert fake.placed == 0


async def test_an_unreachable_venue_is_unavailable(fake) -> None:
    config = msgspec.convert({**fake.config, "rest_url": "http://127.0.0.1:9"}, BinanceBrokerConfig)
    venue = BinanceVenue(config, env=fake.env)
    with pytest.raises(VenueUnavailable, match="cannot reach"):
        await venue.connect()
    await venue.close()


# --- reconciliation -------------------------------------------------------------------


async def test_open_orders_include_one_placed_elsewhere(fake, venue) -> None:
    await venue.place(order("open-1", type="limit", price=43_000.0))
    await venue.place(order("open-2", type="market"))
    web = fake.place_elsewhere(BTC, "sell", 0.2, price=60_000.0)
    orders = {o.client_order_id: o for o in await venue.open_orders()}
    assert set(orders) == {"open-1", web}
    assert (orders[web].side, orders[web].qty, orders[web].price) == ("sell", 0.2, 60_000.0)


async def test_fills_since(fake, venue) -> None:
    await venue.place(order("fill-1", type="market", qty=0.1))
    await venue.place(order("fill-2", type="limit", qty=0.2, price=42_000.0))
    fake.fill("fill-2", qty=0.05)
    middle_us = fake.trades[-1]["time"] * 1000
    web = fake.place_elsewhere(BTC, "sell", 0.3, type="market")
    fills = await venue.fills_since(None, [BTC, "OANDA:EUR_USD"])
    assert [(f.client_order_id, f.side, f.qty) for f in fills] == [
        ("fill-1", "buy", 0.1),
        ("fill-2", "buy", 0.05),
        (None, "sell", 0.3),  # myTrades has no client id; that order was never seen here
    ]
    assert fills[2].venue_order_id == str(fake.orders[web]["orderId"])
    assert [f.venue_fill_id for f in fills] == [f"BTCUSDT:{t['id']}" for t in fake.trades]
    later = await venue.fills_since(middle_us, [BTC])
    assert [f.qty for f in later] == [0.05, 0.3]
    for request in fake.requests_to("/api/v3/myTrades"):
        assert not ("fromId" in request.query and "startTime" in request.query)


async def test_positions_and_account(fake, venue) -> None:
    await venue.place(order("pos-1", type="market", qty=0.5))
    positions = await venue.positions()
    assert positions == [VenuePosition(BTC, pytest.approx(1.4995))]
    account = await venue.account()
    assert account.currency == "USDT"
    assert account.cash == 75_000.0
    assert account.balances == {"USDT": 75_000.0, "BTC": pytest.approx(1.4995)}
    assert account.equity == pytest.approx(75_000 + 1.4995 * 50_000)
    assert account.buying_power == 75_000.0


async def test_stream_positions_follow_balance_updates(fake, venue) -> None:
    await venue.positions()
    stream = await Stream(venue).started()
    await venue.place(order("bal-1", side="sell", qty=0.25, type="market"))
    await stream.wait(lambda events: any(isinstance(e, list) for e in events))
    latest = [e for e in stream.events if isinstance(e, list)][-1]
    assert latest == [VenuePosition(BTC, 0.75)]
    await stream.stop()


# --- the stream -----------------------------------------------------------------------


async def test_the_stream_subscription_is_signed(fake, venue) -> None:
    stream = await Stream(venue).started()
    assert fake.subscriptions == 1
    await stream.stop()
    wrong = make_venue(fake, **{SECRET_ENV: "wrong"})
    bad = Stream(wrong)
    await wait_until(lambda: bad.ended)
    assert isinstance(bad.error, VenueAuthError)
    assert bad.error.code == -1022
    assert fake.auth_failures == 1


async def test_the_stream_dropping_ends_the_iterator(fake, venue) -> None:
    stream = await Stream(venue).started()
    fake.drop_stream()
    await wait_until(lambda: stream.ended)
    assert stream.error is None or isinstance(stream.error, VenueUnavailable)
    again = await Stream(venue).started()  # the broker reconnects
    await venue.place(order("after-1", type="market"))
    await again.wait(lambda events: len(again.fills()) == 1)
    await again.stop()


async def test_the_stream_cannot_open(fake) -> None:
    config = msgspec.convert(
        {**fake.config, "ws_url": "ws://127.0.0.1:9/ws-api/v3"}, BinanceBrokerConfig
    )
    venue = BinanceVenue(config, env=fake.env)
    with pytest.raises(VenueUnavailable, match="cannot open the user data stream"):
        async for _ in venue.stream():
            pass


async def test_a_skewed_clock_at_subscription_is_synced(fake, venue) -> None:
    fake.clock_skew_ms = -60_000
    stream = await Stream(venue).started()
    assert fake.subscriptions == 1
    assert len(fake.requests_to("/api/v3/time")) == 2
    await stream.stop()


async def test_positions_after_a_restart_come_from_the_remembered_symbols(fake) -> None:
    config = msgspec.convert(fake.config, BinanceBrokerConfig)
    remembered = BinanceVenue(config, env=fake.env, symbols={BTC: "BTCUSDT"})
    await remembered.connect()
    assert await remembered.positions() == [VenuePosition(BTC, 1.0)]
    await remembered.close()
    fresh = BinanceVenue(config, env=fake.env)
    await fresh.connect()
    assert await fresh.positions() == []  # no symbol known: nothing is called a position
    await fresh.close()
