"""Each feed's price precision, read from its symbol metadata: Binance's PRICE_FILTER
tickSize, Coinbase's price (or quote) increment, Kraken's pair_decimals, OANDA's
displayPrecision (or pipLocation), Dukascopy's and SIM's built-in tables. Kraken's list
is a real recorded AssetPairs answer (../shared/wire, see its SOURCES.md); the others
have no recorded list, so their fakes' entries (copied from each venue's documented
shape) stand in. Also the formatting rule every pane and command shares."""

from __future__ import annotations

import copy
import json
import math

import fake_binance
import fake_coinbase
import fake_oanda
import httpx
import pytest
from conftest import wire_bytes

from sptrader.config import DukascopyFeedConfig, KrakenFeedConfig, SimFeedConfig
from sptrader.feeds import binance, coinbase, kraken, oanda
from sptrader.feeds.dukascopy import DukascopyFeed
from sptrader.feeds.sim import SimFeed
from sptrader.formatting import decimals_of_tick, format_price, price_decimals

# --- Binance: exchangeInfo PRICE_FILTER tickSize ----------------------------------------


def test_a_binance_tick_size_of_0_01000000_is_2_decimals() -> None:
    infos = binance.symbol_infos({"symbols": fake_binance.SYMBOLS})
    decimals = {info.instrument: info.price_decimals for info in infos}
    assert decimals == {"BINANCE:BTCUSDT": 2, "BINANCE:ETHUSDT": 2, "BINANCE:ETHBTC": 2}


def test_binance_reads_the_price_filter_among_the_others() -> None:
    entry = copy.deepcopy(fake_binance.SYMBOLS[2])  # ETHBTC
    entry["filters"] = [
        {"filterType": "LOT_SIZE", "minQty": "0.00010000", "stepSize": "0.00010000"},
        {"filterType": "PRICE_FILTER", "minPrice": "0.00000100", "tickSize": "0.00000100"},
    ]
    without = {**copy.deepcopy(entry), "symbol": "NOFILTER", "filters": []}
    infos = binance.symbol_infos({"symbols": [entry, without]})
    assert [info.price_decimals for info in infos] == [6, None]


# --- Coinbase: price_increment (quote_increment when it lacks one) ------------------------


def test_coinbase_products_carry_their_price_increment() -> None:
    btc = fake_coinbase.product("BTC-USD", "Bitcoin", "US Dollar")
    assert coinbase._symbol_info(btc).price_decimals == 2
    shib = {**btc, "product_id": "SHIB-USD", "price_increment": "0.00000001"}
    assert coinbase._symbol_info(shib).price_decimals == 8
    older = {key: value for key, value in btc.items() if key != "price_increment"}
    older["quote_increment"] = "0.00001"
    assert coinbase._symbol_info(older).price_decimals == 5


# --- Kraken: pair_decimals, from a recorded AssetPairs answer ---------------------------


