"""The built-in simulated market (``SIM:``): seeded, deterministic, always open.

Every instrument follows one deterministic price path per UTC day, defined at every
second: a Brownian bridge between daily anchor prices, with volatility shaped by the
instrument's intraday activity (FX sessions, crypto around the clock, equity cash
hours). History bars are cut from that path, and live ticks are sampled from the same
path with a spread and microstructure noise, so live prices continue the stored history
and a restart at any time lands on the same curve. The same seed gives the same bars.
"""

from __future__ import annotations

import asyncio
import math
import threading
import zlib
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import polars as pl

from sptrader.clock import now_us
from sptrader.config import SimFeedConfig
from sptrader.feeds.base import Feed, SymbolInfo
from sptrader.models import (
    SIDE_BUY,
    SIDE_SELL,
    US_PER_MINUTE,
    US_PER_SECOND,
    QuoteReceived,
    TradeReceived,
)
from sptrader.supervisor import ServiceContext

SECONDS_PER_DAY = 86_400
US_PER_DAY = SECONDS_PER_DAY * US_PER_SECOND
# After a long stall (suspended laptop, busy UI) do not emit a burst of made-up ticks.
MAX_CATCH_UP_US = 5 * US_PER_SECOND
TRADE_SHARE = 0.35


@dataclass(frozen=True, slots=True)
class SimInstrument:
    symbol: str
    asset_class: str  # fx, metal, crypto, equity
    base_price: float
    daily_vol: float  # standard deviation of one day's log return
    spread: float  # typical spread, price units
    tick_size: float
    tick_rate: float  # ticks per second at peak activity
    size: float  # typical quote/trade size (FX in millions)
    has_trades: bool

    @property
    def decimals(self) -> int:
        return max(0, -math.floor(math.log10(self.tick_size) + 1e-9))


KNOWN_INSTRUMENTS = {
    spec.symbol: spec
    for spec in (
        SimInstrument("EURUSD", "fx", 1.0800, 0.005, 0.00001, 0.00001, 8.0, 2.0, False),
        SimInstrument("GBPUSD", "fx", 1.2700, 0.006, 0.00002, 0.00001, 6.0, 2.0, False),
        SimInstrument("USDJPY", "fx", 150.00, 0.006, 0.002, 0.001, 7.0, 2.0, False),
        SimInstrument("AUDUSD", "fx", 0.6600, 0.007, 0.00002, 0.00001, 5.0, 1.5, False),
        SimInstrument("USDCHF", "fx", 0.8800, 0.005, 0.00002, 0.00001, 4.0, 1.5, False),
        SimInstrument("USDCAD", "fx", 1.3700, 0.004, 0.00002, 0.00001, 4.0, 1.5, False),
        SimInstrument("XAUUSD", "metal", 2650.0, 0.010, 0.20, 0.01, 6.0, 0.1, False),
        SimInstrument("XAGUSD", "metal", 31.00, 0.018, 0.02, 0.001, 4.0, 1.0, False),
        SimInstrument("BTCUSD", "crypto", 60000.0, 0.030, 0.50, 0.01, 25.0, 0.05, True),
        SimInstrument("ETHUSD", "crypto", 3000.0, 0.035, 0.05, 0.01, 20.0, 0.8, True),
        SimInstrument("SOLUSD", "crypto", 150.0, 0.045, 0.01, 0.01, 12.0, 10.0, True),
        SimInstrument("SPY", "equity", 500.0, 0.010, 0.01, 0.01, 15.0, 200.0, True),
        SimInstrument("QQQ", "equity", 430.0, 0.013, 0.01, 0.01, 12.0, 150.0, True),
        SimInstrument("AAPL", "equity", 225.0, 0.015, 0.01, 0.01, 12.0, 100.0, True),
        SimInstrument("MSFT", "equity", 420.0, 0.014, 0.01, 0.01, 10.0, 80.0, True),
        SimInstrument("NVDA", "equity", 130.0, 0.030, 0.01, 0.01, 15.0, 200.0, True),
        SimInstrument("TSLA", "equity", 240.0, 0.035, 0.01, 0.01, 14.0, 100.0, True),
    )
}


