"""Test support: a fake Coinbase Advanced Trade speaking the real wire format.

- ``serve_session``: the body of a ``websockets`` server handler; it waits (at most 5 s,
  as the real service does) for one subscribe message per channel, answers each with a
  ``subscriptions`` message, sends the given messages and closes. It sends no
  ``market_trades`` snapshot, so the events a test sees are exactly its messages.
  Every message leaves with the connection's next ``sequence_num``.
- ``history_route``: public candles (newest first, at most 350 a request, ``end``
  inclusive, closed minutes only) from ``tests.fakes.minute_bar(product_id, ts)``, and
  the public product list.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from datetime import UTC, datetime
from typing import Any

try:
    from fakes import FakeRequest, FakeResponse, minute_bars
except ImportError:  # imported as tests.fake_coinbase, e.g. from bench/
    from tests.fakes import FakeRequest, FakeResponse, minute_bars

from sptrader.clock import now_us
from sptrader.feeds.coinbase import CANDLES_LIMIT, CHANNELS, PRODUCTS_PATH
from sptrader.models import US_PER_MINUTE, US_PER_SECOND

INSTRUMENT = "COINBASE:BTC-USD"
PRODUCT_ID = "BTC-USD"
CANDLES_PREFIX = "/api/v3/brokerage/market/products/"
#: The real service answers each subscribe with a sequenced ``subscriptions`` message.
FIRST_DATA_SEQUENCE = len(CHANNELS)


def config_section(live_url: str, rest_url: str) -> dict:
    return {"enabled": True, "ws_url": live_url, "rest_url": rest_url}


# --- messages -------------------------------------------------------------------------


def rfc3339(ts_us: int, nanoseconds: bool = False) -> str:
    """``2023-02-09T20:30:37.167359Z``; with ``nanoseconds`` nine digits, as Coinbase
    writes message timestamps."""
    seconds, micros = divmod(ts_us, US_PER_SECOND)
    text = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{text}.{micros:06d}{'789' if nanoseconds else ''}Z"


def envelope(channel: str, sequence: int, events: list[dict], ts_us: int | None = None) -> dict:
    return {
        "channel": channel,
        "client_id": "",
        "timestamp": rfc3339(now_us() if ts_us is None else ts_us, nanoseconds=True),
        "sequence_num": sequence,
        "events": events,
    }


def trade(ts_us: int, price: float, size: float, trade_id: int, product: str = PRODUCT_ID) -> dict:
    """A ``market_trades`` element; its ``side`` is the MAKER's, as Coinbase sends it
    (BUY for odd ids, SELL for even ones)."""
    return {
        "trade_id": str(trade_id),
        "product_id": product,
        "price": f"{price}",
        "size": f"{size}",
        "side": "BUY" if trade_id % 2 else "SELL",
        "time": rfc3339(ts_us),
    }


def trades_message(trades: list[dict], sequence: int, kind: str = "update") -> dict:
    last = max((trade["time"] for trade in trades), default=None)
    message = envelope("market_trades", sequence, [{"type": kind, "trades": trades}])
    if last is not None:
        message["timestamp"] = last
    return message


def ticker_message(
    ts_us: int,
    bid: float,
    ask: float,
    bid_size: float,
    ask_size: float,
    sequence: int,
    product: str = PRODUCT_ID,
    kind: str = "update",
) -> dict:
    ticker = {
        "type": "ticker",
        "product_id": product,
        "price": f"{ask}",
        "volume_24_h": "16038.28",
        "low_24_h": "21000.00",
        "high_24_h": "22000.00",
        "low_52_w": "15460",
        "high_52_w": "48240",
        "price_percent_chg_24_h": "-2.19",
        "best_bid": f"{bid}",
        "best_bid_quantity": f"{bid_size}",
        "best_ask": f"{ask}",
        "best_ask_quantity": f"{ask_size}",
    }
    return envelope("ticker", sequence, [{"type": kind, "tickers": [ticker]}], ts_us)


def heartbeat_message(sequence: int, counter: int) -> dict:
    now = datetime.now(UTC)
    return envelope(
        "heartbeats",
        sequence,
        [
            {
                "current_time": f"{now:%Y-%m-%d %H:%M:%S.%f}000 +0000 UTC m=+91717.525857105",
                "heartbeat_counter": str(counter),
            }
        ],
    )


def subscriptions_message(subscribed: dict[str, list[str]], sequence: int) -> dict:
    return envelope("subscriptions", sequence, [{"subscriptions": subscribed}])


def error_message(text: str) -> dict:
    return {"type": "error", "message": text}


#: Trade ids as Coinbase numbers a product's trades: one sequence for the whole test
#: run, so trades of later calls are never taken for repeats of earlier ones.
_TRADE_IDS = itertools.count(1)


def live_messages(
    ticks: list[tuple[int, float, float]], first_sequence: int = FIRST_DATA_SEQUENCE
) -> list[str]:
    """One ``market_trades`` update per (ts_us, price, size) tick, numbered as they
    follow the subscription answers of one session (or from ``first_sequence``); trade
    ids continue from the last call's (``trade_ids`` of the returned messages tells
    them)."""
    return [
        json.dumps(
            trades_message([trade(ts_us, price, size, next(_TRADE_IDS))], first_sequence + index)
        )
        for index, (ts_us, price, size) in enumerate(ticks)
    ]


def trade_ids(messages: list[str]) -> list[int]:
    """The trade ids in ``market_trades`` messages, in order."""
    return [
        int(trade["trade_id"])
        for message in messages
        for event in json.loads(message)["events"]
        for trade in event["trades"]
    ]


# --- the websocket side ---------------------------------------------------------------


class FakeSession:
    """One connection's server side: subscriptions received, sequence numbers sent."""

    def __init__(self, websocket: Any) -> None:
        self.websocket = websocket
        self.sequence = 0
        self.subscribes: list[dict] = []
        self.subscribed: dict[str, list[str]] = {}

    async def accept_subscriptions(self, timeout: float = 5.0) -> bool:
        """Answer subscribe messages until every channel the feed uses is subscribed;
        False (connection closed, as Coinbase does) if that takes over ``timeout``."""
        try:
            async with asyncio.timeout(timeout):
                while not all(channel in self.subscribed for channel in CHANNELS):
                    request = json.loads(await self.websocket.recv())
                    self.subscribes.append(request)
                    if request.get("type") != "subscribe" or "channel" not in request:
                        await self.send(error_message("failure to subscribe"))
                        continue
                    self.subscribed[request["channel"]] = list(request.get("product_ids", []))
                    await self.send(subscriptions_message(dict(self.subscribed), self.sequence))
        except TimeoutError:
            await self.websocket.close(1008, "subscribe within 5 seconds")
            return False
        return True

    async def send(self, message: str | dict) -> None:
        """Send with the connection's next sequence number (error messages carry none)."""
        raw = message if isinstance(message, str) else json.dumps(message)
        if '"sequence_num"' in raw:
            raw = _with_sequence(raw, self.sequence)
            self.sequence += 1
        await self.websocket.send(raw)


