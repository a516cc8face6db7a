"""The symbol directory: feeds' instrument lists cached in DuckDB with a TTL, search,
validation, and what unknown watchlist symbols do to a feed service."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path

import fake_coinbase
import fake_kraken
import pytest
from conftest import make_settings, wait_until
from fakes import FakeHttpServer, FakeRequest, FakeResponse, free_port
from websockets.asyncio.server import ServerConnection, serve

from sptrader.clock import now_us
from sptrader.engine import Engine
from sptrader.errors import SptraderError
from sptrader.feeds.base import SymbolInfo
from sptrader.feeds.coinbase import PRODUCTS_PATH
from sptrader.models import ServiceState

KRAKEN_PAIRS_PATH = "/0/public/AssetPairs"
#: Longer products containing "BTCUSD", to check that exact matches rank first.
EXTRA_PRODUCTS = [
    fake_coinbase.product("WBTC-USD", "Wrapped Bitcoin", "US Dollar"),
    fake_coinbase.product("BTC-USDT", "Bitcoin", "Tether"),
]


class Exchange:
    """A fake exchange's REST side that can be taken down (503) and counts list requests."""

    def __init__(self, route, list_path: str, extra_products: list[dict] | None = None) -> None:
        self.route = route
        self.list_path = list_path
        self.extra_products = extra_products or []
        self.down = False
        self.server = FakeHttpServer(self)

    def __call__(self, request: FakeRequest) -> FakeResponse | None:
        if self.down:
            return FakeResponse(503, "Service Unavailable")
        if request.path == self.list_path and self.extra_products:
            products = fake_coinbase.PRODUCTS + self.extra_products
            return FakeResponse(200, {"products": products, "num_products": len(products)})
        return self.route(request)

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def list_requests(self) -> int:
        return sum(request.path == self.list_path for request in self.server.requests)


@pytest.fixture
def coinbase() -> Iterator[Exchange]:
    exchange = Exchange(fake_coinbase.history_route, PRODUCTS_PATH, EXTRA_PRODUCTS)
    with exchange.server:
        yield exchange


@pytest.fixture
def kraken() -> Iterator[Exchange]:
    exchange = Exchange(fake_kraken.history_route, KRAKEN_PAIRS_PATH)
    with exchange.server:
        yield exchange


def exchange_settings(home: Path, coinbase: Exchange, kraken: Exchange, **overrides):
    feeds = {
        "coinbase": fake_coinbase.config_section(f"ws://127.0.0.1:{free_port()}", coinbase.url),
        "kraken": fake_kraken.config_section(f"ws://127.0.0.1:{free_port()}", kraken.url),
        "replay": {"enabled": True},
    }
    feeds.update(overrides.pop("feeds", {}))
    overrides.setdefault("watchlist", ["SIM:EURUSD", "REPLAY:SIM:EURUSD"])
    return make_settings(home, feeds=feeds, **overrides)


def quiet_retries(engine: Engine) -> list[float]:
    """History feeds wait between retries through ``sleep``: record instead of waiting."""
    sleeps: list[float] = []
    coinbase = engine.history_feed("COINBASE:X")
    kraken = engine.history_feed("KRAKEN:X")
    assert coinbase is not None and kraken is not None
    coinbase.sleep = sleeps.append  # type: ignore[attr-defined]
    kraken._sleep = sleeps.append  # type: ignore[attr-defined]
    return sleeps


@pytest.fixture
def engine(home: Path, coinbase: Exchange, kraken: Exchange) -> Iterator[Engine]:
    engine = Engine(exchange_settings(home, coinbase, kraken))
    store = engine.open_store()
    engine.sleeps = quiet_retries(engine)  # type: ignore[attr-defined]
    yield engine
    store.close()


def symbol_lists(engine: Engine) -> dict[str, int]:
    rows = (
        engine.require_store().cursor().execute("SELECT feed, count FROM symbol_lists").fetchall()
    )
    return dict(rows)


def age_list(engine: Engine, feed: str, hours: float) -> None:
    engine.require_store().cursor().execute(
        "UPDATE symbol_lists SET fetched_at = fetched_at - to_microseconds(?) WHERE feed = ?",
        [int(hours * 3600 * 1_000_000), feed],
    )


def instruments(found: list[SymbolInfo]) -> list[str]:
    return [item.instrument for item in found]


# --- the cache ------------------------------------------------------------------------


