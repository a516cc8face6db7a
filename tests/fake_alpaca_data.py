"""Test support: a fake Alpaca market data API v2 speaking the real wire format.

- ``serve_session``: the body of a ``websockets`` server handler for the stream: it
  says ``connected``, checks the ``auth`` message (10 s, as the real service; a wrong
  key gets ``402 auth failed``), answers the ``subscribe`` message with ``subscription``,
  sends the given messages and returns. Every message is a JSON array.
- ``history_route``: ``/v2/stocks/{symbol}/bars`` (1Min, closed minutes only, pages of
  at most ``limit`` bars linked by ``next_page_token``) from
  ``tests.fakes.minute_bar(symbol, ts)``, every minute of the week; ``make_history_route``
  makes one that serves NYSE session minutes only, or pages sooner. And the trading
  API's ``/v2/assets``. Every request needs the key headers (401 otherwise).
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import os
from datetime import UTC, datetime
from typing import Any

try:
    from fakes import FakeRequest, FakeResponse, Route, minute_bars
except ImportError:  # imported as tests.fake_alpaca_data, e.g. from bench/
    from tests.fakes import FakeRequest, FakeResponse, Route, minute_bars

from sptrader.clock import now_us, rfc3339_to_us
from sptrader.feeds.alpaca import ASSETS_PATH, BARS_LIMIT
from sptrader.models import US_PER_MINUTE, US_PER_SECOND
from sptrader.sessions import open_ranges

INSTRUMENT = "ALPACA:AAPL"
SYMBOL = "AAPL"
KEY = "fake-alpaca-key-id"
SECRET = "fake-alpaca-secret-do-not-log"
#: The environment variables ``config_section`` names for the key (and sets).
KEY_ENV = "SPTRADER_FAKE_APCA_KEY_ID"
SECRET_ENV = "SPTRADER_FAKE_APCA_SECRET_KEY"
AUTH_TIMEOUT_S = 10.0
BARS_PREFIX = "/v2/stocks/"


def config_section(live_url: str, rest_url: str) -> dict:
    """The ``[feeds.alpaca]`` table for fakes at these URLs (the data and trading APIs
    on one host). Keys come only from the environment, so this also sets them."""
    os.environ[KEY_ENV] = KEY
    os.environ[SECRET_ENV] = SECRET
    return {
        "enabled": True,
        "ws_url": live_url,
        "rest_url": rest_url,
        "trading_url": rest_url,
        "key_env": KEY_ENV,
        "secret_env": SECRET_ENV,
    }


# --- messages -------------------------------------------------------------------------


def rfc3339(ts_us: int) -> str:
    """Nanosecond RFC 3339 in UTC, as Alpaca stamps stream messages."""
    seconds, micros = divmod(ts_us, US_PER_SECOND)
    text = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{text}.{micros:06d}123Z"


def minute_time(ts_us: int) -> str:
    """``2024-03-08T14:30:00Z``, as Alpaca labels bars."""
    return datetime.fromtimestamp(ts_us // US_PER_SECOND, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _shares(size: float) -> int | float:
    # Alpaca sends whole shares as JSON integers.
    return int(size) if size == int(size) else size


#: Trade ids are the exchange's: unique, not a per-symbol sequence.
_TRADE_IDS = itertools.count(52983525029461, 7)


def trade(ts_us: int, price: float, size: float, symbol: str = SYMBOL) -> dict:
    return {
        "T": "t",
        "S": symbol,
        "i": next(_TRADE_IDS),
        "x": "V",
        "p": price,
        "s": _shares(size),
        "c": ["@"],
        "z": "C",
        "t": rfc3339(ts_us),
    }


def quote(
    ts_us: int, bid: float, ask: float, bid_size: float, ask_size: float, symbol: str = SYMBOL
) -> dict:
    return {
        "T": "q",
        "S": symbol,
        "bx": "V",
        "bp": bid,
        "bs": _shares(bid_size),
        "ax": "V",
        "ap": ask,
        "as": _shares(ask_size),
        "c": ["R"],
        "z": "C",
        "t": rfc3339(ts_us),
    }


def bar(ts_us: int, symbol: str = SYMBOL, *, stream: bool = True) -> dict:
    """The fake market's bar of the minute opening at ``ts_us``: a stream ``b``
    message, or (``stream=False``) an element of a REST answer."""
    [fake] = minute_bars(symbol, ts_us, ts_us + 1)
    body = {
        "t": minute_time(fake.ts_us),
        "o": fake.open,
        "h": fake.high,
        "l": fake.low,
        "c": fake.close,
        "v": int(fake.volume),
        "n": fake.trades,
        "vw": round((fake.high + fake.low + fake.close) / 3, 4),
    }
    return {"T": "b", "S": symbol, **body} if stream else body


def frame(*items: dict) -> str:
    """One stream message: a JSON array."""
    return json.dumps(list(items))


def live_messages(ticks: list[tuple[int, float, float]]) -> list[str]:
    """One trade message per (ts_us, price, size) tick."""
    return [frame(trade(ts_us, price, size)) for ts_us, price, size in ticks]


def error(code: int, text: str) -> str:
    return frame({"T": "error", "code": code, "msg": text})


#: A year-3000 time: far beyond any clock skew a live message may have.
YEAR_3000_US = 32_503_680_000_000_000


def bad_messages(ts_us: int) -> list[str | bytes]:
    """Broken JSON and a frame that is not UTF-8 (malformed), a message of a type the
    feed does not subscribe to (a LULD band: unexpected), then trades with a NaN price,
    a negative price and a time in the year 3000 (invalid)."""
    good = trade(ts_us, 100.0, 1.0)
    luld = {"T": "l", "S": SYMBOL, "u": 190.5, "d": 172.3, "i": "B", "t": rfc3339(ts_us), "z": "C"}
    return [
        '[{"T":"t","S":"AAPL","p":',
        b'\xff\xfe[{"T":"success","msg":"connected"}]',
        frame(luld),
        frame({**good, "p": "NaN"}),
        frame({**good, "p": -5}),
        frame({**good, "t": rfc3339(YEAR_3000_US)}),
    ]


# --- the websocket side ---------------------------------------------------------------


async def serve_session(
    websocket: Any,
    messages: list[str],
    received: list | None = None,
    *,
    key: str = KEY,
    secret: str = SECRET,
) -> None:
    """A websockets handler body: connected, auth, subscription, ``messages``.
    ``received``, when given, collects what the client sent."""
    await websocket.send(frame({"T": "success", "msg": "connected"}))
    try:
        async with asyncio.timeout(AUTH_TIMEOUT_S):
            auth = json.loads(await websocket.recv())
    except TimeoutError:
        await websocket.send(error(404, "auth timeout"))
        return
    if received is not None:
        received.append(auth)
    if auth.get("action") != "auth" or (auth.get("key"), auth.get("secret")) != (key, secret):
        await websocket.send(error(402, "auth failed"))
        return
    await websocket.send(frame({"T": "success", "msg": "authenticated"}))
    request = json.loads(await websocket.recv())
    if received is not None:
        received.append(request)
    if request.get("action") != "subscribe":
        await websocket.send(error(400, "invalid syntax"))
        return
    await websocket.send(frame(subscription(request)))
    for message in messages:
        await websocket.send(message)


def subscription(request: dict) -> dict:
    """The answer to a subscribe: every channel's symbols (corrections and cancel
    errors follow trades)."""
    trades = list(request.get("trades", []))
    answer: dict[str, Any] = {"T": "subscription", "trades": trades}
    for channel in ("quotes", "bars", "updatedBars", "dailyBars", "statuses", "lulds"):
        answer[channel] = list(request.get(channel, []))
    answer["corrections"] = trades
    answer["cancelErrors"] = trades
    return answer


# --- the REST side --------------------------------------------------------------------


def _refuse_without_key(request: FakeRequest) -> FakeResponse | None:
    headers = request.headers
    if (headers.get("apca-api-key-id"), headers.get("apca-api-secret-key")) != (KEY, SECRET):
        return FakeResponse(401, {"message": "unauthorized."})
    return None


def _invalid(text: str) -> FakeResponse:
    return FakeResponse(422, {"code": 42210000, "message": text})


def _in_session(ts_us: int) -> bool:
    return bool(open_ranges("nyse", ts_us, ts_us + US_PER_MINUTE, fx_close_us=0, fx_open_us=0))


def make_history_route(*, session_only: bool = False, page_size: int = BARS_LIMIT) -> Route:
    """Bars and assets; ``session_only`` serves bars of NYSE session minutes only (as
    if nothing traded before the open or after the close), ``page_size`` caps a page
    below ``limit``."""

    def route(request: FakeRequest) -> FakeResponse | None:
        is_bars = request.path.startswith(BARS_PREFIX) and request.path.endswith("/bars")
        if not is_bars and request.path != ASSETS_PATH:
            return None
        refused = _refuse_without_key(request)
        if refused is not None:
            return refused
        if not is_bars:
            return _assets(request)
        symbol = request.path[len(BARS_PREFIX) : -len("/bars")]
        return _bars(symbol, request.query, session_only, page_size)

    return route


def _bars(symbol: str, query: dict[str, str], session_only: bool, page_size: int) -> FakeResponse:
    if query.get("timeframe") != "1Min":
        return _invalid("this fake serves 1Min bars only")
    if query.get("feed", "iex") not in ("iex", "sip"):
        return _invalid(f"invalid feed: {query.get('feed')}")
    try:
        start = rfc3339_to_us(query["start"])
        end = rfc3339_to_us(query["end"])  # inclusive, as Alpaca's
        limit = int(query.get("limit", 1000))
        cursor = int(base64.b64decode(query["page_token"])) if "page_token" in query else start
    except (KeyError, ValueError):
        return _invalid("invalid start, end, limit or page_token")
    if not 0 < limit <= BARS_LIMIT:
        return _invalid(f"invalid limit: must be between 1 and {BARS_LIMIT}")
    closed_before = now_us() - US_PER_MINUTE
    bars = [
        item
        for item in minute_bars(symbol, cursor, min(end, closed_before) + 1)
        if not session_only or _in_session(item.ts_us)
    ]
    page = bars[: min(limit, page_size)]
    token = None
    if len(bars) > len(page):
        token = base64.b64encode(str(bars[len(page)].ts_us).encode()).decode()
    return FakeResponse(
        200,
        {
            # Alpaca answers null, not [], when there are no bars.
            "bars": [bar(item.ts_us, symbol, stream=False) for item in page] or None,
            "symbol": symbol,
            "next_page_token": token,
        },
    )


history_route = make_history_route()


def asset(symbol: str, name: str, exchange: str = "NASDAQ", **changes: Any) -> dict:
    return {
        "id": f"b0b6dd9d-8b9b-48a9-ba46-b9d54906e4{len(symbol):02d}",
        "class": "us_equity",
        "exchange": exchange,
        "symbol": symbol,
        "name": name,
        "status": "active",
        "tradable": True,
        "marginable": True,
        "maintenance_margin_requirement": 30,
        "shortable": True,
        "easy_to_borrow": True,
        "fractionable": True,
        "attributes": [],
        **changes,
    }


ASSETS = [
    asset("AAPL", "Apple Inc. Common Stock"),
    asset("BRK.B", "Berkshire Hathaway Inc. Class B", "NYSE"),
    asset("SPY", "SPDR S&P 500 ETF Trust", "ARCA", price_increment="0.01"),
    asset("PENY", "A Penny Stock Inc.", "OTC", price_increment="0.0001"),
    asset("NOTR", "Not Tradable Corp.", "NYSE", tradable=False),
]


def _assets(request: FakeRequest) -> FakeResponse:
    if request.query.get("asset_class", "us_equity") != "us_equity":
        return FakeResponse(200, [])
    wanted = request.query.get("status")
    return FakeResponse(200, [item for item in ASSETS if wanted in (None, item["status"])])


# --- trouble --------------------------------------------------------------------------


def rate_limited() -> FakeResponse:
    """Alpaca's answer over its request limit (200 a minute): 429 with its own
    X-RateLimit headers and no ``Retry-After``."""
    reset_s = now_us() // US_PER_SECOND + 60
    return FakeResponse(
        429,
        {"message": "too many requests."},
        headers={
            "X-RateLimit-Limit": "200",
            "X-RateLimit-Remaining": "0",
            "X-RateLimit-Reset": str(reset_s),
        },
    )
