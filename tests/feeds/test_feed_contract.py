"""The shared feed contract: every live feed (FEEDS) runs it end to end against its fake
exchange in the venue's own wire format, through a real Engine.

- The gap since the newest stored bar is filled before streaming (at start, after a
  disconnect, after the machine slept), in order with live bars, with no hole and no
  duplicate; trades for minutes already fetched change nothing, and those a venue
  replays after a reconnect (Coinbase, Kraken, OANDA) count once; the minute a stream
  started in is fetched again once it closed.
- Bad messages (broken JSON, not UTF-8, an unknown type, impossible values) are counted
  and skipped on the same connection: the next good one is data, nothing reconnects.
- A rate-limited history API (the venue's own 429 or error body) is waited out as the
  feed documents it, while the feed streams; the gap is still filled exactly.
- A silent feed goes stale and recovers.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import queue
import re
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import fake_alpaca_data
import fake_binance
import fake_coinbase
import fake_kraken
import fake_oanda
import polars as pl
import pytest
from conftest import make_settings, wait_until
from fakes import FakeHttpServer, FakeRequest, FakeResponse, free_port, minute_bar
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

import sptrader.engine as engine_module
import sptrader.feeds.base as feeds_base
import sptrader.store.writer as writer_module
from sptrader.clock import now_us
from sptrader.engine import Engine
from sptrader.models import (
    US_PER_MINUTE,
    EngineLogged,
    HistoryStored,
    LastPriceReceived,
    QuoteReceived,
    ServiceState,
    ServiceStateChanged,
    ServiceStatus,
    TradeReceived,
)
from sptrader.schema import BAR_SCHEMA
from sptrader.store import queries

FEEDS = ["binance", "coinbase", "kraken", "oanda", "alpaca"]
PRICE_COLUMNS = ["open", "high", "low", "close", "volume", "trades"]


@pytest.fixture(autouse=True)
def quick_forming_writes(monkeypatch: pytest.MonkeyPatch) -> None:
    """The writer rewrites forming bars every 2 s; these tests wait for them."""
    monkeypatch.setattr(writer_module, "FORMING_WRITE_S", 0.05)


# --- the fake markets -----------------------------------------------------------------


@dataclass(frozen=True)
class Market:
    """A feed's fake exchange and what its history makes of the fake market's bars."""

    name: str
    fake: ModuleType
    seed: str  # the symbol the fake seeds tests.fakes.minute_bar with

    @property
    def instrument(self) -> str:
        return self.fake.INSTRUMENT

    def expected(self, ts_us: int) -> tuple[float, float, float, float, float, int]:
        """The bar history stores for the minute opening at ``ts_us``."""
        bar = minute_bar(self.seed, ts_us)
        volume, trades = bar.volume, bar.trades
        if self.name == "coinbase":
            trades = 0  # Coinbase candles carry no trade count
        elif self.name == "oanda":
            volume = float(int(bar.volume))  # OANDA's tick volume, stored as trades too
            trades = int(bar.volume)
        return (bar.open, bar.high, bar.low, bar.close, volume, trades)


MARKETS = {
    "binance": Market("binance", fake_binance, fake_binance.SYMBOL),
    "coinbase": Market("coinbase", fake_coinbase, fake_coinbase.PRODUCT_ID),
    "kraken": Market("kraken", fake_kraken, fake_kraken.SYMBOL),
    "oanda": Market("oanda", fake_oanda, fake_oanda.INSTRUMENT.split(":", 1)[1]),
    "alpaca": Market("alpaca", fake_alpaca_data, fake_alpaca_data.SYMBOL),
}

_CLOSE = object()
_OANDA_STREAM = re.compile(r"^/v3/accounts/[^/]+/pricing/stream$")
_SYMBOL_LISTS = ("exchangeInfo", "AssetPairs", "products", "instruments", "assets")


def is_history(request: FakeRequest) -> bool:
    """Whether a request to a fake's REST host asks for history (not for the symbol
    list, not OANDA's price stream)."""
    return not _OANDA_STREAM.match(request.path) and not request.path.endswith(_SYMBOL_LISTS)


@dataclass
class Session:
    """One live connection's script: ``messages`` on connect, then (``hold``) whatever
    the test pushes, until it pushes CLOSE; without ``hold`` the server hangs up."""

    messages: list[str] = field(default_factory=list)
    hold: bool = True
    outbox: queue.Queue[Any] = field(default_factory=queue.Queue)


def http_server(route: Any) -> FakeHttpServer:
    """A FakeHttpServer that shuts down at once (``serve_forever`` polls for the
    shutdown request every 0.5 s by default: half a second per test)."""
    server = FakeHttpServer(route)
    server._thread = threading.Thread(
        target=server._server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
    )
    return server


