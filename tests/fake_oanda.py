"""A fake OANDA v20 for tests and benchmarks (test support, no tests here).

Serves the pricing stream, M1 candles and the account's instrument list in OANDA's
wire format through ``tests.fakes.FakeHttpServer`` routes. Candles come from
``tests.fakes.minute_bar(symbol, ts)`` with ``symbol`` the OANDA name (``EUR_USD``),
every minute of the week (the fake has no weekend gap); a candle's ``volume`` (OANDA's
tick count, which the feed also stores as ``trades``) is the fake bar's volume.

Like the real service, every request needs the bearer token (401 otherwise), ``count``
is at most 5000, a from/to range may span at most 5000 candles, ``to`` and ``from``
must not be in the future, and the minute still forming is ``complete: false``.
"""

from __future__ import annotations

import json
import os
import re
from datetime import UTC, datetime

try:
    from fakes import FakeRequest, FakeResponse, Route, minute_bar
except ImportError:  # imported as tests.fake_oanda, e.g. from bench/
    from tests.fakes import FakeRequest, FakeResponse, Route, minute_bar

from sptrader.clock import now_us
from sptrader.feeds.oanda import rfc3339_us
from sptrader.models import US_PER_MINUTE, US_PER_SECOND

INSTRUMENT = "OANDA:EUR_USD"
ACCOUNT_ID = "101-004-1234567-001"
TOKEN = "fake-oanda-token"
#: The environment variable ``config_section`` names for the token (and sets).
TOKEN_ENV = "SPTRADER_FAKE_OANDA_TOKEN"
MAX_CANDLES = 5000
SPREAD = 0.02

INSTRUMENTS = [
    {"name": "EUR_USD", "type": "CURRENCY", "displayName": "EUR/USD", "pipLocation": -4, "displayPrecision": 5, "marginRate": "0.0333"},
    {"name": "USD_JPY", "type": "CURRENCY", "displayName": "USD/JPY", "pipLocation": -2, "displayPrecision": 3, "marginRate": "0.04"},
    {"name": "XAU_USD", "type": "METAL", "displayName": "Gold", "pipLocation": -2, "displayPrecision": 3, "marginRate": "0.05"},
    {"name": "SPX500_USD", "type": "CFD", "displayName": "US SPX 500", "pipLocation": 0, "displayPrecision": 1, "marginRate": "0.05"},
]  # fmt: skip

_CANDLES = re.compile(r"^/v3/instruments/([A-Z0-9_]+)/candles$")
_ACCOUNT_INSTRUMENTS = re.compile(r"^/v3/accounts/([^/]+)/instruments$")
_PRICE_STREAM = re.compile(r"^/v3/accounts/([^/]+)/pricing/stream$")
_COMPONENTS = {"B": "bid", "M": "mid", "A": "ask"}


def config_section(live_url: str, rest_url: str) -> dict:
    """The ``[feeds.oanda]`` table for fakes at these URLs. OANDA tokens come only
    from the environment, so this also sets ``TOKEN_ENV`` to the fake's token."""
    os.environ[TOKEN_ENV] = TOKEN
    return {
        "enabled": True,
        "stream_url": live_url,
        "rest_url": rest_url,
        "account_id": ACCOUNT_ID,
        "token_env": TOKEN_ENV,
    }


# --- REST -----------------------------------------------------------------------------


def history_route(request: FakeRequest) -> FakeResponse | None:
    """Candles and the account's instrument list; None for other paths."""
    candles = _CANDLES.match(request.path)
    account = _ACCOUNT_INSTRUMENTS.match(request.path)
    if candles is None and account is None:
        return None
    refused = _refuse_without_token(request)
    if refused is not None:
        return refused
    if account is not None:
        if account.group(1) != ACCOUNT_ID:
            return _error(403, "The provided request was forbidden.")
        return FakeResponse(200, {"instruments": INSTRUMENTS, "lastTransactionID": "1"})
    assert candles is not None
    return _candles(candles.group(1), request.query)


def _candles(symbol: str, query: dict[str, str]) -> FakeResponse:
    if query.get("granularity", "S5") != "M1":
        return _error(400, "This fake serves granularity M1 only")
    components = query.get("price", "M")
    if not components or any(letter not in _COMPONENTS for letter in components):
        return _error(400, "Invalid value specified for 'price'")
    try:
        times = _candle_times(query, now_us())
    except ValueError as error:
        return _error(400, str(error))
    forming = now_us() // US_PER_MINUTE * US_PER_MINUTE
    return FakeResponse(
        200,
        {
            "instrument": symbol,
            "granularity": "M1",
            "candles": [_candle(symbol, ts, components, ts < forming) for ts in times],
        },
    )