def _kraken_symbols(body: bytes) -> dict[str, int | None]:
    def respond(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/0/public/AssetPairs"
        return httpx.Response(200, content=body)

    config = KrakenFeedConfig(enabled=True, rest_url="https://api.kraken.com")
    feed = kraken.KrakenFeed(
        [], config, transport=httpx.MockTransport(respond), sleep=lambda _seconds: None
    )
    return {info.instrument: info.price_decimals for info in feed.symbols()}


def test_kraken_pair_decimals_from_a_live_asset_pairs_answer() -> None:
    body = wire_bytes("cryptofeed", "KRAKEN.0.AssetPairs.json.gz")
    pairs = json.loads(body)["result"]
    decimals = _kraken_symbols(body)
    # As the recorded entries say (XBT and XDG renamed BTC and DOGE).
    assert pairs["XXBTZUSD"]["pair_decimals"] == 1 and decimals["KRAKEN:BTC/USD"] == 1
    assert pairs["XETHZUSD"]["pair_decimals"] == 2 and decimals["KRAKEN:ETH/USD"] == 2
    assert pairs["ZEURZUSD"]["pair_decimals"] == 5 and decimals["KRAKEN:EUR/USD"] == 5
    assert pairs["XDGUSD"]["pair_decimals"] == 7 and decimals["KRAKEN:DOGE/USD"] == 7
    # Every listed pair has its precision.
    assert decimals and None not in decimals.values()


def test_kraken_falls_back_to_tick_size() -> None:
    body = json.loads(wire_bytes("nautilus_trader", "kraken_http_asset_pairs.json"))
    entry = body["result"]["XBTUSDT"]
    assert kraken.pair_decimals(entry) == 1  # pair_decimals 1, tick_size "0.1"
    del entry["pair_decimals"]
    entry["tick_size"] = "0.01"
    assert kraken.pair_decimals(entry) == 2
    assert _kraken_symbols(json.dumps(body).encode()) == {"KRAKEN:BTC/USDT": 2}


# --- OANDA: displayPrecision, else one past pipLocation -------------------------------------


def test_oanda_display_precision() -> None:
    decimals = {entry["name"]: oanda.display_decimals(entry) for entry in fake_oanda.INSTRUMENTS}
    assert decimals == {"EUR_USD": 5, "USD_JPY": 3, "XAU_USD": 3, "SPX500_USD": 1}
    assert oanda.display_decimals({"name": "EUR_USD", "pipLocation": -4}) == 5
    assert oanda.display_decimals({"name": "USD_JPY", "pipLocation": -2}) == 3
    assert oanda.display_decimals({"name": "X"}) is None


# --- the built-in tables ------------------------------------------------------------------


def test_sim_known_symbols_have_their_tick_decimals() -> None:
    feed = SimFeed(["SIM:EURUSD"], SimFeedConfig())
    decimals = {info.instrument: info.price_decimals for info in feed.symbols()}
    assert decimals["SIM:USDJPY"] == 3  # a JPY pair: 150.123
    assert decimals["SIM:EURUSD"] == 5
    assert decimals["SIM:BTCUSD"] == 2
    assert decimals["SIM:XAGUSD"] == 3
    assert feed.builtin_symbols


def test_dukascopy_decimals_follow_dukascopys_own_price_scale() -> None:
    feed = DukascopyFeed([], DukascopyFeedConfig(enabled=True))
    decimals = {info.instrument: info.price_decimals for info in feed.symbols()}
    assert decimals["DUKASCOPY:EURUSD"] == 5 and decimals["DUKASCOPY:USDJPY"] == 3
    # dukascopy-node's table, generated from Dukascopy's instrument list.
    meta = json.loads(wire_bytes("dukascopy-node", "instrument-meta-data.subset.json"))
    checked = 0
    for symbol, entry in meta.items():
        name = f"DUKASCOPY:{symbol.upper()}"
        assert decimals[name] == round(math.log10(entry["bi5_decimalFactor"])), symbol
        checked += 1
    assert checked >= 50


# --- the shared rule and format -------------------------------------------------------------


@pytest.mark.parametrize(
    ("tick", "decimals"),
    [("0.01000000", 2), ("0.00001", 5), ("1", 0), ("1.00000000", 0), ("0.25", 2), ("5e-05", 5)],
)
def test_decimals_of_a_tick_size(tick: str, decimals: int) -> None:
    assert decimals_of_tick(tick) == decimals


def test_price_decimals_prefers_metadata_then_the_prices_then_a_guess() -> None:
    assert price_decimals(3, [150.1]) == 3
    assert price_decimals(None, [1.06684, 1.0668, 1.067]) == 5
    assert price_decimals(None, [48110.0, 48000.0]) == 2  # whole numbers: by size
    assert price_decimals(None, []) is None


def test_format_price_shows_every_digit_grouped_at_fixed_decimals() -> None:
    assert format_price(48109.96, 2) == "48,109.96"
    assert format_price(48110.0, 2) == "48,110.00"
    assert format_price(1.06684667, 5) == "1.06685"
    assert format_price(150.1, 3) == "150.100"
    assert format_price(None, 2) == "-" and format_price(None, 2, missing="") == ""