class FakeExchange:
    """A fake exchange's REST host (history, symbols) and live host (websocket, or for
    OANDA the same HTTP server's price stream). Each connection takes the next scripted
    session; later ones hold the connection open, silent."""

    def __init__(self, market: Market, *sessions: Session, history: Any = None) -> None:
        self.market = market
        # The REST host's route (a test may wrap the fake's, e.g. to rate-limit it).
        self.history_route = history or market.fake.history_route
        self.scripts = list(sessions)
        self.sessions: list[Session] = []
        self.section: dict[str, Any] = {}
        self._stopped = threading.Event()
        self._lock = threading.Lock()

    def _next_session(self) -> Session:
        with self._lock:
            session = self.scripts.pop(0) if self.scripts else Session()
            self.sessions.append(session)
            return session

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[FakeExchange]:
        async with contextlib.AsyncExitStack() as stack:
            if self.market.name == "oanda":
                self.http = stack.enter_context(http_server(self._oanda_route))
                live_url = self.http.url
            else:
                self.http = stack.enter_context(http_server(self.history_route))
                port = free_port()
                await stack.enter_async_context(serve(self._ws_handler, "127.0.0.1", port))
                live_url = f"ws://127.0.0.1:{port}"
            # Registered last, so it runs first on exit: held connections end.
            stack.callback(self._stopped.set)
            self.section = self.market.fake.config_section(live_url, self.http.url)
            yield self

    def push(self, *messages: str | bytes) -> None:
        """Send ``messages`` on the newest connection (bytes as they are: on a websocket
        as a text frame, so it may be one that is not UTF-8)."""
        for message in messages:
            self.sessions[-1].outbox.put(message)

    def hang_up(self) -> None:
        """The server closes the newest connection (a disconnect mid-stream)."""
        self.sessions[-1].outbox.put(_CLOSE)

    def history_requests(self) -> int:
        return sum(1 for request in self.http.requests if is_history(request))

    # --- websocket feeds --------------------------------------------------------------

    async def _ws_handler(self, websocket: ServerConnection) -> None:
        session = self._next_session()
        await self.market.fake.serve_session(websocket, session.messages)
        if not session.hold:
            return  # returning closes the connection
        while not self._stopped.is_set():
            try:
                item = session.outbox.get_nowait()
            except queue.Empty:
                try:
                    async with asyncio.timeout(0.01):
                        await websocket.wait_closed()
                    return
                except TimeoutError:
                    continue
            if item is _CLOSE:
                return
            try:
                await websocket.send(item, text=True)
            except ConnectionClosed:
                return

    # --- OANDA's HTTP price stream ----------------------------------------------------

    def _oanda_route(self, request: FakeRequest) -> FakeResponse | None:
        if not _OANDA_STREAM.match(request.path):
            return self.history_route(request)
        if request.headers.get("authorization") != f"Bearer {fake_oanda.TOKEN}":
            return FakeResponse(401, {"errorMessage": "Insufficient authorization"})
        session = self._next_session()
        return FakeResponse(
            200, headers={"Content-Type": "application/json"}, stream=self._lines(session)
        )

    def _lines(self, session: Session) -> Iterator[bytes]:
        for message in session.messages:
            yield (message + "\n").encode()
        if not session.hold:
            return  # the response ends: OANDA ended the stream
        while not self._stopped.is_set():
            try:
                item = session.outbox.get(timeout=0.02)
            except queue.Empty:
                continue
            if item is _CLOSE:
                return
            yield item + b"\n" if isinstance(item, bytes) else (item + "\n").encode()


# --- the engine -----------------------------------------------------------------------


class Watcher:
    """What the engine published that these tests look at."""

    def __init__(self, engine: Engine) -> None:
        self.subscription = engine.bus.subscribe(
            "test", maxsize=100_000, types=(HistoryStored, ServiceStateChanged, EngineLogged)
        )
        self.events: list[object] = []

    def _poll(self) -> list[object]:
        self.events.extend(self.subscription.get_nowait())
        return self.events

    def stored(self, instrument: str) -> list[HistoryStored]:
        return [
            event
            for event in self._poll()
            if isinstance(event, HistoryStored) and event.instrument == instrument
        ]

    def transitions(self, service: str) -> list[tuple[ServiceState, ServiceState]]:
        return [
            (event.previous, event.state)
            for event in self._poll()
            if isinstance(event, ServiceStateChanged) and event.service == service
        ]

    def logged(self, text: str) -> list[EngineLogged]:
        return [
            event
            for event in self._poll()
            if isinstance(event, EngineLogged) and text in event.message
        ]


