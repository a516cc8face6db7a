"""Order realism in the backtester: trailing stops against a hand-computed table, fills
capped by the bars' volume (partial fills over several bars, a property over random
cases), latency in bars (a run with every signal moved N bars later), and a plain
bar-by-bar reference of all three."""

from __future__ import annotations

import io
import math

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sptrader.backtest import report, run_backtest
from sptrader.backtest.engine import _events
from sptrader.backtest.simulation import Simulation
from sptrader.broker.fill_model import FillModel
from sptrader.config import BrokerConfig, RiskConfig
from sptrader.models import US_PER_MINUTE
from sptrader.strategies.base import Strategy

T0 = 1_767_571_200_000_000  # 2026-01-05T00:00:00Z, a Monday
NONE = (None, None, None, None)


class Scripted(Strategy):
    """Signals given up front: {bar: (side, stop, target, trail, trail_pct)} (the last
    four may be left out)."""

    name = "scripted"

    def __init__(self, script: dict[int, tuple]) -> None:
        super().__init__()
        self.script = {bar: (*row, *NONE)[:5] for bar, row in script.items()}

    def evaluate(self, bars: pl.DataFrame) -> pl.DataFrame:
        ts = bars["ts"].to_list()
        rows = [
            (bars["instrument"][0], ts[i], side, 1.0, f"scripted {side}", *rest)
            for i, (side, *rest) in sorted(self.script.items())
        ]
        schema = {
            "instrument": pl.String,
            "ts": pl.Datetime("us"),
            "side": pl.String,
            "strength": pl.Float64,
            "reason": pl.String,
            "stop": pl.Float64,
            "target": pl.Float64,
            "trail": pl.Float64,
            "trail_pct": pl.Float64,
        }
        return pl.DataFrame(rows, schema=schema, orient="row")


def make_bars(ohlc: list[tuple], volume: list[float] | None = None) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "ts": pl.Series([T0 + i * US_PER_MINUTE for i in range(len(ohlc))]).cast(
                pl.Datetime("us")
            ),
            "open": [float(row[0]) for row in ohlc],
            "high": [float(row[1]) for row in ohlc],
            "low": [float(row[2]) for row in ohlc],
            "close": [float(row[3]) for row in ohlc],
            "volume": volume if volume is not None else [1e9] * len(ohlc),
        }
    )


PLAIN = BrokerConfig(starting_cash=10_000, slippage_bps=0, fee_bps=0, signal_notional=1_000)


def bar_of(us: int) -> int:
    return (us - T0) // US_PER_MINUTE


# --- trailing stops: the hand-computed table ----------------------------------------------

TRAILING = [
    (100, 101, 99, 100),  # 0  buy, trail 2
    (100, 103, 99, 102),  # 1  long at 100; stop 98; the high 103 moves it to 101 for bar 2
    (102, 104, 101.5, 103),  # 2  low 101.5 > 101 (the 104 high counts from bar 3: 102)
    (103, 103.5, 102.5, 103),  # 3  low 102.5 > 102; high 103.5 below 104: stays 102
    (102.8, 103, 101, 101.5),  # 4  low 101 reaches 102: sold at 102
    (101.5, 102, 101, 101),  # 5  sell, trail 1%
    (100, 100.5, 99, 99.5),  # 6  short at 100; stop 101; low 99 -> 99.99 for bar 7
    (99.5, 99.8, 98, 98.5),  # 7  high 99.8 < 99.99; low 98 -> 98.98 for bar 8
    (99.5, 99.6, 99, 99.2),  # 8  opens at 99.5, above 98.98: bought back at the open
    (99, 100, 98, 100),  # 9  buy, stop 97, trail 5
    (100, 101, 97.5, 100.5),  # 10 long at 100: max(97, 95) = 97; low 97.5 > 97
    (100.5, 104, 99, 103),  # 11 low 99 > 97; the high 104 -> 99 for bar 12
    (103, 103, 98.5, 99),  # 12 low 98.5 reaches 99: sold at 99
    (99, 99.5, 98.5, 99),  # 13
]
TRAIL_SCRIPT = {
    0: ("buy", None, None, 2.0, None),
    5: ("sell", None, None, None, 1.0),
    9: ("buy", 97.0, None, 5.0, None),
}