def _candle_times(query: dict[str, str], now: int) -> list[int]:
    """Open times answering from/to/count as OANDA does (``to`` taken as inclusive);
    ValueError with OANDA's message for a request it rejects."""
    start = _time_param(query, "from")
    end = _time_param(query, "to")
    if "count" in query:
        if start is not None and end is not None:
            raise ValueError("'count' cannot be specified when 'to' and 'from' parameters are set")
        count = int(query["count"])
        if count > MAX_CANDLES:
            raise ValueError("Maximum value for 'count' exceeded")
        if count < 1:
            raise ValueError("Invalid value specified for 'count'")
    else:
        count = 500
    for name, value in (("from", start), ("to", end)):
        if value is not None and value > now:
            raise ValueError(f"Invalid value specified for '{name}'. Time is in the future")
    forming = now // US_PER_MINUTE * US_PER_MINUTE
    if start is not None:
        first = -(-start // US_PER_MINUTE) * US_PER_MINUTE
        if query.get("includeFirst", "true") == "false" and first == start:
            first += US_PER_MINUTE
        if end is not None:
            if end - start > MAX_CANDLES * US_PER_MINUTE:
                raise ValueError("Maximum value for 'count' exceeded")
            last = min(end, forming)
        else:
            last = min(first + (count - 1) * US_PER_MINUTE, forming)
    else:
        last = min(end if end is not None else forming, forming)
        last -= last % US_PER_MINUTE
        first = last - (count - 1) * US_PER_MINUTE
    return list(range(first, last + 1, US_PER_MINUTE))


def _time_param(query: dict[str, str], name: str) -> int | None:
    text = query.get(name)
    if text is None:
        return None
    try:
        if text.endswith("Z") and "T" in text:
            return rfc3339_us(text)
        return int(float(text) * US_PER_SECOND)  # the Unix datetime format
    except ValueError:
        raise ValueError(f"Invalid value specified for '{name}'") from None


def _candle(symbol: str, ts_us: int, components: str, complete: bool) -> dict:
    bar = minute_bar(symbol, ts_us)
    candle: dict = {"complete": complete, "volume": int(bar.volume), "time": _time(ts_us)}
    for letter in components:
        candle[_COMPONENTS[letter]] = {
            "o": f"{bar.open:.5f}",
            "h": f"{bar.high:.5f}",
            "l": f"{bar.low:.5f}",
            "c": f"{bar.close:.5f}",
        }
    return candle


# --- live -----------------------------------------------------------------------------


def live_messages(ticks: list[tuple[int, float, float]]) -> list[str]:
    """(ts_us, price, size) ticks as PRICE lines: bid = price with liquidity = size
    (the feed makes QuoteReceived(bid=price, bid_size=size) of each)."""
    symbol = INSTRUMENT.split(":", 1)[1]
    lines = []
    for ts_us, price, size in ticks:
        bid = repr(float(price))
        ask = repr(round(float(price) + SPREAD, 10))
        liquidity = int(size) if float(size).is_integer() else size
        lines.append(
            json.dumps(
                {
                    "type": "PRICE",
                    "time": _time(ts_us),
                    "bids": [{"price": bid, "liquidity": liquidity}],
                    "asks": [{"price": ask, "liquidity": liquidity}],
                    "closeoutBid": bid,
                    "closeoutAsk": ask,
                    "status": "tradeable",
                    "tradeable": True,
                    "instrument": symbol,
                },
                separators=(",", ":"),
            )
        )
    return lines


def heartbeat(ts_us: int) -> str:
    return json.dumps({"type": "HEARTBEAT", "time": _time(ts_us)}, separators=(",", ":"))


def stream_route(messages: list[str]) -> Route:
    """Serves the pricing stream: every connection gets ``messages`` (one line each),
    then the response ends. Other paths go to ``history_route``, so one server can
    play both hosts."""
    chunks = [(message.rstrip("\n") + "\n").encode() for message in messages]

    def route(request: FakeRequest) -> FakeResponse | None:
        if not _PRICE_STREAM.match(request.path):
            return history_route(request)
        refused = _refuse_without_token(request)
        if refused is not None:
            return refused
        return FakeResponse(200, headers={"Content-Type": "application/json"}, stream=chunks)

    return route


# --- helpers --------------------------------------------------------------------------


def _refuse_without_token(request: FakeRequest) -> FakeResponse | None:
    if request.headers.get("authorization") != f"Bearer {TOKEN}":
        return _error(401, "Insufficient authorization to perform request.")
    return None


def _error(status: int, message: str) -> FakeResponse:
    return FakeResponse(status, {"errorMessage": message})


def _time(ts_us: int) -> str:
    """RFC 3339 with nine fractional digits, as OANDA writes times."""
    seconds, micros = divmod(ts_us, US_PER_SECOND)
    moment = datetime.fromtimestamp(seconds, UTC)
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{micros:06d}000Z"


# --- trouble --------------------------------------------------------------------------

#: A year-3000 time: far beyond any clock skew a live message may have.
YEAR_3000_US = 32_503_680_000_000_000


def rate_limited() -> FakeResponse:
    """OANDA's answer to more than its documented 120 requests a second: HTTP 429 (it
    documents no ``Retry-After``)."""
    return _error(429, "Too many requests")


def bad_messages(ts_us: int) -> list[str | bytes]:
    """Price stream lines, stamped ``ts_us``: broken JSON, a line that is not UTF-8, a
    type the pricing stream never sends (a transaction's ``ORDER_FILL``), and prices
    with a NaN bid, a negative bid and a time in the year 3000."""
    [line] = live_messages([(ts_us, 1.1, 1.0)])
    good = json.loads(line)

    def bad_price(bid: str | None = None, time: str | None = None) -> str:
        price = json.loads(line)
        if bid is not None:
            price["bids"][0]["price"] = bid
        if time is not None:
            price["time"] = time
        return json.dumps(price, separators=(",", ":"))

    fill = {"type": "ORDER_FILL", "instrument": good["instrument"], "time": good["time"]}
    return [
        line[: len(line) // 2],
        b'\xff\xfe{"type":"HEARTBEAT"}',
        json.dumps(fill, separators=(",", ":")),
        bad_price(bid="NaN"),
        bad_price(bid="-5.00000"),
        bad_price(time=_time(YEAR_3000_US)),
    ]
