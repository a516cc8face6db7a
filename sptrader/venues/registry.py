"""The venues by their ``[brokers.NAME]`` name (imported on use: a venue's module and its
libraries load only when it trades live)."""

from __future__ import annotations

import importlib
from typing import Any

from sptrader.venues.base import Venue

_MODULES = {
    "binance": ("sptrader.venues.binance", "BinanceVenue"),
    "oanda": ("sptrader.venues.oanda", "OandaVenue"),
    "ibkr": ("sptrader.venues.ibkr", "IbkrVenue"),
    "alpaca": ("sptrader.venues.alpaca", "AlpacaVenue"),
}


def venue_class(name: str) -> type[Venue]:
    module, attribute = _MODULES[name]
    return getattr(importlib.import_module(module), attribute)


def make_venue(name: str, config: Any, **options: Any) -> Venue:
    return venue_class(name)(config, **options)