def test_a_trailing_stop_follows_the_hand_computed_table() -> None:
    result = run_backtest(Scripted(TRAIL_SCRIPT), make_bars(TRAILING), PLAIN, RiskConfig())
    got = [
        (
            t["side"],
            bar_of(t["entry_time_us"]),
            t["entry_price"],
            bar_of(t["exit_time_us"]),
            t["exit_price"],
            t["exit_reason"],
            t["stop"],
        )
        for t in result.trades.to_dicts()
    ]
    assert got == [
        ("long", 1, 100.0, 4, 102.0, "stop", 102.0),
        ("short", 6, 100.0, 8, 99.5, "stop", 98 * (1 + 1.0 / 100)),
        ("long", 10, 100.0, 12, 99.0, "stop", 99.0),
    ]
    # Sized without a stop from signal_notional; with one (97), from the risk: 1% of the
    # equity over the 3.00 distance.
    assert result.trades["qty"][:2].to_list() == [10.0, 10.0]
    equity = 10_000 + 10 * 2.0 + 10 * 0.5
    assert result.trades["qty"][2] == pytest.approx(equity * 0.01 / 3.0)


def test_a_bar_cannot_raise_the_stop_and_hit_it() -> None:
    # Bar 2's own high would put the stop at 102, above its low 101.5: it is not hit there.
    result = run_backtest(
        Scripted({0: ("buy", None, None, 2.0)}), make_bars(TRAILING[:4]), PLAIN, RiskConfig()
    )
    (trade,) = result.trades.to_dicts()
    assert trade["exit_reason"] == "end" and trade["stop"] == 102.0


def test_bad_trails_name_the_signal() -> None:
    bars = make_bars(TRAILING)
    for trail, pct, words in (
        (-1.0, None, "positive price difference"),
        (None, 100.0, "below 100"),
        (1.0, 1.0, "not both"),
    ):
        with pytest.raises(ValueError, match=words) as error:
            run_backtest(Scripted({0: ("buy", None, None, trail, pct)}), bars, PLAIN)
        assert "2026-01-05T00:00:00" in str(error.value)


def test_trailing_with_detail_on_the_same_bars_is_the_table() -> None:
    # The finer path equal to the bars: every trade and its trailed stop as without it.
    bars = make_bars(TRAILING)
    plain = run_backtest(Scripted(TRAIL_SCRIPT), bars, PLAIN)
    detailed = run_backtest(Scripted(TRAIL_SCRIPT), bars, PLAIN, detail=bars, detail_timeframe="1m")
    assert detailed.trades.equals(plain.trades) and detailed.fills.equals(plain.fills)


# --- the volume cap: partial fills over three bars ------------------------------------------

CAPPED = [
    (100, 100, 100, 100),  # 0  buy: 10 units (1,000 / 100)
    (100, 100, 100, 100),  # 1  volume 8: 4 at 100
    (101, 101, 101, 101),  # 2  volume 6: 3 at 101
    (102, 102, 102, 102),  # 3  volume 10: the last 3 at 102 (room for 5)
    (103, 103, 103, 103),  # 4  exit
    (104, 104, 104, 104),  # 5  volume 4: 2 at 104
    (105, 105, 105, 105),  # 6  volume 0: nothing
    (106, 106, 106, 106),  # 7  volume 10: 5 at 106
    (107, 107, 107, 107),  # 8  volume 20: the last 3 at 107
    (108, 108, 108, 108),  # 9
]
CAPPED_VOLUME = [100.0, 8, 6, 10, 100, 4, 0, 10, 20, 100]