def instrument_spec(symbol: str) -> SimInstrument:
    """The known instrument, or a stable made-up equity-like one for any other symbol."""
    known = KNOWN_INSTRUMENTS.get(symbol)
    if known is not None:
        return known
    digest = zlib.crc32(symbol.encode())
    base = round(10 * 50 ** ((digest % 1000) / 1000), 2)  # 10 .. 500
    return SimInstrument(symbol, "equity", base, 0.02, 0.01, 0.01, 8.0, 100.0, True)


def _bump(hours: np.ndarray, centre: float, width: float) -> np.ndarray:
    distance = np.abs(hours - centre)
    distance = np.minimum(distance, 24 - distance)  # wrap around midnight
    return np.exp(-0.5 * (distance / width) ** 2)


@lru_cache(maxsize=8)
def activity_profile(asset_class: str) -> np.ndarray:
    """Relative activity (peak about 1) for each second of the UTC day."""
    hours = np.arange(SECONDS_PER_DAY) / 3600.0
    if asset_class in ("fx", "metal"):
        profile = (
            0.25
            + 0.25 * _bump(hours, 2.0, 3.0)  # Tokyo
            + 0.50 * _bump(hours, 8.5, 2.5)  # London
            + 0.60 * _bump(hours, 14.5, 2.5)  # London/New York overlap
        )
    elif asset_class == "crypto":
        profile = 0.6 + 0.35 * _bump(hours, 15.0, 4.0)
    else:  # equities: cash session 13:30-20:00 UTC, busy open and close, quiet outside
        session = 1 / (1 + np.exp(-(hours - 13.5) * 12)) * 1 / (1 + np.exp((hours - 20.0) * 12))
        profile = (
            0.12 + 0.8 * session + 0.6 * _bump(hours, 13.6, 0.3) + 0.4 * _bump(hours, 19.9, 0.3)
        )
    return profile / profile.max()


