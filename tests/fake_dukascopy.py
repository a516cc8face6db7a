"""Test support for the Dukascopy feed: hour files built from known ticks in both wire
formats (bi5 and the JSON API) and a FakeHttpServer route that serves them at the paths
the real services use. No tests in here.

A tick is ``(ms into the hour, ask, bid, ask volume, bid volume)``, prices as decimals
(1.14277), volumes in millions as bi5 stores them.
"""

from __future__ import annotations

import lzma
import re
import struct
import threading
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime

import numpy as np
from fakes import FakeRequest, FakeResponse, Route

from sptrader.feeds.dukascopy import BI5_RECORD
from sptrader.feeds.dukascopy_instruments import INSTRUMENTS

Tick = tuple[int, float, float, float, float]

_LZMA1 = {"id": lzma.FILTER_LZMA1, "dict_size": 1 << 22, "lc": 3, "lp": 0, "pb": 2}

_BI5_PATH = re.compile(r"/([A-Z0-9]+)/(\d{4})/(\d{2})/(\d{2})/(\d{2})h_ticks\.bi5$")
_JSON_PATH = re.compile(
    r"/ticks/([A-Za-z0-9.]+-[A-Za-z0-9.]+)/(\d{4})/(\d{1,2})/(\d{1,2})/(\d{1,2})$"
)


def _columns(rows: list[Tick]) -> tuple[np.ndarray, ...]:
    return tuple(np.array(column) for column in zip(*rows, strict=True))


def bi5_records(ticks: Iterable[Tick], divisor: int) -> bytes:
    """Uncompressed 20-byte big-endian records, as Dukascopy packs them."""
    rows = list(ticks)
    records = np.zeros(len(rows), dtype=BI5_RECORD)
    if rows:
        ms, ask, bid, ask_volume, bid_volume = _columns(rows)
        records["ms"] = ms
        records["ask"] = np.rint(ask * divisor)
        records["bid"] = np.rint(bid * divisor)
        records["ask_volume"] = ask_volume
        records["bid_volume"] = bid_volume
    return records.tobytes()


def bi5_hour(ticks: Iterable[Tick], divisor: int) -> bytes:
    """A ``.bi5`` hour file as Dukascopy serves it: LZMA "alone" with the header
    ``5d 00 00 40 00`` (4 MiB dictionary) and the uncompressed size; no ticks is a 0-byte
    file, as on Dukascopy's server for closed hours."""
    raw = bi5_records(ticks, divisor)
    if not raw:
        return b""
    body = lzma.compress(raw, format=lzma.FORMAT_RAW, filters=[_LZMA1])
    return b"\x5d" + struct.pack("<Iq", _LZMA1["dict_size"], len(raw)) + body


def json_hour(ticks: Iterable[Tick], hour_start_us: int, divisor: int) -> dict:
    """An hour as the JSON API answers it: first tick's prices plus per-tick changes in
    points (the first change 0), time gaps in ms, volumes in units."""
    rows = list(ticks)
    hour = {
        "timestamp": hour_start_us // 1000,
        "multiplier": 1 / divisor,
        "ask": None,
        "bid": None,
        "times": [],
        "asks": [],
        "bids": [],
        "askVolumes": [],
        "bidVolumes": [],
    }
    if not rows:
        return hour
    ms, ask, bid, ask_volume, bid_volume = _columns(rows)
    asks = np.rint(ask * divisor).astype(np.int64)
    bids = np.rint(bid * divisor).astype(np.int64)
    hour.update(
        ask=rows[0][1],
        bid=rows[0][2],
        times=np.diff(ms.astype(np.int64), prepend=0).tolist(),
        asks=np.diff(asks, prepend=asks[0]).tolist(),
        bids=np.diff(bids, prepend=bids[0]).tolist(),
        askVolumes=np.round(ask_volume * 1e6, 3).tolist(),
        bidVolumes=np.round(bid_volume * 1e6, 3).tolist(),
    )
    return hour


def _hour_start_us(year: int, month: int, day: int, hour: int) -> int:
    return int(datetime(year, month, day, hour, tzinfo=UTC).timestamp()) * 1_000_000


def parse_hour(path: str, fmt: str) -> tuple[str, int] | None:
    """(SYMBOL, hour start) a request path names, reading the month zero-based for bi5
    and one-based for JSON; None for any other path (or an impossible date)."""
    match = (_BI5_PATH if fmt == "bi5" else _JSON_PATH).search(path)
    if match is None:
        return None
    name, year, month, day, hour = match.groups()
    month_number = int(month) + 1 if fmt == "bi5" else int(month)
    symbol = name if fmt == "bi5" else name.replace("-", "").replace(".", "")
    try:
        return symbol, _hour_start_us(int(year), month_number, int(day), int(hour))
    except ValueError:
        return None


def route(
    ticks_by_hour: Mapping[int, list[Tick]],
    fmt: str = "bi5",
    *,
    symbol: str = "EURUSD",
    fail_first: int = 0,
) -> Route:
    """Serves ``symbol``'s hours (keyed by hour start, µs) in ``fmt``; 404 for any other
    hour or symbol. Each path answers 503 to its first ``fail_first`` requests."""
    divisor = INSTRUMENTS[symbol].divisor
    failures: dict[str, int] = {}
    lock = threading.Lock()

    def serve(request: FakeRequest) -> FakeResponse | None:
        with lock:
            failures[request.path] = failures.get(request.path, 0) + 1
            if failures[request.path] <= fail_first:
                return FakeResponse(503, "Service Temporarily Unavailable")
        named = parse_hour(request.path, fmt)
        if named is None or named[0] != symbol or named[1] not in ticks_by_hour:
            return None
        ticks = ticks_by_hour[named[1]]
        if fmt == "bi5":
            return FakeResponse(200, bi5_hour(ticks, divisor))
        return FakeResponse(200, json_hour(ticks, named[1], divisor))

    return serve
