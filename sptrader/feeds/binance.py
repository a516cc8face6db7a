"""``BINANCE:`` spot market data: the public combined stream (trade, bookTicker and
kline_1m of every watched symbol) and REST klines for history.

Stream messages are ``{"stream": "btcusdt@trade", "data": {...}}``; bookTicker data
has no event type, so messages are routed by stream name. Malformed or unexpected
messages are counted and skipped. A stream silent for ``watchdog_s`` raises, and the
supervisor reconnects it with backoff; so does ``serverShutdown``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import httpx
import polars as pl
from websockets.asyncio.client import connect

from sptrader.clock import now_us
from sptrader.config import BinanceFeedConfig
from sptrader.feeds import validate
from sptrader.feeds.base import BAR_SCHEMA, ExchangeFeed, SymbolInfo
from sptrader.feeds.http import get_with_retries
from sptrader.formatting import decimals_of_tick
from sptrader.models import (
    SIDE_BUY,
    SIDE_SELL,
    US_PER_MINUTE,
    Bar,
    QuoteReceived,
    TradeReceived,
    VenueBarClosed,
)
from sptrader.supervisor import ServiceContext

log = logging.getLogger(__name__)

KLINES_LIMIT = 1000
WEIGHT_LIMIT_1M = 6000


class BinanceFeed(ExchangeFeed):
    prefix = "BINANCE"
    name = "binance"
    market_kind = "crypto"
    config: BinanceFeedConfig

    def __init__(
        self,
        instruments: list[str],
        config: BinanceFeedConfig,
        *,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        super().__init__(instruments, config, transport=transport, sleep=sleep)
        # btcusdt -> BINANCE:BTCUSDT
        self._by_stream_symbol = {name.split(":", 1)[1].lower(): name for name in instruments}

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
            await self.pump(
                websocket, context, lambda: time.monotonic() - opened < self.config.max_connection_s
            )
        # Reconnect before Binance's 24-hour cut-off: returning ends this run and the
        # supervisor's restart opens a new connection.
        raise ConnectionResetError("reconnecting before the 24-hour connection limit")

    def parse(self, raw: str | bytes, context: ServiceContext) -> list[object]:
        """One stream message to events; anything unexpected is counted and skipped,
        and a message with an impossible value (a NaN price, a trade stamped 1970 or
        3000) is counted as invalid: it never becomes a trade, a quote or a bar."""
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
                return [self._trade(instrument, data)]
            if channel == "bookTicker":
                # bookTicker carries no time: stamp it on arrival.
                return [
                    QuoteReceived(
                        instrument,
                        now_us(),
                        validate.price(data["b"], "bid"),
                        validate.price(data["a"], "ask"),
                        validate.book_size(data["B"], "bid size"),
                        validate.book_size(data["A"], "ask size"),
                    )
                ]
            if channel == "kline_1m":
                context.count("klines")
                kline = data["k"]
                if kline["x"] is True:
                    return [VenueBarClosed(self._kline_bar(instrument, kline))]
                return []
            raise KeyError(channel)
        except ConnectionResetError:
            raise
        except validate.BadValue as error:
            validate.skip_invalid(context, "Binance", error)
            return []
        except validate.MALFORMED:
            context.skipped("malformed", "a malformed Binance message")
            return []

    def _trade(self, instrument: str, data: dict[str, Any]) -> TradeReceived:
        # The busiest message of all: time and id are checked inline (the same checks
        # as feeds.validate's, a function call each cheaper).
        trade_ms, trade_id, maker = data["T"], data["t"], data["m"]
        if type(trade_ms) is not int or type(trade_id) is not int or type(maker) is not bool:
            raise validate.BadValue(f"trade time {trade_ms!r}, id {trade_id!r} or m {maker!r}")
        ts_us = trade_ms * 1000
        clock_us = self.clock_us()
        if not clock_us - validate.MAX_BEHIND_US <= ts_us <= clock_us + validate.MAX_AHEAD_US:
            raise validate.BadValue(f"trade time {trade_ms} ms is not near the feed's clock")
        if not 0 <= trade_id < 10**18:
            raise validate.BadValue(f"trade id {trade_id} is out of range")
        # ``m`` true: the buyer's order was resting, so the taker sold.
        return TradeReceived(
            instrument,
            ts_us,
            validate.price(data["p"]),
            validate.size(data["q"]),
            SIDE_SELL if maker else SIDE_BUY,
            trade_id,
        )

    def _kline_bar(self, instrument: str, kline: dict[str, Any]) -> Bar:
        open_us = validate.epoch_ms(kline["t"], "kline open time")
        if open_us % US_PER_MINUTE or kline["i"] != "1m":
            raise validate.BadValue(f"kline {kline['i']!r} at {open_us} µs is not a 1m bar")
        validate.live_time(open_us, self.clock_us(), "kline open time")
        high = validate.price(kline["h"], "kline high")
        low = validate.price(kline["l"], "kline low")
        bar_open = validate.price(kline["o"], "kline open")
        close = validate.price(kline["c"], "kline close")
        if not low <= min(bar_open, close) <= max(bar_open, close) <= high:
            raise validate.BadValue("kline prices are not low <= open, close <= high")
        volume = validate.number(kline["v"], "kline volume")
        bought = validate.number(kline["V"], "kline taker buy volume")
        if not 0 <= bought <= volume:
            raise validate.BadValue(f"kline volumes {volume} / taker buy {bought} do not fit")
        return Bar(
            instrument,
            "1m",
            open_us,
            bar_open,
            high,
            low,
            close,
            volume,
            validate.integer(kline["n"], "kline trades"),
            bought,
            # In decimal, as history does: float subtraction would leave noise.
            float(Decimal(kline["v"]) - Decimal(kline["V"])),
        )

    # --- history ----------------------------------------------------------------------

    def _client(self) -> httpx.Client:
        return httpx.Client(base_url=self.config.rest_url, transport=self._transport, timeout=10)

    def history(self, instrument: str, start_us: int, end_us: int) -> pl.DataFrame | None:
        """1m bars in [start, end) from REST klines, paged by time, honouring 429/418
        ``Retry-After``. Only closed bars are returned, with their order flow: a kline's
        row[9] is the taker buy base volume, so buy_volume = row[9] and sell_volume =
        volume - row[9] (the difference taken in decimal, as Binance states both)."""

        from sptrader.schema import ORDER_FLOW_SCHEMA

        symbol = instrument.split(":", 1)[1]
        rows: list[list[Any]] = []
        cursor_ms = start_us // 1000
        end_ms = end_us // 1000
        with self._client() as client:
            while cursor_ms < end_ms:
                params = {
                    "symbol": symbol,
                    "interval": "1m",
                    "startTime": cursor_ms,
                    "endTime": end_ms - 1,
                    "limit": KLINES_LIMIT,
                }
                response = get_with_retries(
                    client,
                    "/api/v3/klines",
                    params=params,
                    what=f"Binance klines for {symbol}",
                    sleep=self.sleep,
                )
                assert response is not None
                self._note_weight(response)
                page = response.json()
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
                "ts": [int(row[0]) * 1000 for row in rows],
                "open": [float(row[1]) for row in rows],
                "high": [float(row[2]) for row in rows],
                "low": [float(row[3]) for row in rows],
                "close": [float(row[4]) for row in rows],
                "volume": [float(row[5]) for row in rows],
                "trades": [int(row[8]) for row in rows],
                "buy_volume": [float(row[9]) for row in rows],
                "sell_volume": [float(Decimal(row[5]) - Decimal(row[9])) for row in rows],
            },
            schema={**BAR_SCHEMA, **ORDER_FLOW_SCHEMA},
        )

    def _note_weight(self, response: httpx.Response) -> None:
        """Slow down before Binance has to: near the per-minute weight limit, wait for
        the next minute rather than earn a 429 (and, repeated, a 418 ban)."""
        used = response.headers.get("X-MBX-USED-WEIGHT-1M")
        if used is not None and used.isdigit() and int(used) >= WEIGHT_LIMIT_1M * 0.9:
            wait = 60 - time.time() % 60 + 1
            log.warning(
                "Binance request weight %s of %d used; pausing %.0fs", used, WEIGHT_LIMIT_1M, wait
            )
            self.sleep(wait)

    # --- symbols ----------------------------------------------------------------------

    def symbols(self) -> list[SymbolInfo]:
        """Spot pairs currently trading, from ``/api/v3/exchangeInfo``."""
        with self._client() as client:
            response = get_with_retries(
                client,
                "/api/v3/exchangeInfo",
                params={"permissions": "SPOT"},
                what="Binance exchangeInfo",
                sleep=self.sleep,
            )
            assert response is not None
            payload = response.json()
        return symbol_infos(payload)


def symbol_infos(payload: dict[str, Any]) -> list[SymbolInfo]:
    """The trading pairs of an exchangeInfo answer, each with the decimals of its
    PRICE_FILTER tickSize ("0.01000000" -> 2)."""
    return [
        SymbolInfo(
            f"BINANCE:{entry['symbol']}",
            f"{entry['baseAsset']} / {entry['quoteAsset']}",
            "crypto",
            entry["baseAsset"],
            entry["quoteAsset"],
            _tick_decimals(entry),
        )
        for entry in payload.get("symbols", [])
        if entry.get("status") == "TRADING"
    ]


def _tick_decimals(entry: dict[str, Any]) -> int | None:
    for rule in entry.get("filters") or []:
        tick = rule.get("tickSize") if rule.get("filterType") == "PRICE_FILTER" else None
        if tick and float(tick) > 0:
            return decimals_of_tick(tick)
    return None
