"""``ALPACA:`` US equities from Alpaca's market data API v2: the IEX stream (trades,
quotes and the venue's 1m bars), REST 1m bars for history, and the trading API's asset
list for symbols. Stocks trade on the NYSE calendar (``market_kind = "equity"``): the
data manager counts no gap outside the session.

Wire quirks:
- Every message is a JSON array of objects routed on ``T``: ``t`` trade, ``q`` quote,
  ``b`` minute bar, ``success``/``subscription``/``error`` control messages, and ``c``
  corrections and ``x`` cancel errors, which come with a trade subscription.
- Connecting gives ``[{"T":"success","msg":"connected"}]``; an ``auth`` message must
  follow within 10 s and is answered ``authenticated`` or an error (402 auth failed);
  then one ``subscribe`` message for all three channels is answered ``subscription``.
  The key id and secret come from the environment variables ``feeds.alpaca.key_env``
  and ``secret_env`` (the trading API's by default), never from the file or a log.
- Errors a retry cannot fix (402 auth failed, 405 symbol limit, 409 insufficient
  subscription, 400/410 a rejected request) fail the service with one sentence; the
  others (406 connection limit exceeded: one data connection per key, 407 slow client,
  500) reconnect with backoff.
- The stream has no heartbeat and is silent when the market is closed: websocket pings
  keep the watchdog fed, so a quiet stream is not a dead one. Staleness follows data.
- Trade ids (``i``) are the exchange's, not a per-symbol sequence: trades carry
  NO_TRADE_ID (a hole in them proves nothing). Trades carry no aggressor side.
- ``b`` bars are IEX's own closed minutes (opening at ``t``), built with the SIP's rules
  for which trade conditions move a bar: they are the record (VenueBarClosed).
- A quote with a zero bid or ask (one side of IEX's book empty) is counted
  ``one_sided_quotes``, not a quote.
- History: ``/v2/stocks/{symbol}/bars`` pages by ``next_page_token`` (at most 10000
  bars a page); minutes without trades have no bar; extended-hours bars are included.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Callable
from typing import Any

import httpx
import polars as pl
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from sptrader.clock import format_us, rfc3339_to_us
from sptrader.config import AlpacaFeedConfig
from sptrader.errors import SptraderError
from sptrader.feeds import validate
from sptrader.feeds.base import BAR_SCHEMA, ExchangeFeed, SymbolInfo, Watchdog, empty_bars
from sptrader.feeds.http import get_with_retries
from sptrader.feeds.validate import MALFORMED, BadValue, skip_invalid
from sptrader.formatting import decimals_of_tick
from sptrader.models import (
    INSTRUMENT_RE,
    NO_TRADE_ID,
    SIDE_UNKNOWN,
    US_PER_MINUTE,
    US_PER_SECOND,
    Bar,
    QuoteReceived,
    TradeReceived,
    VenueBarClosed,
)
from sptrader.supervisor import ServiceContext

log = logging.getLogger(__name__)

BARS_PATH = "/v2/stocks/{symbol}/bars"
ASSETS_PATH = "/v2/assets"
#: Most bars one page may hold.
BARS_LIMIT = 10_000
#: Seconds Alpaca gives for each handshake step (it closes an unauthenticated stream).
HANDSHAKE_S = 10.0
#: US stocks above $1 are quoted in cents (Reg NMS 612); the asset list rarely says.
STOCK_DECIMALS = 2
#: Stream errors a reconnect cannot fix, besides 402 (the key): the user must change
#: the plan, the URL or the watchlist.
_FATAL_HINTS = {
    405: "the free plan streams at most 30 symbols: watch fewer ALPACA: instruments",
    409: "the plan does not include this feed: use the IEX stream"
    " (feeds.alpaca.ws_url ending in /v2/iex)",
    400: "check feeds.alpaca.ws_url",
    410: "check feeds.alpaca.ws_url",
}
#: Message types that come with the channels subscribed and carry no price.
_COUNTED = {"c": "corrections", "x": "cancel_errors", "success": "control"}


class AlpacaFeed(ExchangeFeed):
    prefix = "ALPACA"
    name = "alpaca"
    market_kind = "equity"
    config: AlpacaFeedConfig

    def __init__(
        self,
        instruments: list[str],
        config: AlpacaFeedConfig,
        *,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        super().__init__(instruments, config, transport=transport, sleep=sleep)
        # AAPL -> ALPACA:AAPL
        self._by_symbol = {name.split(":", 1)[1]: name for name in instruments}

    # --- credentials ------------------------------------------------------------------

    def _credentials(self) -> tuple[str, str]:
        key = os.environ.get(self.config.key_env, "").strip()
        secret = os.environ.get(self.config.secret_env, "").strip()
        if not key or not secret:
            raise SptraderError(
                f"Alpaca needs an API key: set the {self.config.key_env} and "
                f"{self.config.secret_env} environment variables "
                "(feeds.alpaca.key_env, feeds.alpaca.secret_env)"
            )
        return key, secret

    def _headers(self) -> dict[str, str]:
        key, secret = self._credentials()
        return {"APCA-API-KEY-ID": key, "APCA-API-SECRET-KEY": secret}

    def _refused(self, what: str, detail: str) -> SptraderError:
        return SptraderError(
            f"Alpaca refused the API key ({what}{detail}): set {self.config.key_env} and "
            f"{self.config.secret_env} to the key id and secret of your Alpaca account"
            " (feeds.alpaca.key_env, feeds.alpaca.secret_env)"
        )

    # --- live -------------------------------------------------------------------------

    def subscribe_message(self) -> dict[str, Any]:
        symbols = list(self._by_symbol)
        return {"action": "subscribe", "trades": symbols, "quotes": symbols, "bars": symbols}

    async def stream(self, context: ServiceContext) -> None:
        key, secret = self._credentials()  # before connecting: a missing key is no disconnect
        async with connect(self.config.ws_url, max_size=2**22, open_timeout=10) as websocket:
            await self._expect(websocket, "connected")
            await websocket.send(json.dumps({"action": "auth", "key": key, "secret": secret}))
            await self._expect(websocket, "authenticated")
            await websocket.send(json.dumps(self.subscribe_message()))
            # Running once the ``subscription`` answer arrives (parse marks it).
            await self._receive(websocket, context)

    async def _expect(self, websocket: Any, wanted: str) -> None:
        """Wait for the ``success`` message ``wanted``; raise on an error message."""
        try:
            async with asyncio.timeout(HANDSHAKE_S):
                while True:
                    for item in json.loads(await websocket.recv()):
                        if item.get("T") == "error":
                            raise self._stream_error(item)
                        if item.get("T") == "success" and item.get("msg") == wanted:
                            return
        except TimeoutError:
            raise ConnectionResetError(f"Alpaca did not say {wanted!r} in time") from None
        except MALFORMED as error:
            raise ConnectionResetError(
                f"Alpaca sent an unreadable answer while waiting for {wanted!r}"
                f" ({type(error).__name__})"
            ) from None

    def _stream_error(self, item: dict[str, Any]) -> Exception:
        """An error message as the exception it calls for: SptraderError (fails the
        service) for what the user must fix, ConnectionResetError (reconnect) else."""
        code = item.get("code")
        text = f"{code} {str(item.get('msg', ''))[:100]}".strip()
        if code == 402:
            return self._refused(text, "")
        hint = _FATAL_HINTS.get(code)  # type: ignore[arg-type]
        if hint is not None:
            return SptraderError(f"Alpaca refused the stream ({text}): {hint}")
        if code == 406:
            text += ": another program streams this key's one market data connection"
        return ConnectionResetError(f"Alpaca stream error {text}")

    async def _receive(self, websocket: Any, context: ServiceContext) -> None:
        """``pump``, but a silent connection that still answers pings is alive: Alpaca
        sends no heartbeat, and nothing at all while the market is closed."""
        if self.on_stream_joined is not None:
            now = self.clock_us()
            self.on_stream_joined(now - now % US_PER_MINUTE)
        async with Watchdog(self.config.watchdog_s) as watchdog:
            pinger = asyncio.create_task(self._keep_fed(websocket, watchdog))
            try:
                while True:
                    raw = await websocket.recv(decode=False)
                    watchdog.fed()
                    context.touch()
                    events = self.parse_safely(raw, context)
                    if events:
                        await context.publish(events)
            finally:
                pinger.cancel()

    async def _keep_fed(self, websocket: Any, watchdog: Watchdog) -> None:
        every = max(0.5, self.config.watchdog_s / 3)
        while True:
            await asyncio.sleep(every)
            try:
                pong = await websocket.ping()
                async with asyncio.timeout(every):
                    await pong
            except TimeoutError:
                continue  # unanswered: the watchdog trips if it stays so
            except ConnectionClosed:
                return  # the receive loop sees the close
            watchdog.fed()

    def parse(self, raw: str | bytes, context: ServiceContext) -> list[object]:
        """One stream message (an array) to events. An element that is malformed,
        impossible or unexpected is counted and skipped; the rest of the array is kept."""
        try:
            items = json.loads(raw)
            if type(items) is not list:
                raise TypeError("not an array")
        except MALFORMED:
            context.skipped("malformed", "a malformed Alpaca message")
            return []
        events: list[object] = []
        clock_us = self.clock_us()
        for item in items:
            try:
                event = self._element(item, clock_us, context)
            except BadValue as error:  # before MALFORMED: it is a ValueError
                skip_invalid(context, "Alpaca", error)
                continue
            except MALFORMED:
                context.skipped("malformed", "a malformed Alpaca message")
                continue
            if event is not None:
                events.append(event)
        return events

    def _element(self, item: dict[str, Any], clock_us: int, context: ServiceContext) -> object:
        kind = item["T"]
        if kind in ("t", "q", "b"):
            instrument = self._by_symbol.get(item["S"])
            if instrument is None:
                context.skipped("unexpected", f"an Alpaca message for {str(item['S'])[:20]!r}")
                return None
            if kind == "t":
                return _trade(instrument, item, clock_us)
            if kind == "q":
                if item["bp"] == 0 or item["ap"] == 0:
                    context.count("one_sided_quotes")
                    return None
                return _quote(instrument, item, clock_us)
            closed = VenueBarClosed(bar_of(instrument, item, clock_us, live=True))
            context.count("venue_bars")
            return closed
        if kind == "subscription":
            context.count("subscriptions")
            context.mark_running()
            return None
        if kind == "error":
            raise self._stream_error(item)
        counter = _COUNTED.get(kind)
        if counter is None:
            context.skipped("unexpected", f"an Alpaca message of type {str(kind)[:20]!r}")
        else:
            context.count(counter)
        return None

    # --- history ----------------------------------------------------------------------

    def _client(self, base_url: str) -> httpx.Client:
        def check_key(response: httpx.Response) -> None:
            # Before the retries: a refused key is the user's to fix, said in one line.
            if response.status_code in (401, 403):
                raise self._refused(f"HTTP {response.status_code}", f" from {base_url}")

        return httpx.Client(
            base_url=base_url,
            transport=self._transport,
            timeout=30,
            event_hooks={"response": [check_key]},
        )

    def history(self, instrument: str, start_us: int, end_us: int) -> pl.DataFrame | None:
        """Closed 1m bars opening in [start, end), every page, honouring 429s. Minutes
        without trades (nights, weekends, a quiet stock) have no bar."""
        symbol = instrument.split(":", 1)[1]
        clock_us = self.clock_us()
        # Closed bars only: the newest opens a minute before now.
        last_open_us = min(end_us - 1, clock_us - US_PER_MINUTE)
        first_us = -(-start_us // US_PER_MINUTE) * US_PER_MINUTE
        if first_us > last_open_us:
            return empty_bars()
        params: dict[str, Any] = {
            "timeframe": "1Min",
            "start": format_us(first_us),
            # A second past the last open: the same bars whether ``end`` is inclusive.
            "end": format_us(last_open_us - last_open_us % US_PER_SECOND + US_PER_SECOND),
            "limit": BARS_LIMIT,
            "feed": self.config.data_feed,
            "adjustment": "raw",
        }
        rows: dict[int, Bar] = {}
        dropped: list[str] = []
        headers = self._headers()
        with self._client(self.config.rest_url) as client:
            while True:
                response = get_with_retries(
                    client,
                    BARS_PATH.format(symbol=symbol),
                    params=params,
                    headers=headers,
                    what=f"Alpaca bars for {symbol}",
                    sleep=self.sleep,
                )
                assert response is not None
                page, token = _bars_page(response, symbol)
                for item in page:
                    try:
                        bar = bar_of(instrument, item, clock_us, live=False)
                    except (BadValue, *MALFORMED) as error:
                        dropped.append(str(error) or type(error).__name__)
                        continue
                    if first_us <= bar.ts_us <= last_open_us:
                        rows[bar.ts_us] = bar
                if not token:
                    break
                params["page_token"] = token
        if dropped:
            log.warning(
                "Alpaca bars for %s: dropped %d impossible or malformed bar(s) (first: %s)",
                symbol,
                len(dropped),
                dropped[0],
                extra={"source": self.name},
            )
        bars = [rows[ts] for ts in sorted(rows)]
        return pl.DataFrame(
            {
                "instrument": [instrument] * len(bars),
                "ts": [bar.ts_us for bar in bars],
                "open": [bar.open for bar in bars],
                "high": [bar.high for bar in bars],
                "low": [bar.low for bar in bars],
                "close": [bar.close for bar in bars],
                "volume": [bar.volume for bar in bars],
                "trades": [bar.trades for bar in bars],
            },
            schema=BAR_SCHEMA,
        )

    # --- symbols ----------------------------------------------------------------------

    def symbols(self) -> list[SymbolInfo]:
        """Active, tradable US equities, from the trading API's asset list."""
        with self._client(self.config.trading_url) as client:
            response = get_with_retries(
                client,
                ASSETS_PATH,
                params={"status": "active", "asset_class": "us_equity"},
                headers=self._headers(),
                what="Alpaca assets",
                sleep=self.sleep,
            )
            assert response is not None
            assets = response.json()
        if type(assets) is not list:
            raise SptraderError("Alpaca assets: unexpected answer (not a list)")
        return [
            symbol_info(asset)
            for asset in assets
            if asset.get("tradable") is True
            and asset.get("status") == "active"
            and INSTRUMENT_RE.match(f"ALPACA:{asset.get('symbol')}")
        ]


