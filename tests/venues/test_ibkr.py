"""The IBKR venue against a fake Client Portal gateway (tests/fake_ibkr_gateway.py)."""

from __future__ import annotations

import asyncio
import logging

import msgspec
import pytest

from sptrader.config import IbkrBrokerConfig
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
from sptrader.venues.ibkr import (
    IbkrVenue,
    _pick_stock,
    gateway_root,
    venue_status,
    verify_certificate,
)
from tests.fake_ibkr_gateway import FakeIbkrTrading
from tests.fakes import free_port


@pytest.fixture
def fake():
    with FakeIbkrTrading(timeout_s=0.5) as gateway:
        yield gateway


def make_venue(fake: FakeIbkrTrading, **overrides) -> IbkrVenue:
    venue = IbkrVenue(msgspec.convert(fake.config | overrides, IbkrBrokerConfig), env=fake.env)
    venue.pace_s = 0.0
    venue.poll_s = 0.02
    return venue


@pytest.fixture
async def venue(fake):
    venue = make_venue(fake)
    await venue.connect()
    yield venue
    await venue.close()


def order(
    cid: str, side="buy", qty=10.0, type="market", price=None, tif="gtc", instrument="IBKR:AAPL"
):
    return VenueOrderRequest(cid, instrument, side, qty, type, price, tif)


async def next_event(stream, timeout: float = 3.0):
    return await asyncio.wait_for(anext(stream), timeout)


async def events_until(stream, done, timeout: float = 3.0) -> list:
    seen: list = []
    while not done(seen):
        seen.append(await next_event(stream, timeout))
    return seen


# --- units ------------------------------------------------------------------------------


def test_only_the_local_gateway_skips_certificate_verification():
    assert verify_certificate("https://localhost:5000/v1/api") is False
    assert verify_certificate("https://127.0.0.1:5000/v1/api") is False
    assert verify_certificate("https://[::1]:5000/v1/api") is False
    assert verify_certificate("https://LOCALHOST:5000/v1/api") is False
    assert verify_certificate("https://gateway.example.com:5000/v1/api") is True
    assert verify_certificate("https://10.0.0.5:5000/v1/api") is True
    assert verify_certificate("https://localhost.evil.com/v1/api") is True
    assert gateway_root("https://localhost:5000/v1/api") == "https://localhost:5000"


def test_status_mapping():
    assert venue_status("PreSubmitted", 0, 10) == "accepted"
    assert venue_status("PendingSubmit", 0, 10) == "accepted"
    assert venue_status("Submitted", 4, 6) == "partially_filled"
    assert venue_status("Filled", 10, 0) == "filled"
    assert venue_status("Cancelled", 4, 6) == "cancelled"
    assert venue_status("ApiCancelled", 0, 10) == "cancelled"
    assert venue_status("Inactive", 0, 10) == "rejected"


def test_the_us_listing_is_picked_over_others():
    found = [
        {
            "conid": "38708077",
            "symbol": "AAPL",
            "description": "MEXI",
            "sections": [{"secType": "STK"}],
        },
        {
            "conid": "265598",
            "symbol": "AAPL",
            "description": "NASDAQ",
            "sections": [{"secType": "STK"}],
        },
    ]
    assert _pick_stock(found, "AAPL") == "265598"
    assert _pick_stock(found[:1], "AAPL") == "38708077"
    assert _pick_stock([{"conid": "1", "symbol": "AAPLX", "sections": []}], "AAPL") is None


# --- the session ------------------------------------------------------------------------


async def test_a_logged_out_gateway_is_one_clear_sentence(fake):
    fake.logged_in = False
    venue = make_venue(fake)
    with pytest.raises(VenueAuthError) as caught:
        await venue.connect()
    root = fake.config["gateway_url"].removesuffix("/v1/api")
    assert str(caught.value) == (
        f"IBKR: the gateway at {fake.config['gateway_url']} is not logged in:"
        f" log in at {root}/ in a browser"
    )
    assert fake.auth_failures == 1
    await venue.close()


async def test_order_endpoints_refuse_a_session_that_logged_out(fake, venue):
    fake.logged_in = False
    with pytest.raises(VenueAuthError, match="not logged in"):
        await venue.place(order("c-out"))
    assert fake.auth_failures >= 1
    assert fake.placed == 0


async def test_no_gateway_running_is_unavailable(fake):
    venue = make_venue(fake, gateway_url=f"http://127.0.0.1:{free_port()}/v1/api")
    with pytest.raises(VenueUnavailable, match="is it running"):
        await venue.connect()


async def test_accounts_are_queried_again_after_the_nightly_reset(fake, venue):
    fake.reset_session()
    placed = await venue.place(order("c-reset"))
    assert placed.status == "filled"
    assert fake.placed == 1


