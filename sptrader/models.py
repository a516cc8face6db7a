"""Domain values and events.

Events are past-tense dataclasses. Hot-path events (quotes, trades) carry integer
microsecond timestamps (UTC) and floats: converting to ``datetime`` per tick costs 8x.
``EVENT_TYPES`` lists the events the engine's clients see (the API carries each); the
others stay inside the engine.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum

from sptrader.errors import UsageError

# --- instruments and timeframes -------------------------------------------------------

INSTRUMENT_RE = re.compile(r"^([A-Z][A-Z0-9]*):([A-Z0-9][A-Z0-9_./:-]*)$")

US_PER_SECOND = 1_000_000
US_PER_MINUTE = 60 * US_PER_SECOND
US_PER_DAY = 1440 * US_PER_MINUTE

# The default chart set. Any "<N>m", "<N>h" or "<N>d" is a timeframe too (3m, 2h, 7d):
# see timeframe_minutes.
TIMEFRAMES: dict[str, int] = {
    "1m": 1,
    "5m": 5,
    "15m": 15,
    "1h": 60,
    "4h": 240,
    "1d": 1440,
}

TIMEFRAME_RE = re.compile(r"([1-9][0-9]{0,5})([mhd])")
TIMEFRAME_UNITS = {"m": 1, "h": 60, "d": 1440}
MAX_TIMEFRAME_MINUTES = 366 * 1440


def parse_instrument(name: str) -> tuple[str, str]:
    """Split ``FEED:SYMBOL`` into its parts; raise a UsageError naming the problem."""
    match = INSTRUMENT_RE.match(name.strip().upper()) if name else None
    if not match:
        raise UsageError(
            f"bad instrument {name!r}: expected FEED:SYMBOL, e.g. SIM:EURUSD or BINANCE:BTCUSDT"
        )
    return match.group(1), match.group(2)


def normalize_instrument(name: str) -> str:
    feed, symbol = parse_instrument(name)
    return f"{feed}:{symbol}"


def timeframe_minutes(timeframe: str) -> int:
    """Bucket width in minutes of ``<N>m``, ``<N>h`` or ``<N>d`` (N a positive whole
    number, at most 366 days in all), e.g. 1m 3m 15m 2h 4h 1d 7d.

    Buckets are multiples of the width since the Unix epoch (UTC): 2h bars open at
    00:00, 02:00 …, 1d bars at 00:00 UTC. A width that does not divide a day (7m, 5h)
    or a week of days (7d: the epoch was a Thursday, so 7d bars open on Thursdays) is
    still aligned to the epoch, not to each day or to Mondays.
    """
    minutes = _parse_timeframe(timeframe)
    if minutes is None:
        raise UsageError(timeframe_problem(timeframe))
    return minutes


def timeframe_problem(timeframe: str) -> str | None:
    """Why ``timeframe`` is not one (one sentence), or None if it is."""
    if _parse_timeframe(timeframe) is not None:
        return None
    hint = ""
    if isinstance(timeframe, str) and _parse_timeframe(timeframe.strip().lower()) is not None:
        hint = f" (write {timeframe.strip().lower()!r}: lowercase, no spaces)"
    return (
        f"unknown timeframe {timeframe!r}{hint}: use <N>m, <N>h or <N>d with N a positive"
        " whole number, at most 366 days in all, e.g. 1m, 3m, 15m, 2h, 4h, 1d"
    )


def _parse_timeframe(timeframe: object) -> int | None:
    if not isinstance(timeframe, str):
        return None
    minutes = TIMEFRAMES.get(timeframe)
    if minutes is not None:
        return minutes
    match = TIMEFRAME_RE.fullmatch(timeframe)
    if match is None:
        return None
    minutes = int(match.group(1)) * TIMEFRAME_UNITS[match.group(2)]
    return minutes if minutes <= MAX_TIMEFRAME_MINUTES else None


# --- market events -------------------------------------------------------------------


@dataclass(slots=True)
class QuoteReceived:
    instrument: str
    ts_us: int
    bid: float
    ask: float
    bid_size: float
    ask_size: float


#: The aggressor (taker) side of a trade: who crossed the spread.
SIDE_BUY = 1
SIDE_SELL = -1
SIDE_UNKNOWN = 0
#: A trade whose venue gives no per-symbol trade id.
NO_TRADE_ID = -1


@dataclass(slots=True)
class TradeReceived:
    instrument: str
    ts_us: int
    price: float
    size: float
    #: SIDE_BUY, SIDE_SELL or SIDE_UNKNOWN (the taker's side).
    side: int = SIDE_UNKNOWN
    #: The venue's per-symbol sequential trade id (Binance ``t``, Coinbase
    #: ``trade_id``, Kraken ``trade_id``), NO_TRADE_ID where there is none: duplicates
    #: are dropped and holes in the ids mean lost trades (see feeds.sequence).
    trade_id: int = NO_TRADE_ID


@dataclass(slots=True)
class LastPriceReceived:
    """The venue's last trade price from a ticker that carries no best bid/ask: never a
    bar, never a fill (it repeats a trade the trade channel already gave, or one it
    did not: either way it is not a tick to count)."""

    instrument: str
    ts_us: int
    price: float


@dataclass(slots=True)
class Bar:
    """One OHLCV bar, labelled by its open time (``ts_us``)."""

    instrument: str
    timeframe: str
    ts_us: int
    open: float
    high: float
    low: float
    close: float
    volume: float
    trades: int
    #: Volume of the trades whose taker bought / sold (known sides only: buy + sell <=
    #: volume); None when the source does not say (quotes, candles without it).
    buy_volume: float | None = None
    sell_volume: float | None = None


@dataclass(slots=True)
class BarUpdated:
    """The forming bar changed (sent at most once per instrument per bus batch)."""

    bar: Bar


@dataclass(slots=True)
class BarClosed:
    bar: Bar


@dataclass(slots=True)
class VenueBarClosed:
    """The venue's own closed 1m bar, as its stream sent it (Binance ``kline_1m`` with
    ``x: true``): compared with the bar built from trades, and taken when they differ."""

    bar: Bar

    @property
    def ts_us(self) -> int:
        return self.bar.ts_us


@dataclass(slots=True)
class HistoryFetched:
    """Bars a feed's history API gave for [start, end) of one instrument (a gap fill or
    a re-fetch of a partly seen minute). The bar builder forgets its own versions of
    those minutes and passes them on as HistoryBarsReady, so every live bar published
    before is written first and the fetched version wins."""

    instrument: str
    start_us: int
    end_us: int
    bars: object  # polars DataFrame in the store's bar layout (kept untyped: no import)

    @property
    def ts_us(self) -> int:
        return self.end_us


@dataclass(slots=True)
class HistoryBarsReady:
    """HistoryFetched, in order after the builder's bars: for the store writer."""

    fetched: HistoryFetched

    @property
    def ts_us(self) -> int:
        return self.fetched.end_us