def test_fills_are_capped_by_the_bars_volume_over_several_bars() -> None:
    broker = BrokerConfig(
        starting_cash=10_000,
        slippage_bps=0,
        fee_bps=10,
        signal_notional=1_000,
        max_volume_share=0.5,
    )
    bars = make_bars(CAPPED, CAPPED_VOLUME)
    result = run_backtest(Scripted({0: ("buy",), 4: ("exit",)}), bars, broker)
    fills = [(bar_of(f["ts_us"]), f["side"], f["qty"], f["price"]) for f in result.fills.to_dicts()]
    assert fills == [
        (1, "buy", 4.0, 100.0),
        (2, "buy", 3.0, 101.0),
        (3, "buy", 3.0, 102.0),
        (5, "sell", 2.0, 104.0),
        (7, "sell", 5.0, 106.0),
        (8, "sell", 3.0, 107.0),
    ]
    # The entry's fills are one order, the exit's another.
    assert result.fills["order_id"].n_unique() == 2
    (trade,) = result.trades.to_dicts()
    entry = (4 * 100 + 3 * 101 + 3 * 102) / 10
    exit_ = (2 * 104 + 5 * 106 + 3 * 107) / 10
    fees = 0.001 * (4 * 100 + 3 * 101 + 3 * 102 + 2 * 104 + 5 * 106 + 3 * 107)
    assert trade["qty"] == 10.0
    assert trade["entry_price"] == pytest.approx(entry)
    assert trade["exit_price"] == pytest.approx(exit_)
    assert trade["fees"] == pytest.approx(fees)
    assert trade["pnl"] == pytest.approx(10 * (exit_ - entry) - fees)
    assert (bar_of(trade["entry_time_us"]), bar_of(trade["exit_time_us"])) == (1, 8)
    assert trade["exit_reason"] == "signal"
    # Fills that left part of their order working: two of the entry's, two of the exit's.
    assert result.summary["partial_fills"] == 4
    assert result.summary["volume_cap"] == "0.5 of each bar's volume"
    # The report says so (it said nothing of the cap).
    printed = io.StringIO()
    covered = {"from_us": T0, "to_us": T0 + 10 * US_PER_MINUTE, "coverage_pct": 100.0, "gaps": []}
    report.print_result(result, covered, out=printed)
    assert (
        "volume cap: fills take at most 0.5 of each bar's volume; 4 partial fills"
        in printed.getvalue()
    )
    # The position and equity bar by bar, from the fills.
    assert result.equity["position"].to_list() == [0, 4, 7, 10, 10, 8, 8, 3, 0, 0]
    cash = 10_000.0
    curve = []
    held = 0.0
    for bar, (close, *_rest) in enumerate(row[3:] for row in CAPPED):
        for at, side, qty, price in fills:
            if at == bar:
                signed = qty if side == "buy" else -qty
                cash -= signed * price + qty * price * 0.001
                held += signed
        curve.append(cash + held * close)
    assert result.equity["equity"].to_list() == pytest.approx(curve, rel=1e-12)
    assert result.summary["final_equity"] == pytest.approx(10_000 + trade["pnl"])


def test_a_triggered_stop_keeps_selling_at_the_next_opens() -> None:
    ohlc = [
        (100, 100, 100, 100),  # 0  buy, stop 95
        (100, 100, 100, 100),  # 1  long 10 at 100
        (99, 99, 94, 96),  # 2  the stop 95: 3 sold at 95 (volume 6), the stop triggered
        (97, 97, 97, 97),  # 3  back above the stop: still sold, at the open, 3 more
        (98, 98, 98, 98),  # 4  the last 4
        (98, 98, 98, 98),  # 5
    ]
    broker = BrokerConfig(
        starting_cash=10_000, slippage_bps=0, fee_bps=0, max_volume_share=0.5,
        signal_notional=1_000,
    )  # fmt: skip
    bars = make_bars(ohlc, [100.0, 100, 6, 6, 100, 100])
    result = run_backtest(
        Scripted({0: ("buy", 95.0)}), bars, broker, RiskConfig(risk_per_trade_pct=0)
    )
    sells = [(bar_of(f["ts_us"]), f["qty"], f["price"]) for f in result.fills.to_dicts()][1:]
    assert sells == [(2, 3.0, 95.0), (3, 3.0, 97.0), (4, 4.0, 98.0)]
    (trade,) = result.trades.to_dicts()
    assert trade["exit_reason"] == "stop"
    assert trade["exit_price"] == pytest.approx((3 * 95 + 3 * 97 + 4 * 98) / 10)


