"""``KRAKEN:`` spot market data: websocket v2 ``ticker`` and ``trade`` channels live,
REST ``OHLC`` (recent) and ``Trades`` (older) for history, ``AssetPairs`` for symbols.

Wire quirks:
- Instruments use the v2 symbol (``KRAKEN:BTC/USD``). v2 writes Bitcoin ``BTC`` and
  Dogecoin ``DOGE``, but REST ``AssetPairs`` still says ``XBT``/``XDG`` in ``wsname``
  (v2 rejects ``XBT/USD``); REST requests use the pair's ``altname`` (``XBTUSD``) and
  answer under Kraken's own pair key (``XXBTZUSD``), which may differ from what was sent.
- Numbers on the websocket are JSON numbers; REST prices and volumes are strings.
  Trades and tickers carry RFC 3339 times (a ticker without one is stamped on
  arrival). A ticker without bid/ask gives its ``last`` price as LastPriceReceived.
- Trade ``side`` is the taker's; ``trade_id`` is sequential per pair.
- Every price, size and time is checked (``feeds.validate``): an impossible one is
  counted ``invalid`` and its trade, quote or bar is dropped.
- Every subscribe is acknowledged per symbol; a rejected one (``success: false``) is
  logged and counted, and when every symbol is rejected the service fails with
  Kraken's reason (restarting cannot fix an unknown symbol).
- Trade snapshots replay the last trades: only those of the current minute are
  published. Older minutes are the gap backfill's; a partial bar rebuilt from a few
  snapshot trades would replace the complete stored one.
- REST ``OHLC`` gives only the last 720 bars (the newest still forming); older ranges
  are rebuilt from ``Trades`` (1000 per page, nanosecond ``last`` cursor). Trade times
  are JSON numbers with up to 7 decimals of seconds: read as decimal text and rounded
  to the microsecond exactly (through float, 6% of them land 1 µs off).
- REST errors come with HTTP 200 in the body's ``error`` list; rate limits
  (``EAPI:Rate limit exceeded``, ``EGeneral:Too many requests``) are retried with
  backoff, anything else is one SptraderError line.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import polars as pl
from websockets.asyncio.client import connect

from sptrader.bars import aggregate_ticks
from sptrader.clock import rfc3339_to_us
from sptrader.config import KrakenFeedConfig
from sptrader.errors import SptraderError
from sptrader.feeds import validate
from sptrader.feeds.base import BAR_SCHEMA, ExchangeFeed, SymbolInfo, empty_bars
from sptrader.feeds.http import get_with_retries
from sptrader.feeds.validate import MALFORMED, BadValue, skip_invalid
from sptrader.formatting import decimals_of_tick
from sptrader.models import (
    NO_TRADE_ID,
    SIDE_BUY,
    SIDE_SELL,
    SIDE_UNKNOWN,
    US_PER_MINUTE,
    LastPriceReceived,
    QuoteReceived,
    TradeReceived,
)
from sptrader.supervisor import ServiceContext

log = logging.getLogger(__name__)

#: OHLC keeps this many entries per interval, the newest one still forming.
OHLC_LIMIT = 720
#: Trades answers at most this many per call.
TRADES_PAGE = 1000
#: Body errors that mean "slow down" (or a short outage): retried with backoff.
RETRYABLE_ERRORS = ("EAPI:Rate limit", "EGeneral:Too many requests", "EService:")
RATE_LIMIT_ATTEMPTS = 6
#: Asset codes REST still uses where websocket v2 uses the common code.
ASSET_ALIASES = {"XBT": "BTC", "XDG": "DOGE"}
FIAT = frozenset({"USD", "EUR", "GBP", "CAD", "JPY", "CHF", "AUD", "NZD", "AED"})


class KrakenFeed(ExchangeFeed):
    prefix = "KRAKEN"
    name = "kraken"
    market_kind = "crypto"
    config: KrakenFeedConfig

    def __init__(
        self,
        instruments: list[str],
        config: KrakenFeedConfig,
        *,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        super().__init__(instruments, config, transport=transport, sleep=sleep)
        # BTC/USD -> KRAKEN:BTC/USD
        self._by_symbol = {name.split(":", 1)[1]: name for name in instruments}
        # Newest trade published per instrument, across reconnects (snapshots repeat).
        self._last_trade_us: dict[str, int] = {}
        # Symbols Kraken refused on this connection, with its reason.
        self._rejected: dict[str, str] = {}
        self._pairs_lock = threading.Lock()
        self._rest_pairs: dict[str, str] | None = None  # v2 symbol -> REST altname

    def subscribe_messages(self) -> list[str]:
        symbols = list(self._by_symbol)
        return [
            json.dumps({"method": "subscribe", "params": {"channel": channel, "symbol": symbols}})
            for channel in ("ticker", "trade")
        ]

    # --- live -------------------------------------------------------------------------

    async def stream(self, context: ServiceContext) -> None:
        self._rejected = {}
        async with connect(self.config.ws_url, max_size=2**22, open_timeout=10) as websocket:
            for message in self.subscribe_messages():
                await websocket.send(message)
            # mark_running comes with the first accepted subscription (see parse).
            await self.pump(websocket, context)

    def parse(self, raw: str | bytes, context: ServiceContext) -> list[object]:
        """One websocket message to events; anything unexpected is counted and skipped.
        Raises SptraderError only when Kraken has rejected every symbol."""
        try:
            message = json.loads(raw)
            channel = message.get("channel")
            if channel == "ticker":
                return self._quotes(message["data"], context)
            if channel == "trade":
                return self._trades(message, context)
            if channel == "heartbeat":
                return []
            if channel == "status":
                context.count("status")
                return []
            if channel is None:
                method = message.get("method")
                if method == "subscribe":
                    self._on_subscribe_ack(message, context)
                    return []
                if method == "pong":
                    return []
            context.skipped("unexpected", "an unexpected Kraken message")
            return []
        except BadValue as error:  # before ValueError: it is one
            skip_invalid(context, "Kraken", error)
            return []
        except MALFORMED:
            context.skipped("malformed", "a malformed Kraken message")
            return []

    def _quotes(self, data: list[dict[str, Any]], context: ServiceContext) -> list[object]:
        """Quotes stamped with the ticker's ``timestamp`` (on arrival when it has none);
        a ticker without bid/ask gives its ``last`` price. One impossible ticker is
        skipped, not the message."""
        clock_us = self.clock_us()
        quotes: list[object] = []
        for item in data:
            instrument = self._by_symbol[item["symbol"]]
            try:
                quotes.append(_quote(instrument, item, clock_us))
            except BadValue as error:
                skip_invalid(context, "Kraken", error)
        return quotes

    def _trades(self, message: dict[str, Any], context: ServiceContext) -> list[object]:
        clock_us = self.clock_us()
        events: list[TradeReceived] = []
        for item in message["data"]:
            instrument = self._by_symbol[item["symbol"]]
            try:
                events.append(_trade(instrument, item, clock_us))
            except BadValue as error:
                skip_invalid(context, "Kraken", error)
        last = self._last_trade_us
        if message.get("type") != "snapshot":
            for event in events:
                if event.ts_us > last.get(event.instrument, -1):
                    last[event.instrument] = event.ts_us
            return events
        # Past trades: keep only the current minute's, which no backfill has stored, and
        # only those newer than the instrument's last published trade (a reconnect
        # repeats them).
        minute = clock_us - clock_us % US_PER_MINUTE
        current = [
            event
            for event in events
            if event.ts_us >= minute and event.ts_us > last.get(event.instrument, -1)
        ]
        if len(current) < len(events):
            context.count("snapshot_skipped", len(events) - len(current))
        for event in current:
            if event.ts_us > last.get(event.instrument, -1):
                last[event.instrument] = event.ts_us
        return current

    def _on_subscribe_ack(self, message: dict[str, Any], context: ServiceContext) -> None:
        if message.get("success"):
            context.mark_running()
            return
        error = str(message.get("error") or "no reason given")
        symbol = message.get("symbol") or self._symbol_named_in(error)
        context.count("rejected")
        log.warning(
            "Kraken rejected a subscription for %s: %s",
            symbol or "?",
            error,
            extra={"source": self.name},
        )
        if symbol not in self._by_symbol:
            return
        self._rejected[symbol] = error
        reasons = "; ".join(
            f"{self._by_symbol[name]}: {reason}" for name, reason in self._rejected.items()
        )
        if len(self._rejected) == len(self._by_symbol):
            raise SptraderError(f"Kraken rejected {reasons}")
        # The others stream on; the services pane shows what is missing.
        context.problem = f"Kraken rejected {reasons}"

    def _symbol_named_in(self, error: str) -> str | None:
        """Which of our symbols an error without a ``symbol`` field is about."""
        named = [symbol for symbol in self._by_symbol if symbol in error]
        if len(named) == 1:
            return named[0]
        if not named and len(self._by_symbol) == 1:
            return next(iter(self._by_symbol))
        return None

    # --- REST plumbing ----------------------------------------------------------------

    def _client(self) -> httpx.Client:
        return httpx.Client(base_url=self.config.rest_url, transport=self._transport, timeout=10)

    def _result(
        self,
        client: httpx.Client,
        path: str,
        params: dict[str, Any] | None,
        what: str,
        parse_float: Callable[[str], Any] = float,
    ) -> dict[str, Any]:
        """The ``result`` of a public call (JSON numbers with a fraction read by
        ``parse_float``). Kraken reports errors with HTTP 200 in the body: rate limits
        back off and retry, anything else raises SptraderError."""
        for attempt in range(1, RATE_LIMIT_ATTEMPTS + 1):
            response = get_with_retries(client, path, params=params, what=what, sleep=self.sleep)
            assert response is not None
            try:
                payload = json.loads(response.content, parse_float=parse_float)
                errors = [str(error) for error in payload.get("error") or []]
            except (ValueError, AttributeError, RecursionError):
                raise SptraderError(f"{what}: not a Kraken answer") from None
            if not errors:
                return payload["result"]
            text = "; ".join(errors)
            if not any(error.startswith(RETRYABLE_ERRORS) for error in errors):
                raise SptraderError(f"{what}: {text}")
            if attempt < RATE_LIMIT_ATTEMPTS:
                wait = min(30.0, 2.0**attempt)
                log.warning("%s: %s; retrying in %.0fs", what, text, wait)
                self.sleep(wait)
        raise SptraderError(f"{what}: {text} (gave up after {RATE_LIMIT_ATTEMPTS} attempts)")

    def _asset_pairs(self, client: httpx.Client) -> dict[str, dict[str, Any]]:
        return self._result(client, "/0/public/AssetPairs", None, "Kraken AssetPairs")

    def _rest_pair(self, client: httpx.Client, symbol: str) -> str:
        """The REST name (``altname``, e.g. XBTUSD) of a v2 symbol (BTC/USD); the pair
        list is fetched once per feed."""
        with self._pairs_lock:
            if self._rest_pairs is None:
                self._rest_pairs = {
                    v2: entry["altname"]
                    for entry in self._asset_pairs(client).values()
                    if (v2 := v2_symbol(entry)) is not None
                }
            pairs = self._rest_pairs
        try:
            return pairs[symbol]
        except KeyError:
            raise SptraderError(f"Kraken lists no pair {symbol}") from None

    # --- history ----------------------------------------------------------------------

    def history(self, instrument: str, start_us: int, end_us: int) -> pl.DataFrame | None:
        """Closed 1m bars in [start, end): OHLC where its last 720 bars reach, the rest
        rebuilt from public trades."""
        symbol = instrument.split(":", 1)[1]
        now = self.clock_us()
        end_us = min(end_us, now - now % US_PER_MINUTE)  # closed bars only
        if start_us >= end_us:
            return empty_bars()
        frames: list[pl.DataFrame] = []
        with self._client() as client:
            pair = self._rest_pair(client, symbol)
            covered_from = end_us
            oldest_in_ohlc = now - now % US_PER_MINUTE - (OHLC_LIMIT - 1) * US_PER_MINUTE
            if end_us > oldest_in_ohlc:
                ohlc, covered_from = self._ohlc_bars(client, instrument, pair, start_us, end_us)
                frames.append(ohlc)
            if start_us < covered_from:
                frames.insert(0, self._trade_bars(client, instrument, pair, start_us, covered_from))
        # End was cut at the current minute, so OHLC's forming entry is left out. Bars
        # rebuilt from trades may carry buy/sell volume that OHLC bars do not: NULL there.
        return pl.concat(frames, how="diagonal").sort("ts") if frames else empty_bars()

    def _ohlc_bars(
        self, client: httpx.Client, instrument: str, pair: str, start_us: int, end_us: int
    ) -> tuple[pl.DataFrame, int]:
        """OHLC bars in [start, end) and where OHLC's coverage begins (start, unless
        the 720-bar window begins later)."""
        # ``since`` is exclusive: one minute earlier includes the bar opening at start.
        params = {"pair": pair, "interval": 1, "since": start_us // 1_000_000 - 60}
        result = self._result(client, "/0/public/OHLC", params, f"Kraken OHLC for {pair}")
        raw_rows = _pair_rows(result)
        clock_us = self.clock_us()
        rows: list[tuple[int, float, float, float, float, float, int]] = []
        dropped: list[str] = []
        for raw in raw_rows:
            try:
                rows.append(_ohlc_row(raw, clock_us))
            except (BadValue, ValueError, TypeError, IndexError) as error:
                dropped.append(_reason(error))
        _warn_dropped(f"Kraken OHLC for {pair}", dropped, "bar")
        covered_from = start_us
        if rows and len(raw_rows) >= OHLC_LIMIT - 1 and rows[0][0] > start_us:
            covered_from = rows[0][0]  # the window was cut: older is lost
        rows = [row for row in rows if covered_from <= row[0] < end_us]
        frame = pl.DataFrame(
            {
                "instrument": [instrument] * len(rows),
                "ts": [row[0] for row in rows],
                "open": [row[1] for row in rows],
                "high": [row[2] for row in rows],
                "low": [row[3] for row in rows],
                "close": [row[4] for row in rows],
                "volume": [row[5] for row in rows],
                "trades": [row[6] for row in rows],
            },
            schema=BAR_SCHEMA,
        )
        return frame, covered_from

    def _trade_bars(
        self, client: httpx.Client, instrument: str, pair: str, start_us: int, end_us: int
    ) -> pl.DataFrame:
        """Bars in [start, end) aggregated from public trades, paged by Kraken's
        nanosecond ``last`` cursor."""
        times: list[int] = []
        prices: list[float] = []
        sizes: list[float] = []
        sides: list[int] = []
        dropped: list[str] = []
        clock_us = self.clock_us()
        cursor = str(start_us * 1000 - 1)  # ``since`` is exclusive
        last_id = -1
        while True:
            params = {"pair": pair, "since": cursor, "count": TRADES_PAGE}
            # Times as decimal text: through float, 60 of 1000 real ones land 1 µs off.
            result = self._result(
                client, "/0/public/Trades", params, f"Kraken trades for {pair}", parse_float=str
            )
            rows = _pair_rows(result)
            reached_end = False
            for row in rows:
                try:
                    ts, price, size, side, trade_id = _rest_trade(row, clock_us)
                except (BadValue, ValueError, TypeError, IndexError) as error:
                    dropped.append(_reason(error))
                    continue
                # Trade ids are sequential per pair: skip any a page repeats.
                if trade_id != NO_TRADE_ID:
                    if trade_id <= last_id:
                        continue
                    last_id = trade_id
                if ts >= end_us:
                    reached_end = True
                    break
                if ts >= start_us:
                    times.append(ts)
                    prices.append(price)
                    sizes.append(size)
                    sides.append(side)
            next_cursor = str(result.get("last", cursor))
            if reached_end or not rows or next_cursor == cursor:
                break
            cursor = next_cursor
        _warn_dropped(f"Kraken trades for {pair}", dropped, "trade")
        if not times:
            return empty_bars()
        ticks = pl.DataFrame(
            {
                "instrument": [instrument] * len(times),
                "ts_us": times,
                "price": prices,
                "size": sizes,
                # The taker's side (1 buy, -1 sell): buy and sell volume per bar.
                "side": sides,
            },
            schema={
                "instrument": pl.String,
                "ts_us": pl.Int64,
                "price": pl.Float64,
                "size": pl.Float64,
                "side": pl.Int8,
            },
        )
        # Any order-flow columns aggregate_ticks makes of ``side`` (buy/sell volume) are
        # kept: OHLC bars beside them get NULLs (history concatenates diagonally).
        return aggregate_ticks(ticks).cast(BAR_SCHEMA)

    # --- symbols ----------------------------------------------------------------------

    def symbols(self) -> list[SymbolInfo]:
        """Every listed pair from ``/0/public/AssetPairs``, named by its v2 symbol."""
        with self._client() as client:
            pairs = self._asset_pairs(client)
        infos = []
        for entry in pairs.values():
            symbol = v2_symbol(entry)
            if symbol is None or entry.get("status") == "delisted":
                continue
            base, quote = symbol.split("/")
            kind = "fx" if base in FIAT and quote in FIAT else "crypto"
            infos.append(
                SymbolInfo(
                    f"KRAKEN:{symbol}", f"{base} / {quote}", kind, base, quote, pair_decimals(entry)
                )
            )
        return sorted(infos, key=lambda info: info.instrument)


def pair_decimals(entry: dict[str, Any]) -> int | None:
    """An AssetPairs entry's price decimals: ``pair_decimals``, else its ``tick_size``."""
    decimals = entry.get("pair_decimals")
    if isinstance(decimals, int) and not isinstance(decimals, bool) and decimals >= 0:
        return decimals
    tick = entry.get("tick_size")
    return decimals_of_tick(tick) if tick and float(tick) > 0 else None