def make_engine(home: Path, exchange: FakeExchange, **section: Any) -> Engine:
    settings = make_settings(
        home,
        watchlist=[exchange.market.instrument],
        feeds={exchange.market.name: {**exchange.section, **section}},
        store={"seed_days": 0.05, "flush_interval_ms": 20},
        supervisor={"backoff_initial_s": 0.05, "backoff_jitter": 0},
    )
    return Engine(settings)


@contextlib.asynccontextmanager
async def started(engine: Engine) -> AsyncIterator[Engine]:
    await engine.start()
    try:
        yield engine
    finally:
        await engine.stop()


def status(engine: Engine, name: str) -> ServiceStatus:
    [found] = [item for item in engine.supervisor.status() if item.name == name]
    return found


async def backfilled(
    engine: Engine, watcher: Watcher, market: Market, count: int = 1, timeout: float = 10.0
) -> HistoryStored:
    """Wait until the ``count``-th gap fill is stored and the feed runs; return it."""

    def done() -> bool:
        return (
            len(watcher.stored(market.instrument)) >= count
            and status(engine, market.name).state is ServiceState.RUNNING
        )

    await wait_until(done, timeout=timeout)
    return watcher.stored(market.instrument)[count - 1]


# --- the store ------------------------------------------------------------------------


def stored_bars(engine: Engine, instrument: str) -> pl.DataFrame:
    frame = queries.bars_between(engine.require_store(), instrument, "1m", None, None)
    return frame.with_columns(pl.col("ts").dt.epoch("us").alias("ts_us"))


def assert_no_duplicates(engine: Engine, instrument: str) -> None:
    [(rows, distinct)] = (
        engine.require_store()
        .cursor()
        .execute(
            "SELECT count(*), count(DISTINCT ts) FROM bars_1m WHERE instrument = ?", [instrument]
        )
        .fetchall()
    )
    assert rows == distinct, f"{rows - distinct} duplicate bars of {instrument}"


def assert_gapless(frame: pl.DataFrame, first_us: int, end_us: int) -> pl.DataFrame:
    """The bars opening in [first, end): one for every minute, none twice."""
    window = frame.filter((pl.col("ts_us") >= first_us) & (pl.col("ts_us") < end_us))
    times = window["ts_us"].to_list()
    missing = sorted(set(range(first_us, end_us, US_PER_MINUTE)) - set(times))
    assert not missing, f"holes at {[(ts - first_us) // US_PER_MINUTE for ts in missing]} min"
    assert times == list(range(first_us, end_us, US_PER_MINUTE))
    return window


def rows_of(frame: pl.DataFrame) -> list[tuple]:
    return [tuple(row) for row in frame.select(PRICE_COLUMNS).rows()]


def assert_fake_market(market: Market, frame: pl.DataFrame, first_us: int, end_us: int) -> None:
    """The bars in [first, end) are the fake exchange's, exactly."""
    window = assert_gapless(frame, first_us, end_us)
    assert rows_of(window) == [market.expected(ts) for ts in range(first_us, end_us, US_PER_MINUTE)]


def stored_bar(engine: Engine, instrument: str, ts_us: int) -> tuple | None:
    frame = queries.bars_between(engine.require_store(), instrument, "1m", ts_us, ts_us + 1)
    return rows_of(frame)[0] if frame.height else None


def delete_bars_from(engine: Engine, instrument: str, start_us: int) -> None:
    """Forget the stored bars opening at or after ``start_us`` (as if the stream had
    stopped there): the next gap fill starts at the newest bar left."""
    store = engine.require_store()
    with store._write_lock:  # not inside one of the writer's transactions
        store.cursor().execute(
            "DELETE FROM bars_1m WHERE instrument = ? AND ts >= make_timestamp(?)",
            [instrument, start_us],
        )


def different_bars(market: Market, start_us: int, end_us: int) -> pl.DataFrame:
    """Bars for [start, end) that the fake market would never give (prices +1000)."""
    times = list(range(start_us, end_us, US_PER_MINUTE))
    bars = [market.expected(ts) for ts in times]
    return pl.DataFrame(
        {
            "instrument": [market.instrument] * len(times),
            "ts": times,
            "open": [bar[0] + 1000 for bar in bars],
            "high": [bar[1] + 1000 for bar in bars],
            "low": [bar[2] + 1000 for bar in bars],
            "close": [bar[3] + 1000 for bar in bars],
            "volume": [77.0] * len(times),
            "trades": [77] * len(times),
        },
        schema={**BAR_SCHEMA, "ts": pl.Int64},
    ).with_columns(pl.col("ts").cast(pl.Datetime("us")))


