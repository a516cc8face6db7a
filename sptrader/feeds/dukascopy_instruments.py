"""The Dukascopy instruments SPtrader knows: symbol, name in the JSON API, price divisor.

Dukascopy has no public list endpoint worth depending on, so the table is built in.
The divisor turns the integer prices of the tick files into prices (EURUSD 114277 ->
1.14277): 100000 for most FX pairs, 1000 for JPY crosses, HUF pairs, gold, silver and
the CFD indices, 10 for BTC, ETH and BCH; CZK and THB pairs and natural gas have 10000
(USDRON is 100000, like most FX). Every entry is checked against dukascopy-node's
instrument metadata (``decimalFactor`` as its bi5 engine divided by, generated from
Dukascopy's own instrument list) in tests/feeds/test_wire_samples.py.
The JSON name is Dukascopy's ``BASE/QUOTE`` name with ``-`` for ``/`` (EUR-USD,
USA500.IDX-USD, XAU-USD).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from sptrader.errors import SptraderError


@dataclass(frozen=True, slots=True)
class DukascopyInstrument:
    symbol: str  # as in SPtrader's DUKASCOPY:EURUSD and the datafeed's paths
    json_name: str  # as in the JSON API's paths: EUR-USD
    divisor: int  # integer price / divisor = price
    kind: str  # fx, metal, index, commodity, crypto
    description: str

    @property
    def decimals(self) -> int:
        """Decimal places of a price (5 for EURUSD, 3 for USDJPY)."""
        return round(math.log10(self.divisor))

    @property
    def base(self) -> str:
        return self.json_name.rsplit("-", 1)[0]

    @property
    def quote(self) -> str:
        return self.json_name.rsplit("-", 1)[1]

    @property
    def trades_weekends(self) -> bool:
        """Crypto CFDs quote seven days a week; everything else closes for the weekend."""
        return self.kind == "crypto"


def _fx(symbol: str, divisor: int, description: str) -> DukascopyInstrument:
    return DukascopyInstrument(symbol, f"{symbol[:3]}-{symbol[3:]}", divisor, "fx", description)


_TABLE = [
    # FX majors
    _fx("EURUSD", 100_000, "Euro vs US Dollar"),
    _fx("GBPUSD", 100_000, "Pound Sterling vs US Dollar"),
    _fx("USDJPY", 1_000, "US Dollar vs Japanese Yen"),
    _fx("USDCHF", 100_000, "US Dollar vs Swiss Franc"),
    _fx("USDCAD", 100_000, "US Dollar vs Canadian Dollar"),
    _fx("AUDUSD", 100_000, "Australian Dollar vs US Dollar"),
    _fx("NZDUSD", 100_000, "New Zealand Dollar vs US Dollar"),
    # FX crosses
    _fx("EURGBP", 100_000, "Euro vs Pound Sterling"),
    _fx("EURJPY", 1_000, "Euro vs Japanese Yen"),
    _fx("EURCHF", 100_000, "Euro vs Swiss Franc"),
    _fx("EURAUD", 100_000, "Euro vs Australian Dollar"),
    _fx("EURCAD", 100_000, "Euro vs Canadian Dollar"),
    _fx("EURNZD", 100_000, "Euro vs New Zealand Dollar"),
    _fx("GBPJPY", 1_000, "Pound Sterling vs Japanese Yen"),
    _fx("GBPCHF", 100_000, "Pound Sterling vs Swiss Franc"),
    _fx("GBPAUD", 100_000, "Pound Sterling vs Australian Dollar"),
    _fx("GBPCAD", 100_000, "Pound Sterling vs Canadian Dollar"),
    _fx("GBPNZD", 100_000, "Pound Sterling vs New Zealand Dollar"),
    _fx("AUDJPY", 1_000, "Australian Dollar vs Japanese Yen"),
    _fx("AUDCAD", 100_000, "Australian Dollar vs Canadian Dollar"),
    _fx("AUDCHF", 100_000, "Australian Dollar vs Swiss Franc"),
    _fx("AUDNZD", 100_000, "Australian Dollar vs New Zealand Dollar"),
    _fx("CADJPY", 1_000, "Canadian Dollar vs Japanese Yen"),
    _fx("CADCHF", 100_000, "Canadian Dollar vs Swiss Franc"),
    _fx("CHFJPY", 1_000, "Swiss Franc vs Japanese Yen"),
    _fx("NZDJPY", 1_000, "New Zealand Dollar vs Japanese Yen"),
    _fx("NZDCAD", 100_000, "New Zealand Dollar vs Canadian Dollar"),
    _fx("NZDCHF", 100_000, "New Zealand Dollar vs Swiss Franc"),
    _fx("ZARJPY", 1_000, "South African Rand vs Japanese Yen"),
    # FX, other currencies
    _fx("EURNOK", 100_000, "Euro vs Norwegian Krone"),
    _fx("EURSEK", 100_000, "Euro vs Swedish Krona"),
    _fx("EURPLN", 100_000, "Euro vs Polish Zloty"),
    _fx("EURTRY", 100_000, "Euro vs Turkish Lira"),
    _fx("EURHUF", 1_000, "Euro vs Hungarian Forint"),
    _fx("EURCZK", 10_000, "Euro vs Czech Koruna"),
    _fx("USDNOK", 100_000, "US Dollar vs Norwegian Krone"),
    _fx("USDSEK", 100_000, "US Dollar vs Swedish Krona"),
    _fx("USDDKK", 100_000, "US Dollar vs Danish Krone"),
    _fx("USDPLN", 100_000, "US Dollar vs Polish Zloty"),
    _fx("USDHUF", 1_000, "US Dollar vs Hungarian Forint"),
    _fx("USDCZK", 10_000, "US Dollar vs Czech Koruna"),
    _fx("USDTRY", 100_000, "US Dollar vs Turkish Lira"),
    _fx("USDZAR", 100_000, "US Dollar vs South African Rand"),
    _fx("USDMXN", 100_000, "US Dollar vs Mexican Peso"),
    _fx("USDSGD", 100_000, "US Dollar vs Singapore Dollar"),
    _fx("USDHKD", 100_000, "US Dollar vs Hong Kong Dollar"),
    _fx("USDCNH", 100_000, "US Dollar vs Offshore Chinese Renminbi"),
    _fx("USDILS", 100_000, "US Dollar vs Israeli Shekel"),
    _fx("USDTHB", 10_000, "US Dollar vs Thai Baht"),
    _fx("USDRON", 100_000, "US Dollar vs Romanian Leu"),
    # Metals
    DukascopyInstrument("XAUUSD", "XAU-USD", 1_000, "metal", "Spot gold"),
    DukascopyInstrument("XAGUSD", "XAG-USD", 1_000, "metal", "Spot silver"),
    # Indices (CFDs)
    DukascopyInstrument("USA500IDXUSD", "USA500.IDX-USD", 1_000, "index", "USA 500 Index"),
    DukascopyInstrument(
        "USATECHIDXUSD", "USATECH.IDX-USD", 1_000, "index", "USA 100 Technical Index"
    ),
    DukascopyInstrument("USA30IDXUSD", "USA30.IDX-USD", 1_000, "index", "USA 30 Index"),
    DukascopyInstrument("USSC2000IDXUSD", "USSC2000.IDX-USD", 1_000, "index", "US Small Cap 2000"),
    DukascopyInstrument("DOLLARIDXUSD", "DOLLAR.IDX-USD", 1_000, "index", "US Dollar Index"),
    DukascopyInstrument("DEUIDXEUR", "DEU.IDX-EUR", 1_000, "index", "Germany 40 Index"),
    DukascopyInstrument("GBRIDXGBP", "GBR.IDX-GBP", 1_000, "index", "UK 100 Index"),
    DukascopyInstrument("FRAIDXEUR", "FRA.IDX-EUR", 1_000, "index", "France 40 Index"),
    DukascopyInstrument("EUSIDXEUR", "EUS.IDX-EUR", 1_000, "index", "Europe 50 Index"),
    DukascopyInstrument("ESPIDXEUR", "ESP.IDX-EUR", 1_000, "index", "Spain 35 Index"),
    DukascopyInstrument("CHEIDXCHF", "CHE.IDX-CHF", 1_000, "index", "Switzerland 20 Index"),
    DukascopyInstrument("JPNIDXJPY", "JPN.IDX-JPY", 1_000, "index", "Japan 225"),
    DukascopyInstrument("HKGIDXHKD", "HKG.IDX-HKD", 1_000, "index", "Hong Kong 40 Index"),
    DukascopyInstrument("AUSIDXAUD", "AUS.IDX-AUD", 1_000, "index", "Australia 200 Index"),
    DukascopyInstrument("CHIIDXUSD", "CHI.IDX-USD", 1_000, "index", "China A50 Index"),
    # Commodities (CFDs)
    DukascopyInstrument("LIGHTCMDUSD", "LIGHT.CMD-USD", 1_000, "commodity", "US Light Crude Oil"),
    DukascopyInstrument("BRENTCMDUSD", "BRENT.CMD-USD", 1_000, "commodity", "US Brent Crude Oil"),
    DukascopyInstrument("GASCMDUSD", "GAS.CMD-USD", 10_000, "commodity", "Natural Gas"),
    # Crypto (CFDs)
    DukascopyInstrument("BTCUSD", "BTC-USD", 10, "crypto", "Bitcoin vs US Dollar"),
    DukascopyInstrument("ETHUSD", "ETH-USD", 10, "crypto", "Ether vs US Dollar"),
    DukascopyInstrument("BCHUSD", "BCH-USD", 10, "crypto", "Bitcoin Cash vs US Dollar"),
]

INSTRUMENTS: dict[str, DukascopyInstrument] = {entry.symbol: entry for entry in _TABLE}


def lookup(symbol: str) -> DukascopyInstrument:
    """The table entry for ``EURUSD`` (or ``DUKASCOPY:EURUSD``); SptraderError if unknown."""
    bare = symbol.split(":", 1)[1] if ":" in symbol else symbol
    entry = INSTRUMENTS.get(bare.upper())
    if entry is None:
        raise SptraderError(
            f"unknown Dukascopy instrument {bare!r}: "
            "`sptrader symbols --feed dukascopy` lists the known ones"
        )
    return entry
