"""Test support: a fake Kraken speaking the real wire formats (no tests in here).

- ``history_route`` serves REST ``AssetPairs``, ``OHLC`` and ``Trades`` from the fake
  market ``tests.fakes.minute_bar(symbol, ts)``, seeded by the v2 symbol (``BTC/USD``),
  closed minutes only. OHLC keeps Kraken's window: the 720 newest entries (here 719,
  the forming one left out), ``since`` exclusive. Trades pages at most 1000 trades
  after a ``since`` cursor (nanoseconds, or seconds when short) and answers ``last``
  as a nanosecond string. Each minute is traded as max(4, bar.trades) trades (open,
  high, low, then close) whose sizes add up to the bar's volume exactly, so bars
  rebuilt from trades match ``minute_bar`` in OHLCV (the trade count is at least 4).
- ``serve_session`` answers subscribes as Kraken does: a status message on connect,
  one ack per symbol and channel, ``success: false`` for symbols it does not list.
"""

from __future__ import annotations

import itertools
import json
import time
from datetime import UTC, datetime
from typing import Any

from fakes import FakeRequest, FakeResponse, minute_bar

from sptrader.models import US_PER_MINUTE

INSTRUMENT = "KRAKEN:BTC/USD"
SYMBOL = "BTC/USD"  # the seed of minute_bar for INSTRUMENT

OHLC_WINDOW = 720
TRADES_PAGE = 1000


def _pair(key: str, altname: str, wsname: str, base: str, quote: str) -> tuple[str, dict]:
    return key, {
        "altname": altname,
        "wsname": wsname,
        "aclass_base": "currency",
        "base": base,
        "aclass_quote": "currency",
        "quote": quote,
        "lot": "unit",
        "cost_decimals": 5,
        "pair_decimals": 2,
        "lot_decimals": 8,
        "lot_multiplier": 1,
        "leverage_buy": [2, 3],
        "leverage_sell": [2, 3],
        "fees": [[0, 0.4], [10000, 0.35]],
        "fees_maker": [[0, 0.25], [10000, 0.2]],
        "fee_volume_currency": "ZUSD",
        "margin_call": 80,
        "margin_stop": 40,
        "ordermin": "0.0001",
        "costmin": "0.5",
        "tick_size": "0.01",
        "status": "online",
    }


#: AssetPairs as Kraken answers it: internal keys, ``wsname`` still with XBT/XDG.
ASSET_PAIRS: dict[str, dict] = dict(
    [
        _pair("XXBTZUSD", "XBTUSD", "XBT/USD", "XXBT", "ZUSD"),
        _pair("XETHZUSD", "ETHUSD", "ETH/USD", "XETH", "ZUSD"),
        _pair("XETHXXBT", "ETHXBT", "ETH/XBT", "XETH", "XXBT"),
        _pair("XDGUSD", "XDGUSD", "XDG/USD", "XXDG", "ZUSD"),
        _pair("ZEURZUSD", "EURUSD", "EUR/USD", "ZEUR", "ZUSD"),
    ]
)
_ALIASES = {"XBT": "BTC", "XDG": "DOGE"}


def _v2(wsname: str) -> str:
    base, quote = wsname.split("/")
    return f"{_ALIASES.get(base, base)}/{_ALIASES.get(quote, quote)}"


#: The v2 symbols the websocket accepts, and REST names (key or altname) -> (key, v2).
LISTED = {_v2(entry["wsname"]) for entry in ASSET_PAIRS.values()}
_REST_NAMES = {
    name: (key, _v2(entry["wsname"]))
    for key, entry in ASSET_PAIRS.items()
    for name in (key, entry["altname"])
}


def config_section(live_url: str, rest_url: str) -> dict:
    return {"enabled": True, "ws_url": live_url, "rest_url": rest_url}


# --- REST -----------------------------------------------------------------------------


def _ok(result: Any) -> FakeResponse:
    return FakeResponse(200, {"error": [], "result": result})


def _error(*errors: str) -> FakeResponse:
    # Kraken reports errors with HTTP 200.
    return FakeResponse(200, {"error": list(errors)})


def _current_minute_us() -> int:
    now = time.time_ns() // 1000
    return now - now % US_PER_MINUTE


