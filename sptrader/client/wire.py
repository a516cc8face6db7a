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
from collections.abc import Callable
from dataclasses import astuple
from typing import Any

import polars as pl

from sptrader.models import (
    EVENT_TYPES,
    AlertRaised,
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
    SignalRaised,
    TradeReceived,
    WatchlistChanged,
)
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


# Each event a client sees as a compact list tagged by its kind (tags are short: quotes
# dominate the stream), and back.
_ENCODERS: dict[type, Callable[[Any], list[Any]]] = {
    QuoteReceived: lambda e: ["q", e.instrument, e.ts_us, e.bid, e.ask, e.bid_size, e.ask_size],
    TradeReceived: lambda e: ["t", e.instrument, e.ts_us, e.price, e.size, e.side, e.trade_id],
    BarUpdated: lambda e: ["bu", *bar_fields(e.bar)],
    BarClosed: lambda e: ["bc", *bar_fields(e.bar)],
    ServiceStateChanged: lambda e: [
        "s",
        e.service,
        e.ts_us,
        e.state.value,
        e.previous.value,
        e.message,
    ],
    EngineLogged: lambda e: ["l", e.ts_us, e.level, e.source, e.message],
    EventsDropped: lambda e: ["d", e.ts_us, e.subscriber, e.count, e.total],
    HistoryStored: lambda e: ["h", e.ts_us, e.instrument, e.start_us, e.end_us, e.rows],
    WatchlistChanged: lambda e: ["w", e.ts_us, e.instruments],
    BackfillProgressed: lambda e: ["bf", *astuple(e)],
    SignalRaised: lambda e: ["sig", *astuple(e)],
    OrderUpdated: lambda e: ["ou", e.ts_us, e.order],
    FillExecuted: lambda e: ["fx", e.ts_us, e.fill],
    AlertRaised: lambda e: ["al", *astuple(e)],
}


def _service_state_changed(rest: list[Any]) -> ServiceStateChanged:
    service, ts, state, previous, message = rest
    return ServiceStateChanged(service, ts, ServiceState(state), ServiceState(previous), message)


_DECODERS: dict[str, Callable[[list[Any]], object]] = {
    "q": lambda rest: QuoteReceived(*rest),
    "t": lambda rest: TradeReceived(*rest),
    "bu": lambda rest: BarUpdated(_bar(rest)),
    "bc": lambda rest: BarClosed(_bar(rest)),
    "s": _service_state_changed,
    "l": lambda rest: EngineLogged(*rest),
    "d": lambda rest: EventsDropped(*rest),
    "h": lambda rest: HistoryStored(*rest),
    "w": lambda rest: WatchlistChanged(*rest),
    "bf": lambda rest: BackfillProgressed(*rest),
    "sig": lambda rest: SignalRaised(*rest),
    "ou": lambda rest: OrderUpdated(*rest),
    "fx": lambda rest: FillExecuted(*rest),
    "al": lambda rest: AlertRaised(*rest),
}

# The wire carries exactly the events models.EVENT_TYPES lists: one added there needs
# its wire form here (and the engine's own events are never sent).
_unmatched = set(_ENCODERS) ^ set(EVENT_TYPES)
if _unmatched or len(_DECODERS) != len(_ENCODERS):
    names = ", ".join(sorted(kind.__name__ for kind in _unmatched)) or "a decoder"
    raise RuntimeError(f"the wire codec and models.EVENT_TYPES disagree about {names}")


def encode_event(event: object) -> list[Any] | None:
    """An event as its tagged list; None for an event clients do not see."""
    encoder = _ENCODERS.get(type(event))
    return None if encoder is None else encoder(event)


def decode_event(fields: list[Any]) -> object:
    tag, rest = fields[0], fields[1:]
    decoder = _DECODERS.get(tag) if isinstance(tag, str) else None
    if decoder is None:
        raise ProtocolError(f"unknown event kind {tag!r}")
    return decoder(rest)


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
