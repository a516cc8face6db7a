"""``DUKASCOPY:`` history: tick files by the hour, decoded with numpy, aggregated to 1m
bars with polars. Dukascopy has no live stream here (``live = False``).

Two wire formats, chosen by ``[feeds.dukascopy] format``; the same ``url`` key holds the
base of either:

- ``bi5`` (default, ``url = "https://datafeed.dukascopy.com/datafeed"``): one file per
  hour, ``{url}/EURUSD/2024/00/02/13h_ticks.bi5`` -- the MONTH IS ZERO-BASED (January is
  ``00``), all parts zero-padded. The body is LZMA "alone" compressed 20-byte big-endian
  records ``>IIIff``: milliseconds into the hour, ask and bid as integers (divide by the
  instrument's divisor, see ``dukascopy_instruments``), ask and bid volume as float32 in
  millions. A closed hour is an empty (0-byte) file or a 404.
- ``json`` (``url = "https://jetta.dukascopy.com/v1"``, the API Dukascopy's website uses):
  ``{url}/ticks/EUR-USD/2024/1/2/13`` -- month ONE-based, nothing padded. The body is
  ``{"timestamp": <hour start, ms>, "multiplier": 1e-05, "ask": 1.14277, "bid": 1.14273,
  "times": [...], "asks": [...], "bids": [...], "askVolumes": [...], "bidVolumes": [...]}``:
  ``times`` are millisecond gaps (the first from the top of the hour) summed onto
  ``timestamp``; ``ask``/``bid`` are the FIRST tick's prices and ``asks``/``bids`` are
  changes in units of ``multiplier`` from the previous tick (the first is 0), summed in
  integer points so prices come out exact; volumes are in units (divided by 1e6 here, to
  match bi5's millions). A closed hour is ``"times": []`` with null prices, or a 404.

Every decoded tick is checked (``drop_impossible``): prices positive, finite and at most
``validate.MAX_PRICE``, sizes finite and in [0, ``validate.MAX_SIZE``], the time inside
the hour asked for. An impossible tick is dropped, never a bar; one warning per history
call says how many.

Both services throttle with 503s and time-outs: requests retry with backoff, and one
semaphore per feed bounds the hour requests in flight (``max_concurrency``) however many
backfill chunks run at once. Weekend hours of non-crypto instruments (all of Saturday,
Friday from 22:00 and Sunday before 21:00 UTC) are not requested.

Bars use the bid (``price_source = "bid"``, also for ``auto`` and ``trade``: there are no
trades) or the mid (``"mid"``); volume is the sum of bid sizes and ``trades`` the tick
count either way, exactly as the live BarBuilder makes bars of the same quotes.
"""

from __future__ import annotations

import logging
import lzma
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import NamedTuple

import httpx
import msgspec
import numpy as np
import polars as pl

from sptrader.bars import aggregate_ticks
from sptrader.clock import now_us
from sptrader.config import DukascopyFeedConfig
from sptrader.errors import SptraderError
from sptrader.feeds.base import Feed
from sptrader.feeds.dukascopy_instruments import INSTRUMENTS, DukascopyInstrument, lookup
from sptrader.feeds.http import get_with_retries
from sptrader.feeds.validate import EARLIEST_US, MAX_PRICE, MAX_SIZE
from sptrader.models import US_PER_DAY, US_PER_MINUTE, SymbolInfo
from sptrader.schema import BAR_SCHEMA, TICK_SCHEMA
from sptrader.supervisor import ServiceContext

log = logging.getLogger(__name__)

US_PER_HOUR = 60 * US_PER_MINUTE

#: One bi5 tick record: ms into the hour, ask, bid (integer points), ask/bid volume.
BI5_RECORD = np.dtype(
    [("ms", ">u4"), ("ask", ">u4"), ("bid", ">u4"), ("ask_volume", ">f4"), ("bid_volume", ">f4")]
)


_POW10 = 10.0 ** np.arange(47)


class TickArrays(NamedTuple):
    """Ticks as columns: what one hour decodes to, before they become a frame."""

    ts_us: np.ndarray  # int64, UTC microseconds
    bid: np.ndarray  # float64
    ask: np.ndarray
    bid_size: np.ndarray  # float64, millions
    ask_size: np.ndarray


def _empty_ticks() -> TickArrays:
    floats = np.empty(0, dtype=np.float64)
    return TickArrays(np.empty(0, dtype=np.int64), floats, floats, floats, floats)


class _JsonHour(msgspec.Struct, rename="camel"):
    timestamp: int = 0
    multiplier: float | None = None
    ask: float | None = None
    bid: float | None = None
    times: list[int] = []
    asks: list[int] = []
    bids: list[int] = []
    ask_volumes: list[float] = []
    bid_volumes: list[float] = []