async def test_the_session_is_tickled_until_closed(fake):
    venue = make_venue(fake, tickle_s=0.02)
    await venue.connect()
    await asyncio.sleep(0.2)
    await venue.close()
    tickled = fake.tickles
    assert tickled >= 2
    await asyncio.sleep(0.1)
    # A tickle sent just before close may reach the gateway after it (one, not more).
    assert fake.tickles <= tickled + 1


# --- orders -----------------------------------------------------------------------------


async def test_market_order_confirms_the_question_and_fills(fake, venue, caplog):
    caplog.set_level(logging.WARNING, "sptrader.venues.ibkr")
    placed = await venue.place(order("c-mkt", qty=10))
    assert placed.status == "filled"
    assert placed.venue_order_id == str(fake.orders["c-mkt"]["orderId"])
    assert fake.orders["c-mkt"]["order_ref"] == "c-mkt"
    assert fake.orders["c-mkt"]["avgPrice"] == "190.0000"
    assert len(fake.questions) == 1
    assert "without market data" in caplog.text
    # The US listing's conid, searched once and kept.
    assert venue.symbols["IBKR:AAPL"] == "265598"
    await venue.place(order("c-mkt-2", side="sell", qty=4))
    assert fake.searches == 1
    assert len(fake.questions) == 1  # only the session's first order is asked about


async def test_limit_far_from_the_market_gets_two_questions_and_rests(fake, venue):
    placed = await venue.place(order("c-lmt", qty=5, type="limit", price=150.0, tif="day"))
    assert placed.status == "accepted"
    assert len(fake.questions) == 2
    assert "Percentage constraint" in fake.questions[1]
    found = await venue.lookup("c-lmt", "IBKR:AAPL")
    assert found is not None
    assert (found.type, found.price, found.tif, found.qty, found.side) == (
        "limit",
        150.0,
        "day",
        5,
        "buy",
    )


async def test_marketable_limit_fills_at_once(venue):
    placed = await venue.place(order("c-lmt-now", type="limit", price=191.0))
    assert placed.status == "filled"


async def test_stop_order_rests_until_triggered(fake, venue):
    placed = await venue.place(order("c-stp", side="sell", qty=3, type="stop", price=185.0))
    assert placed.status == "accepted"
    assert fake.orders["c-stp"]["status"] == "PreSubmitted"
    found = await venue.lookup("c-stp", "IBKR:AAPL")
    assert (found.type, found.price, found.status) == ("stop", 185.0, "accepted")
    fake.fill("c-stp")
    found = await venue.lookup("c-stp", "IBKR:AAPL")
    assert (found.status, found.filled_qty, found.avg_price) == ("filled", 3, 185.0)


async def test_partial_fill_then_the_rest_through_the_stream(fake, venue):
    await venue.place(order("c-part", qty=10, type="limit", price=189.0))
    stream = venue.stream()
    assert isinstance(await next_event(stream), StreamReady)
    fake.fill("c-part", qty=4, price=189.0)
    first = await events_until(stream, lambda seen: len(seen) == 2)
    update, fill = first
    assert isinstance(update, VenueOrder) and isinstance(fill, VenueFill)
    assert (update.client_order_id, update.status, update.filled_qty) == (
        "c-part",
        "partially_filled",
        4,
    )
    assert (fill.client_order_id, fill.qty, fill.price, fill.side) == ("c-part", 4, 189.0, "buy")
    assert fill.venue_order_id == update.venue_order_id
    assert fill.fee == 1.0 and fill.instrument == "IBKR:AAPL"
    fake.fill("c-part")
    update, fill = await events_until(stream, lambda seen: len(seen) == 2)
    assert (update.status, update.filled_qty, update.avg_price) == ("filled", 10, 189.0)
    assert fill.qty == 6
    await stream.aclose()


async def test_a_rejection_is_one_sentence(fake, venue):
    fake.fail_next(400, "Your order is not accepted. \nInsufficient buying power.")
    with pytest.raises(VenueRejected) as caught:
        await venue.place(order("c-rej", qty=100_000))
    assert str(caught.value) == "IBKR: Your order is not accepted. Insufficient buying power"
    assert fake.placed == 0


async def test_a_duplicate_client_id_is_refused(fake, venue):
    await venue.place(order("c-dup", type="limit", price=189.0))
    with pytest.raises(VenueRejected, match="already registered"):
        await venue.place(order("c-dup", type="limit", price=189.0))
    assert fake.placed == 1


async def test_not_an_ibkr_instrument_or_stock(venue):
    with pytest.raises(VenueRejected, match="not an IBKR instrument"):
        await venue.place(order("c-x", instrument="BINANCE:BTCUSDT"))
    with pytest.raises(VenueRejected, match="no stock NOPE"):
        await venue.place(order("c-y", instrument="IBKR:NOPE"))
    with pytest.raises(VenueRejected, match="needs a price"):
        await venue.place(order("c-z", type="limit"))