# --- helpers --------------------------------------------------------------------------


def _time(value: object, clock_us: int, what: str) -> int:
    if type(value) is not str:
        raise BadValue(f"{what} {value!r} is not a time")
    return validate.live_time(rfc3339_to_us(value), clock_us, what)


def _trade(instrument: str, item: dict[str, Any], clock_us: int) -> TradeReceived:
    return TradeReceived(
        instrument,
        _time(item["t"], clock_us, "trade time"),
        validate.price(item["p"]),
        validate.size(item["s"]),
        SIDE_UNKNOWN,
        NO_TRADE_ID,
    )


def _quote(instrument: str, item: dict[str, Any], clock_us: int) -> QuoteReceived:
    return QuoteReceived(
        instrument,
        _time(item["t"], clock_us, "quote time"),
        validate.price(item["bp"], "bid"),
        validate.price(item["ap"], "ask"),
        validate.book_size(item["bs"], "bid size"),
        validate.book_size(item["as"], "ask size"),
    )


def bar_of(instrument: str, item: dict[str, Any], clock_us: int, *, live: bool) -> Bar:
    """A stream ``b`` or a REST bar, checked: a whole minute, sane prices that fit
    (low <= open, close <= high), a volume and a trade count."""
    text = item["t"]
    if type(text) is not str:
        raise BadValue(f"bar time {text!r} is not a time")
    open_us = rfc3339_to_us(text)
    if open_us % US_PER_MINUTE:
        raise BadValue(f"bar time {text!r} is not a whole minute")
    if live:
        validate.live_time(open_us, clock_us, "bar time")
    else:
        validate.history_time(open_us, clock_us)
    bar_open = validate.price(item["o"], "open")
    high = validate.price(item["h"], "high")
    low = validate.price(item["l"], "low")
    close = validate.price(item["c"], "close")
    if not low <= min(bar_open, close) <= max(bar_open, close) <= high:
        raise BadValue("bar prices are not low <= open, close <= high")
    return Bar(
        instrument,
        "1m",
        open_us,
        bar_open,
        high,
        low,
        close,
        validate.book_size(item["v"], "volume"),
        validate.integer(item.get("n", 0), "trade count"),
    )


