"""Wire format of the local API: JSON text frames carrying a protocol version.

Client -> server: ``{"type": "hello", "protocol": 1}`` first, then requests
``{"type": "request", "id": 7, "method": "candles", "params": {...}}``.
Server -> client: ``{"type": "welcome", ...}`` (or ``{"type": "error", "error": ...}``
and close), responses ``{"type": "response", "id": 7, "result": ...}`` or
``{..., "error": "one line"}``, and, after a ``subscribe`` request, event batches
``{"type": "events", "events": [...], "dropped": N}`` (N: events this client lost
since the last batch because it read too slowly).
"""

from __future__ import annotations

import json
from dataclasses import astuple
from typing import Any

import polars as pl

from sptrader.models import (
    BackfillProgressed,
    Bar,
    BarClosed,
    BarUpdated,
    EngineLogged,
    EventsDropped,
    FillExecuted,
    HistoryStored,
    OrderUpdated,
    QuoteReceived,
    ServiceState,
    ServiceStateChanged,
    ServiceStatus,
    TradeReceived,
    WatchlistChanged,
)
from sptrader.scanners import SignalRaised
from sptrader.schema import CANDLE_COLUMNS, CANDLE_SCHEMA

PROTOCOL_VERSION = 1


class ProtocolError(Exception):
    """The peer sent something this side cannot understand."""


def encode(message: dict[str, Any]) -> str:
    return json.dumps(message, separators=(",", ":"))


def decode(text: str | bytes) -> dict[str, Any]:
    try:
        message = json.loads(text)
    except ValueError as error:
        raise ProtocolError(f"not JSON: {error}") from None
    except RecursionError:
        raise ProtocolError("JSON nested too deeply") from None
    if not isinstance(message, dict) or "type" not in message:
        raise ProtocolError("a message must be a JSON object with a 'type'")
    return message


def bar_fields(bar: Bar) -> list[Any]:
    return [
        bar.instrument,
        bar.ts_us,
        bar.open,
        bar.high,
        bar.low,
        bar.close,
        bar.volume,
        bar.trades,
        bar.buy_volume,
        bar.sell_volume,
    ]


def _bar(fields: list[Any]) -> Bar:
    # Order flow (buy/sell volume) came later: a list without it decodes as unknown.
    instrument, ts, open_, high, low, close, volume, trades, *flow = fields
    buy, sell = [*flow, None, None][:2]
    return Bar(instrument, "1m", ts, open_, high, low, close, volume, trades, buy, sell)


def encode_event(event: object) -> list[Any] | None:
    """Events as compact lists tagged by kind (quotes dominate the stream)."""
    kind = type(event)
    if kind is QuoteReceived:
        return [
            "q",
            event.instrument,
            event.ts_us,
            event.bid,
            event.ask,
            event.bid_size,
            event.ask_size,
        ]
    if kind is TradeReceived:
        return [
            "t",
            event.instrument,
            event.ts_us,
            event.price,
            event.size,
            event.side,
            event.trade_id,
        ]
    if kind is BarUpdated:
        return ["bu", *bar_fields(event.bar)]
    if kind is BarClosed:
        return ["bc", *bar_fields(event.bar)]
    if kind is ServiceStateChanged:
        return [
            "s",
            event.service,
            event.ts_us,
            event.state.value,
            event.previous.value,
            event.message,
        ]
    if kind is EngineLogged:
        return ["l", event.ts_us, event.level, event.source, event.message]
    if kind is EventsDropped:
        return ["d", event.ts_us, event.subscriber, event.count, event.total]
    if kind is HistoryStored:
        return ["h", event.ts_us, event.instrument, event.start_us, event.end_us, event.rows]
    if kind is WatchlistChanged:
        return ["w", event.ts_us, event.instruments]
    if kind is BackfillProgressed:
        return ["bf", *astuple(event)]
    if kind is SignalRaised:
        return ["sig", *astuple(event)]
    if kind is OrderUpdated:
        return ["ou", event.ts_us, event.order]
    if kind is FillExecuted:
        return ["fx", event.ts_us, event.fill]
    return None


def decode_event(fields: list[Any]) -> object:
    tag, rest = fields[0], fields[1:]
    if tag == "q":
        return QuoteReceived(*rest)
    if tag == "t":
        return TradeReceived(*rest)
    if tag == "bu":
        return BarUpdated(_bar(rest))
    if tag == "bc":
        return BarClosed(_bar(rest))
    if tag == "s":
        service, ts, state, previous, message = rest
        return ServiceStateChanged(
            service, ts, ServiceState(state), ServiceState(previous), message
        )
    if tag == "l":
        return EngineLogged(*rest)
    if tag == "d":
        return EventsDropped(*rest)
    if tag == "h":
        return HistoryStored(*rest)
    if tag == "w":
        return WatchlistChanged(*rest)
    if tag == "bf":
        return BackfillProgressed(*rest)
    if tag == "sig":
        return SignalRaised(*rest)
    if tag == "ou":
        return OrderUpdated(*rest)
    if tag == "fx":
        return FillExecuted(*rest)
    raise ProtocolError(f"unknown event kind {tag!r}")


def encode_status(status: ServiceStatus) -> dict[str, Any]:
    return {
        "name": status.name,
        "kind": status.kind,
        "state": status.state.value,
        "events_per_s": status.events_per_s,
        "last_event_us": status.last_event_us,
        "errors": status.errors,
        "restarts": status.restarts,
        "last_error": status.last_error,
        "stoppable": status.stoppable,
        "counters": status.counters,
    }


def decode_status(data: dict[str, Any]) -> ServiceStatus:
    return ServiceStatus(**{**data, "state": ServiceState(data["state"])})


def candles_frame(rows: list[list[Any]]) -> pl.DataFrame:
    """The rows a ``candles`` response carries (``ts_us, open, high, low, close, volume,
    trades, buy_volume, sell_volume``; a daemon from before order flow sends the first
    seven) as the frame the store's queries return (``CANDLE_SCHEMA``)."""
    if not rows:
        return pl.DataFrame(schema=CANDLE_SCHEMA)
    columns = CANDLE_COLUMNS
    if len(rows[0]) < len(columns):
        rows = [[*row, None, None][: len(columns)] for row in rows]
    frame = pl.DataFrame(rows, schema=columns, orient="row")
    return frame.with_columns(pl.col("ts").cast(pl.Datetime("us"))).cast(CANDLE_SCHEMA)