async def test_cancel(fake, venue):
    placed = await venue.place(order("c-can", type="limit", price=189.0))
    assert await venue.cancel(placed) is None
    found = await venue.lookup("c-can", "IBKR:AAPL")
    assert found.status == "cancelled"
    with pytest.raises(VenueRejected, match="cannot be cancelled"):
        await venue.cancel(placed)


async def test_lookup_of_an_unknown_client_id(venue):
    assert await venue.lookup("never-sent", "IBKR:AAPL") is None


async def test_a_placement_whose_answer_times_out_is_uncertain_then_found(fake, venue):
    fake.accept_then_time_out()
    with pytest.raises(VenueUncertain):
        await venue.place(order("c-late", type="limit", price=189.0))
    found = await venue.lookup("c-late", "IBKR:AAPL")
    assert found is not None and found.status == "accepted"
    assert fake.placed == 1


async def test_open_orders_include_one_placed_elsewhere(fake):
    elsewhere = fake.place_elsewhere("IBKR:MSFT", "sell", 2, "limit", 420.0)
    venue = make_venue(fake)
    await venue.connect()  # a new session: its first live-orders answer is warmed up
    try:
        await venue.place(order("c-open", type="limit", price=189.0))
        await venue.place(order("c-done"))
        working = {o.client_order_id: o for o in await venue.open_orders()}
        assert set(working) == {elsewhere, "c-open"}
        assert (working[elsewhere].instrument, working[elsewhere].side) == ("IBKR:MSFT", "sell")
        assert fake.placed == 2
    finally:
        await venue.close()


async def test_fills_since(fake, venue):
    await venue.place(order("c-f1", qty=10))
    await venue.place(order("c-f2", side="sell", qty=4))
    fills = await venue.fills_since(None, ["IBKR:AAPL"])
    assert [(f.client_order_id, f.side, f.qty, f.price) for f in fills] == [
        ("c-f1", "buy", 10, 190.0),
        ("c-f2", "sell", 4, 190.0),
    ]
    assert len({f.venue_fill_id for f in fills}) == 2
    assert await venue.fills_since(fills[-1].ts_us + 1, []) == []
    assert len(await venue.fills_since(fills[0].ts_us, [])) == 2


async def test_positions_and_account(fake, venue):
    await venue.place(order("c-p1", qty=10))
    fake.prices["IBKR:MSFT"] = 400.0
    await venue.place(order("c-p2", side="sell", qty=5, instrument="IBKR:MSFT"))
    held = {p.instrument: p for p in await venue.positions()}
    assert (held["IBKR:AAPL"].qty, held["IBKR:AAPL"].avg_price) == (10, 190.0)
    assert held["IBKR:MSFT"].qty == -5
    account = await venue.account()
    assert account.currency == "USD"
    assert account.cash == pytest.approx(100_000 - 1900 + 2000 - 2.0)
    assert account.equity == pytest.approx(account.cash + 1900 - 2000)
    assert account.buying_power == pytest.approx(account.equity * 4)


async def test_the_stream_ends_when_a_poll_is_dropped(fake, venue):
    stream = venue.stream()
    assert isinstance(await next_event(stream), StreamReady)
    fake.drop_stream()
    with pytest.raises(VenueUnavailable):
        await events_until(stream, lambda seen: False)


async def test_the_stream_ends_when_the_gateway_logs_out(fake, venue):
    stream = venue.stream()
    assert isinstance(await next_event(stream), StreamReady)
    fake.logged_in = False
    with pytest.raises(VenueAuthError):
        await events_until(stream, lambda seen: False)


async def test_a_competing_or_disconnected_session(venue):
    with pytest.raises(VenueAuthError, match="another session"):
        venue._check_session({"authenticated": True, "competing": True, "connected": True})
    with pytest.raises(VenueUnavailable, match="not connected to IBKR's servers"):
        venue._check_session({"authenticated": True, "competing": False, "connected": False})


async def test_rate_limit_and_server_errors_on_placement(fake, venue):
    fake.fail_next(429, "Too many requests")
    with pytest.raises(VenueUnavailable, match="rate limit"):
        await venue.place(order("c-429"))
    fake.fail_next(503, "Service Unavailable")
    with pytest.raises(VenueUncertain, match="may or may not"):
        await venue.place(order("c-503"))
    assert await venue.lookup("c-503", "IBKR:AAPL") is None


async def test_a_configured_account_the_login_lacks(fake):
    venue = make_venue(fake, account_id="U9999999")
    with pytest.raises(VenueAuthError, match="account U9999999 is not one this login trades"):
        await venue.connect()
    named = make_venue(fake, account_id="DU1234567")
    await named.connect()
    assert named.account_id == "DU1234567"
    await named.close()