def history_route(request: FakeRequest) -> FakeResponse | None:
    if request.path == "/0/public/AssetPairs":
        return _ok(ASSET_PAIRS)
    if request.path not in ("/0/public/OHLC", "/0/public/Trades"):
        return None
    found = _REST_NAMES.get(request.query.get("pair", ""))
    if found is None:
        return _error("EQuery:Unknown asset pair")
    key, symbol = found
    if request.path == "/0/public/OHLC":
        return _ohlc(request.query, key, symbol)
    return _trades(request.query, key, symbol)


def _ohlc(query: dict[str, str], key: str, symbol: str) -> FakeResponse:
    if query.get("interval", "1") != "1":
        return _error("EGeneral:Invalid arguments")
    since_s = int(query.get("since", "0"))
    current = _current_minute_us()
    # The window holds the 720 newest entries, the forming one (left out here) included.
    first = current - (OHLC_WINDOW - 1) * US_PER_MINUTE
    rows = []
    for ts in range(first, current, US_PER_MINUTE):
        if ts // 1_000_000 <= since_s:
            continue
        bar = minute_bar(symbol, ts)
        vwap = round((bar.high + bar.low + bar.close) / 3, 2)
        rows.append(
            [
                ts // 1_000_000,
                f"{bar.open:.2f}",
                f"{bar.high:.2f}",
                f"{bar.low:.2f}",
                f"{bar.close:.2f}",
                f"{vwap:.2f}",
                f"{bar.volume:.8f}",
                bar.trades,
            ]
        )
    last = rows[-1][0] if rows else since_s
    return _ok({key: rows, "last": last})


def minute_trades(symbol: str, minute_us: int) -> list[tuple[int, float, float, int]]:
    """(time in ns, price, size, trade id) of the trades making ``minute_bar``."""
    bar = minute_bar(symbol, minute_us)
    count = max(4, bar.trades)
    prices = [bar.open, bar.high, bar.low] + [bar.close] * (count - 3)
    # Eighths are exact in binary and in decimal text: the sizes sum to the volume.
    sizes = [0.125] * (count - 1) + [bar.volume - 0.125 * (count - 1)]
    minute_ns = minute_us * 1000
    first_id = minute_us // US_PER_MINUTE * 8
    return [
        (
            minute_ns + index * 11_000_000_000 + 500_123_000,
            prices[index],
            sizes[index],
            first_id + index,
        )
        for index in range(count)
    ]


def _trades(query: dict[str, str], key: str, symbol: str) -> FakeResponse:
    since = int(query.get("since", "0"))
    since_ns = since * 1_000_000_000 if since < 10**12 else since
    limit = min(TRADES_PAGE, int(query.get("count", str(TRADES_PAGE))))
    current = _current_minute_us()
    start_minute = since_ns // 1000 - since_ns // 1000 % US_PER_MINUTE
    rows: list[list[Any]] = []
    last_ns = since_ns
    for minute in itertools.count(start_minute, US_PER_MINUTE):
        if minute >= current or len(rows) >= limit:
            break
        for ts_ns, price, size, trade_id in minute_trades(symbol, minute):
            if ts_ns > since_ns and len(rows) < limit:
                side = "b" if trade_id % 2 else "s"
                # Times are float seconds; ``last`` is the exact nanosecond cursor.
                rows.append([f"{price:.5f}", f"{size:.8f}", ts_ns / 1e9, side, "m", "", trade_id])
                last_ns = ts_ns
    return _ok({key: rows, "last": str(last_ns)})


# --- websocket ------------------------------------------------------------------------