def _bars_page(response: httpx.Response, symbol: str) -> tuple[list[dict[str, Any]], str]:
    """A bars answer's bars (``null`` when there are none) and its next page token."""
    try:
        payload = response.json()
        bars = payload.get("bars") or []
        token = payload.get("next_page_token") or ""
        if type(bars) is not list or type(token) is not str:
            raise TypeError("bars or next_page_token")
    except (ValueError, AttributeError, TypeError, RecursionError) as error:
        raise SptraderError(
            f"Alpaca bars for {symbol}: unexpected answer ({type(error).__name__}: {error})"
        ) from None
    return bars, token


def symbol_info(asset: dict[str, Any]) -> SymbolInfo:
    """An asset as a symbol: its name and exchange, and the decimals of its
    ``price_increment`` where the list gives one, else cents."""
    symbol = asset["symbol"]
    increment = asset.get("price_increment")
    try:
        decimals = decimals_of_tick(increment) if increment and float(increment) > 0 else None
    except (TypeError, ValueError):
        decimals = None
    description = asset.get("name") or symbol
    exchange = asset.get("exchange")
    if exchange:
        description = f"{description} ({exchange})"
    return SymbolInfo(
        f"ALPACA:{symbol}",
        description,
        "equity",
        symbol,
        "USD",
        STOCK_DECIMALS if decimals is None else decimals,
    )
