"""``COINBASE:`` spot market data: the Advanced Trade public websocket (ticker,
market_trades and heartbeats) and public REST candles for history.

Wire quirks:
- One subscribe message per channel, all within 5 s of connecting, or the server
  disconnects; ``heartbeats`` keeps quiet channels from being closed after 60-90 s.
- Messages are ``{"channel": ..., "timestamp": ..., "sequence_num": n, "events": [...]}``
  and are routed on ``channel``; errors are ``{"type": "error", "message": ...}``.
  ``sequence_num`` counts every message of a connection: a jump means lost messages.
- Timestamps are RFC 3339 with up to nine fractional digits: parsed to integer
  microseconds without datetime objects.
- A ``market_trades`` subscription starts with a snapshot of recent trades, older
  ones too. Only snapshot trades of the current minute that are newer than the last
  trade already published are passed on: older ones would start a partial bar for a
  minute the history backfill already stored, and those already seen (after a
  reconnect) would be counted twice.
- Candles come newest first, at most 350 a request, ``start``/``end`` in unix seconds;
  whether ``end``'s own bucket is included is not documented, so the windows work
  either way. Minutes without trades are left out; there is no trade count.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import httpx
import polars as pl
from websockets.asyncio.client import connect

from sptrader.clock import rfc3339_to_us
from sptrader.config import CoinbaseFeedConfig
from sptrader.feeds.base import BAR_SCHEMA, ExchangeFeed, SymbolInfo, empty_bars
from sptrader.feeds.http import get_with_retries
from sptrader.models import US_PER_MINUTE, US_PER_SECOND, QuoteReceived, TradeReceived
from sptrader.supervisor import ServiceContext

log = logging.getLogger(__name__)

#: Channels subscribed, one subscribe message each.
CHANNELS = ("ticker", "market_trades", "heartbeats")
CANDLES_PATH = "/api/v3/brokerage/market/products/{product_id}/candles"
PRODUCTS_PATH = "/api/v3/brokerage/market/products"
#: Most candles one request may ask for.
CANDLES_LIMIT = 350
# Each request's ``end`` is 349 minutes after its ``start``: at most 350 buckets if
# ``end`` is inclusive, and no minute lost if it is not; the next window starts at
# ``end`` (a bucket seen twice is dropped).
WINDOW_US = (CANDLES_LIMIT - 1) * US_PER_MINUTE


class CoinbaseFeed(ExchangeFeed):
    prefix = "COINBASE"
    name = "coinbase"
    config: CoinbaseFeedConfig

    def __init__(
        self,
        instruments: list[str],
        config: CoinbaseFeedConfig,
        *,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(instruments, config, transport=transport)
        # BTC-USD -> COINBASE:BTC-USD
        self._by_product = {_product_id(name): name for name in instruments}
        # The next sequence_num expected on the current connection (None: none seen).
        self._next_sequence: int | None = None
        # Newest trade time published per instrument, across reconnects.
        self._last_trade_us: dict[str, int] = {}

    def subscribe_messages(self) -> list[str]:
        products = list(self._by_product)
        return [
            json.dumps({"type": "subscribe", "product_ids": products, "channel": channel})
            for channel in CHANNELS
        ]

    # --- live -------------------------------------------------------------------------

    async def stream(self, context: ServiceContext) -> None:
        async with connect(self.config.ws_url, max_size=2**22, open_timeout=10) as websocket:
            self._next_sequence = None  # sequence numbers start afresh per connection
            for message in self.subscribe_messages():
                await websocket.send(message)
            context.mark_running()
            await self.pump(websocket, context)

    def parse(self, raw: str | bytes, context: ServiceContext) -> list[object]:
        """One websocket message to events; anything unexpected is counted and skipped."""
        try:
            message = json.loads(raw)
            channel = message.get("channel")
            if channel is None:
                if message.get("type") == "error":
                    context.skipped(
                        "error_messages", f"a Coinbase error message ({message.get('message')})"
                    )
                    return []
                raise KeyError("channel")
            sequence = message.get("sequence_num")
            if sequence is not None:
                self._check_sequence(sequence, context)
            if channel == "market_trades":
                return self._trades(message, context)
            if channel == "ticker":
                return self._quotes(message)
            if channel == "heartbeats" or channel == "subscriptions":
                context.count(channel)
                return []
            context.skipped("unexpected", f"a Coinbase message on channel {channel!r}")
            return []
        except (ValueError, KeyError, TypeError, AttributeError):
            context.skipped("malformed", "a malformed Coinbase message")
            return []

    def _check_sequence(self, sequence: int, context: ServiceContext) -> None:
        if type(sequence) is not int:
            raise TypeError("sequence_num")
        expected = self._next_sequence
        if expected is not None and sequence != expected:
            if sequence < expected:
                context.count("out_of_order")  # a repeat or a late message: keep going
                return
            context.skipped(
                "sequence_gaps",
                f"a Coinbase sequence gap ({sequence - expected} messages lost "
                f"before sequence {sequence})",
            )
        self._next_sequence = sequence + 1

    def _quotes(self, message: dict[str, Any]) -> list[object]:
        ts_us = rfc3339_to_us(message["timestamp"])
        quotes: list[object] = []
        for event in message["events"]:
            for ticker in event["tickers"]:
                quotes.append(
                    QuoteReceived(
                        self._by_product[ticker["product_id"]],
                        ts_us,
                        float(ticker["best_bid"]),
                        float(ticker["best_ask"]),
                        float(ticker["best_bid_quantity"]),
                        float(ticker["best_ask_quantity"]),
                    )
                )
        return quotes

    def _trades(self, message: dict[str, Any], context: ServiceContext) -> list[object]:
        last_trade_us = self._last_trade_us
        seen_before: dict[str, int] = {}
        minute_start_us = -1  # set on the first snapshot event
        trades: list[Any] = []
        for event in message["events"]:
            snapshot = event.get("type") == "snapshot"
            if snapshot and minute_start_us < 0:
                # Snapshots are rare (one per subscription): compare their trades with
                # what was published before this message, not with each other.
                seen_before = dict(last_trade_us)
                now = self.clock_us()
                minute_start_us = now - now % US_PER_MINUTE
            for trade in event["trades"]:
                instrument = self._by_product[trade["product_id"]]
                ts_us = rfc3339_to_us(trade["time"])
                if snapshot and (
                    ts_us < minute_start_us or ts_us <= seen_before.get(instrument, -1)
                ):
                    context.count("snapshot_trades_skipped")
                    continue
                if ts_us > last_trade_us.get(instrument, -1):
                    last_trade_us[instrument] = ts_us
                trades.append(
                    TradeReceived(instrument, ts_us, float(trade["price"]), float(trade["size"]))
                )
        if len(trades) > 1:
            trades.sort(key=_trade_time)  # snapshots list the newest first
        return trades

    # --- history ----------------------------------------------------------------------

    def _client(self) -> httpx.Client:
        return httpx.Client(base_url=self.config.rest_url, transport=self._transport, timeout=10)

    def history(self, instrument: str, start_us: int, end_us: int) -> pl.DataFrame | None:
        """Closed 1m bars opening in [start, end) from public candles, in windows of at
        most 350 minutes, honouring 429 ``Retry-After``. Coinbase gives no trade count:
        ``trades`` is 0."""
        product = _product_id(instrument)
        # Closed bars only: the newest one may open a minute before now.
        last_open_us = min(end_us - 1, self.clock_us() - US_PER_MINUTE)
        cursor_us = -(-start_us // US_PER_MINUTE) * US_PER_MINUTE
        bars: dict[int, dict[str, Any]] = {}
        with self._client() as client:
            while cursor_us <= last_open_us:
                window_end_us = min(cursor_us + WINDOW_US, last_open_us)
                for candle in self._candles(client, product, cursor_us, window_end_us):
                    bars[int(candle["start"]) * US_PER_SECOND] = candle
                cursor_us += WINDOW_US
        rows = sorted(
            (ts_us, candle) for ts_us, candle in bars.items() if start_us <= ts_us <= last_open_us
        )
        if not rows:
            return empty_bars()
        return pl.DataFrame(
            {
                "instrument": [instrument] * len(rows),
                "ts": [ts_us for ts_us, _ in rows],
                "open": [float(candle["open"]) for _, candle in rows],
                "high": [float(candle["high"]) for _, candle in rows],
                "low": [float(candle["low"]) for _, candle in rows],
                "close": [float(candle["close"]) for _, candle in rows],
                "volume": [float(candle["volume"]) for _, candle in rows],
                "trades": [0] * len(rows),
            },
            schema=BAR_SCHEMA,
        )

    def _candles(
        self, client: httpx.Client, product: str, first_us: int, last_us: int
    ) -> list[dict[str, Any]]:
        """One request: the candles opening from ``first_us`` to ``last_us``."""
        params = {
            "start": str(first_us // US_PER_SECOND),
            "end": str(last_us // US_PER_SECOND),
            "granularity": "ONE_MINUTE",
            "limit": CANDLES_LIMIT,
        }
        response = get_with_retries(
            client,
            CANDLES_PATH.format(product_id=product),
            params=params,
            what=f"Coinbase candles for {product}",
            sleep=self.sleep,
        )
        assert response is not None
        return response.json().get("candles") or []

    # --- symbols ----------------------------------------------------------------------

    def symbols(self) -> list[SymbolInfo]:
        """Spot products currently trading, from the public product list."""
        with self._client() as client:
            response = get_with_retries(
                client,
                PRODUCTS_PATH,
                params={"product_type": "SPOT"},
                what="Coinbase products",
                sleep=self.sleep,
            )
            assert response is not None
            payload = response.json()
        return [
            _symbol_info(entry) for entry in payload.get("products") or [] if _is_trading(entry)
        ]


def _product_id(instrument: str) -> str:
    return instrument.split(":", 1)[1].upper()


def _trade_time(trade: TradeReceived) -> int:
    return trade.ts_us


def _is_trading(entry: dict[str, Any]) -> bool:
    return (
        entry.get("product_type", "SPOT") == "SPOT"
        and entry.get("status") == "online"
        and not entry.get("trading_disabled")
        and not entry.get("is_disabled")
    )


def _symbol_info(entry: dict[str, Any]) -> SymbolInfo:
    product = entry["product_id"]
    base = entry.get("base_currency_id") or product.partition("-")[0]
    quote = entry.get("quote_currency_id") or product.partition("-")[2]
    description = f"{entry.get('base_name') or base} / {entry.get('quote_name') or quote}"
    return SymbolInfo(f"COINBASE:{product}", description, "crypto", base, quote)