def _rfc3339(ts_us: int) -> str:
    return datetime.fromtimestamp(ts_us / 1e6, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


#: Trade ids as Kraken numbers a pair's trades: one sequence for the whole test run, so
#: trades of later calls are never taken for repeats of earlier ones.
_TRADE_IDS = itertools.count(1000)


def trade_message(
    trades: list[tuple[int, float, float]], symbol: str = SYMBOL, kind: str = "update"
) -> str:
    """A v2 ``trade`` message of (ts_us, price, size) trades: taker side buy, ids
    continuing from the last call's."""
    data = [
        {
            "symbol": symbol,
            "side": "buy",
            "price": price,
            "qty": size,
            "ord_type": "market",
            "trade_id": next(_TRADE_IDS),
            "timestamp": _rfc3339(ts_us),
        }
        for ts_us, price, size in trades
    ]
    return json.dumps({"channel": "trade", "type": kind, "data": data})


def live_messages(ticks: list[tuple[int, float, float]]) -> list[str]:
    return [trade_message([tick]) for tick in ticks]


STATUS = json.dumps(
    {
        "channel": "status",
        "data": [
            {
                "api_version": "v2",
                "connection_id": 12393906104898154338,
                "system": "online",
                "version": "2.0.10",
            }
        ],
        "type": "update",
    }
)


def _ack(channel: str, symbol: str, snapshot: bool, req_id: Any) -> str:
    now = _rfc3339(time.time_ns() // 1000)
    if symbol not in LISTED:
        answer: dict[str, Any] = {
            "error": f"Currency pair not supported {symbol}",
            "method": "subscribe",
            "success": False,
            "symbol": symbol,
            "time_in": now,
            "time_out": now,
        }
    else:
        result: dict[str, Any] = {"channel": channel, "snapshot": snapshot, "symbol": symbol}
        if channel == "ticker":
            result["event_trigger"] = "trades"
        answer = {
            "method": "subscribe",
            "result": result,
            "success": True,
            "time_in": now,
            "time_out": now,
        }
    if req_id is not None:
        answer["req_id"] = req_id
    return json.dumps(answer)


async def serve_session(
    websocket: Any, messages: list[str], requests: list[dict] | None = None
) -> None:
    """Answer the client's ticker and trade subscribes, send ``messages``, return.
    Every request received is appended to ``requests`` when given."""
    await websocket.send(STATUS)
    channels: set[str] = set()
    while not {"ticker", "trade"} <= channels:
        request = json.loads(await websocket.recv())
        if requests is not None:
            requests.append(request)
        if request.get("method") == "ping":
            await websocket.send(json.dumps({"method": "pong", "req_id": request.get("req_id")}))
            continue
        params = request.get("params") or {}
        channel = params.get("channel", "")
        channels.add(channel)
        for symbol in params.get("symbol", []):
            await websocket.send(
                _ack(channel, symbol, params.get("snapshot", True), request.get("req_id"))
            )
    for message in messages:
        await websocket.send(message)


# --- trouble --------------------------------------------------------------------------

#: A year-3000 time: far beyond any clock skew a live message may have.
YEAR_3000_US = 32_503_680_000_000_000


def rate_limited(error: str = "EGeneral:Too many requests") -> FakeResponse:
    """Kraken's answer to too many calls: HTTP 200 with the error in the body,
    ``EGeneral:Too many requests`` (public calls) or ``EAPI:Rate limit exceeded`` (the
    call counter)."""
    return _error(error)


def bad_messages(ts_us: int) -> list[str | bytes]:
    """In websocket v2 framing, stamped ``ts_us``: broken JSON, a frame that is not
    UTF-8, a channel nobody subscribed to (``book``), and trades with a NaN price (a
    JSON ``NaN``: Kraken's numbers are JSON numbers), a negative price and a time in the
    year 3000 (trade id 1, outside the fake's sequence: none may reach the feed's
    trade-id check)."""

    def bad_trade(**fields: Any) -> str:
        item = {
            "symbol": SYMBOL,
            "side": "buy",
            "price": 100.0,
            "qty": 1.0,
            "ord_type": "market",
            "trade_id": 1,
            "timestamp": _rfc3339(ts_us),
            **fields,
        }
        return json.dumps({"channel": "trade", "type": "update", "data": [item]})

    book = {
        "channel": "book",
        "type": "update",
        "data": [
            {
                "symbol": SYMBOL,
                "bids": [{"price": 100.0, "qty": 1.0}],
                "asks": [],
                "checksum": 2439117997,
                "timestamp": _rfc3339(ts_us),
            }
        ],
    }
    return [
        '{"channel":"trade","type":"update","data":[{"symbol":',
        b'\xff\xfe{"channel":"heartbeat"}',
        json.dumps(book),
        bad_trade(price=float("nan")),
        bad_trade(price=-5.0),
        bad_trade(timestamp=_rfc3339(YEAR_3000_US)),
    ]