def live_ticks(count: int, price: float) -> list[tuple[int, float, float]]:
    """``count`` ticks stamped now, a millisecond apart, all in the current minute."""
    base = now_us() // 1000 * 1000
    minute_end = base - base % US_PER_MINUTE + US_PER_MINUTE
    base = min(base, minute_end - (count + 1) * 1000)
    return [(base + index * 1000, price + index, 1.0 + index) for index in range(count)]


def current_minute() -> int:
    now = now_us()
    return now - now % US_PER_MINUTE


# --- a: the gap at start-up -----------------------------------------------------------


@pytest.mark.parametrize("feed", FEEDS)
async def test_start_up_fills_the_gap_since_the_newest_stored_bar(home: Path, feed: str) -> None:
    market = MARKETS[feed]
    async with FakeExchange(market).running() as exchange:
        engine = make_engine(home, exchange)
        watcher = Watcher(engine)
        # Bars stored by an earlier run, up to about 30 minutes ago, with prices the
        # fake market never has: history must replace the newest only.
        first = current_minute() - 60 * US_PER_MINUTE
        newest = first + 30 * US_PER_MINUTE
        engine.open_store().upsert_bars(different_bars(market, first, newest + US_PER_MINUTE))
        async with started(engine):
            filled = await backfilled(engine, watcher, market)
            assert (filled.start_us, filled.rows) == (
                newest,
                (filled.end_us - newest) // US_PER_MINUTE,
            )
            assert filled.end_us >= current_minute() - US_PER_MINUTE
            frame = stored_bars(engine, market.instrument)
            assert_no_duplicates(engine, market.instrument)
            assert_gapless(frame, first, filled.end_us)
            # The older bars are untouched; from the newest on they are the exchange's.
            older = frame.filter(pl.col("ts_us") < newest)
            assert rows_of(older) == rows_of(different_bars(market, first, newest))
            assert_fake_market(market, frame, newest, filled.end_us)
            assert frame["ts_us"].max() == filled.end_us - US_PER_MINUTE
            info = status(engine, feed)
            assert info.counters["gap_fills"] == 1
            assert info.restarts == 0


# --- b: a disconnect mid-stream -------------------------------------------------------


@pytest.mark.parametrize("feed", FEEDS)
async def test_a_reconnect_fills_the_gap_since_the_newest_stored_bar(home: Path, feed: str) -> None:
    market = MARKETS[feed]
    async with FakeExchange(market).running() as exchange:
        engine = make_engine(home, exchange)
        watcher = Watcher(engine)
        fetch_ends: list[int] = []
        cut: list[int] = []
        fetch_gaps = engine._fetch_gaps

        def fetch_with_a_gap(feed_: Any, instruments: list[str], end_us: int) -> Any:
            # The disconnect lasted ten minutes: what the store would hold then is what
            # it holds now less the last ten minutes. Cut it right before the second
            # fill reads where the store stops.
            fetch_ends.append(end_us)
            if len(fetch_ends) == 2:
                delete_bars_from(engine, market.instrument, cut[0])
            return fetch_gaps(feed_, instruments, end_us)

        engine._fetch_gaps = fetch_with_a_gap
        async with started(engine):
            first_fill = await backfilled(engine, watcher, market)
            first = first_fill.start_us
            # A few trades live, then the exchange hangs up.
            ticks = live_ticks(3, 500.0)
            minute = ticks[0][0] - ticks[0][0] % US_PER_MINUTE
            exchange.push(*market.fake.live_messages(ticks))
            await wait_until(
                lambda: (stored_bar(engine, market.instrument, minute) or (0,) * 6)[5] == 3
            )
            cut.append(first_fill.end_us - 10 * US_PER_MINUTE)
            exchange.hang_up()

            second_fill = await backfilled(engine, watcher, market, count=2)
            assert len(exchange.sessions) == 2
            info = status(engine, feed)
            assert info.restarts == 1
            assert info.counters["gap_fills"] == 2
            # The second fill starts at the newest bar the store still had.
            assert second_fill.start_us == cut[0] - US_PER_MINUTE
            assert second_fill.end_us == fetch_ends[1]
            assert_no_duplicates(engine, market.instrument)
            frame = stored_bars(engine, market.instrument)
            assert_fake_market(market, frame, first, second_fill.end_us)

            # Live trades go on after the fill, in the current minute.
            more = live_ticks(2, 600.0)
            exchange.push(*market.fake.live_messages(more))
            latest = more[0][0] - more[0][0] % US_PER_MINUTE
            expected_trades = 5 if latest == minute else 2
            await wait_until(
                lambda: (
                    (stored_bar(engine, market.instrument, latest) or (0,) * 6)[5]
                    == expected_trades
                )
            )
            assert engine.builder.late_ticks == 0
            assert_no_duplicates(engine, market.instrument)