async def serve_session(websocket: Any, messages: list[str], received: list | None = None) -> None:
    """A websockets handler body: take the subscriptions, send ``messages``, close.
    ``received``, when given, collects the client's subscribe messages."""
    session = FakeSession(websocket)
    subscribed = await session.accept_subscriptions()
    if received is not None:
        received.extend(session.subscribes)
    if not subscribed:
        return
    for message in messages:
        await session.send(message)


def _with_sequence(raw: str, sequence: int) -> str:
    """``raw`` with its sequence_num set to ``sequence`` (untouched when it already is,
    so a benchmark's server does not re-encode every message)."""
    key = raw.index('"sequence_num"')
    start = raw.index(":", key) + 1
    while raw[start] == " ":
        start += 1
    end = start
    while raw[end].isdigit():
        end += 1
    if raw[start:end] == str(sequence):
        return raw
    return f"{raw[:start]}{sequence}{raw[end:]}"


# --- the REST side --------------------------------------------------------------------


def history_route(request: FakeRequest) -> FakeResponse | None:
    if request.path == PRODUCTS_PATH:
        return _products(request)
    if request.path.startswith(CANDLES_PREFIX) and request.path.endswith("/candles"):
        product = request.path[len(CANDLES_PREFIX) : -len("/candles")]
        return _candles(product, request.query)
    return None


def _invalid(details: str) -> FakeResponse:
    return FakeResponse(
        400, {"error": "INVALID_ARGUMENT", "error_details": details, "message": details}
    )


