"""``OANDA:`` FX, metals and CFDs from OANDA's v20 REST API: the pricing stream for
live quotes, M1 candles for history, the account's instrument list for symbols.

Wire quirks:
- The stream is one long chunked HTTP response, one JSON object per line: ``PRICE``
  (top of book in ``bids[0]``/``asks[0]``, prices as strings, liquidity as integers)
  and a ``HEARTBEAT`` about every 5 s. Times are RFC 3339 with nanoseconds.
- Every call needs ``Authorization: Bearer <token>``; the token comes from the
  environment variable ``feeds.oanda.token_env``, never from the config file, and is
  never logged. A refused token (401/403) or a rejected request fails the service
  instead of retrying forever.
- Candles: ``count`` is at most 5000 and a from/to range spanning more candles is
  rejected, so history pages in windows of at most 5000 minutes; a ``to`` in the
  future is rejected too, so the window reaching the present asks by ``count``.
  Weekends simply have no candles; the newest candle may be ``complete: false``.
- A price is tradeable when ``tradeable`` says so; older streams (2016) have only
  ``status`` ("tradeable", "non-tradeable", "invalid"), which is read when
  ``tradeable`` is absent.
- Every price, liquidity and time is checked (``feeds.validate``): an impossible one is
  counted ``invalid``; a candle with one is dropped (one warning per history call).
- OANDA has quotes, not trades: bars are built of bids (``price_source = "bid"``) or
  mids; ``trade`` (which makes no sense here) means mid.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from typing import Any

import httpx
import polars as pl

from sptrader.clock import format_us, now_us, rfc3339_to_us
from sptrader.config import OandaFeedConfig
from sptrader.errors import SptraderError
from sptrader.feeds import validate
from sptrader.feeds.base import BAR_SCHEMA, ExchangeFeed, SymbolInfo, Watchdog
from sptrader.feeds.http import get_with_retries
from sptrader.feeds.validate import MALFORMED, BadValue, skip_invalid
from sptrader.models import US_PER_MINUTE, QuoteReceived
from sptrader.supervisor import ServiceContext

log = logging.getLogger(__name__)

#: Most candles one request may return or span.
MAX_CANDLES = 5000
#: Windows ending this close to now ask by ``count``: a ``to`` in the future (by
#: OANDA's clock, which may run behind ours) is rejected.
FUTURE_MARGIN_US = US_PER_MINUTE
KINDS = {"CURRENCY": "fx", "METAL": "metal", "CFD": "cfd"}


class OandaFeed(ExchangeFeed):
    prefix = "OANDA"
    name = "oanda"
    market_kind = "fx"
    config: OandaFeedConfig

    def __init__(
        self,
        instruments: list[str],
        config: OandaFeedConfig,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        rest_transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        super().__init__(instruments, config, transport=transport, sleep=sleep)
        self._rest_transport = rest_transport
        # EUR_USD -> OANDA:EUR_USD
        self._by_symbol = {name.split(":", 1)[1]: name for name in instruments}
        # Newest price time per instrument, across reconnects (the stream repeats it).
        self._last_price_us: dict[str, int] = {}

    def price_source(self, instrument: str) -> str:
        # Quotes only: "trade" bars would never get a tick, so it means mid here.
        return "bid" if self.config.price_source in ("bid", "auto") else "mid"

    # --- credentials ------------------------------------------------------------------

    def _token(self) -> str:
        token = os.environ.get(self.config.token_env, "").strip()
        if not token:
            raise SptraderError(
                f"OANDA needs an API token: set the {self.config.token_env} "
                "environment variable (feeds.oanda.token_env)"
            )
        return token

    def _account_id(self) -> str:
        account_id = self.config.account_id.strip()
        if not account_id:
            raise SptraderError(
                "OANDA needs an account id: set feeds.oanda.account_id "
                "(e.g. 101-004-1234567-001, shown in OANDA's account settings)"
            )
        return account_id

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._token()}", "Accept-Datetime-Format": "RFC3339"}

    # --- live -------------------------------------------------------------------------

    async def stream(self, context: ServiceContext) -> None:
        headers = self._headers()
        url = (
            f"{self.config.stream_url.rstrip('/')}/v3/accounts/{self._account_id()}/pricing/stream"
        )
        params = {"instruments": ",".join(self._by_symbol)}
        # No read time-out: the watchdog below decides when silence means a dead stream.
        timeout = httpx.Timeout(10.0, read=None)
        async with (
            httpx.AsyncClient(transport=self._transport, timeout=timeout) as client,
            client.stream("GET", url, params=params, headers=headers) as response,
        ):
            await self._check_stream_status(response)
            context.mark_running()
            # Heartbeats come every 5 s: silence for watchdog_s means a dead stream.
            async with Watchdog(self.config.watchdog_s) as watchdog:
                async for line in response.aiter_lines():
                    watchdog.fed()
                    context.touch()
                    if not line:
                        continue  # a bare keep-alive newline
                    events = self.parse(line, context)
                    if events:
                        await context.publish(events)
            raise ConnectionResetError("OANDA ended the price stream")

    async def _check_stream_status(self, response: httpx.Response) -> None:
        """Fail for good on what a retry cannot fix (token, account, instruments);
        raise a retryable error for throttling and server trouble."""
        status = response.status_code
        if status == 200:
            return
        await response.aread()
        detail = _error_detail(response)
        if status in (401, 403):
            raise SptraderError(
                f"OANDA refused the token (HTTP {status}{detail}): check the "
                f"{self.config.token_env} environment variable, and that practice tokens "
                "go to the fxpractice hosts (feeds.oanda.stream_url, rest_url)"
            )
        if status == 429 or status >= 500:
            raise ConnectionError(f"OANDA price stream: HTTP {status}{detail}")
        raise SptraderError(
            f"OANDA rejected the price stream (HTTP {status}{detail}): check "
            "feeds.oanda.account_id and the OANDA: instruments in the watchlist"
        )

    def parse(self, raw: str | bytes, context: ServiceContext) -> list[object]:
        """One stream line to events; anything unexpected is counted and skipped."""
        try:
            message = json.loads(raw)
            kind = message["type"]
            if kind == "PRICE":
                return self._price(message, context)
            if kind == "HEARTBEAT":
                context.count("heartbeats")
                return []
        except BadValue as error:  # before ValueError: it is one
            skip_invalid(context, "OANDA", error)
            return []
        except MALFORMED:
            context.skipped("malformed", "a malformed OANDA message")
            return []
        context.skipped("unexpected", f"an OANDA message of type {str(kind)[:40]!r}")
        return []

    def _price(self, message: dict, context: ServiceContext) -> list[object]:
        # A non-tradeable price (market closed, instrument halted) is the frozen last
        # price stamped with its old time: as a tick it would rebuild a past minute
        # from one price over the stored candle, and the paper broker must not fill
        # on it. Count it and keep the stored bars.
        if not _tradeable(message):
            context.count("non_tradeable")
            return []
        bids = message["bids"]
        asks = message["asks"]
        if not bids or not asks:
            context.skipped("empty_book", "an OANDA price without bids or asks")
            return []
        bid = bids[0]
        ask = asks[0]
        instrument = self._by_symbol[message["instrument"]]
        ts_us = validate.live_time(rfc3339_us(message["time"]), self.clock_us(), "price time")
        # A (re)connected stream first repeats each instrument's latest price: one
        # already seen must not count again in the forming bar.
        last = self._last_price_us.get(instrument, -1)
        if ts_us == last:
            context.count("repeated")
            return []
        quote = QuoteReceived(
            instrument,
            ts_us,
            validate.price(bid["price"], "bid"),
            validate.price(ask["price"], "ask"),
            validate.book_size(bid["liquidity"], "bid liquidity"),
            validate.book_size(ask["liquidity"], "ask liquidity"),
        )
        # Checked before the time is remembered: an impossible price is not "seen".
        if ts_us > last:
            self._last_price_us[instrument] = ts_us
        return [quote]

    # --- history ----------------------------------------------------------------------

    def _client(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.config.rest_url, transport=self._rest_transport, timeout=30
        )

    def history(self, instrument: str, start_us: int, end_us: int) -> pl.DataFrame | None:
        """Complete M1 candles opening in [start, end), paged in windows of at most
        5000 minutes, honouring 429 ``Retry-After``. None when there are none."""
        symbol = instrument.split(":", 1)[1]
        letter, component = ("B", "bid") if self.price_source(instrument) == "bid" else ("M", "mid")
        headers = self._headers()
        # Candles opening at or after now cannot be complete.
        clock_us = self.clock_us()
        stop = min(end_us, clock_us)
        cursor = _ceil_minute(start_us)
        rows: dict[int, tuple[float, float, float, float, int]] = {}
        dropped: list[str] = []
        with self._client() as client:
            while cursor < stop:
                window_end = min(cursor + MAX_CANDLES * US_PER_MINUTE, stop)
                response = get_with_retries(
                    client,
                    f"/v3/instruments/{symbol}/candles",
                    params=_window_params(letter, cursor, window_end, clock_us),
                    headers=headers,
                    what=f"OANDA candles for {symbol}",
                    sleep=self.sleep,
                )
                assert response is not None
                _collect_candles(
                    response, component, cursor, window_end, rows, symbol, clock_us, dropped
                )
                cursor = window_end
        if dropped:
            log.warning(
                "OANDA candles for %s: dropped %d impossible candle(s) (first: %s)",
                symbol,
                len(dropped),
                dropped[0],
                extra={"source": self.name},
            )
        if not rows:
            return None
        times = sorted(rows)
        return pl.DataFrame(
            {
                "instrument": [instrument] * len(times),
                "ts": times,
                "open": [rows[ts][0] for ts in times],
                "high": [rows[ts][1] for ts in times],
                "low": [rows[ts][2] for ts in times],
                "close": [rows[ts][3] for ts in times],
                # Tick volume: the number of prices in the minute, OANDA's only count.
                "volume": [float(rows[ts][4]) for ts in times],
                "trades": [rows[ts][4] for ts in times],
            },
            schema=BAR_SCHEMA,
        )

    # --- symbols ----------------------------------------------------------------------

    def symbols(self) -> list[SymbolInfo]:
        """The instruments this account may trade, from ``/v3/accounts/{id}/instruments``."""
        account_id = self._account_id()
        with self._client() as client:
            response = get_with_retries(
                client,
                f"/v3/accounts/{account_id}/instruments",
                headers=self._headers(),
                what="OANDA instruments",
                sleep=self.sleep,
            )
            assert response is not None
            payload = response.json()
        symbols = []
        for entry in payload.get("instruments", []):
            name = entry["name"]
            base, _, quote = name.partition("_")
            symbols.append(
                SymbolInfo(
                    f"OANDA:{name}",
                    entry.get("displayName") or name,
                    KINDS.get(entry.get("type", ""), ""),
                    base,
                    quote,
                    display_decimals(entry),
                )
            )
        return symbols


# --- helpers --------------------------------------------------------------------------


def display_decimals(entry: dict[str, Any]) -> int | None:
    """An instrument's price decimals: ``displayPrecision`` (EUR_USD 5), else one past
    its pip (pipLocation -4 -> 5, the fractional pip OANDA quotes)."""
    precision = entry.get("displayPrecision")
    if isinstance(precision, int) and not isinstance(precision, bool) and precision >= 0:
        return precision
    pip = entry.get("pipLocation")
    if isinstance(pip, int) and not isinstance(pip, bool):
        return max(0, 1 - pip)
    return None


def _window_params(
    letter: str, start_us: int, end_us: int, clock_us: int | None = None
) -> dict[str, str | int]:
    """Candle query for the window [start, end): from/to in the past, from/count when
    the window reaches the present (``to`` must not be in the future)."""
    now = now_us() if clock_us is None else clock_us
    params: dict[str, str | int] = {
        "price": letter,
        "granularity": "M1",
        "from": format_rfc3339(start_us),
    }
    if end_us <= now - FUTURE_MARGIN_US:
        params["to"] = format_rfc3339(_ceil_minute(end_us))
    else:
        params["count"] = -(-(end_us - start_us) // US_PER_MINUTE)
    return params


def _collect_candles(
    response: httpx.Response,
    component: str,
    start_us: int,
    end_us: int,
    rows: dict[int, tuple[float, float, float, float, int]],
    symbol: str,
    clock_us: int | None = None,
    dropped: list[str] | None = None,
) -> None:
    """Add the complete candles opening in [start, end) to ``rows`` (keyed by open
    time, so a candle served twice is kept once). A candle with an impossible value
    is left out, its reason added to ``dropped``."""
    clock = now_us() if clock_us is None else clock_us
    try:
        for candle in response.json()["candles"]:
            if not candle.get("complete"):
                continue  # still forming
            ts = rfc3339_us(candle["time"])
            if not start_us <= ts < end_us:
                continue  # e.g. the candle at an inclusive ``to``
            try:
                rows[ts] = _candle_values(candle, component, ts, clock)
            except BadValue as error:
                if dropped is not None:
                    dropped.append(str(error))
    except (ValueError, KeyError, TypeError, RecursionError) as error:
        raise SptraderError(
            f"OANDA candles for {symbol}: unexpected answer ({type(error).__name__}: {error})"
        ) from None


def _candle_values(
    candle: dict, component: str, ts: int, clock_us: int
) -> tuple[float, float, float, float, int]:
    """A complete candle's (open, high, low, close, tick volume), checked."""
    validate.history_time(ts, clock_us)
    prices = candle[component]
    volume = validate.integer(candle["volume"], "volume")
    if volume < 0:
        raise BadValue(f"volume {volume} is negative")
    return (
        validate.price(prices["o"], "open"),
        validate.price(prices["h"], "high"),
        validate.price(prices["l"], "low"),
        validate.price(prices["c"], "close"),
        volume,
    )


def _tradeable(message: dict) -> bool:
    """Whether a PRICE may be traded on: its ``tradeable`` flag, or on streams too old
    to have one, its ``status`` ("tradeable"; not "non-tradeable" or "invalid")."""
    tradeable = message.get("tradeable")
    if tradeable is not None:
        return tradeable is True
    status = message.get("status")
    return status is None or status == "tradeable"


def _error_detail(response: httpx.Response) -> str:
    """``: <OANDA's errorMessage>`` from an error answer, or nothing."""
    try:
        message = str(response.json().get("errorMessage", "")).strip()
    except (ValueError, AttributeError):
        message = response.text.strip()
    return f": {message[:200]}" if message else ""


def _ceil_minute(ts_us: int) -> int:
    return -(-ts_us // US_PER_MINUTE) * US_PER_MINUTE


def rfc3339_us(text: str) -> int:
    """OANDA's times: always UTC with ``Z``, up to nanoseconds (truncated)."""
    return rfc3339_to_us(text, utc_only=True)


# Whole-second RFC 3339 in UTC, as OANDA's ``from``/``to`` take it.
format_rfc3339 = format_us