# --- c: trades for minutes already fetched --------------------------------------------


@pytest.mark.parametrize("feed", FEEDS)
async def test_trades_for_fetched_minutes_neither_duplicate_nor_overwrite_them(
    home: Path, feed: str
) -> None:
    market = MARKETS[feed]
    async with FakeExchange(market).running() as exchange:
        engine = make_engine(home, exchange)
        watcher = Watcher(engine)
        async with started(engine):
            filled = await backfilled(engine, watcher, market)
            end = filled.end_us
            late = [
                (end - US_PER_MINUTE + 1_500_000, 1.0, 50.0),  # the newest fetched minute
                (end - 3 * US_PER_MINUTE + 2_000_000, 10_000.0, 60.0),
            ]
            current = live_ticks(2, 500.0)
            exchange.push(*market.fake.live_messages(late + current))
            minute = current[0][0] - current[0][0] % US_PER_MINUTE
            await wait_until(
                lambda: (stored_bar(engine, market.instrument, minute) or (0,) * 6)[5] == 2
            )
            assert engine.builder.late_ticks == 2
            assert_no_duplicates(engine, market.instrument)
            frame = stored_bars(engine, market.instrument)
            assert_fake_market(market, frame, filled.start_us, end)
            live = stored_bar(engine, market.instrument, minute)
            assert live is not None and live[:4] == (500.0, 501.0, 500.0, 501.0)
            await wait_until(lambda: status(engine, "bars").counters.get("late_ticks") == 2)


def replayed_on_subscribe(feed: str, ticks: list[tuple[int, float, float]]) -> list[str]:
    """What the exchange replays of ``ticks`` when a connection subscribes again:
    Coinbase and Kraken a snapshot of recent trades, OANDA its latest price."""
    if feed == "coinbase":
        trades = [
            fake_coinbase.trade(ts_us, price, size, index + 1)
            for index, (ts_us, price, size) in enumerate(ticks)
        ]
        return [json.dumps(fake_coinbase.trades_message(trades, 0, kind="snapshot"))]
    if feed == "kraken":
        return [fake_kraken.trade_message(ticks, kind="snapshot")]
    return fake_oanda.live_messages(ticks[-1:])


KNOWN_DOUBLE_COUNT = "a snapshot replayed on reconnect counts trades of the minute again"


@pytest.mark.parametrize(
    "feed",
    [
        "coinbase",
        "kraken",
        "oanda",
    ],
)
async def test_trades_replayed_after_a_reconnect_in_the_same_minute_count_once(
    home: Path, feed: str
) -> None:
    market = MARKETS[feed]
    left_s = (US_PER_MINUTE - now_us() % US_PER_MINUTE) / 1e6
    if left_s < 3:  # the replay must land in the minute it replays
        await asyncio.sleep(left_s + 0.05)
    async with FakeExchange(market).running() as exchange:
        engine = make_engine(home, exchange)
        watcher = Watcher(engine)
        async with started(engine):
            await backfilled(engine, watcher, market)
            ticks = live_ticks(2, 500.0)
            minute = ticks[0][0] - ticks[0][0] % US_PER_MINUTE
            exchange.push(*market.fake.live_messages(ticks))
            await wait_until(
                lambda: (stored_bar(engine, market.instrument, minute) or (0,) * 6)[5] == 2
            )
            exchange.hang_up()
            await wait_until(
                lambda: (
                    len(exchange.sessions) == 2
                    and status(engine, feed).state is ServiceState.RUNNING
                )
            )
            # The new connection starts with what the exchange replays, then trades on.
            later = [(ticks[-1][0] + 1000, 502.0, 4.0)]
            exchange.push(*replayed_on_subscribe(feed, ticks), *market.fake.live_messages(later))
            await wait_until(
                lambda: (stored_bar(engine, market.instrument, minute) or (0,) * 6)[1] == 502.0
            )
            bar = stored_bar(engine, market.instrument, minute)
            assert bar == (500.0, 502.0, 500.0, 502.0, 1.0 + 2.0 + 4.0, 3)


# --- bad messages ---------------------------------------------------------------------