def test_a_bar_without_volume_fills_nothing_and_bars_without_any_are_not_capped() -> None:
    broker = BrokerConfig(
        starting_cash=10_000, slippage_bps=0, fee_bps=0, max_volume_share=0.1,
        signal_notional=1_000,
    )  # fmt: skip
    flat = [(100, 100, 100, 100)] * 5
    waiting = run_backtest(Scripted({0: ("buy",)}), make_bars(flat, [0.0, 0, 0, 200, 0]), broker)
    assert [bar_of(t) for t in waiting.fills["ts_us"].to_list()] == [3, 4]  # the buy, the end
    none = run_backtest(Scripted({0: ("buy",)}), make_bars(flat, [0.0] * 5), broker)
    assert none.summary["volume_cap"] == "off: no volume"
    assert none.fills["qty"][0] == 10.0


# --- a plain bar-by-bar reference of trailing stops, the volume cap and latency ----------------


def reference(
    ohlc: np.ndarray,
    volume: np.ndarray,
    script: dict,
    broker: BrokerConfig,
    risk_pct: float,
) -> tuple[list, int]:
    """Bar by bar, as the engine's docstring states the rules: (trades, partial fills)."""
    model = FillModel(broker.slippage_bps, broker.fee_bps, broker.fee_per_unit)
    share = broker.max_volume_share
    latency = broker.latency_bars
    equity = broker.starting_cash
    trades = []
    partial = 0
    pos: dict | None = None
    follow = None
    room = 0.0

    def level_of(side, best, trail, pct):
        if trail is not None:
            return best - trail if side == "sell" else best + trail
        return best * (1 - pct / 100) if side == "sell" else best * (1 + pct / 100)

    def closing():
        return "sell" if pos["dir"] > 0 else "buy"

    def better(side, a, b):
        if a is None:
            return b
        return max(a, b) if side == "sell" else min(a, b)

    def fill(want):
        nonlocal room, partial
        qty = min(want, room)
        if qty <= 1e-9:
            return 0.0
        room -= qty
        if qty < want:
            partial += 1
        return qty

    def exit_fill(i, price, why, capped=True):
        nonlocal pos, equity
        qty = fill(pos["held"]) if capped else pos["held"]
        if not qty:
            return
        pos["held"] -= qty
        pos["xq"] += qty
        pos["xv"] += qty * price
        pos["xf"] += model.fee(qty, price)
        if pos["held"] > 1e-9:
            return
        entry = pos["value"] / pos["entered"]
        exit_ = pos["xv"] / pos["xq"]
        pnl = pos["dir"] * pos["entered"] * (exit_ - entry) - pos["fee"] - pos["xf"]
        equity += pnl
        trades.append((pos["first"], i, pos["dir"], pos["entered"], entry, exit_, why))
        pos = None

    def entry_fill(i, price):
        qty = fill(pos["left"])
        if not qty:
            return
        pos["left"] -= qty
        pos["held"] += qty
        pos["entered"] += qty
        pos["value"] += qty * price
        pos["fee"] += model.fee(qty, price)
        if pos["first"] is None:
            pos["first"] = i
            if pos["trail"] is not None or pos["pct"] is not None:
                side = closing()
                o = float(ohlc[i][0])
                pos["stop"] = better(side, pos["stop"], level_of(side, o, pos["trail"], pos["pct"]))

    def enter(i, signal):
        nonlocal pos
        side, stop, target, trail, pct = signal
        d = 1 if side == "buy" else -1
        price = model.open_fill("buy" if d > 0 else "sell", float(ohlc[i][0]))
        valid = (stop is None or (stop < price if d > 0 else stop > price)) and (
            target is None or (target > price if d > 0 else target < price)
        )
        if not valid:
            return
        if stop is not None:
            qty = equity * risk_pct / 100 / abs(price - stop)
        else:
            qty = broker.signal_notional / price
        pos = dict(
            dir=d, left=qty, held=0.0, entered=0.0, value=0.0, fee=0.0, first=None,
            stop=stop, target=target, trail=trail, pct=pct, market=False, exiting=None,
            xq=0.0, xv=0.0, xf=0.0,
        )  # fmt: skip
        entry_fill(i, price)

    def protected():
        return (
            pos is not None
            and pos["held"] > 0
            and not pos["market"]
            and (pos["stop"] is not None or pos["target"] is not None)
        )

    def trigger_stop(i, price):
        pos["left"] = 0.0
        pos["market"], pos["exiting"] = True, "stop"
        exit_fill(i, price, "stop")

    def fill_target(i, price):
        pos["left"] = 0.0
        pos["exiting"] = pos["exiting"] or "target"
        exit_fill(i, price, "target")

    count = len(ohlc)
    for i in range(count):
        o, h, lo, c = (float(x) for x in ohlc[i])
        room = share * float(volume[i]) if share > 0 else math.inf
        signal = script.get(i - 1 - latency)
        if signal is not None:
            signal = (*signal, *NONE)[:5]
        if pos is not None and pos["market"] and signal is not None:
            follow = None if signal[0] == "exit" else signal
            signal = None
        if pos is not None and pos["market"]:
            exit_fill(i, model.open_fill(closing(), o), pos["exiting"])
            if pos is None and follow is not None:
                signal_now, follow = follow, None
                enter(i, signal_now)
        elif pos is not None and pos["left"] > 0:
            entry_fill(i, model.open_fill("buy" if pos["dir"] > 0 else "sell", o))
        if signal is not None:
            if protected():
                d, stop, target = pos["dir"], pos["stop"], pos["target"]
                if target is not None and (o >= target if d > 0 else o <= target):
                    fill_target(i, o)
                elif stop is not None and (o <= stop if d > 0 else o >= stop):
                    trigger_stop(i, model.slipped(closing(), o))
            side = signal[0]
            d = {"buy": 1, "sell": -1, "exit": 0}[side]
            if pos is None or pos["dir"] != d:
                if pos is not None:
                    pos["left"] = 0.0
                    if pos["held"] > 0:
                        pos["market"], pos["exiting"] = True, "reverse" if d else "signal"
                        follow = signal if d else None
                        exit_fill(i, model.open_fill(closing(), o), pos["exiting"])
                        if pos is None and follow is not None:
                            signal_now, follow = follow, None
                            enter(i, signal_now)
                    else:
                        pos = None
                        if d:
                            enter(i, signal)
                elif d:
                    enter(i, signal)
        if protected():
            side, d = closing(), pos["dir"]
            stop, target = pos["stop"], pos["target"]
            stop_price = None if stop is None else model.stop_fill(side, stop, o, h, lo)
            target_price = None if target is None else model.limit_fill(side, target, o, h, lo)
            beyond = target is not None and (o >= target if d > 0 else o <= target)
            if target_price is not None and (beyond or stop_price is None):
                fill_target(i, target_price)
                if stop_price is not None and pos is not None:
                    trigger_stop(i, stop_price)
            elif stop_price is not None:
                trigger_stop(i, stop_price)
        if (
            pos is not None
            and pos["first"] is not None
            and (pos["trail"] is not None or pos["pct"] is not None)
        ):
            side = closing()
            best = h if pos["dir"] > 0 else lo
            pos["stop"] = better(side, pos["stop"], level_of(side, best, pos["trail"], pos["pct"]))
        if i == count - 1 and pos is not None and pos["held"] > 0:
            exit_fill(i, model.slipped(closing(), c), "end", capped=False)
    return trades, partial