@dataclass(slots=True)
class LiveCoverageRecorded:
    """A collector recorded what its live feeds covered (``ranges``: instrument,
    timeframe, source, start, end) and which ranges are owed a re-fetch (``owed``, taken
    out of coverage): sent over NATS so the writer's coverage says the same."""

    ts_us: int
    ranges: list[tuple[str, str, str, int, int]]
    owed: dict[str, list[tuple[int, int]]]


@dataclass(slots=True)
class HistoryStored:
    """History bars of [start, end) were written: charts showing them reload."""

    ts_us: int
    instrument: str
    start_us: int
    end_us: int
    rows: int


# --- engine events -------------------------------------------------------------------


class ServiceState(StrEnum):
    STARTING = "starting"
    RUNNING = "running"
    STOPPED = "stopped"
    FAILED = "failed"
    BACKOFF = "backoff"
    # Running, but no message for longer than the feed's stale_after_s.
    STALE = "stale"


@dataclass(slots=True)
class ServiceStateChanged:
    service: str
    ts_us: int
    state: ServiceState
    previous: ServiceState
    message: str = ""


@dataclass(slots=True)
class EngineLogged:
    """Something the engine reports to the user (also written to service_events)."""

    ts_us: int
    level: str
    source: str
    message: str


@dataclass(slots=True)
class BackfillProgressed:
    """One instrument's backfill moved on (a range done, or it finished or failed)."""

    ts_us: int
    instrument: str
    done: int  # ranges finished, skipped ones included
    total: int
    skipped: int  # ranges a previous backfill had finished
    rows: int  # bars written so far
    elapsed_s: float
    state: str  # running, done or failed
    message: str = ""