#: How each feed counts its fake's ``bad_messages``: broken JSON and a frame that is not
#: UTF-8 (malformed), a message of a type it does not read, then a NaN price, a negative
#: price and a time in the year 3000 (invalid).
SKIPPED = {
    # Binance's parser takes a stream it did not subscribe to for a malformed message.
    "binance": {"malformed": 3, "invalid": 3},
    "coinbase": {"malformed": 2, "unexpected": 1, "invalid": 3},
    "kraken": {"malformed": 2, "unexpected": 1, "invalid": 3},
    "oanda": {"malformed": 2, "unexpected": 1, "invalid": 3},
    "alpaca": {"malformed": 2, "unexpected": 1, "invalid": 3},
}
#: Counters that would mean a bad message reached the trade-id or sequence checks.
SEQUENCE_COUNTERS = {"duplicate_trades", "lost_trades", "sequence_gaps", "out_of_order"}


def bad_then_good(market: Market, tick: tuple[int, float, float]) -> list[str | bytes]:
    """The fake's bad messages stamped with ``tick``'s time, then ``tick``, good."""
    bad = market.fake.bad_messages(tick[0])
    if market.name == "coinbase":
        # Every Coinbase message carries the connection's next sequence_num, bad ones too.
        return [*bad, *fake_coinbase.live_messages([tick], fake_coinbase.sequence_after(bad))]
    return [*bad, *market.fake.live_messages([tick])]


@pytest.mark.parametrize("feed", FEEDS)
async def test_bad_messages_are_counted_and_skipped_on_the_same_connection(
    home: Path, feed: str
) -> None:
    market = MARKETS[feed]
    async with FakeExchange(market).running() as exchange:
        engine = make_engine(home, exchange)
        watcher = Watcher(engine)
        data = engine.bus.subscribe(
            "data", maxsize=1000, types=(TradeReceived, QuoteReceived, LastPriceReceived)
        )
        async with started(engine):
            await backfilled(engine, watcher, market)
            await wait_until(lambda: len(exchange.sessions) == 1)
            [tick] = live_ticks(1, 500.0)
            exchange.push(*bad_then_good(market, tick))
            minute = tick[0] - tick[0] % US_PER_MINUTE
            await wait_until(
                lambda: (
                    stored_bar(engine, market.instrument, minute)
                    == (500.0, 500.0, 500.0, 500.0, 1.0, 1)
                )
            )
            # The good message is the only data: a trade, or OANDA's quote.
            [event] = data.get_nowait()
            assert type(event) is (QuoteReceived if feed == "oanda" else TradeReceived)
            price = event.bid if isinstance(event, QuoteReceived) else event.price
            assert (event.instrument, event.ts_us, price) == (market.instrument, tick[0], 500.0)
            # The bad ones are counted, each once; none cost the connection.
            info = status(engine, feed)
            counted = {name: info.counters[name] for name in SKIPPED[feed] if name in info.counters}
            assert counted == SKIPPED[feed], info.counters
            assert not SEQUENCE_COUNTERS & set(info.counters), info.counters
            assert (len(exchange.sessions), info.restarts, info.state) == (
                1,
                0,
                ServiceState.RUNNING,
            )
            assert "disconnects" not in info.counters and info.errors == 0


# --- a rate-limited history API -------------------------------------------------------

#: What each feed waits after the two rate-limited answers, as its code documents:
#: Binance the ``Retry-After`` seconds it is sent; Coinbase, OANDA and Alpaca, which send
#: no ``Retry-After``, feeds.http's exponential backoff; Kraken, whose rate limit is an
#: error in a 200 body, its own backoff (2 s, then 4 s).
RATE_LIMIT_WAITS = {
    "binance": [1.0, 1.0],
    "coinbase": [0.5, 1.0],
    "kraken": [2.0, 4.0],
    "oanda": [0.5, 1.0],
    "alpaca": [0.5, 1.0],
}


def rate_limit_answers(market: Market) -> list[FakeResponse]:
    """The venue's own answers to a client over its rate limit, two of them."""
    if market.name == "binance":
        return [fake_binance.rate_limited(retry_after_s=1) for _ in range(2)]
    if market.name == "kraken":
        return [
            fake_kraken.rate_limited("EGeneral:Too many requests"),
            fake_kraken.rate_limited("EAPI:Rate limit exceeded"),
        ]
    return [market.fake.rate_limited() for _ in range(2)]