class SimulatedMarket:
    """The deterministic price model, without any asyncio: usable from threads and tests."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self._paths: dict[tuple[str, int], np.ndarray] = {}
        # History is read from backfill threads while live ticks use today's path.
        self._paths_lock = threading.Lock()

    def _key(self, symbol: str) -> int:
        return zlib.crc32(symbol.encode())

    def _normal(self, symbol: str, *parts: int) -> float:
        return float(
            np.random.default_rng([self.seed, self._key(symbol), *parts]).standard_normal()
        )

    def anchor(self, spec: SimInstrument, day: int) -> float:
        """Log price at the start of UTC day ``day`` (days since 1970-01-01)."""
        noise = 0.0
        for period, amplitude in ((5, 1.2), (23, 2.5), (97, 4.0)):
            block, offset = divmod(day, period)
            fraction = offset / period
            smooth = fraction * fraction * (3 - 2 * fraction)
            first = self._normal(spec.symbol, 10, period, block)
            second = self._normal(spec.symbol, 10, period, block + 1)
            noise += amplitude * (first + (second - first) * smooth)
        noise += 0.8 * self._normal(spec.symbol, 11, day)
        return math.log(spec.base_price) + spec.daily_vol * noise

    def day_path(self, spec: SimInstrument, day: int) -> np.ndarray:
        """Mid prices at every second of the day, 86401 points (the last is the next
        day's first), as a Brownian bridge between the two anchors."""
        key = (spec.symbol, day)
        path = self._paths.get(key)
        if path is not None:
            return path
        activity = activity_profile(spec.asset_class)
        variance = spec.daily_vol**2 * activity / activity.sum()
        rng = np.random.default_rng([self.seed, self._key(spec.symbol), 1, day])
        walk = np.concatenate(
            ([0.0], np.cumsum(rng.standard_normal(SECONDS_PER_DAY) * np.sqrt(variance)))
        )
        elapsed = np.concatenate(([0.0], np.cumsum(variance)))
        elapsed /= elapsed[-1]
        start, end = self.anchor(spec, day), self.anchor(spec, day + 1)
        path = np.exp(start + walk - elapsed * walk[-1] + elapsed * (end - start))
        # One day per instrument is kept (0.7 MB each): live ticks need only today's,
        # and history walks the days in order.
        with self._paths_lock:
            for cached in [cached for cached in self._paths if cached[0] == spec.symbol]:
                del self._paths[cached]
            self._paths[key] = path
        return path

    def mid_at(self, spec: SimInstrument, times_us: np.ndarray) -> np.ndarray:
        """Mid price at arbitrary microsecond times (linear between the seconds)."""
        days = times_us // US_PER_DAY
        result = np.empty(len(times_us))
        for day in np.unique(days):
            mask = days == day
            seconds = (times_us[mask] - int(day) * US_PER_DAY) / US_PER_SECOND
            path = self.day_path(spec, int(day))
            # Linear interpolation between whole seconds (np.interp would need an
            # 86401-point x axis built on every call).
            whole = np.minimum(seconds.astype(np.int64), SECONDS_PER_DAY - 1)
            fraction = seconds - whole
            result[mask] = path[whole] * (1 - fraction) + path[whole + 1] * fraction
        return result

    def day_bars(self, spec: SimInstrument, day: int, price_source: str) -> pl.DataFrame:
        """The day's 1440 one-minute bars (store layout, without the instrument)."""
        path = self.day_path(spec, day)
        if price_source == "bid":
            path = path - spec.spread / 2
        minutes = path[:SECONDS_PER_DAY].reshape(1440, 60)
        closes = path[60::60]
        opens = minutes[:, 0]
        highs = np.maximum(minutes.max(axis=1), closes)
        lows = np.minimum(minutes.min(axis=1), closes)
        activity = activity_profile(spec.asset_class).reshape(1440, 60).mean(axis=1)
        rng = np.random.default_rng([self.seed, self._key(spec.symbol), 2, day])
        trades = np.maximum(1, rng.poisson(spec.tick_rate * 60 * activity))
        volume = trades * spec.size * rng.lognormal(0.0, 0.3, 1440)
        decimals = spec.decimals
        tick = spec.tick_size
        rounded = [
            np.round(np.round(values / tick) * tick, decimals)
            for values in (opens, highs, lows, closes)
        ]
        start = day * US_PER_DAY
        return pl.DataFrame(
            {
                "ts": pl.Series(np.arange(1440, dtype=np.int64) * US_PER_MINUTE + start).cast(
                    pl.Datetime("us")
                ),
                "open": rounded[0],
                "high": rounded[1],
                "low": rounded[2],
                "close": rounded[3],
                "volume": np.round(volume, 6),
                "trades": trades.astype(np.int64),
            }
        )


class SimFeed(Feed):
    prefix = "SIM"
    name = "sim"
    # Simulated markets never close, whatever asset class a symbol is dressed as.
    market_kind = "sim"
    # Its history is the model the live ticks are sampled from, not a record.
    refetch_partial_minute = False
    # Any symbol works (unknown ones get a made-up spec); the known ones are listed.
    open_symbols = True
    builtin_symbols = True

    def __init__(self, instruments: list[str], config: SimFeedConfig) -> None:
        super().__init__(instruments)
        self.config = config
        self.market = SimulatedMarket(config.seed)
        self._rng = np.random.default_rng([config.seed, 3])
        self._specs = {name: instrument_spec(name.split(":", 1)[1]) for name in self.instruments}
        # The next trade id per instrument: sequential, as a venue numbers its trades.
        self._next_trade_id: dict[str, int] = {}

    def symbols(self) -> list[SymbolInfo]:
        kinds = {"equity": "equity", "fx": "fx", "metal": "metal", "crypto": "crypto"}
        return [
            SymbolInfo(
                f"SIM:{spec.symbol}",
                f"simulated {spec.symbol} ({spec.asset_class})",
                kinds.get(spec.asset_class, spec.asset_class),
                price_decimals=spec.decimals,
            )
            for spec in KNOWN_INSTRUMENTS.values()
        ]

    def price_source(self, instrument: str) -> str:
        source = self.config.price_source
        if source != "auto":
            return source
        spec = self._specs.get(instrument) or instrument_spec(instrument.split(":", 1)[1])
        return "trade" if spec.has_trades else "bid"

    def history(self, instrument: str, start_us: int, end_us: int) -> pl.DataFrame | None:
        spec = instrument_spec(instrument.split(":", 1)[1])
        source = (
            "mid" if self.price_source(instrument) == "trade" else self.price_source(instrument)
        )
        frames = [
            self.market.day_bars(spec, day, source)
            for day in range(start_us // US_PER_DAY, (end_us - 1) // US_PER_DAY + 1)
        ]
        if not frames:
            return None
        start = pl.lit(start_us).cast(pl.Datetime("us"))
        end = pl.lit(end_us).cast(pl.Datetime("us"))
        return (
            pl.concat(frames)
            .filter((pl.col("ts") >= start) & (pl.col("ts") < end))
            .with_columns(pl.lit(instrument).alias("instrument"))
            .select("instrument", "ts", "open", "high", "low", "close", "volume", "trades")
        )

    def generate(self, start_us: int, end_us: int) -> list[object]:
        """Quotes (and trades, for instruments that trade) in (start, end], time-ordered
        per instrument. Deterministic for a given seed and sequence of calls.

        A trade lifts the ask (taker side buy) or hits the bid (sell); its id follows the
        instrument's previous one. Ids start at the first call's time in milliseconds,
        so a feed started later (a restart) continues above any id given before."""
        if end_us <= start_us:
            return []
        rng = self._rng
        seconds = (end_us - start_us) / US_PER_SECOND
        second_of_day = (start_us % US_PER_DAY) // US_PER_SECOND
        events: list[object] = []
        for instrument, spec in self._specs.items():
            activity = activity_profile(spec.asset_class)[second_of_day]
            count = int(rng.poisson(spec.tick_rate * self.config.tick_rate * activity * seconds))
            if count == 0:
                continue
            times = np.sort(rng.integers(start_us + 1, end_us + 1, count))
            mids = self.market.mid_at(spec, times) + rng.normal(0.0, spec.spread * 0.3, count)
            half_spread = spec.spread * 0.5 * (1.0 + rng.exponential(0.3, count))
            tick, decimals = spec.tick_size, spec.decimals
            bids = np.round(np.floor((mids - half_spread) / tick + 0.5) * tick, decimals)
            asks = np.round(
                np.maximum(np.floor((mids + half_spread) / tick + 0.5) * tick, bids + tick),
                decimals,
            )
            bid_sizes = np.round(spec.size * rng.lognormal(0.0, 0.5, count), 4)
            ask_sizes = np.round(spec.size * rng.lognormal(0.0, 0.5, count), 4)
            rows = zip(
                times.tolist(),
                bids.tolist(),
                asks.tolist(),
                bid_sizes.tolist(),
                ask_sizes.tolist(),
                strict=True,
            )
            if not spec.has_trades:
                events.extend(QuoteReceived(instrument, *row) for row in rows)
                continue
            trade_draw = rng.random(count).tolist()
            trade_sizes = np.round(spec.size * rng.lognormal(-1.0, 0.8, count), 4).tolist()
            trade_id = self._next_trade_id.get(instrument, start_us // 1000 + 1)
            for (ts, bid, ask, bid_size, ask_size), draw, trade_size in zip(
                rows, trade_draw, trade_sizes, strict=True
            ):
                events.append(QuoteReceived(instrument, ts, bid, ask, bid_size, ask_size))
                if draw < TRADE_SHARE:
                    # Buyer-initiated half the time (lifts the ask), seller the other half.
                    if draw < TRADE_SHARE / 2:
                        price, side = ask, SIDE_BUY
                    else:
                        price, side = bid, SIDE_SELL
                    events.append(TradeReceived(instrument, ts, price, trade_size, side, trade_id))
                    trade_id += 1
            self._next_trade_id[instrument] = trade_id
        return events

    async def stream(self, context: ServiceContext) -> None:
        interval = self.config.publish_interval_ms / 1000
        last = now_us()
        context.mark_running()
        while True:
            await asyncio.sleep(interval)
            now = now_us()
            start = max(last, now - MAX_CATCH_UP_US)
            events = self.generate(start, now)
            last = now
            await context.publish(events, now)