_JSON_DECODER = msgspec.json.Decoder(_JsonHour)


# --- decoding -------------------------------------------------------------------------


def decode_bi5(payload: bytes, hour_start_us: int, divisor: int) -> TickArrays:
    """One hour file (LZMA-compressed records) to ticks; empty for an empty file."""
    if not payload:
        return _empty_ticks()
    try:
        raw = lzma.decompress(payload, format=lzma.FORMAT_AUTO)
    except lzma.LZMAError:
        # The auto decoder is picky about "alone" headers (dictionary size, size field);
        # the plain "alone" decoder is not.
        decompressor = lzma.LZMADecompressor(format=lzma.FORMAT_ALONE)
        try:
            raw = decompressor.decompress(payload)
        except lzma.LZMAError as error:
            raise ValueError(f"not an LZMA tick file ({error})") from None
        if not decompressor.eof:
            raise ValueError("truncated LZMA tick file") from None
    return decode_bi5_records(raw, hour_start_us, divisor)


def decode_bi5_records(raw: bytes, hour_start_us: int, divisor: int) -> TickArrays:
    """Decompressed 20-byte records to ticks, vectorised (no Python loop per tick)."""
    if len(raw) % BI5_RECORD.itemsize:
        raise ValueError(f"{len(raw)} bytes is not a whole number of 20-byte tick records")
    records = np.frombuffer(raw, dtype=BI5_RECORD)
    ts_us = records["ms"].astype(np.int64) * 1000 + hour_start_us
    # Integer / divisor is correctly rounded: 114277 / 100000 is exactly float("1.14277").
    bid = records["bid"].astype(np.float64) / divisor
    ask = records["ask"].astype(np.float64) / divisor
    return TickArrays(
        ts_us,
        bid,
        ask,
        float32_to_decimal(records["bid_volume"]),
        float32_to_decimal(records["ask_volume"]),
    )