def _candles(product: str, query: dict[str, str]) -> FakeResponse:
    if query.get("granularity") != "ONE_MINUTE":
        return _invalid("this fake serves ONE_MINUTE candles only")
    try:
        start_s, end_s = int(query["start"]), int(query["end"])
        limit = int(query.get("limit", CANDLES_LIMIT))
    except (KeyError, ValueError):
        return _invalid("start and end argument is invalid")
    if not 0 < limit <= CANDLES_LIMIT:
        return _invalid(f"limit must be between 1 and {CANDLES_LIMIT}")
    bars = minute_bars(product, start_s * US_PER_SECOND, end_s * US_PER_SECOND + 1)
    if len(bars) > limit:
        return _invalid(
            "start and end argument is invalid - number of candles requested should be "
            f"less than {limit + 1}"
        )
    closed_before = now_us() - US_PER_MINUTE
    candles = [
        {
            "start": str(bar.ts_us // US_PER_SECOND),
            "low": f"{bar.low}",
            "high": f"{bar.high}",
            "open": f"{bar.open}",
            "close": f"{bar.close}",
            "volume": f"{bar.volume}",
        }
        for bar in reversed(bars)  # newest first, as Coinbase answers
        if bar.ts_us <= closed_before
    ]
    return FakeResponse(200, {"candles": candles})


def product(
    product_id: str,
    base_name: str,
    quote_name: str,
    *,
    status: str = "online",
    trading_disabled: bool = False,
    product_type: str = "SPOT",
) -> dict:
    base, _, quote = product_id.partition("-")
    return {
        "product_id": product_id,
        "price": "68925.98",
        "volume_24h": "11005.02587005",
        "base_increment": "0.00000001",
        "quote_increment": "0.01",
        "base_name": base_name,
        "quote_name": quote_name,
        "watched": False,
        "is_disabled": False,
        "new": False,
        "status": status,
        "cancel_only": False,
        "limit_only": False,
        "post_only": False,
        "trading_disabled": trading_disabled,
        "auction_mode": False,
        "product_type": product_type,
        "quote_currency_id": quote,
        "base_currency_id": base,
        "base_display_symbol": base,
        "quote_display_symbol": quote,
        "view_only": False,
        "price_increment": "0.01",
        "display_name": product_id,
        "product_venue": "CBE",
    }


PRODUCTS = [
    product("BTC-USD", "Bitcoin", "US Dollar"),
    product("ETH-EUR", "Ethereum", "Euro"),
    product("OLD-USD", "Old Coin", "US Dollar", status="delisted"),
    product("HALT-USD", "Halted Coin", "US Dollar", trading_disabled=True),
    product("BIT-28JUN24-CDE", "", "US Dollar", product_type="FUTURE"),
]


def _products(request: FakeRequest) -> FakeResponse:
    wanted = request.query.get("product_type")
    products = [entry for entry in PRODUCTS if wanted in (None, entry["product_type"])]
    return FakeResponse(200, {"products": products, "num_products": len(products)})


# --- trouble --------------------------------------------------------------------------

#: A year-3000 time: far beyond any clock skew a live message may have.
YEAR_3000_US = 32_503_680_000_000_000


def rate_limited() -> FakeResponse:
    """Coinbase's answer to too many public requests a second: HTTP 429 (it documents
    no ``Retry-After``)."""
    return FakeResponse(
        429,
        {
            "error": "RATE_LIMIT_EXCEEDED",
            "error_details": "Too many requests",
            "message": "Too many requests",
        },
    )


def bad_messages(ts_us: int, first_sequence: int = FIRST_DATA_SEQUENCE) -> list[str | bytes]:
    """In Coinbase's framing, stamped ``ts_us``, those carrying a ``sequence_num``
    numbered from ``first_sequence`` (``sequence_after`` tells the next): broken JSON, a
    frame that is not UTF-8, a channel nobody subscribed to (``l2_data``), and trades
    with a NaN price, a negative price and a time in the year 3000 (trade id 1, outside
    the fake's sequence: none may reach the feed's trade-id check)."""

    def bad_trade(sequence: int, **fields: str) -> str:
        return json.dumps(trades_message([{**trade(ts_us, 100.0, 1.0, 1), **fields}], sequence))

    level2 = envelope(
        "l2_data",
        first_sequence,
        [
            {
                "type": "update",
                "product_id": PRODUCT_ID,
                "updates": [
                    {
                        "side": "bid",
                        "event_time": rfc3339(ts_us),
                        "price_level": "100.0",
                        "new_quantity": "1.0",
                    }
                ],
            }
        ],
    )
    return [
        '{"channel":"market_trades","client_id":"","timestamp":"',
        b'\xff\xfe{"channel":"heartbeats","events":[]}',
        json.dumps(level2),
        bad_trade(first_sequence + 1, price="NaN"),
        bad_trade(first_sequence + 2, price="-5"),
        bad_trade(first_sequence + 3, time=rfc3339(YEAR_3000_US)),
    ]


def sequence_after(messages: list[str | bytes], first_sequence: int = FIRST_DATA_SEQUENCE) -> int:
    """The ``sequence_num`` the message after ``messages`` takes."""
    numbers = []
    for message in messages:
        try:
            numbers.append(json.loads(message)["sequence_num"])
        except (ValueError, KeyError):
            continue
    return max(numbers, default=first_sequence - 1) + 1