def test_the_first_search_fetches_and_caches_later_ones_use_the_cache(
    engine: Engine, coinbase: Exchange, kraken: Exchange
) -> None:
    directory = engine.symbols
    assert directory.fetched_at("coinbase") is None and directory.count("coinbase") == 0
    before = now_us()
    assert instruments(directory.search("eth-eur")) == ["COINBASE:ETH-EUR"]
    after = now_us()
    assert (coinbase.list_requests, kraken.list_requests) == (1, 1)
    # Trading spot products only; every Kraken pair; the simulator's built-in list.
    assert symbol_lists(engine) == {"coinbase": 4, "kraken": 5, "sim": 17}
    fetched = directory.fetched_at("coinbase")
    assert fetched is not None and before <= fetched <= after

    # Within the TTL: from the cache, however often.
    for query in ("btc", "ethereum", "eur"):
        assert directory.search(query)
    assert (coinbase.list_requests, kraken.list_requests) == (1, 1)
    assert directory.fetched_at("coinbase") == fetched

    # Past the TTL (24 h by default): fetched again, the other feed's list untouched.
    age_list(engine, "coinbase", 25)
    assert instruments(directory.search("eth-eur")) == ["COINBASE:ETH-EUR"]
    assert (coinbase.list_requests, kraken.list_requests) == (2, 1)
    refreshed = directory.fetched_at("coinbase")
    assert refreshed is not None and refreshed >= after
    assert symbol_lists(engine) == {"coinbase": 4, "kraken": 5, "sim": 17}
    count = engine.require_store().cursor().execute("SELECT count(*) FROM symbols").fetchall()
    assert count == [(4 + 5 + 17,)]  # replaced, not appended


def test_a_short_ttl_from_the_config_refetches(
    home: Path, coinbase: Exchange, kraken: Exchange
) -> None:
    engine = Engine(exchange_settings(home, coinbase, kraken, symbols={"ttl_hours": 1e-6}))
    store = engine.open_store()
    try:
        assert engine.symbols.ttl_us == 3600
        engine.symbols.search("btc", feed="coinbase")
        time.sleep(0.01)  # 10 ms: well past a 3.6 ms TTL
        engine.symbols.search("btc", feed="coinbase")
        assert coinbase.list_requests == 2
    finally:
        store.close()


def test_a_failing_refresh_keeps_serving_the_old_list(
    engine: Engine, coinbase: Exchange, caplog: pytest.LogCaptureFixture
) -> None:
    directory = engine.symbols
    directory.search("btcusd")
    fetched = directory.fetched_at("coinbase")
    age_list(engine, "coinbase", 25)
    aged = directory.fetched_at("coinbase")
    assert aged is not None and fetched is not None and aged < fetched
    coinbase.down = True
    caplog.set_level(logging.WARNING, logger="sptrader")

    assert "COINBASE:BTC-USD" in instruments(directory.search("btcusd"))
    assert directory.unknown(["COINBASE:BTC-USD", "COINBASE:NOPE-USD"]) == ["COINBASE:NOPE-USD"]
    coinbase_feed = engine.history_feed("COINBASE:X")
    assert coinbase_feed is not None
    assert directory.ensure(coinbase_feed, refresh=True) is True
    assert directory.count("coinbase") == 4 and directory.fetched_at("coinbase") == aged
    assert "using the cached list" in caplog.text
    assert engine.sleeps, "the 503s were retried with backoff"  # type: ignore[attr-defined]


def test_a_list_that_was_never_fetched_and_cannot_be_is_an_error_for_ensure(
    engine: Engine, coinbase: Exchange
) -> None:
    coinbase.down = True
    feed = engine.history_feed("COINBASE:X")
    assert feed is not None
    with pytest.raises(SptraderError, match="Coinbase products: gave up"):
        engine.symbols.ensure(feed)
    # Search still answers from the feeds that work.
    assert instruments(engine.symbols.search("btcusd")) == ["KRAKEN:BTC/USD", "SIM:BTCUSD"]


# --- search ---------------------------------------------------------------------------


def test_search_ranks_exact_symbols_first_then_prefixes_then_the_rest(engine: Engine) -> None:
    exact = ["COINBASE:BTC-USD", "KRAKEN:BTC/USD", "SIM:BTCUSD"]
    found = engine.symbols.search("btcusd")
    assert instruments(found) == [*exact, "COINBASE:BTC-USDT", "COINBASE:WBTC-USD"]
    # Separators and case do not matter.
    for query in ("BTC/USD", "btc-usd", " Btc_Usd "):
        assert instruments(engine.symbols.search(query))[:3] == exact
    assert found[0] == SymbolInfo(
        "COINBASE:BTC-USD", "Bitcoin / US Dollar", "crypto", "BTC", "USD", price_decimals=2
    )
    assert found[1] == SymbolInfo("KRAKEN:BTC/USD", "BTC / USD", "crypto", "BTC", "USD", 2)
    # Then symbols starting with the query, then the rest; shorter ones first in each.
    assert instruments(engine.symbols.search("btc")) == [
        *exact,
        "COINBASE:BTC-USDT",
        "KRAKEN:ETH/BTC",
        "COINBASE:WBTC-USD",
    ]
    assert len(engine.symbols.search("usd", limit=2)) == 2
    assert engine.symbols.search("nothing-like-this") == []


