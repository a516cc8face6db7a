"""Events to NATS message payloads (msgpack) and back.

One message per bar (its id is the bar's: see ``subjects``); ticks travel as one
message per instrument and kind per publish batch, because a message per tick would
cost more than the rest of the tick path; fetched history as Arrow IPC, in chunks that
stay well under the server's 1 MB message limit.
"""

from __future__ import annotations

import dataclasses
import io
import operator
from dataclasses import dataclass

import msgspec
import polars as pl

from sptrader.cluster import subjects
from sptrader.models import (
    Bar,
    BarClosed,
    BarUpdated,
    HistoryBarsReady,
    HistoryFetched,
    LiveCoverageRecorded,
    QuoteReceived,
    TradeReceived,
)

#: Rows of fetched history per message (about 60 bytes a row in IPC).
HISTORY_CHUNK_ROWS = 10_000

_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder().decode


@dataclass(slots=True)
class Outgoing:
    subject: str
    payload: bytes
    #: JetStream's Nats-Msg-Id: a message with an id seen within the stream's duplicate
    #: window is dropped (a resend after a reconnect, a second collector's same bar).
    message_id: str
    stream: str


class MalformedMessage(ValueError):
    """A payload this version cannot read: counted and skipped by the writer."""


#: A bar's fields in Bar's order (instrument, timeframe, ts_us, open ... sell_volume).
_bar_tuple = operator.attrgetter(*(field.name for field in dataclasses.fields(Bar)))


def _bar_values(bar: Bar) -> tuple[float, ...]:
    extra = tuple(-1.0 if value is None else value for value in (bar.buy_volume, bar.sell_volume))
    return (bar.open, bar.high, bar.low, bar.close, bar.volume, float(bar.trades), *extra)


def encode_events(prefix: str, events: list[object]) -> list[Outgoing]:
    """The messages for one publish batch, in the batch's order for bars (ticks of one
    instrument and kind are grouped, each group at its first tick's place)."""
    bars_stream = subjects.BARS_STREAM.format(prefix=prefix)
    ticks_stream = subjects.TICKS_STREAM.format(prefix=prefix)
    out: list[Outgoing] = []
    tick_groups: dict[tuple[str, str], list[object]] = {}
    for event in events:
        kind = type(event)
        if kind is QuoteReceived or kind is TradeReceived:
            key = ("quote" if kind is QuoteReceived else "trade", event.instrument)
            group = tick_groups.get(key)
            if group is None:
                tick_groups[key] = group = []
            group.append(event)
        elif kind is BarClosed:
            bar = event.bar
            out.append(
                Outgoing(
                    subjects.bar_subject(prefix, bar.timeframe, bar.instrument),
                    _encode(("closed", _bar_tuple(bar))),
                    subjects.bar_message_id(
                        bar.instrument, bar.timeframe, bar.ts_us, _bar_values(bar)
                    ),
                    bars_stream,
                )
            )
        elif kind is BarUpdated:
            bar = event.bar
            out.append(
                Outgoing(
                    subjects.forming_subject(prefix, bar.timeframe, bar.instrument),
                    _encode(("forming", _bar_tuple(bar))),
                    "forming|"
                    + subjects.bar_message_id(
                        bar.instrument, bar.timeframe, bar.ts_us, _bar_values(bar)
                    ),
                    bars_stream,
                )
            )
        elif kind is HistoryBarsReady:
            out.extend(_history_messages(prefix, bars_stream, event.fetched))
        elif kind is LiveCoverageRecorded:
            payload = _encode(("coverage", event.ts_us, event.ranges, event.owed))
            feeds = sorted({entry[2] for entry in event.ranges}) or ["none"]
            out.append(
                Outgoing(
                    subjects.coverage_subject(prefix, feeds[0].upper()),
                    payload,
                    subjects.content_message_id("coverage", event.ts_us, 0, payload),
                    bars_stream,
                )
            )
    for (tick_kind, instrument), ticks in tick_groups.items():
        if tick_kind == "quote":
            rows = [(t.ts_us, t.bid, t.ask, t.bid_size, t.ask_size) for t in ticks]
        else:
            rows = [(t.ts_us, t.price, t.size, t.side, t.trade_id) for t in ticks]
        payload = _encode((tick_kind, instrument, rows))
        out.append(
            Outgoing(
                subjects.tick_subject(prefix, tick_kind, instrument),
                payload,
                subjects.content_message_id(
                    f"{tick_kind}:{instrument}", rows[0][0], rows[-1][0], payload
                ),
                ticks_stream,
            )
        )
    return out


def _history_messages(prefix: str, stream: str, fetched: HistoryFetched) -> list[Outgoing]:
    frame = fetched.bars
    assert isinstance(frame, pl.DataFrame)
    # Chunks split at bar times and together cover [start, end): each is complete for
    # its own range, so the writer's coverage stays true whichever chunks it has.
    bounds = [fetched.start_us]
    if frame.height > HISTORY_CHUNK_ROWS:
        ts = frame.get_column("ts").cast(pl.Int64)
        bounds += [int(ts[i]) for i in range(HISTORY_CHUNK_ROWS, frame.height, HISTORY_CHUNK_ROWS)]
    bounds.append(fetched.end_us)
    out = []
    for index in range(len(bounds) - 1):
        chunk = frame.slice(index * HISTORY_CHUNK_ROWS, HISTORY_CHUNK_ROWS)
        buffer = io.BytesIO()
        chunk.write_ipc(buffer)
        content = buffer.getvalue()
        start, end = bounds[index], bounds[index + 1]
        out.append(
            Outgoing(
                subjects.history_subject(prefix, fetched.instrument),
                _encode(("history", fetched.instrument, start, end, content)),
                subjects.content_message_id("history:" + fetched.instrument, start, end, content),
                stream,
            )
        )
    return out


def decode_message(payload: bytes) -> list[object]:
    """The events one message carries; MalformedMessage if it is not one of ours."""
    try:
        message = _decode(payload)
        kind = message[0]
        if kind == "closed" or kind == "forming":
            bar = Bar(*message[1])
            return [BarClosed(bar) if kind == "closed" else BarUpdated(bar)]
        if kind == "quote":
            instrument = message[1]
            return [QuoteReceived(instrument, *row) for row in message[2]]
        if kind == "trade":
            instrument = message[1]
            return [TradeReceived(instrument, *row) for row in message[2]]
        if kind == "history":
            _, instrument, start, end, content = message
            frame = pl.read_ipc(io.BytesIO(content))
            return [HistoryBarsReady(HistoryFetched(instrument, start, end, frame))]
        if kind == "coverage":
            _, ts_us, ranges, owed = message
            return [
                LiveCoverageRecorded(
                    ts_us,
                    [tuple(entry) for entry in ranges],
                    {name: [tuple(pair) for pair in pairs] for name, pairs in owed.items()},
                )
            ]
    except (msgspec.DecodeError, TypeError, ValueError, IndexError, OSError) as error:
        raise MalformedMessage(f"unreadable message: {error}") from None
    raise MalformedMessage(f"unknown message kind {kind!r}")