def float32_to_decimal(values: np.ndarray) -> np.ndarray:
    """float32 volumes as the decimal numbers they stand for (7 significant digits):
    1.12 rather than 1.1200000047683716, so bi5 and JSON volumes agree."""
    wide = values.astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        exponent = np.log10(np.abs(wide))
    # Zeros (and non-finite values) keep their value; past 1e6 million only whole units.
    np.nan_to_num(exponent, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
    np.clip(np.floor(exponent, out=exponent), -40, 6, out=exponent)
    scale = _POW10[6 - exponent.astype(np.intp)]
    rounded = np.multiply(wide, scale, out=wide)
    np.round(rounded, out=rounded)
    return np.divide(rounded, scale, out=rounded)


def decode_json_hour(payload: bytes, divisor: int) -> TickArrays:
    """One JSON API hour to ticks; empty for a closed hour (no times, null prices)."""
    if not payload.strip():
        return _empty_ticks()
    hour = _JSON_DECODER.decode(payload)
    count = len(hour.times)
    if count == 0 or hour.ask is None or hour.bid is None:
        return _empty_ticks()
    columns = (hour.asks, hour.bids, hour.ask_volumes, hour.bid_volumes)
    if any(len(column) != count for column in columns):
        raise ValueError("tick arrays of different lengths")
    if hour.multiplier:
        divisor = round(1 / hour.multiplier)
    ts_us = (np.cumsum(np.array(hour.times, dtype=np.int64)) + hour.timestamp) * 1000
    # Running prices in integer points: no float drift however long the hour.
    ask = (np.cumsum(np.array(hour.asks, dtype=np.int64)) + round(hour.ask * divisor)) / divisor
    bid = (np.cumsum(np.array(hour.bids, dtype=np.int64)) + round(hour.bid * divisor)) / divisor
    bid_size = np.array(hour.bid_volumes, dtype=np.float64) / 1e6
    ask_size = np.array(hour.ask_volumes, dtype=np.float64) / 1e6
    return TickArrays(ts_us, bid, ask, bid_size, ask_size)


def drop_impossible(ticks: TickArrays, hour_start_us: int) -> tuple[TickArrays, int]:
    """The hour's ticks without impossible ones (a price not positive, not finite or
    above MAX_PRICE, a size negative, not finite or above MAX_SIZE, a time outside the
    hour), and how many were dropped. Vectorised: NaN fails every comparison."""
    count = len(ticks.ts_us)
    if count == 0:
        return ticks, 0
    bid, ask, bid_size, ask_size = ticks.bid, ticks.ask, ticks.bid_size, ticks.ask_size
    ts = ticks.ts_us
    keep = (bid > 0.0) & (bid <= MAX_PRICE) & (ask > 0.0) & (ask <= MAX_PRICE)
    keep &= (bid_size >= 0.0) & (bid_size <= MAX_SIZE) & (ask_size >= 0.0) & (ask_size <= MAX_SIZE)
    keep &= (ts >= max(hour_start_us, EARLIEST_US)) & (ts < hour_start_us + US_PER_HOUR)
    kept = int(np.count_nonzero(keep))
    if kept == count:
        return ticks, 0
    return TickArrays(*(column[keep] for column in ticks)), count - kept


def join_ticks(parts: list[TickArrays], start_us: int, end_us: int) -> TickArrays:
    """Hours in order to one set of columns: ticks in [start, end), sorted by time."""
    parts = [part for part in parts if len(part.ts_us)]
    if not parts:
        return _empty_ticks()
    joined = TickArrays(*(np.concatenate(column) for column in zip(*parts, strict=True)))
    ts = joined.ts_us
    keep = (ts >= start_us) & (ts < end_us)
    if not keep.all():
        joined = TickArrays(*(column[keep] for column in joined))
        ts = joined.ts_us
    if len(ts) > 1 and not (ts[1:] >= ts[:-1]).all():
        order = np.argsort(ts, kind="stable")
        joined = TickArrays(*(column[order] for column in joined))
    return joined


def ticks_frame(instrument: str, ticks: TickArrays) -> pl.DataFrame:
    """Columns to the store's ``ticks`` layout (quotes: price, size and any other
    trade column are null)."""
    count = len(ticks.ts_us)
    columns = {
        "instrument": pl.repeat(instrument, count, dtype=pl.String, eager=True),
        "ts": pl.Series(ticks.ts_us, dtype=pl.Int64).cast(pl.Datetime("us")),
        "bid": ticks.bid,
        "ask": ticks.ask,
        "bid_size": ticks.bid_size,
        "ask_size": ticks.ask_size,
    }
    return pl.DataFrame(
        {
            name: columns[name]
            if name in columns
            else pl.repeat(None, count, dtype=dtype, eager=True)
            for name, dtype in TICK_SCHEMA.items()
        },
        schema=TICK_SCHEMA,
    )


def ticks_to_bars(ticks: pl.DataFrame, price_source: str, closed_before_us: int) -> pl.DataFrame:
    """1m bars of bid (or mid) prices, bid-size volume and tick counts, keeping only
    minutes that ended by ``closed_before_us``."""
    if ticks.is_empty():
        return pl.DataFrame(schema=BAR_SCHEMA)
    price = pl.col("bid") if price_source == "bid" else (pl.col("bid") + pl.col("ask")) * 0.5
    bars = aggregate_ticks(
        ticks.select(
            "instrument",
            pl.col("ts").cast(pl.Int64).alias("ts_us"),
            price.alias("price"),
            pl.col("bid_size").alias("size"),
        )
    )
    return bars.filter(pl.col("ts").cast(pl.Int64) + US_PER_MINUTE <= closed_before_us).cast(
        BAR_SCHEMA
    )


# --- hours ----------------------------------------------------------------------------


def weekend_closed(hour_start_us: int) -> bool:
    """FX, metals and CFDs do not quote: Friday 22:00 to Sunday 21:00 UTC."""
    day, hour = divmod(hour_start_us // US_PER_HOUR, 24)
    weekday = (day + 3) % 7  # 1970-01-01 was a Thursday; Monday is 0
    return weekday == 5 or (weekday == 4 and hour >= 22) or (weekday == 6 and hour < 21)


def hour_path(entry: DukascopyInstrument, hour_start_us: int, fmt: str) -> str:
    """The hour's path under the base url: month zero-based for bi5, one-based for JSON."""
    moment = datetime.fromtimestamp(hour_start_us // 1_000_000, UTC)
    if fmt == "bi5":
        return (
            f"/{entry.symbol}/{moment.year:04d}/{moment.month - 1:02d}/"
            f"{moment.day:02d}/{moment.hour:02d}h_ticks.bi5"
        )
    return f"/ticks/{entry.json_name}/{moment.year}/{moment.month}/{moment.day}/{moment.hour}"


# --- the feed -------------------------------------------------------------------------


class DukascopyFeed(Feed):
    prefix = "DUKASCOPY"
    name = "dukascopy"
    # Its instrument table gives each symbol its kind; fx for one it does not list.
    market_kind = "fx"
    live = False
    builtin_symbols = True
    history_chunk_us = US_PER_DAY

    def __init__(
        self,
        instruments: list[str],
        config: DukascopyFeedConfig,
        *,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(instruments)
        self.config = config
        self.max_concurrency = max(1, config.max_concurrency)
        self._transport = transport
        # Bounds hour requests in flight across concurrent history calls.
        self._slots = threading.BoundedSemaphore(self.max_concurrency)
        #: Sleep between retries (tests replace it).
        self.sleep: Callable[[float], None] = time.sleep
        #: How far behind now history is complete: a bi5 hour file appears only after
        #: its hour ended (until then: 404, read as "no ticks"); the JSON API serves
        #: the current hour as it goes.
        self.history_delay_us = 2 * US_PER_HOUR if config.format == "bi5" else US_PER_MINUTE

    def price_source(self, instrument: str) -> str:
        return "mid" if self.config.price_source == "mid" else "bid"

    async def stream(self, context: ServiceContext) -> None:
        raise SptraderError("Dukascopy serves history only; it has no live stream to watch")

    # --- history ----------------------------------------------------------------------

    def history(self, instrument: str, start_us: int, end_us: int) -> pl.DataFrame | None:
        """Closed 1m bars in [start, end) aggregated from the hours' ticks."""
        return self.history_with_ticks(instrument, start_us, end_us)[0]

    def history_ticks(self, instrument: str, start_us: int, end_us: int) -> pl.DataFrame:
        """Ticks in [start, end), sorted by time, in the store's ``ticks`` layout."""
        return ticks_frame(instrument, self._fetch_ticks(instrument, start_us, end_us))

    def history_with_ticks(
        self, instrument: str, start_us: int, end_us: int
    ) -> tuple[pl.DataFrame, pl.DataFrame]:
        """(bars, ticks) of one fetch, for a backfill that stores both."""
        ticks = self.history_ticks(instrument, start_us, end_us)
        bars = ticks_to_bars(ticks, self.price_source(instrument), now_us())
        return bars, ticks

    def _fetch_ticks(self, instrument: str, start_us: int, end_us: int) -> TickArrays:
        entry = lookup(instrument)
        now = now_us()
        first = start_us - start_us % US_PER_HOUR
        hours = [
            hour
            for hour in range(first, min(end_us, now), US_PER_HOUR)
            if entry.trades_weekends or not weekend_closed(hour)
        ]
        if not hours:
            return _empty_ticks()
        workers = min(len(hours), self.max_concurrency)
        with self._client() as client, ThreadPoolExecutor(workers) as pool:
            futures = [pool.submit(self._fetch_hour, client, entry, hour) for hour in hours]
            try:
                checked = [
                    drop_impossible(future.result(), hour)
                    for future, hour in zip(futures, hours, strict=True)
                ]
            except BaseException:
                for future in futures:
                    future.cancel()
                raise
        dropped = sum(count for _, count in checked)
        if dropped:
            log.warning(
                "Dukascopy %s %s to %s: dropped %d impossible tick(s) (a price not positive"
                " or not finite, a negative size, a time outside its hour)",
                entry.symbol,
                _hour_label(hours[0]),
                _hour_label(hours[-1]),
                dropped,
                extra={"source": self.name},
            )
        return join_ticks([ticks for ticks, _ in checked], start_us, end_us)

    def _client(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.config.url.rstrip("/"),
            transport=self._transport,
            timeout=httpx.Timeout(20.0, connect=10.0),
            headers={"User-Agent": "sptrader"},
            limits=httpx.Limits(max_connections=self.max_concurrency),
        )

    def _fetch_hour(
        self, client: httpx.Client, entry: DukascopyInstrument, hour_start_us: int
    ) -> TickArrays:
        fmt = self.config.format
        what = f"Dukascopy {entry.symbol} {_hour_label(hour_start_us)}"
        with self._slots:
            response = get_with_retries(
                client,
                hour_path(entry, hour_start_us, fmt),
                what=what,
                missing_ok=True,
                sleep=self.sleep,
            )
        if response is None:
            return _empty_ticks()
        try:
            if fmt == "bi5":
                return decode_bi5(response.content, hour_start_us, entry.divisor)
            return decode_json_hour(response.content, entry.divisor)
        except (ValueError, msgspec.DecodeError) as error:
            raise SptraderError(f"{what}: malformed {fmt} tick data ({error})") from None

    # --- symbols ----------------------------------------------------------------------

    def symbols(self) -> list[SymbolInfo]:
        """The built-in instrument table."""
        return [
            SymbolInfo(
                f"DUKASCOPY:{entry.symbol}",
                entry.description,
                entry.kind,
                entry.base,
                entry.quote,
                entry.decimals,
            )
            for entry in INSTRUMENTS.values()
        ]


def _hour_label(hour_start_us: int) -> str:
    return datetime.fromtimestamp(hour_start_us // 1_000_000, UTC).strftime("%Y-%m-%d %H:00Z")