def random_case(seed: int, count: int = 2000) -> tuple[pl.DataFrame, dict]:
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.004, count)))
    jump = np.where(rng.random(count) < 0.05, rng.normal(0, 0.01, count), 0.0)
    open_ = np.concatenate(([100.0], close[:-1])) * (1 + jump)
    high = np.maximum(open_, close) * (1 + np.abs(rng.normal(0, 0.002, count)))
    low = np.minimum(open_, close) * (1 - np.abs(rng.normal(0, 0.002, count)))
    # Volume in units; a few bars without any.
    volume = np.where(rng.random(count) < 0.05, 0.0, rng.uniform(0, 120, count))
    bars = pl.DataFrame(
        {
            "ts": pl.Series(T0 + np.arange(count, dtype=np.int64) * US_PER_MINUTE).cast(
                pl.Datetime("us")
            ),
            "open": open_,
            "high": high,
            "low": low,
            "close": close,
            "volume": volume,
        }
    )
    script = {}
    for bar in np.flatnonzero(rng.random(count) < 0.06):
        side = str(rng.choice(["buy", "sell", "exit"]))
        ref = close[bar]
        d = 1 if side == "buy" else -1
        stop = ref * (1 - d * rng.uniform(0.001, 0.02)) if rng.random() < 0.4 else None
        target = ref * (1 + d * rng.uniform(0.001, 0.03)) if rng.random() < 0.4 else None
        trail = pct = None
        kind = rng.random()
        if kind < 0.25:
            trail = float(ref * rng.uniform(0.002, 0.02))
        elif kind < 0.5:
            pct = float(rng.uniform(0.2, 2.0))
        script[int(bar)] = (side, stop, target, trail, pct)
    return bars, script


