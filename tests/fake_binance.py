"""Test support: a fake Binance spot speaking the real wire formats (no tests in here).

- ``serve_session``: the body of a ``websockets`` server handler for the combined
  stream (``/stream?streams=btcusdt@trade/...``). Binance takes the subscription from
  the URL, so there is nothing to wait for: it records the streams asked for, sends
  the given messages and returns (the handler returning closes the connection).
- ``history_route``: REST ``/api/v3/klines`` (1m only, ``limit`` default 500 and at
  most 1000, ``startTime``/``endTime`` in ms, both inclusive) from
  ``tests.fakes.minute_bar(symbol, ts)`` seeded by the REST symbol (``BTCUSDT``),
  closed minutes only (the real service also answers the forming kline, with a
  ``closeTime`` in the future; the feed drops it either way), and
  ``/api/v3/exchangeInfo`` for the symbol list. Errors are Binance's
  ``{"code": ..., "msg": ...}`` with HTTP 400; every answer carries
  ``X-MBX-USED-WEIGHT-1M``.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

try:
    from fakes import FakeRequest, FakeResponse, minute_bar
except ImportError:  # imported as tests.fake_binance, e.g. from bench/
    from tests.fakes import FakeRequest, FakeResponse, minute_bar

from sptrader.models import US_PER_MINUTE

INSTRUMENT = "BINANCE:BTCUSDT"
SYMBOL = "BTCUSDT"  # the seed of minute_bar for INSTRUMENT
KLINES_LIMIT = 1000
KLINES_DEFAULT = 500
#: Request weight of one klines call (limit 100-499: 2; Binance's table) and exchangeInfo.
KLINES_WEIGHT = 2
EXCHANGE_INFO_WEIGHT = 20

_MS_PER_MINUTE = US_PER_MINUTE // 1000


def config_section(live_url: str, rest_url: str) -> dict:
    return {"enabled": True, "ws_url": live_url, "rest_url": rest_url}


# --- REST -----------------------------------------------------------------------------


def _symbol(
    symbol: str, base: str, quote: str, status: str = "TRADING", spot: bool = True
) -> dict[str, Any]:
    return {
        "symbol": symbol,
        "status": status,
        "baseAsset": base,
        "baseAssetPrecision": 8,
        "quoteAsset": quote,
        "quotePrecision": 8,
        "quoteAssetPrecision": 8,
        "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS_LIMIT", "TAKE_PROFIT_LIMIT"],
        "icebergAllowed": True,
        "ocoAllowed": True,
        "isSpotTradingAllowed": spot,
        "isMarginTradingAllowed": False,
        "filters": [
            {
                "filterType": "PRICE_FILTER",
                "minPrice": "0.01000000",
                "maxPrice": "1000000.00000000",
                "tickSize": "0.01000000",
            }
        ],
        "permissions": [],
        "permissionSets": [["SPOT"] if spot else ["MARGIN"]],
        "defaultSelfTradePreventionMode": "EXPIRE_MAKER",
        "allowedSelfTradePreventionModes": ["EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH"],
    }


SYMBOLS = [
    _symbol("BTCUSDT", "BTC", "USDT"),
    _symbol("ETHUSDT", "ETH", "USDT"),
    _symbol("ETHBTC", "ETH", "BTC"),
    _symbol("LUNAUSDT", "LUNA", "USDT", status="BREAK"),  # halted: not listed by the feed
]
_LISTED = {entry["symbol"] for entry in SYMBOLS}

_weight_lock = threading.Lock()
_weight: dict[str, int] = {"minute": 0, "used": 0}


def _use_weight(amount: int) -> str:
    """Binance counts request weight per IP per minute: the header's value."""
    minute = int(time.time() // 60)
    with _weight_lock:
        if _weight["minute"] != minute:
            _weight["minute"], _weight["used"] = minute, 0
        _weight["used"] += amount
        return str(_weight["used"])


def _error(code: int, message: str, weight: int = 1) -> FakeResponse:
    return FakeResponse(
        400, {"code": code, "msg": message}, headers={"X-MBX-USED-WEIGHT-1M": _use_weight(weight)}
    )


def history_route(request: FakeRequest) -> FakeResponse | None:
    if request.path == "/api/v3/exchangeInfo":
        return _exchange_info(request.query)
    if request.path == "/api/v3/klines":
        return _klines(request.query)
    return None


def _exchange_info(query: dict[str, str]) -> FakeResponse:
    symbols = SYMBOLS
    wanted = query.get("permissions")
    if wanted is not None:
        names = set(json.loads(wanted)) if wanted.startswith("[") else {wanted}
        symbols = [
            entry
            for entry in symbols
            if names & {permission for group in entry["permissionSets"] for permission in group}
        ]
    body = {
        "timezone": "UTC",
        "serverTime": int(time.time() * 1000),
        "rateLimits": [
            {
                "rateLimitType": "REQUEST_WEIGHT",
                "interval": "MINUTE",
                "intervalNum": 1,
                "limit": 6000,
            }
        ],
        "exchangeFilters": [],
        "symbols": symbols,
    }
    return FakeResponse(
        200, body, headers={"X-MBX-USED-WEIGHT-1M": _use_weight(EXCHANGE_INFO_WEIGHT)}
    )


def _klines(query: dict[str, str]) -> FakeResponse:
    symbol = query.get("symbol", "")
    if not symbol:
        return _error(
            -1102, "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed."
        )
    if symbol not in _LISTED:
        return _error(-1121, "Invalid symbol.")
    if query.get("interval") != "1m":
        return _error(-1120, "Invalid interval.")  # this fake serves 1m only
    try:
        limit = int(query.get("limit", KLINES_DEFAULT))
        start_ms = int(query["startTime"]) if "startTime" in query else None
        end_ms = int(query["endTime"]) if "endTime" in query else None
    except ValueError:
        return _error(-1100, "Illegal characters found in a parameter.")
    if not 0 < limit <= KLINES_LIMIT:
        return _error(-1130, "Invalid data sent for a parameter.")
    if start_ms is not None and end_ms is not None and start_ms > end_ms:
        return _error(-1023, "Start time is greater than end time.")
    now_ms = int(time.time() * 1000)
    # Closed minutes only: the last one opens a minute before the current minute.
    last_closed = now_ms - now_ms % _MS_PER_MINUTE - _MS_PER_MINUTE
    last = last_closed if end_ms is None else min(last_closed, end_ms - end_ms % _MS_PER_MINUTE)
    if start_ms is not None:
        first = -(-start_ms // _MS_PER_MINUTE) * _MS_PER_MINUTE
        opens = range(first, min(last, first + (limit - 1) * _MS_PER_MINUTE) + 1, _MS_PER_MINUTE)
    else:  # the newest ``limit`` klines up to ``last``
        opens = range(last - (limit - 1) * _MS_PER_MINUTE, last + 1, _MS_PER_MINUTE)
    rows = [kline_row(symbol, open_ms) for open_ms in opens]
    return FakeResponse(200, rows, headers={"X-MBX-USED-WEIGHT-1M": _use_weight(KLINES_WEIGHT)})


def kline_row(symbol: str, open_ms: int) -> list[Any]:
    """One REST kline row of the fake market, as Binance writes it."""
    bar = minute_bar(symbol, open_ms * 1000)
    quote_volume = bar.volume * bar.close
    return [
        open_ms,
        f"{bar.open:.8f}",
        f"{bar.high:.8f}",
        f"{bar.low:.8f}",
        f"{bar.close:.8f}",
        f"{bar.volume:.8f}",
        open_ms + _MS_PER_MINUTE - 1,
        f"{quote_volume:.8f}",
        bar.trades,
        f"{bar.volume / 2:.8f}",
        f"{quote_volume / 2:.8f}",
        "0",
    ]


# --- websocket ------------------------------------------------------------------------


def trade_message(
    ts_us: int, price: float, size: float, trade_id: int, symbol: str = SYMBOL
) -> str:
    """A combined-stream trade; Binance times are milliseconds (``ts_us`` is cut)."""
    ms = ts_us // 1000
    data = {
        "e": "trade",
        "E": ms,
        "s": symbol,
        "t": trade_id,
        "p": f"{price:.8f}",
        "q": f"{size:.8f}",
        "T": ms,
        "m": trade_id % 2 == 0,
        "M": True,
    }
    return json.dumps({"stream": f"{symbol.lower()}@trade", "data": data})


def book_ticker_message(
    bid: float, ask: float, bid_size: float, ask_size: float, update_id: int, symbol: str = SYMBOL
) -> str:
    """A combined-stream bookTicker: no event type, no time (routed by stream name)."""
    data = {
        "u": update_id,
        "s": symbol,
        "b": f"{bid:.8f}",
        "B": f"{bid_size:.8f}",
        "a": f"{ask:.8f}",
        "A": f"{ask_size:.8f}",
    }
    return json.dumps({"stream": f"{symbol.lower()}@bookTicker", "data": data})


def kline_message(open_us: int, closed: bool, symbol: str = SYMBOL) -> str:
    """A combined-stream kline_1m update of the fake market's bar opening at ``open_us``."""
    open_ms = open_us // 1000
    row = kline_row(symbol, open_ms)
    now_ms = int(time.time() * 1000)
    kline = {
        "t": open_ms,
        "T": row[6],
        "s": symbol,
        "i": "1m",
        "f": 100,
        "L": 100 + row[8] - 1,
        "o": row[1],
        "c": row[4],
        "h": row[2],
        "l": row[3],
        "v": row[5],
        "n": row[8],
        "x": closed,
        "q": row[7],
        "V": row[9],
        "Q": row[10],
        "B": "0",
    }
    data = {"e": "kline", "E": now_ms, "s": symbol, "k": kline}
    return json.dumps({"stream": f"{symbol.lower()}@kline_1m", "data": data})


# Binance numbers each symbol's trades sequentially, across connections: so does the
# fake (the feed drops a repeated id and treats a hole as lost trades).
_trade_ids = itertools.count(1000)


def live_messages(ticks: list[tuple[int, float, float]]) -> list[str]:
    """One trade message per (ts_us, price, size) tick (times cut to milliseconds),
    with the next trade ids."""
    return [trade_message(ts_us, price, size, next(_trade_ids)) for ts_us, price, size in ticks]


def requested_streams(path: str) -> list[str]:
    """The stream names of a combined-stream request path."""
    parts = urlsplit(path)
    streams = parse_qs(parts.query).get("streams", [""])[0]
    return [name for name in streams.split("/") if name]


async def serve_session(websocket: Any, messages: list[str], received: list | None = None) -> None:
    """A websockets handler body: send ``messages`` and return (which closes the
    connection). ``received``, when given, collects the stream names asked for."""
    streams = requested_streams(websocket.request.path)
    if received is not None:
        received.extend(streams)
    if urlsplit(websocket.request.path).path != "/stream" or not streams:
        # Binance answers a bad combined-stream URL with an error and a close.
        await websocket.close(1008, "Invalid request")
        return
    for message in messages:
        await websocket.send(message)


# --- trouble --------------------------------------------------------------------------

#: A year-3000 time: far beyond any clock skew a live message may have.
YEAR_3000_US = 32_503_680_000_000_000


def rate_limited(retry_after_s: int = 1) -> FakeResponse:
    """Binance's answer to too much request weight: HTTP 429 with error -1003 and
    ``Retry-After``, the seconds to wait (repeated, it becomes a 418 IP ban)."""
    return FakeResponse(
        429,
        {
            "code": -1003,
            "msg": "Too much request weight used; current limit is 6000 request weight per"
            " 1 MINUTE. Please use WebSocket Streams for live updates to avoid polling the API.",
        },
        headers={"Retry-After": str(retry_after_s), "X-MBX-USED-WEIGHT-1M": _use_weight(0)},
    )


def _with_data(message: str, **fields: Any) -> str:
    decoded = json.loads(message)
    decoded["data"].update(fields)
    return json.dumps(decoded)


def bad_messages(ts_us: int) -> list[str | bytes]:
    """In the combined-stream framing, stamped ``ts_us``: broken JSON, a text frame that
    is not UTF-8, a stream nobody subscribed to (aggTrade), and trades with a NaN price,
    a negative price and a time in the year 3000. Their trade id (1) is outside the
    fake's sequence: none of them may reach the feed's trade-id check."""
    good = trade_message(ts_us, 100.0, 1.0, 1)
    aggregate = {"e": "aggTrade", "E": ts_us // 1000, "s": SYMBOL, "a": 1, "p": "100.0"}
    return [
        good[: len(good) // 2],
        b'\xff\xfe{"stream":"btcusdt@trade","data":{}}',
        json.dumps({"stream": f"{SYMBOL.lower()}@aggTrade", "data": aggregate}),
        _with_data(good, p="NaN"),
        _with_data(good, p="-5.00000000"),
        _with_data(good, T=YEAR_3000_US // 1000, E=YEAR_3000_US // 1000),
    ]
