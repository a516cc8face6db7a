"""``BINANCE:`` spot market data: the public combined stream (trade, bookTicker and
kline_1m of every watched symbol) and REST klines for history.

Stream messages are ``{"stream": "btcusdt@trade", "data": {...}}``; bookTicker data
has no event type, so messages are routed by stream name. Malformed or unexpected
messages are counted and skipped. A stream silent for ``stale_after_s`` raises, and the
supervisor reconnects it with backoff; so does ``serverShutdown``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

import httpx
import polars as pl
from websockets.asyncio.client import connect

from sptrader.clock import now_us
from sptrader.config import BinanceFeedConfig
from sptrader.errors import SptraderError
from sptrader.feeds.base import Feed
from sptrader.models import QuoteReceived, TradeReceived
from sptrader.supervisor import ServiceContext

log = logging.getLogger(__name__)

KLINES_LIMIT = 1000
MAX_RETRIES = 5


class StreamSilent(Exception):
    """No message for longer than the watchdog allows."""


class BinanceFeed(Feed):
    prefix = "BINANCE"
    name = "binance"

    def __init__(
        self,
        instruments: list[str],
        config: BinanceFeedConfig,
        *,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(instruments)
        self.config = config
        self._transport = transport
        # btcusdt -> BINANCE:BTCUSDT
        self._by_stream_symbol = {name.split(":", 1)[1].lower(): name for name in instruments}

    def price_source(self, instrument: str) -> str:
        return self.config.price_source

    def stream_url(self) -> str:
        streams = "/".join(
            f"{symbol}@{channel}"
            for symbol in self._by_stream_symbol
            for channel in ("trade", "bookTicker", "kline_1m")
        )
        return f"{self.config.ws_url.rstrip('/')}/stream?streams={streams}"

    # --- live -------------------------------------------------------------------------

    async def stream(self, context: ServiceContext) -> None:
        async with connect(self.stream_url(), max_size=2**22, open_timeout=10) as websocket:
            context.mark_running()
            opened = time.monotonic()
            while time.monotonic() - opened < self.config.max_connection_s:
                try:
                    async with asyncio.timeout(self.config.stale_after_s):
                        raw = await websocket.recv()
                except TimeoutError:
                    raise StreamSilent(f"no message for {self.config.stale_after_s:.0f}s") from None
                events = self.parse(raw, context)
                if events:
                    await context.publish(events)
        # Reconnect before Binance's 24-hour cut-off: returning ends this run and the
        # supervisor's restart opens a new connection.
        raise ConnectionResetError("reconnecting before the 24-hour connection limit")

    def parse(self, raw: str | bytes, context: ServiceContext) -> list[object]:
        """One stream message to events; anything unexpected is counted and skipped."""
        try:
            message = json.loads(raw)
            if (
                message.get("e") == "serverShutdown"
                or message.get("data", {}).get("e") == "serverShutdown"
            ):
                raise ConnectionResetError("Binance announced a server shutdown")
            stream = message["stream"]
            data = message["data"]
            symbol, _, channel = stream.partition("@")
            instrument = self._by_stream_symbol[symbol]
            if channel == "trade":
                return [
                    TradeReceived(
                        instrument, int(data["T"]) * 1000, float(data["p"]), float(data["q"])
                    )
                ]
            if channel == "bookTicker":
                # bookTicker carries no time: stamp it on arrival.
                return [
                    QuoteReceived(
                        instrument,
                        now_us(),
                        float(data["b"]),
                        float(data["a"]),
                        float(data["B"]),
                        float(data["A"]),
                    )
                ]
            if channel == "kline_1m":
                context.count("klines")
                return []
            raise KeyError(channel)
        except ConnectionResetError:
            raise
        except (ValueError, KeyError, TypeError, AttributeError):
            context.count("malformed")
            if context.counters["malformed"] <= 10 or context.counters["malformed"] % 1000 == 0:
                log.warning(
                    "skipped a malformed Binance message (%d so far)",
                    context.counters["malformed"],
                    extra={"source": self.name},
                )
            return []

    # --- history ----------------------------------------------------------------------

    def history(self, instrument: str, start_us: int, end_us: int) -> pl.DataFrame | None:
        """1m bars in [start, end) from REST klines, paged by time, honouring 429/418
        ``Retry-After``. Only closed bars are returned."""
        symbol = instrument.split(":", 1)[1]
        rows: list[list[Any]] = []
        cursor_ms = start_us // 1000
        end_ms = end_us // 1000
        with httpx.Client(
            base_url=self.config.rest_url, transport=self._transport, timeout=10
        ) as client:
            while cursor_ms < end_ms:
                page = self._klines_page(client, symbol, cursor_ms, end_ms - 1)
                if not page:
                    break
                rows.extend(page)
                cursor_ms = int(page[-1][0]) + 60_000
                if len(page) < KLINES_LIMIT:
                    break
        now_ms = now_us() // 1000
        rows = [row for row in rows if int(row[6]) < now_ms and int(row[0]) * 1000 < end_us]
        if not rows:
            return None
        return pl.DataFrame(
            {
                "instrument": [instrument] * len(rows),
                "ts": pl.Series([int(row[0]) * 1000 for row in rows], dtype=pl.Int64).cast(
                    pl.Datetime("us")
                ),
                "open": [float(row[1]) for row in rows],
                "high": [float(row[2]) for row in rows],
                "low": [float(row[3]) for row in rows],
                "close": [float(row[4]) for row in rows],
                "volume": [float(row[5]) for row in rows],
                "trades": pl.Series([int(row[8]) for row in rows], dtype=pl.Int64),
            }
        )

    def _klines_page(
        self, client: httpx.Client, symbol: str, start_ms: int, end_ms: int
    ) -> list[list[Any]]:
        params = {
            "symbol": symbol,
            "interval": "1m",
            "startTime": start_ms,
            "endTime": end_ms,
            "limit": KLINES_LIMIT,
        }
        for attempt in range(1, MAX_RETRIES + 1):
            response = client.get("/api/v3/klines", params=params)
            if response.status_code in (429, 418):
                wait = float(response.headers.get("Retry-After", 2**attempt))
                log.warning(
                    "Binance asked us to slow down (HTTP %d); waiting %.0fs",
                    response.status_code,
                    wait,
                )
                time.sleep(wait)
                continue
            if response.status_code >= 500:
                time.sleep(min(30, 2**attempt * 0.5))
                continue
            if response.status_code != 200:
                raise SptraderError(
                    f"Binance klines for {symbol}: HTTP {response.status_code} {response.text[:200]}"
                )
            return response.json()
        raise SptraderError(f"Binance klines for {symbol}: gave up after {MAX_RETRIES} attempts")
