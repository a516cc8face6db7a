"""Test support: a fake Binance spot that makes its own market and breaks on purpose
(no tests in here; used by tests/feeds/test_fault_binance.py and bench/fault_feed.py).

The venue generates trades for its symbols (sequential ids, prices on a 0.01 grid, sizes
on a 0.001 grid) and keeps every one: that record is the truth the stored bars are
compared with. It serves them the way Binance does, in the documented wire format:
the combined stream (``trade``, ``bookTicker``, ``kline_1m`` with ``x: true`` once a
minute has closed) and REST ``/api/v3/klines`` aggregated from the same trades.

Faults are injected by kind and counted:
- ``silence``: trades happen but nothing is sent for a while, shorter than the feed's
  watchdog (the connection stays up): trades are lost, the ids show it;
- ``duplicate``: the last few trade messages are sent again;
- ``bad``: one message from BAD_MESSAGES (impossible values, broken JSON, non-UTF-8);
- ``close``: the server closes (1000 or 1001); ``reset``: the TCP connection is cut;
  ``shutdown``: Binance's ``serverShutdown`` event, then a close;
- ``refuse``: no connection is accepted for a while (the listening socket is closed);
- ``rest_down``: REST answers 503 (or 429 with ``Retry-After``) for a while.

Time comes from a ``FastClock``: the whole engine and the venue run ``speed`` times
faster than the wall clock, so a test sees several minutes close in seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import sys
import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

try:
    from fakes import FakeHttpServer, FakeRequest, FakeResponse, free_port
except ImportError:  # imported as tests.fault_binance, e.g. from bench/
    from tests.fakes import FakeHttpServer, FakeRequest, FakeResponse, free_port

import sptrader.clock
from sptrader.models import US_PER_MINUTE

MS_PER_MINUTE = US_PER_MINUTE // 1000

#: Messages no feed may turn into data: each is counted (malformed or invalid) and
#: skipped, and none costs the connection. Values are templates: ``{T}`` is now in ms.
BAD_MESSAGES: dict[str, str | bytes] = {
    "price_nan_string": '{{"stream":"{s}@trade","data":{{"e":"trade","t":{id},"p":"NaN","q":"1","T":{T},"m":true}}}}',
    "price_nan": '{{"stream":"{s}@trade","data":{{"e":"trade","t":{id},"p":NaN,"q":"1","T":{T},"m":true}}}}',
    "price_infinity": '{{"stream":"{s}@trade","data":{{"e":"trade","t":{id},"p":"Infinity","q":"1","T":{T},"m":true}}}}',
    "price_1e400": '{{"stream":"{s}@trade","data":{{"e":"trade","t":{id},"p":"1e400","q":"1","T":{T},"m":true}}}}',
    "price_huge_digits": '{{"stream":"{s}@trade","data":{{"e":"trade","t":{id},"p":"'
    + "9" * 1_000_000
    + '","q":"1","T":{T},"m":true}}}}',
    "price_negative": '{{"stream":"{s}@trade","data":{{"e":"trade","t":{id},"p":"-5","q":"1","T":{T},"m":true}}}}',
    "price_zero": '{{"stream":"{s}@trade","data":{{"e":"trade","t":{id},"p":"0","q":"1","T":{T},"m":true}}}}',
    "price_true": '{{"stream":"{s}@trade","data":{{"e":"trade","t":{id},"p":true,"q":"1","T":{T},"m":true}}}}',
    "size_nan": '{{"stream":"{s}@trade","data":{{"e":"trade","t":{id},"p":"100","q":"NaN","T":{T},"m":true}}}}',
    "size_negative": '{{"stream":"{s}@trade","data":{{"e":"trade","t":{id},"p":"100","q":"-1","T":{T},"m":true}}}}',
    "size_zero": '{{"stream":"{s}@trade","data":{{"e":"trade","t":{id},"p":"100","q":"0","T":{T},"m":true}}}}',
    "size_1e300": '{{"stream":"{s}@trade","data":{{"e":"trade","t":{id},"p":"100","q":"1e300","T":{T},"m":true}}}}',
    "time_zero": '{{"stream":"{s}@trade","data":{{"e":"trade","t":{id},"p":"100","q":"1","T":0,"m":true}}}}',
    "time_negative": '{{"stream":"{s}@trade","data":{{"e":"trade","t":{id},"p":"100","q":"1","T":-60000,"m":true}}}}',
    "time_year_3000": '{{"stream":"{s}@trade","data":{{"e":"trade","t":{id},"p":"100","q":"1","T":32503680000000,"m":true}}}}',
    "time_huge_int": '{{"stream":"{s}@trade","data":{{"e":"trade","t":{id},"p":"100","q":"1","T":150000000000000000000,"m":true}}}}',
    "time_1e400": '{{"stream":"{s}@trade","data":{{"e":"trade","t":{id},"p":"100","q":"1","T":1e400,"m":true}}}}',
    "book_nan": '{{"stream":"{s}@bookTicker","data":{{"u":1,"s":"X","b":"NaN","B":"1","a":"1","A":"1"}}}}',
    "kline_infinite": '{{"stream":"{s}@kline_1m","data":{{"e":"kline","k":{{"t":{M},"i":"1m","o":"1","h":"Infinity","l":"1","c":"1","v":"1","n":1,"x":true}}}}}}',
    "broken_json": '{{"stream":"{s}@trade","data":{{',
    "nested_100k": "[" * 100_000 + "]" * 100_000,
    "not_utf8": b'{"stream":"\xff\xfe@trade"}',
}


class FastClock:
    """Wall-clock microseconds running ``speed`` times faster from now on, put in place
    of ``now_us`` in every loaded sptrader module (and restored by ``restore``)."""

    def __init__(self, speed: float) -> None:
        self.speed = speed
        self._start_us = time.time_ns() // 1000
        self._start_mono = time.monotonic()
        self._patched: list[tuple[Any, Any]] = []

    def now_us(self) -> int:
        return self._start_us + int((time.monotonic() - self._start_mono) * self.speed * 1e6)

    def seconds(self, fake_seconds: float) -> float:
        """Real seconds that ``fake_seconds`` take."""
        return fake_seconds / self.speed

    def install(self) -> FastClock:
        original = sptrader.clock.now_us
        for module in list(sys.modules.values()):
            name = getattr(module, "__name__", "")
            if name.startswith("sptrader") and getattr(module, "now_us", None) is original:
                self._patched.append((module, original))
                module.now_us = self.now_us  # type: ignore[attr-defined]
        return self

    def restore(self) -> None:
        for module, original in self._patched:
            module.now_us = original
        self._patched.clear()


@dataclass
class Trade:
    trade_id: int
    ts_us: int
    price: Decimal
    qty: Decimal
    maker: bool  # buyer is maker: the taker sold


@dataclass
class Faults:
    """What was injected, by kind, and what the feed must have counted."""

    injected: dict[str, int] = field(default_factory=dict)
    bad_sent: int = 0
    trades_withheld: int = 0
    connections: int = 0

    def add(self, kind: str, count: int = 1) -> None:
        self.injected[kind] = self.injected.get(kind, 0) + count


class FaultyBinance:
    """The venue: its market, its record, its servers and its faults."""

    def __init__(
        self, symbols: list[str], clock: FastClock, *, seed: int = 7, trades_per_s: float = 4.0
    ) -> None:
        self.symbols = [symbol.upper() for symbol in symbols]
        self.clock = clock
        self.random = random.Random(seed)
        self.trades_per_s = trades_per_s
        self.trades: dict[str, list[Trade]] = {symbol: [] for symbol in self.symbols}
        self._prices = {
            symbol: Decimal(100 + 10 * index) for index, symbol in enumerate(self.symbols)
        }
        self._next_id = {symbol: 1 for symbol in self.symbols}
        self.faults = Faults()
        self.silent_until = 0.0  # monotonic
        self.refusing = False
        self.rest_down_until = 0.0  # monotonic
        self.rest_status = 503
        self._sockets: set[Any] = set()
        self._listeners: list[asyncio.Queue[Any]] = []
        self._tasks: list[asyncio.Task[Any]] = []
        self._server: Any = None
        self.ws_port = free_port()

    # --- the market -------------------------------------------------------------------

    def _generate(self, now_us: int, last_us: int) -> list[tuple[str, Trade]]:
        """Trades of every symbol stamped in (last, now], a Poisson-ish count."""
        made: list[tuple[str, Trade]] = []
        span_s = (now_us - last_us) / 1e6
        for symbol in self.symbols:
            expected = self.trades_per_s * span_s
            count = int(expected) + (1 if self.random.random() < expected % 1 else 0)
            times = sorted(self.random.randint(last_us + 1, now_us) for _ in range(count))
            for ts_us in times:
                # Milliseconds, as Binance stamps them.
                ts_us -= ts_us % 1000
                step = Decimal(self.random.randint(-3, 3)) / 100
                price = max(Decimal("1.00"), self._prices[symbol] + step)
                self._prices[symbol] = price
                qty = Decimal(self.random.randint(1, 5000)) / 1000
                trade = Trade(self._next_id[symbol], ts_us, price, qty, self.random.random() < 0.5)
                self._next_id[symbol] += 1
                self.trades[symbol].append(trade)
                made.append((symbol, trade))
        return made

    def venue_bars(self, symbol: str, start_us: int, end_us: int) -> dict[int, tuple]:
        """The venue's 1m bars of [start, end) from its own record: minute -> (o, h, l,
        c, volume, trades, taker buy volume) with exact decimals."""
        bars: dict[int, list] = {}
        for trade in self.trades[symbol.upper()]:
            if not start_us <= trade.ts_us < end_us:
                continue
            minute = trade.ts_us - trade.ts_us % US_PER_MINUTE
            bar = bars.get(minute)
            buy = Decimal(0) if trade.maker else trade.qty
            if bar is None:
                bars[minute] = [
                    trade.price,
                    trade.price,
                    trade.price,
                    trade.price,
                    trade.qty,
                    1,
                    buy,
                ]
            else:
                bar[1] = max(bar[1], trade.price)
                bar[2] = min(bar[2], trade.price)
                bar[3] = trade.price
                bar[4] += trade.qty
                bar[5] += 1
                bar[6] += buy
        return {minute: tuple(bar) for minute, bar in bars.items()}

    # --- serving ----------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def running(self) -> Any:
        self.http = FakeHttpServer(self._route)
        with self.http:
            await self._listen()
            self._tasks.append(asyncio.get_running_loop().create_task(self._market()))
            try:
                yield self
            finally:
                for task in self._tasks:
                    task.cancel()
                await asyncio.gather(*self._tasks, return_exceptions=True)
                await self._unlisten()

    def config_section(self) -> dict[str, Any]:
        return {
            "enabled": True,
            "ws_url": f"ws://127.0.0.1:{self.ws_port}",
            "rest_url": self.http.url,
        }

    async def _listen(self) -> None:
        from websockets.asyncio.server import serve

        self._server = await serve(
            self._handler, "127.0.0.1", self.ws_port, max_size=None, compression=None
        )

    async def _unlisten(self) -> None:
        # Handlers wait on their queues: tell them to return, or wait_closed (which
        # waits for every handler) would wait forever.
        for queue in list(self._listeners):
            queue.put_nowait(_HANG_UP)
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)
            self._server = None

    async def _market(self) -> None:
        """Make trades as fake time passes and hand them to every open connection;
        announce each minute's kline once it has closed."""
        last_us = self.clock.now_us()
        announced = last_us - last_us % US_PER_MINUTE
        while True:
            await asyncio.sleep(0.02)
            now_us = self.clock.now_us()
            made = self._generate(now_us, last_us)
            last_us = now_us
            closed = now_us - now_us % US_PER_MINUTE
            messages: list[str | bytes] = [_trade_message(symbol, trade) for symbol, trade in made]
            if made and self.random.random() < 0.3:
                symbol, trade = made[-1]
                messages.append(_book_message(symbol, trade.price))
            # Klines of the minutes that just closed, a (fake) second after them.
            if closed > announced and now_us >= closed + 1_000_000:
                for symbol in self.symbols:
                    bars = self.venue_bars(symbol, announced, closed)
                    messages.extend(
                        _kline_message(symbol, minute, bar) for minute, bar in sorted(bars.items())
                    )
                announced = closed
            silent = time.monotonic() < self.silent_until
            if silent:
                self.faults.trades_withheld += len(made)
                continue
            for queue in list(self._listeners):
                queue.put_nowait(messages)

    async def _handler(self, websocket: Any) -> None:
        if self.refusing:
            # The listening socket is closed while refusing; a connection that got in
            # just before is turned away.
            await websocket.close(1013, "try again later")
            return
        self.faults.connections += 1
        queue: asyncio.Queue[Any] = asyncio.Queue()
        self._listeners.append(queue)
        self._sockets.add(websocket)
        try:
            while True:
                batch = await queue.get()
                if batch is _HANG_UP:
                    return
                for message in batch:
                    if isinstance(message, tuple):  # (bytes, text frame)
                        await websocket.send(message[0], text=True)
                    else:
                        await websocket.send(message)
        except Exception:
            return
        finally:
            self._listeners.remove(queue)
            self._sockets.discard(websocket)

    # --- faults -----------------------------------------------------------------------

    def silence(self, real_seconds: float) -> None:
        self.silent_until = time.monotonic() + real_seconds
        self.faults.add("silence")

    def duplicate(self, count: int = 5) -> None:
        """The last ``count`` trades of each symbol sent again."""
        messages = [
            _trade_message(symbol, trade)
            for symbol in self.symbols
            for trade in self.trades[symbol][-count:]
        ]
        self._send(messages)
        self.faults.add("duplicate", len(messages) * len(self._listeners))

    def bad(self, kind: str) -> None:
        template = BAD_MESSAGES[kind]
        symbol = self.symbols[0]
        now_ms = self.clock.now_us() // 1000
        if isinstance(template, bytes):
            message: Any = (template, True)
        else:
            message = template.format(
                s=symbol.lower(),
                id=self._next_id[symbol] + 10**9,
                T=now_ms,
                M=now_ms - now_ms % MS_PER_MINUTE - MS_PER_MINUTE,
            )
        self._send([message])
        self.faults.add(f"bad:{kind}")
        self.faults.bad_sent += len(self._listeners)

    async def close(self, code: int = 1001) -> None:
        for websocket in list(self._sockets):
            with contextlib.suppress(Exception):
                await websocket.close(code, "going away" if code == 1001 else "")
        self.faults.add(f"close_{code}")

    def reset(self) -> None:
        for websocket in list(self._sockets):
            websocket.transport.abort()
        self.faults.add("tcp_reset")

    def shutdown(self) -> None:
        self._send([json.dumps({"e": "serverShutdown", "E": self.clock.now_us() // 1000})])
        self.faults.add("server_shutdown")

    async def refuse(self, real_seconds: float) -> None:
        """Close the listening socket (connections are refused), cut the open ones, and
        listen again after ``real_seconds``."""
        self.refusing = True
        self.faults.add("refused")
        await self._unlisten()
        self.reset()
        await asyncio.sleep(real_seconds)
        self.refusing = False
        await self._listen()

    def rest_down(self, real_seconds: float, status: int = 503) -> None:
        self.rest_down_until = time.monotonic() + real_seconds
        self.rest_status = status
        self.faults.add(f"rest_{status}")

    def _send(self, messages: list[Any]) -> None:
        for queue in list(self._listeners):
            queue.put_nowait(messages)

    # --- REST -------------------------------------------------------------------------

    def _route(self, request: FakeRequest) -> FakeResponse | None:
        if time.monotonic() < self.rest_down_until:
            if self.rest_status == 429:
                return FakeResponse(
                    429, {"code": -1003, "msg": "Too many requests."}, headers={"Retry-After": "1"}
                )
            return FakeResponse(503, {"code": -1001, "msg": "Service unavailable."})
        if request.path == "/api/v3/exchangeInfo":
            return FakeResponse(
                200,
                {
                    "symbols": [
                        {
                            "symbol": s,
                            "status": "TRADING",
                            "baseAsset": s[:-4],
                            "quoteAsset": s[-4:],
                        }
                        for s in self.symbols
                    ]
                },
            )
        if request.path == "/api/v3/klines":
            return FakeResponse(
                200, self._klines(request.query), headers={"X-MBX-USED-WEIGHT-1M": "2"}
            )
        return None

    def _klines(self, query: dict[str, str]) -> list[list[Any]]:
        symbol = query["symbol"]
        start_ms = int(query.get("startTime", 0))
        end_ms = int(query.get("endTime", self.clock.now_us() // 1000))
        limit = min(int(query.get("limit", 500)), 1000)
        now_ms = self.clock.now_us() // 1000
        first = -(-start_ms // MS_PER_MINUTE) * MS_PER_MINUTE
        rows: list[list[Any]] = []
        bars = self.venue_bars(symbol, first * 1000, (end_ms + 1) * 1000)
        previous_close: Decimal | None = None
        for open_ms in range(first, end_ms + 1, MS_PER_MINUTE):
            if len(rows) >= limit or open_ms > now_ms:  # the forming kline is answered too
                break
            bar = bars.get(open_ms * 1000)
            if bar is None:
                # Binance answers a minute without trades with a flat bar at the last
                # close; before the first trade there is nothing.
                if previous_close is None:
                    continue
                bar = (previous_close,) * 4 + (Decimal(0), 0, Decimal(0))
            previous_close = bar[3]
            rows.append(_kline_row(open_ms, bar))
        return rows


_HANG_UP = object()


def _trade_message(symbol: str, trade: Trade) -> str:
    ms = trade.ts_us // 1000
    return json.dumps(
        {
            "stream": f"{symbol.lower()}@trade",
            "data": {
                "e": "trade",
                "E": ms,
                "s": symbol,
                "t": trade.trade_id,
                "p": f"{trade.price:.8f}",
                "q": f"{trade.qty:.8f}",
                "T": ms,
                "m": trade.maker,
                "M": True,
            },
        }
    )


def _book_message(symbol: str, price: Decimal) -> str:
    return json.dumps(
        {
            "stream": f"{symbol.lower()}@bookTicker",
            "data": {
                "u": 1,
                "s": symbol,
                "b": f"{price - Decimal('0.01'):.8f}",
                "B": "1.00000000",
                "a": f"{price + Decimal('0.01'):.8f}",
                "A": "1.00000000",
            },
        }
    )


def _kline_row(open_ms: int, bar: tuple) -> list[Any]:
    o, h, low, c, volume, trades, buy = bar
    return [
        open_ms,
        f"{o:.8f}",
        f"{h:.8f}",
        f"{low:.8f}",
        f"{c:.8f}",
        f"{volume:.8f}",
        open_ms + MS_PER_MINUTE - 1,
        f"{volume * c:.8f}",
        trades,
        f"{buy:.8f}",
        f"{buy * c:.8f}",
        "0",
    ]


def _kline_message(symbol: str, open_us: int, bar: tuple) -> str:
    row = _kline_row(open_us // 1000, bar)
    return json.dumps(
        {
            "stream": f"{symbol.lower()}@kline_1m",
            "data": {
                "e": "kline",
                "E": row[6] + 1000,
                "s": symbol,
                "k": {
                    "t": row[0],
                    "T": row[6],
                    "s": symbol,
                    "i": "1m",
                    "o": row[1],
                    "c": row[4],
                    "h": row[2],
                    "l": row[3],
                    "v": row[5],
                    "n": row[8],
                    "x": True,
                    "q": row[7],
                    "V": row[9],
                    "Q": row[10],
                    "B": "0",
                },
            },
        }
    )


def compare_bars(
    venue: FaultyBinance, stored: dict[str, dict[int, tuple]], start_us: int, end_us: int
) -> dict[str, Any]:
    """Stored 1m bars (instrument -> minute -> (o, h, l, c, volume, trades)) against the
    venue's record for the minutes in [start, end) that had trades: counts of minutes
    compared, missing, differing, with the first few differences."""
    result: dict[str, Any] = {"compared": 0, "missing": 0, "differing": 0, "examples": []}
    for symbol in venue.symbols:
        truth = venue.venue_bars(symbol, start_us, end_us)
        mine = stored.get(f"BINANCE:{symbol}", {})
        for minute, bar in sorted(truth.items()):
            result["compared"] += 1
            got = mine.get(minute)
            if got is None:
                result["missing"] += 1
                if len(result["examples"]) < 5:
                    result["examples"].append((symbol, minute, "missing", bar[:6]))
                continue
            expected = (*(float(value) for value in bar[:5]), bar[5])
            same = got[:4] == expected[:4] and got[5] == expected[5]
            same = same and abs(got[4] - expected[4]) <= 1e-9 * max(expected[4], 1.0)
            if not same:
                result["differing"] += 1
                if len(result["examples"]) < 5:
                    result["examples"].append((symbol, minute, got, expected))
    return result


def stored_minutes(
    store: Any, start_us: int, end_us: int
) -> tuple[dict[str, dict[int, tuple]], int]:
    """Every stored 1m bar in [start, end) by instrument and minute, and how many
    (instrument, minute) pairs are stored more than once."""
    rows = (
        store.cursor()
        .execute(
            "SELECT instrument, epoch_us(ts), open, high, low, close, volume, trades FROM bars_1m"
            " WHERE ts >= make_timestamp(?) AND ts < make_timestamp(?)",
            [start_us, end_us],
        )
        .fetchall()
    )
    bars: dict[str, dict[int, tuple]] = {}
    duplicates = 0
    for instrument, minute, *values in rows:
        by_minute = bars.setdefault(instrument, {})
        if minute in by_minute:
            duplicates += 1
        by_minute[minute] = tuple(values)
    return bars, duplicates