CASES = [
    # (seed, max_volume_share, latency_bars)
    (1, 0.0, 0),
    (2, 0.0, 3),
    (3, 0.05, 0),
    (4, 0.1, 2),
    (5, 1.0, 1),
]


@pytest.mark.parametrize(("seed", "share", "latency"), CASES)
def test_the_engine_agrees_with_a_bar_by_bar_reference(
    seed: int, share: float, latency: int
) -> None:
    bars, script = random_case(seed)
    broker = BrokerConfig(
        starting_cash=50_000, slippage_bps=2, fee_bps=1, fee_per_unit=0.001,
        max_volume_share=share, latency_bars=latency,
    )  # fmt: skip
    result = run_backtest(Scripted(script), bars, broker, RiskConfig(risk_per_trade_pct=0.5))
    ohlc = bars.select("open", "high", "low", "close").to_numpy()
    expected, partial = reference(ohlc, bars["volume"].to_numpy(), script, broker, 0.5)
    got = result.trades
    assert got.height == len(expected) > 30
    rows = [
        (
            bar_of(t["entry_time_us"]),
            bar_of(t["exit_time_us"]),
            1 if t["side"] == "long" else -1,
            t["exit_reason"],
        )
        for t in got.to_dicts()
    ]
    assert rows == [(e[0], e[1], e[2], e[6]) for e in expected]
    assert got["qty"].to_list() == pytest.approx([e[3] for e in expected], rel=1e-9)
    assert got["entry_price"].to_list() == pytest.approx([e[4] for e in expected], rel=1e-12)
    assert got["exit_price"].to_list() == pytest.approx([e[5] for e in expected], rel=1e-12)
    assert result.summary["partial_fills"] == partial
    assert partial > 0 if share else partial == 0
    assert {row[3] for row in rows} >= {"stop", "signal", "reverse"}
    assert result.summary["final_equity"] == pytest.approx(
        50_000 + float(got["pnl"].sum()), rel=1e-12
    )