def v2_symbol(entry: dict[str, Any]) -> str | None:
    """An AssetPairs entry's websocket v2 symbol: ``wsname`` with XBT/XDG renamed
    (XBT/USD -> BTC/USD); None for pairs without a websocket name."""
    wsname = entry.get("wsname")
    if not isinstance(wsname, str) or wsname.count("/") != 1:
        return None
    base, quote = wsname.split("/")
    return f"{ASSET_ALIASES.get(base, base)}/{ASSET_ALIASES.get(quote, quote)}"


def _pair_rows(result: dict[str, Any]) -> list[list[Any]]:
    """The rows of an OHLC or Trades result: its one key besides ``last`` (Kraken's own
    pair name, not necessarily the one asked for)."""
    for key, value in result.items():
        if key != "last":
            return value
    return []


# --- values ---------------------------------------------------------------------------


def _taker_side(word: object) -> int:
    """Kraken's ``side`` ("buy"/"sell") is the taker's; anything else is unknown."""
    try:
        return validate.side_from_word(word)
    except BadValue:
        return SIDE_UNKNOWN


def _trade(instrument: str, item: dict[str, Any], clock_us: int) -> TradeReceived:
    """One v2 ``trade`` element, every value checked (BadValue if impossible)."""
    trade_id = item.get("trade_id")
    return TradeReceived(
        instrument,
        validate.live_time(rfc3339_to_us(item["timestamp"]), clock_us, "trade time"),
        validate.price(item["price"]),
        validate.size(item["qty"], "qty"),
        _taker_side(item.get("side")),
        NO_TRADE_ID if trade_id is None else validate.integer(trade_id, "trade_id"),
    )


