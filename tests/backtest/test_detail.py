"""Intra-bar detail: an hourly strategy filled on the 1m path inside its bars (stop and
target order, gaps inside the bar, a trailing stop moved and hit inside one bar, fills
capped by each minute's volume), the ambiguous exits counted without it, and the
``--detail`` option of ``sptrader backtest``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from test_backtest import (
    T0,
    WINDOW,
    Scripted,
    assert_one_line_error,
    backfilled,
    random_case,
    stored_bars,
)
from test_backtest_realism import Scripted as TrailScripted

from sptrader.backtest import run_backtest
from sptrader.config import BrokerConfig, RiskConfig
from sptrader.models import US_PER_MINUTE

HOUR = 60 * US_PER_MINUTE
TIMING = ("elapsed_s", "bars_per_s", "detail_timeframe", "detail_bars", "net_pnl_without_detail")


def minutes(
    path: list[tuple[float, float, float, float]], volume: list[float] | None = None
) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "volume": volume if volume is not None else [1e9] * len(path),
            "ts": pl.Series([T0 + i * US_PER_MINUTE for i in range(len(path))]).cast(
                pl.Datetime("us")
            ),
            "open": [p[0] for p in path],
            "high": [p[1] for p in path],
            "low": [p[2] for p in path],
            "close": [p[3] for p in path],
        }
    )


def hours(fine: pl.DataFrame) -> pl.DataFrame:
    """The hourly bars the store would roll up from ``fine``."""
    return (
        fine.group_by_dynamic("ts", every="1h")
        .agg(
            pl.col("open").first(),
            pl.col("high").max(),
            pl.col("low").min(),
            pl.col("close").last(),
            pl.col("volume").sum(),
        )
        .sort("ts")
    )


def flat(count: int, price: float = 100.0) -> list[tuple[float, float, float, float]]:
    return [(price, price + 0.1, price - 0.1, price)] * count


def path_up_then_down() -> list[tuple[float, float, float, float]]:
    """Hour 0 flat; in hour 1 the price reaches 103.5 at minute 70, then 98.5 at
    minute 100; hour 2 flat at 100."""
    path = flat(60) + flat(10)
    path += [(100.0, 103.5, 100.0, 103.0)]  # minute 70: through the target (103)
    path += flat(29, 101.0)
    path += [(101.0, 101.0, 98.5, 99.0)]  # minute 100: through the stop (99)
    path += flat(19, 99.5)
    return path + flat(60)


BROKER = BrokerConfig(starting_cash=10_000, slippage_bps=0, fee_bps=0, fee_per_unit=0)
BUY = {0: ("buy", 99.0, 103.0)}  # on hour 0's close: filled at hour 1's open


def test_the_1m_path_says_the_target_came_first() -> None:
    fine = minutes(path_up_then_down())
    coarse = hours(fine)
    assert coarse.height == 3 and coarse["high"][1] == 103.5 and coarse["low"][1] == 98.5
    blind = run_backtest(Scripted(BUY), coarse, BROKER, RiskConfig(), "1h")
    (trade,) = blind.trades.to_dicts()
    assert trade["exit_reason"] == "stop" and blind.summary["ambiguous_bars"] == 1
    seen = run_backtest(
        Scripted(BUY), coarse, BROKER, RiskConfig(), "1h", detail=fine, detail_timeframe="1m"
    )
    (trade,) = seen.trades.to_dicts()
    assert trade["exit_reason"] == "target" and trade["exit_price"] == 103.0
    assert trade["entry_time_us"] == T0 + HOUR  # hour 1's open: its first minute
    assert trade["exit_time_us"] == T0 + 70 * US_PER_MINUTE
    assert trade["bars"] == 0  # in hourly bars: out within the entry hour
    s = seen.summary
    assert s["detail_timeframe"] == "1m" and s["detail_bars"] == 180
    assert s["ambiguous_bars"] == 1  # what the hourly bars alone could not tell
    assert s["net_pnl_without_detail"] == pytest.approx(blind.summary["net_pnl"])
    assert s["net_pnl"] > 0 > s["net_pnl_without_detail"]
    # The curve stays hourly, so its figures compare with the run without detail.
    assert seen.equity.height == blind.equity.height == 3
    assert seen.equity["equity"][-1] == pytest.approx(10_000 + s["net_pnl"])


def test_a_gap_inside_the_bar_fills_the_stop_at_the_worse_open() -> None:
    path = flat(60) + flat(30) + [(97.0, 97.2, 96.8, 97.0)] + flat(29, 97.0) + flat(60, 97.0)
    fine = minutes(path)
    slipping = BrokerConfig(starting_cash=10_000, slippage_bps=10, fee_bps=0, fee_per_unit=0)
    seen = run_backtest(
        Scripted({0: ("buy", 99.0, None)}), hours(fine), slipping, RiskConfig(), "1h",
        detail=fine, detail_timeframe="1m",
    )  # fmt: skip
    (trade,) = seen.trades.to_dicts()
    # Minute 90 opened at 97, through the stop at 99: filled there, slipped 10 bps.
    assert trade["exit_reason"] == "stop"
    assert trade["exit_time_us"] == T0 + 90 * US_PER_MINUTE
    assert trade["exit_price"] == pytest.approx(97.0 * (1 - 0.001))
    blind = run_backtest(
        Scripted({0: ("buy", 99.0, None)}), hours(fine), slipping, RiskConfig(), "1h"
    )
    # The hour opened at 100: on hourly bars alone the stop fills at its price.
    assert blind.trades["exit_price"][0] == pytest.approx(99.0 * (1 - 0.001))


@pytest.mark.parametrize(("seed", "share"), [(1, 0.0), (2, 0.0), (3, 0.0), (4, 0.002)])
def test_detail_on_the_same_bars_changes_nothing(seed: int, share: float) -> None:
    """The fine path equal to the bars themselves: every trade, fill and figure is the
    run without detail's (the mapping of events onto the path is exact), with the volume
    cap too."""
    bars, script = random_case(seed, 2000)
    rng = np.random.default_rng(seed)
    bars = bars.with_columns(pl.Series("volume", rng.uniform(0, 1e6, bars.height)))
    broker = BrokerConfig(
        starting_cash=50_000, slippage_bps=2, fee_bps=1, fee_per_unit=0.001,
        max_volume_share=share,
    )  # fmt: skip
    risk = RiskConfig(risk_per_trade_pct=0.5)
    start = T0 + 50 * US_PER_MINUTE
    plain = run_backtest(Scripted(script), bars, broker, risk, start_us=start)
    detailed = run_backtest(
        Scripted(script), bars, broker, risk, start_us=start, detail=bars, detail_timeframe="1m"
    )
    assert detailed.trades.equals(plain.trades) and plain.trades.height > 30
    assert share == 0 or plain.summary["partial_fills"] > 0
    assert detailed.equity.equals(plain.equity)
    assert detailed.fills.equals(plain.fills)
    same = {k: v for k, v in plain.summary.items() if k not in TIMING}
    assert {k: v for k, v in detailed.summary.items() if k not in TIMING} == same


def test_hourly_sma_on_a_random_path_exits_where_the_path_says() -> None:
    """Every detailed exit by stop or target is at a minute whose range reaches it, and
    no earlier minute since the entry reached either level."""
    rng = np.random.default_rng(4)
    count = 60 * 24 * 4
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.001, count)))
    open_ = np.concatenate(([100.0], close[:-1]))
    path = list(
        zip(
            open_,
            np.maximum(open_, close) * 1.0005,
            np.minimum(open_, close) * 0.9995,
            close,
            strict=True,
        )
    )
    fine = minutes(path)
    coarse = hours(fine)
    script = {
        i: ("buy", float(coarse["close"][i]) * 0.995, float(coarse["close"][i]) * 1.01)
        for i in range(0, coarse.height - 1, 6)
    }
    seen = run_backtest(
        Scripted(script), coarse, BROKER, RiskConfig(), "1h", detail=fine, detail_timeframe="1m"
    )
    ts = fine["ts"].dt.epoch("us").to_numpy()
    highs, lows = fine["high"].to_numpy(), fine["low"].to_numpy()
    checked = 0
    for trade in seen.trades.to_dicts():
        if trade["exit_reason"] not in ("stop", "target"):
            continue
        entry = int(np.searchsorted(ts, trade["entry_time_us"]))
        exit_ = int(np.searchsorted(ts, trade["exit_time_us"]))
        reached = (lows[entry:exit_] <= trade["stop"]) | (highs[entry:exit_] >= trade["target"])
        assert not reached.any()
        level = trade["stop"] if trade["exit_reason"] == "stop" else trade["target"]
        assert lows[exit_] <= level <= highs[exit_] or trade["exit_reason"] == "stop"
        checked += 1
    assert checked > 5


def test_a_trailing_stop_moves_and_is_hit_inside_one_hour() -> None:
    """Long from hour 1's open at 100, trailing 2: minute 70 reaches 105 (the stop to
    103), minute 90 falls to 102.5: stopped at 103 inside the hour. On hourly bars alone
    the hour's own high cannot move its stop, so the stop (103) is only met at hour 2's
    open, 102.8: a gap fill."""
    path = flat(60) + flat(10) + [(100.0, 105.0, 100.0, 104.8)] + flat(19, 104.8)
    path += [(104.8, 104.8, 102.5, 102.8), *flat(29, 102.8), *flat(60, 102.8)]
    fine = minutes(path)
    buy = TrailScripted({0: ("buy", None, None, 2.0, None)})
    seen = run_backtest(
        buy, hours(fine), BROKER, RiskConfig(), "1h", detail=fine, detail_timeframe="1m"
    )
    (trade,) = seen.trades.to_dicts()
    assert (trade["exit_reason"], trade["exit_price"], trade["stop"]) == ("stop", 103.0, 103.0)
    assert trade["exit_time_us"] == T0 + 90 * US_PER_MINUTE
    blind = run_backtest(buy, hours(fine), BROKER, RiskConfig(), "1h")
    (trade,) = blind.trades.to_dicts()
    assert (trade["exit_reason"], trade["exit_price"]) == ("stop", 102.8)
    assert trade["exit_time_us"] == T0 + 2 * HOUR
    assert seen.summary["net_pnl_without_detail"] == pytest.approx(blind.summary["net_pnl"])


def test_fills_are_capped_by_each_minutes_volume() -> None:
    """10 units bought with half of each minute's volume of 4: 2 a minute over hour 1's
    first five minutes, at their opens (the hour's volume alone would fill them at
    once)."""
    path = flat(60) + [(100.0 + i, 100.0 + i, 100.0 + i, 100.0 + i) for i in range(60)]
    fine = minutes(path, [4.0] * 120)
    capped = BrokerConfig(
        starting_cash=10_000, slippage_bps=0, fee_bps=0, signal_notional=1_000,
        max_volume_share=0.5,
    )  # fmt: skip
    buy = Scripted({0: ("buy", None, None)})
    seen = run_backtest(
        buy, hours(fine), capped, RiskConfig(), "1h", detail=fine, detail_timeframe="1m"
    )
    (trade,) = seen.trades.to_dicts()
    assert trade["qty"] == pytest.approx(10.0)
    assert trade["entry_price"] == pytest.approx(102.0)  # the mean of 100 ... 104
    assert seen.summary["partial_fills"] == 4
    assert seen.summary["volume_cap"] == "0.5 of each bar's volume"
    entries = seen.fills.filter(pl.col("side") == "buy")
    assert entries["price"].to_list() == [100.0, 101.0, 102.0, 103.0, 104.0]
    blind = run_backtest(buy, hours(fine), capped, RiskConfig(), "1h")
    assert blind.summary["partial_fills"] == 0 and blind.trades["entry_price"][0] == 100.0
    # Minutes without a volume: the cap cannot be applied, and the summary says so.
    silent = minutes(path, [0.0] * 120)
    unknown = run_backtest(
        buy, hours(fine), capped, RiskConfig(), "1h", detail=silent, detail_timeframe="1m"
    )
    assert unknown.summary["volume_cap"] == "off: no volume"


# --- the command -------------------------------------------------------------------------


def test_detail_from_the_command(run, cli_home: Path) -> None:
    backfilled(run, ("2026-11-01T20:00Z", "2026-11-03"))
    args = ("backtest", "breakout", "SIM:EURUSD", *WINDOW, "--tf", "15m")
    data = json.loads(run(*args, "--detail", "1m", "--format", "json").out)
    s = data["summary"]
    assert s["detail_timeframe"] == "1m" and s["detail_bars"] == 1440
    assert s["bars"] == 96  # the figures stay per 15m bar
    blind = json.loads(run(*args, "--format", "json").out)["summary"]
    assert s["net_pnl_without_detail"] == pytest.approx(blind["net_pnl"])
    assert s["ambiguous_bars"] == blind["ambiguous_bars"]
    # The same as the engine over the stored bars.
    fine = stored_bars(cli_home, "2026-11-02", "2026-11-03")
    assert fine.height == 1440
    table = run(*args, "--detail", "1m")
    assert table.code == 0, table.err
    assert "intra-bar detail: filled on the 1m path" in table.out
    plain = run(*args)
    if blind["ambiguous_bars"]:
        assert "--detail 1m would resolve them" in plain.out


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--detail", "1m"], "--detail 1m must be finer than --tf 1m"),
        (["--tf", "1h", "--detail", "7m"], "--detail 7m must divide --tf 1h"),
        (
            ["--tf", "1h", "--detail", "1m", "--param", "fast=5,10"],
            "--detail fills one backtest",
        ),
    ],
)
def test_detail_mistakes_are_one_line(run, extra: list[str], message: str) -> None:
    line = assert_one_line_error(run("backtest", "sma_cross", "SIM:EURUSD", *WINDOW, *extra), 2)
    assert message in line, line