def test_a_cap_that_never_binds_changes_nothing() -> None:
    bars, script = random_case(6)
    bars = bars.with_columns(volume=pl.lit(1e12))
    broker = BrokerConfig(starting_cash=50_000, slippage_bps=2, fee_bps=1)
    plain = run_backtest(Scripted(script), bars, broker, RiskConfig(risk_per_trade_pct=0.5))
    capped = run_backtest(
        Scripted(script),
        bars,
        BrokerConfig(starting_cash=50_000, slippage_bps=2, fee_bps=1, max_volume_share=0.5),
        RiskConfig(risk_per_trade_pct=0.5),
    )
    assert capped.summary["partial_fills"] == 0
    columns = ["entry_time_us", "exit_time_us", "side", "exit_reason", "bars"]
    assert capped.trades.select(columns).equals(plain.trades.select(columns))
    for name in ("qty", "entry_price", "exit_price", "pnl", "stop"):
        assert capped.trades[name].to_list() == pytest.approx(plain.trades[name].to_list())
    assert capped.equity["equity"].to_list() == pytest.approx(
        plain.equity["equity"].to_list(), rel=1e-9
    )


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), share=st.floats(0.01, 1.0))
def test_fills_never_exceed_the_order_or_the_cap(seed: int, share: float) -> None:
    bars, script = random_case(seed, count=300)
    broker = BrokerConfig(starting_cash=50_000, slippage_bps=2, max_volume_share=share)
    ohlc = tuple(bars[name].to_numpy() for name in ("open", "high", "low", "close"))
    ts = bars["ts"].dt.epoch("us").to_numpy()
    volume = bars["volume"].to_numpy()
    events, trails = _events(
        Scripted(script).evaluate(bars.with_columns(instrument=pl.lit("X"))), ts, 0
    )
    sim = Simulation("X", ohlc, ts, 0, broker, RiskConfig(risk_per_trade_pct=0.5), volume=volume)
    sim.run(events, trails)
    fills = pl.DataFrame(
        [(f[1], f[3], f[4], bar) for f, bar in zip(sim.fills, sim.fill_bars, strict=True)],
        schema={"order_id": pl.Int64, "side": pl.String, "qty": pl.Float64, "bar": pl.Int64},
        orient="row",
    )
    last = bars.height - 1
    # No bar fills more than its share of the volume (the close at the end is not capped).
    for bar, qty in (
        fills.filter(pl.col("bar") < last).group_by("bar").agg(pl.col("qty").sum()).rows()
    ):
        assert qty <= share * volume[bar] * (1 + 1e-12)
    # No entry fills more than it was sized for; every trade's exit closes exactly what its
    # entry filled.
    assert sim.entry_orders
    for order_id, qty in fills.group_by("order_id").agg(pl.col("qty").sum()).rows():
        if order_id in sim.entry_orders:
            assert qty <= sim.entry_orders[order_id] * (1 + 1e-12)
    held = 0.0
    for row in fills.iter_rows(named=True):
        before = held
        held += row["qty"] if row["side"] == "buy" else -row["qty"]
        assert before * held >= -1e-9  # never through zero: an exit closes, an entry opens
    assert abs(held) < 1e-9


# --- latency ---------------------------------------------------------------------------


@pytest.mark.parametrize("latency", [1, 4])
def test_latency_is_a_run_with_every_signal_n_bars_later(latency: int) -> None:
    bars, script = random_case(7)
    broker = BrokerConfig(starting_cash=50_000, slippage_bps=2, fee_bps=1)
    late = BrokerConfig(starting_cash=50_000, slippage_bps=2, fee_bps=1, latency_bars=latency)
    delayed = run_backtest(Scripted(script), bars, late, RiskConfig(risk_per_trade_pct=0.5))
    moved = {bar + latency: row for bar, row in script.items()}
    shifted = run_backtest(Scripted(moved), bars, broker, RiskConfig(risk_per_trade_pct=0.5))
    assert delayed.trades.height > 30
    assert delayed.trades.equals(shifted.trades)
    assert delayed.fills.equals(shifted.fills)
    assert delayed.summary["signals"] == shifted.summary["signals"]
    # And not a run without latency: the fills moved.
    prompt = run_backtest(Scripted(script), bars, broker, RiskConfig(risk_per_trade_pct=0.5))
    first_fill = prompt.fills["ts_us"][0]
    assert delayed.fills["ts_us"][0] == first_fill + latency * US_PER_MINUTE


def test_a_signal_with_no_bar_after_its_latency_is_not_filled() -> None:
    flat = [(100, 100, 100, 100)] * 5
    late = BrokerConfig(starting_cash=10_000, slippage_bps=0, latency_bars=2)
    result = run_backtest(Scripted({1: ("buy",), 2: ("sell",)}), make_bars(flat), late)
    assert result.summary["signals"] == 1  # bar 2's would fill at bar 5: there is none
    assert bar_of(result.fills["ts_us"][0]) == 4