class RateLimitedHistory:
    """A fake's REST route whose first history requests get the venue's rate-limit
    answers; the request after them is held until ``release`` (the history API slow to
    come back), and later ones are answered at once."""

    def __init__(self, market: Market) -> None:
        self.route = market.fake.history_route
        self.limits = rate_limit_answers(market)
        self.held = threading.Event()
        self.release = threading.Event()
        #: (monotonic time, rate-limited?) of every history request.
        self.requests: list[tuple[float, bool]] = []
        self._lock = threading.Lock()

    def __call__(self, request: FakeRequest) -> FakeResponse | None:
        if not is_history(request):
            return self.route(request)
        with self._lock:
            index = len(self.requests)
            limited = index < len(self.limits)
            self.requests.append((time.monotonic(), limited))
        if limited:
            return self.limits[index]
        if index == len(self.limits):
            self.held.set()
            self.release.wait(timeout=20)
        return self.route(request)


@pytest.mark.parametrize("feed", FEEDS)
async def test_a_rate_limited_history_is_waited_out_while_the_feed_streams(
    home: Path, feed: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    market = MARKETS[feed]
    # How long a start waits for its gap fill before streaming anyway (3 s by default).
    monkeypatch.setattr(engine_module, "GAP_FILL_WAIT_S", 0.05)
    history = RateLimitedHistory(market)
    async with FakeExchange(market, history=history).running() as exchange:
        engine = make_engine(home, exchange)
        watcher = Watcher(engine)
        waits: list[float] = []
        engine.feeds[feed].sleep = waits.append  # how history waits out a 429: recorded
        first = current_minute() - 60 * US_PER_MINUTE
        newest = first + 30 * US_PER_MINUTE
        engine.open_store().upsert_bars(different_bars(market, first, newest + US_PER_MINUTE))
        async with started(engine):
            try:
                # Rate-limited twice, the fill waits for its third request; meanwhile the
                # feed streams, and live bars are stored.
                await wait_until(history.held.is_set, timeout=10)
                await wait_until(
                    lambda: (
                        status(engine, feed).state is ServiceState.RUNNING
                        and len(exchange.sessions) == 1
                    )
                )
                assert watcher.logged("streaming while it goes on")
                [tick] = live_ticks(1, 500.0)
                exchange.push(*market.fake.live_messages([tick]))
                minute = tick[0] - tick[0] % US_PER_MINUTE
                await wait_until(
                    lambda: (
                        stored_bar(engine, market.instrument, minute)
                        == (500.0, 500.0, 500.0, 500.0, 1.0, 1)
                    )
                )
                assert watcher.stored(market.instrument) == []
            finally:
                history.release.set()

            filled = await backfilled(engine, watcher, market)
            # The two rate-limited requests were waited out as the feed documents it.
            assert [limited for _, limited in history.requests[:3]] == [True, True, False]
            expected = RATE_LIMIT_WAITS[feed]
            if waits or feed != "binance":
                assert waits == expected
            else:
                # Binance's history sleeps with time.sleep, not with the feed's ``sleep``:
                # the wait shows between the requests.
                times = [at for at, _ in history.requests[:3]]
                gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
                assert all(gap >= wait for gap, wait in zip(gaps, expected, strict=True)), gaps
            # The gap is filled exactly, as at any start-up.
            assert (filled.start_us, filled.rows) == (
                newest,
                (filled.end_us - newest) // US_PER_MINUTE,
            )
            frame = stored_bars(engine, market.instrument)
            assert_no_duplicates(engine, market.instrument)
            assert_gapless(frame, first, filled.end_us)
            older = frame.filter(pl.col("ts_us") < newest)
            assert rows_of(older) == rows_of(different_bars(market, first, newest))
            assert_fake_market(market, frame, newest, filled.end_us)
            info = status(engine, feed)
            assert info.counters["gap_fills"] == 1
            assert "gap_fill_errors" not in info.counters
            assert (len(exchange.sessions), info.restarts) == (1, 0)


# --- stale ----------------------------------------------------------------------------


@pytest.mark.parametrize("feed", FEEDS)
async def test_a_silent_feed_goes_stale_and_recovers_with_data(home: Path, feed: str) -> None:
    market = MARKETS[feed]
    async with FakeExchange(market).running() as exchange:
        # Silent longer than stale_after_s, but not long enough for the watchdog.
        engine = make_engine(home, exchange, stale_after_s=0.3, watchdog_s=30.0)
        watcher = Watcher(engine)
        async with started(engine):
            await backfilled(engine, watcher, market)
            await wait_until(lambda: status(engine, feed).state is ServiceState.STALE)
            assert engine.stale_instruments() == {market.instrument}
            assert engine.is_stale(market.instrument)
            assert len(exchange.sessions) == 1  # stale is not a reconnect

            pushed = [0.0]

            def data_again() -> bool:
                if time.monotonic() - pushed[0] > 0.05:  # a trade every 50 ms
                    pushed[0] = time.monotonic()
                    exchange.push(*market.fake.live_messages(live_ticks(1, 500.0)))
                return status(engine, feed).state is ServiceState.RUNNING

            await wait_until(data_again)
            assert engine.stale_instruments() == set()
            assert watcher.transitions(feed)[-3:] == [
                (ServiceState.STARTING, ServiceState.RUNNING),
                (ServiceState.RUNNING, ServiceState.STALE),
                (ServiceState.STALE, ServiceState.RUNNING),
            ]
            assert status(engine, feed).restarts == 0


# --- waking from sleep ----------------------------------------------------------------


@pytest.mark.parametrize("feed", FEEDS)
async def test_a_wall_clock_jump_reconnects_and_backfills(home: Path, feed: str) -> None:
    market = MARKETS[feed]
    async with FakeExchange(market).running() as exchange:
        engine = make_engine(home, exchange)
        watcher = Watcher(engine)
        slept = [0.0]
        engine._wall_clock = lambda: time.time() + slept[0]
        async with started(engine):
            filled = await backfilled(engine, watcher, market)
            # What the store held when the machine went to sleep five minutes ago.
            delete_bars_from(engine, market.instrument, filled.end_us - 5 * US_PER_MINUTE)
            requests = exchange.history_requests()
            slept[0] = 120.0  # the wall clock moves on; the monotonic one did not

            refilled = await backfilled(engine, watcher, market, count=2)
            assert watcher.logged("the clock jumped 120s")
            assert len(exchange.sessions) == 2
            assert exchange.history_requests() > requests
            assert refilled.start_us == filled.end_us - 6 * US_PER_MINUTE
            assert watcher.transitions(feed)[-3:] == [
                (ServiceState.RUNNING, ServiceState.STOPPED),
                (ServiceState.STOPPED, ServiceState.STARTING),
                (ServiceState.STARTING, ServiceState.RUNNING),
            ]
            info = status(engine, feed)
            assert info.counters["gap_fills"] == 2
            assert_no_duplicates(engine, market.instrument)
            assert_fake_market(
                market, stored_bars(engine, market.instrument), filled.start_us, refilled.end_us
            )


# --- the partly seen minute -----------------------------------------------------------


@pytest.mark.parametrize("feed", FEEDS)
async def test_the_minute_a_stream_started_in_is_fetched_again_once_closed(
    home: Path, feed: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    market = MARKETS[feed]
    # The engine's clock runs two minutes behind while the stream starts, so the minute
    # it starts in (and sees only partly) has closed at the exchange a minute later.
    behind = [2 * US_PER_MINUTE]
    monkeypatch.setattr(engine_module, "now_us", lambda: now_us() - behind[0])
    # The feed's clock too: it tells the engine which minute its stream opened in.
    monkeypatch.setattr(feeds_base, "now_us", lambda: now_us() - behind[0])
    async with FakeExchange(market).running() as exchange:
        engine = make_engine(home, exchange)
        watcher = Watcher(engine)
        async with started(engine):
            filled = await backfilled(engine, watcher, market)
            started_in = filled.end_us
            span = (started_in, started_in + US_PER_MINUTE)
            assert engine.owed.ranges(market.instrument) == [span]
            # Two ticks of that minute seen live: a partial bar, closed by the clock.
            ticks = [(started_in + 50_000_000, 700.0, 1.0), (started_in + 55_000_000, 701.0, 2.0)]
            exchange.push(*market.fake.live_messages(ticks))
            partial = (700.0, 701.0, 700.0, 701.0, 3.0, 2)
            await wait_until(lambda: stored_bar(engine, market.instrument, started_in) == partial)
            engine._refetch_due()  # not due by the engine's clock yet
            assert engine.owed.ranges(market.instrument) == [span]
            # Owed: not covered until fetched again.
            engine.record_live_coverage()
            assert started_in + US_PER_MINUTE not in [
                end for _, end in engine.require_store().coverage(market.instrument)
            ]

            behind[0] = 0
            engine._refetch_due()
            await wait_until(lambda: engine.owed.ranges(market.instrument) == [])
            await wait_until(lambda: len(watcher.stored(market.instrument)) == 2)
            refetched = watcher.stored(market.instrument)[1]
            assert (refetched.start_us, refetched.end_us, refetched.rows) == (
                started_in,
                started_in + US_PER_MINUTE,
                1,
            )
            assert stored_bar(engine, market.instrument, started_in) == market.expected(started_in)
            assert_no_duplicates(engine, market.instrument)
            assert_fake_market(
                market, stored_bars(engine, market.instrument), filled.start_us, started_in
            )