@dataclass(slots=True)
class WatchlistChanged:
    """Instruments were added to or removed from the watchlist."""

    ts_us: int
    instruments: list[str]


@dataclass(slots=True)
class EventsDropped:
    """A lossy subscriber fell behind and lost ``count`` events since the last report."""

    ts_us: int
    subscriber: str
    count: int
    total: int


@dataclass(slots=True)
class OrderUpdated:
    """A paper order was placed or changed state (filled, cancelled, rejected, expired):
    ``order`` is its state as stored (``Order.to_dict()``: times in UTC µs)."""

    ts_us: int
    order: dict[str, object]


@dataclass(slots=True)
class FillExecuted:
    """A paper order filled (``Fill.to_dict()``), once it is stored."""

    ts_us: int
    fill: dict[str, object]


@dataclass(slots=True)
class AlertRaised:
    """An alert rule fired (``sptrader.alerting``): what the TUI shows as a notification."""

    ts_us: int
    rule: str
    kind: str
    title: str
    text: str


@dataclass(slots=True)
class SignalRaised:
    """A scanner's signal on the newest closed bar (recorded in the ``signals`` table)."""

    ts_us: int  # when it was raised
    scanner: str
    run_id: int
    instrument: str
    bar_ts_us: int  # the closed bar it was computed on (its open time)
    side: str
    strength: float | None
    reason: str
    stop: float | None
    target: float | None
    paper: bool = False  # traded by the paper broker
    broker: str = ""  # where it is traded: "paper", a live venue, or "" (signals only)
    trail: float | None = None  # the stop trails the best price by this distance ...
    trail_pct: float | None = None  # ... or by this % (strategies.base.OPTIONAL_SIGNAL_SCHEMA)


#: The events the engine's clients see, the one list: the API sends each to a remote
#: client (sptrader.client.wire has a wire form for every one, and for nothing else)
#: and the app routes them. LastPriceReceived, VenueBarClosed, HistoryFetched and
#: HistoryBarsReady stay inside the engine.
#: Market data: what an attached client takes from NATS instead of the daemon's API.
MARKET_DATA_EVENTS: tuple[type, ...] = (QuoteReceived, TradeReceived, BarUpdated, BarClosed)

EVENT_TYPES: tuple[type, ...] = (
    QuoteReceived,
    TradeReceived,
    BarUpdated,
    BarClosed,
    ServiceStateChanged,
    EngineLogged,
    EventsDropped,
    HistoryStored,
    WatchlistChanged,
    BackfillProgressed,
    SignalRaised,
    OrderUpdated,
    FillExecuted,
    AlertRaised,
)


@dataclass(slots=True)
class ServiceStatus:
    """A snapshot of one service for the services pane and ``status``."""

    name: str
    kind: str
    state: ServiceState
    events_per_s: float
    last_event_us: int | None
    errors: int
    restarts: int
    last_error: str = ""
    stoppable: bool = True
    counters: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SymbolInfo:
    """One entry of a feed's instrument list (for search and validation)."""

    instrument: str  # FEED:SYMBOL as SPtrader writes it, e.g. COINBASE:BTC-USD
    description: str  # what a trader reads, e.g. "Bitcoin / US Dollar"
    kind: str = ""  # crypto, fx, metal, index, equity, cfd ...
    base: str = ""
    quote: str = ""
    # Decimals its prices show, from the feed's metadata (tick size, price increment,
    # pair_decimals, displayPrecision; 5 for EURUSD, 2 for BTCUSDT); None: not said.
    price_decimals: int | None = None