def test_search_matches_descriptions(engine: Engine) -> None:
    # Its description says Ethereum; the name finds the other ETH symbols too.
    ethereum = instruments(engine.symbols.search("ethereum"))
    assert "COINBASE:ETH-EUR" in ethereum
    assert all(name.split(":", 1)[1].startswith("ETH") for name in ethereum)
    assert instruments(engine.symbols.search("wrapped bit")) == ["COINBASE:WBTC-USD"]
    fx = engine.symbols.search("(fx)")
    assert fx and all(item.instrument.startswith("SIM:") and item.kind == "fx" for item in fx)


def test_search_within_one_feed_fetches_only_that_feeds_list(
    engine: Engine, coinbase: Exchange, kraken: Exchange
) -> None:
    assert instruments(engine.symbols.search("btcusd", feed="KRAKEN")) == ["KRAKEN:BTC/USD"]
    assert (coinbase.list_requests, kraken.list_requests) == (0, 1)
    assert instruments(engine.symbols.search("btcusd", feed="coinbase")) == [
        "COINBASE:BTC-USD",
        "COINBASE:BTC-USDT",
        "COINBASE:WBTC-USD",
    ]
    assert engine.symbols.search("btcusd", feed="binance") == []  # not enabled


# --- validation -----------------------------------------------------------------------


def test_unknown_lists_symbols_missing_from_their_feeds_list(engine: Engine) -> None:
    names = [
        "COINBASE:BTC-USD",
        "COINBASE:NOPE-USD",
        "COINBASE:OLD-USD",  # delisted: not trading, so not listed
        "KRAKEN:BTC/USD",
        "KRAKEN:XBT/USD",  # Kraken's REST name, not the symbol SPtrader uses
        "SIM:ANYTHING",  # the simulator makes up any symbol
        "REPLAY:SIM:NOT-STORED",  # replay validates against the store, not a list
        "BINANCE:BTCUSDT",  # not enabled: nothing to check against
    ]
    assert engine.symbols.unknown(names) == [
        "COINBASE:NOPE-USD",
        "COINBASE:OLD-USD",
        "KRAKEN:XBT/USD",
    ]
    # Open-symbol feeds are not even fetched for validation.
    assert "replay" not in symbol_lists(engine)
    assert engine.symbols.unknown(["SIM:ANYTHING"]) == []
    assert engine.symbols.unknown([]) == []


def test_unknown_ignores_feeds_whose_list_cannot_be_fetched(
    engine: Engine, coinbase: Exchange
) -> None:
    coinbase.down = True
    unchecked: list[str] = []
    names = ["COINBASE:NOPE-USD", "KRAKEN:NOPE/USD"]
    assert engine.symbols.unknown(names, unchecked) == ["KRAKEN:NOPE/USD"]
    assert len(unchecked) == 1 and unchecked[0].startswith("coinbase: ")
    assert engine.symbols.fetched_at("coinbase") is None


# --- feed services ---------------------------------------------------------------------


async def hold_open(websocket: ServerConnection) -> None:
    """A websocket server that takes subscriptions and sends nothing."""
    async for _ in websocket:
        pass


async def run_coinbase_with(home: Path, coinbase: Exchange, kraken: Exchange, watchlist: list[str]):
    port = free_port()
    settings = exchange_settings(
        home,
        coinbase,
        kraken,
        watchlist=watchlist,
        store={"seed_days": 0.005, "flush_interval_ms": 20},
        feeds={
            "coinbase": fake_coinbase.config_section(f"ws://127.0.0.1:{port}", coinbase.url),
            "replay": {"enabled": False},
        },
    )
    async with serve(hold_open, "127.0.0.1", port):
        engine = Engine(settings)
        await engine.start()
        try:

            def settled() -> bool:
                [status] = [item for item in engine.supervisor.status() if item.name == "coinbase"]
                return status.state in (ServiceState.RUNNING, ServiceState.FAILED)

            await wait_until(settled, timeout=10)
            [status] = [item for item in engine.supervisor.status() if item.name == "coinbase"]
        finally:
            await engine.stop()
    return status


async def test_a_feed_whose_symbols_are_all_unknown_fails_naming_them(
    home: Path, coinbase: Exchange, kraken: Exchange
) -> None:
    status = await run_coinbase_with(
        home, coinbase, kraken, ["COINBASE:NOPE-USD", "COINBASE:GONE-USD"]
    )
    assert status.state == ServiceState.FAILED
    assert "COINBASE:NOPE-USD, COINBASE:GONE-USD" in status.last_error
    assert "unknown symbols" in status.last_error
    assert "sptrader symbols --feed coinbase" in status.last_error
    assert status.restarts == 0


async def test_a_feed_with_some_unknown_symbols_runs_and_says_which(
    home: Path, coinbase: Exchange, kraken: Exchange
) -> None:
    status = await run_coinbase_with(
        home, coinbase, kraken, ["COINBASE:BTC-USD", "COINBASE:NOPE-USD"]
    )
    assert status.state == ServiceState.RUNNING
    assert "unknown symbol COINBASE:NOPE-USD" in status.last_error
    assert "BTC-USD" not in status.last_error