def _quote(instrument: str, item: dict[str, Any], clock_us: int) -> object:
    """A v2 ``ticker`` element as a quote stamped with its ``timestamp`` (the arrival
    time when it has none), or its ``last`` price when it has no bid/ask."""
    stamp = item.get("timestamp")
    ts_us = (
        clock_us
        if stamp is None
        else validate.live_time(rfc3339_to_us(stamp), clock_us, "ticker time")
    )
    bid, ask = item.get("bid"), item.get("ask")
    if bid is None or ask is None:
        return LastPriceReceived(instrument, ts_us, validate.price(item["last"], "last"))
    return QuoteReceived(
        instrument,
        ts_us,
        validate.price(bid, "bid"),
        validate.price(ask, "ask"),
        validate.book_size(item["bid_qty"], "bid_qty"),
        validate.book_size(item["ask_qty"], "ask_qty"),
    )


def _ohlc_row(row: list[Any], clock_us: int) -> tuple[int, float, float, float, float, float, int]:
    """An OHLC entry ``[time, open, high, low, close, vwap, volume, count]`` as (open
    time µs, open, high, low, close, volume, trades), checked."""
    ts_us = validate.history_time(validate.integer(row[0], "bar time") * 1_000_000, clock_us)
    trades = validate.integer(row[7], "trade count")
    if trades < 0:
        raise BadValue(f"trade count {trades} is negative")
    return (
        ts_us,
        validate.price(row[1], "open"),
        validate.price(row[2], "high"),
        validate.price(row[3], "low"),
        validate.price(row[4], "close"),
        validate.book_size(row[6], "volume"),
        trades,
    )


def _rest_trade(row: list[Any], clock_us: int) -> tuple[int, float, float, int, int]:
    """A REST ``Trades`` row ``[price, volume, time, side, type, misc, trade_id]`` (time
    as decimal text) as (µs, price, size, taker side, trade id), checked."""
    ts_us = validate.history_time(validate.decimal_seconds_to_us(row[2]), clock_us, "trade time")
    side = row[3] if len(row) > 3 else None
    return (
        ts_us,
        validate.price(row[0]),
        validate.size(row[1], "volume"),
        SIDE_BUY if side == "b" else SIDE_SELL if side == "s" else SIDE_UNKNOWN,
        validate.integer(row[6], "trade_id") if len(row) > 6 else NO_TRADE_ID,
    )


def _reason(error: Exception) -> str:
    return str(error) if isinstance(error, BadValue) else f"{type(error).__name__}: {error}"


def _warn_dropped(what: str, dropped: list[str], kind: str) -> None:
    """One warning for the impossible rows of one history call, not one per row."""
    if dropped:
        log.warning(
            "%s: dropped %d impossible or malformed %s row(s) (first: %s)",
            what,
            len(dropped),
            kind,
            dropped[0],
        )
