"""Market-data sources. Each module is one source; ``base`` holds the Feed protocol."""

from __future__ import annotations

import importlib
from typing import Any

from sptrader.feeds.base import Feed, FeedService, SymbolInfo

__all__ = ["FEED_CLASSES", "Feed", "FeedService", "SymbolInfo", "make_feed"]

# Feed prefix -> (module, class), imported on first use: a feed's libraries load only
# when it is configured. REPLAY is built by the engine (it reads the store).
FEED_CLASSES: dict[str, tuple[str, str]] = {
    "SIM": ("sptrader.feeds.sim", "SimFeed"),
    "BINANCE": ("sptrader.feeds.binance", "BinanceFeed"),
    "COINBASE": ("sptrader.feeds.coinbase", "CoinbaseFeed"),
    "KRAKEN": ("sptrader.feeds.kraken", "KrakenFeed"),
    "OANDA": ("sptrader.feeds.oanda", "OandaFeed"),
    "DUKASCOPY": ("sptrader.feeds.dukascopy", "DukascopyFeed"),
}


def make_feed(prefix: str, instruments: list[str], feed_config: Any) -> Feed:
    module_name, class_name = FEED_CLASSES[prefix]
    feed_class = getattr(importlib.import_module(module_name), class_name)
    return feed_class(instruments, feed_config)
