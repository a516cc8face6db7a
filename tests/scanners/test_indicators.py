"""Indicators: TA-Lib agreement, warm-up rows, missing inputs, spec parsing, CLI --with."""

from __future__ import annotations

import csv
import io
import itertools
import json
import math
from datetime import datetime, timedelta

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from sptrader.errors import UsageError
from sptrader.indicators import add_indicators, lookback, parse_spec, parse_specs, warmup

ALL = ["sma20", "ema20", "wma10", "rsi14", "atr14", "adx14", "macd", "bb20", "stoch"]
ALL += ["donchian20", "vwap"]


def make_bars(n: int = 600, seed: int = 7, scale: float = 1.0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    close = scale * (100 + np.cumsum(rng.normal(0, 1, n)))
    high = close + rng.random(n) * scale
    low = close - rng.random(n) * scale
    # A flat stretch: no range at all (RSI, stochastic and ADX edge cases).
    if n > 230:
        close[200:230] = high[200:230] = low[200:230] = close[200]
    start = datetime(2026, 1, 5, 22, 0)
    return pl.DataFrame(
        {
            "ts": [start + timedelta(minutes=i) for i in range(n)],
            "open": close + rng.normal(0, 0.2, n),
            "high": high,
            "low": low,
            "close": close,
            "volume": rng.random(n) * 1000,
            "trades": np.arange(n, dtype=np.int64),
        }
    ).with_columns(pl.col("ts").cast(pl.Datetime("us")))


def column(frame: pl.DataFrame, name: str) -> np.ndarray:
    return frame[name].cast(pl.Float64).fill_null(float("nan")).to_numpy()


def assert_same(ours: np.ndarray, reference: np.ndarray) -> None:
    assert np.array_equal(np.isnan(ours), np.isnan(reference)), "warm-up rows differ"
    np.testing.assert_allclose(ours, reference, rtol=1e-9, atol=1e-9, equal_nan=True)


# --- TA-Lib -----------------------------------------------------------------------------


@pytest.mark.parametrize("scale", [0.01, 1.0, 600.0])
def test_values_match_talib(scale: float) -> None:
    talib = pytest.importorskip("talib")
    bars = make_bars(scale=scale)
    out = add_indicators(bars, ALL)
    h, lo, c = (bars[name].to_numpy() for name in ("high", "low", "close"))
    macd, signal, hist = talib.MACD(c, 12, 26, 9)
    upper, middle, lower = talib.BBANDS(c, 20, 2.0, 2.0, 0)
    slow_k, slow_d = talib.STOCH(h, lo, c, 14, 3, 0, 3, 0)
    reference = {
        "sma20": talib.SMA(c, 20),
        "ema20": talib.EMA(c, 20),
        "wma10": talib.WMA(c, 10),
        "rsi14": talib.RSI(c, 14),
        "atr14": talib.ATR(h, lo, c, 14),
        "adx14": talib.ADX(h, lo, c, 14),
        "macd": macd,
        "macd_signal": signal,
        "macd_hist": hist,
        "bb20_upper": upper,
        "bb20_middle": middle,
        "bb20_lower": lower,
        "stoch_k": slow_k,
        "stoch_d": slow_d,
        "donchian20_upper": talib.MAX(h, 20),
        "donchian20_lower": talib.MIN(lo, 20),
    }
    for name, expected in reference.items():
        assert_same(column(out, name), expected)


def test_other_periods_match_talib() -> None:
    talib = pytest.importorskip("talib")
    bars = make_bars(400, seed=3)
    out = add_indicators(bars, ["ema5", "rsi2", "atr7", "adx5", "macd_5_35_5", "bb10_2.5"])
    out = add_indicators(out, ["stoch_5_3_4"])
    h, lo, c = (bars[name].to_numpy() for name in ("high", "low", "close"))
    macd, signal, hist = talib.MACD(c, 5, 35, 5)
    upper, _, lower = talib.BBANDS(c, 10, 2.5, 2.5, 0)
    slow_k, slow_d = talib.STOCH(h, lo, c, 5, 3, 0, 4, 0)
    assert_same(column(out, "ema5"), talib.EMA(c, 5))
    assert_same(column(out, "rsi2"), talib.RSI(c, 2))
    assert_same(column(out, "atr7"), talib.ATR(h, lo, c, 7))
    assert_same(column(out, "adx5"), talib.ADX(h, lo, c, 5))
    assert_same(column(out, "macd_5_35_5"), macd)
    assert_same(column(out, "macd_5_35_5_signal"), signal)
    assert_same(column(out, "macd_5_35_5_hist"), hist)
    assert_same(column(out, "bb10_2.5_upper"), upper)
    assert_same(column(out, "bb10_2.5_lower"), lower)
    assert_same(column(out, "stoch_5_3_4_k"), slow_k)
    assert_same(column(out, "stoch_5_3_4_d"), slow_d)


# --- hand-computed references (no TA-Lib needed) ----------------------------------------


def loop_ema(values: list[float], n: int) -> list[float | None]:
    out: list[float | None] = [None] * len(values)
    prev = sum(values[:n]) / n
    out[n - 1] = prev
    for i in range(n, len(values)):
        prev = (values[i] - prev) * (2 / (n + 1)) + prev
        out[i] = prev
    return out


def loop_rsi(values: list[float], n: int) -> list[float | None]:
    out: list[float | None] = [None] * len(values)
    changes = [b - a for a, b in itertools.pairwise(values)]
    gain = sum(max(x, 0) for x in changes[:n]) / n
    loss = sum(max(-x, 0) for x in changes[:n]) / n
    out[n] = 100 * gain / (gain + loss) if gain + loss else 0.0
    for i in range(n + 1, len(values)):
        x = changes[i - 1]
        gain = (gain * (n - 1) + max(x, 0)) / n
        loss = (loss * (n - 1) + max(-x, 0)) / n
        out[i] = 100 * gain / (gain + loss) if gain + loss else 0.0
    return out


def approx_list(values: list[float | None]) -> list:
    return [None if v is None else pytest.approx(v, rel=1e-12, abs=1e-12) for v in values]


def test_small_cases_by_hand() -> None:
    closes = [1.0, 2.0, 3.0, 4.0, 5.0, 4.0, 6.0]
    bars = make_bars(len(closes)).with_columns(
        pl.Series("close", closes), pl.Series("high", closes), pl.Series("low", closes)
    )
    out = add_indicators(bars, ["sma3", "ema3", "wma3", "rsi3", "donchian2"])
    assert out["sma3"].to_list() == approx_list([None, None, 2.0, 3.0, 4.0, 13 / 3, 5.0])
    # EMA(3): seed = SMA of the first 3 (2.0), then alpha 0.5.
    assert out["ema3"].to_list() == approx_list([None, None, 2.0, 3.0, 4.0, 4.0, 5.0])
    # WMA(3): (1*a + 2*b + 3*c) / 6.
    assert out["wma3"].to_list() == approx_list(
        [None, None, 14 / 6, 20 / 6, 26 / 6, 26 / 6, 31 / 6]
    )
    # RSI(3): changes +1 +1 +1 -> 100, +1 -> 100, -1: gain 2/3 loss 1/3 -> 66.67,
    # +2: gain 10/9 loss 2/9 -> 83.33.
    assert out["rsi3"].to_list() == approx_list([None, None, None, 100.0, 100.0, 200 / 3, 250 / 3])
    assert out["donchian2_upper"].to_list() == [None, 2.0, 3.0, 4.0, 5.0, 5.0, 6.0]


def test_ewm_trick_matches_the_recursive_loops() -> None:
    bars = make_bars(300, seed=11)
    closes = bars["close"].to_list()
    out = add_indicators(bars, ["ema10", "rsi14"])
    assert out["ema10"].to_list() == approx_list(loop_ema(closes, 10))
    assert out["rsi14"].to_list() == approx_list(loop_rsi(closes, 14))


def loop_wilder(values: list[float], n: int, first: int) -> list[float | None]:
    """Wilder's average of ``values[first:]``: seeded with the mean of its first n
    values, then ``avg = (avg*(n-1) + x)/n``."""
    out: list[float | None] = [None] * len(values)
    if len(values) < first + n:
        return out
    avg = sum(values[first : first + n]) / n
    out[first + n - 1] = avg
    for i in range(first + n, len(values)):
        avg = (avg * (n - 1) + values[i]) / n
        out[i] = avg
    return out


def loop_macd(values: list[float], fast: int, slow: int, signal: int) -> list[float | None]:
    """TA-Lib's MACD line: both EMAs seeded at row slow-1 with the SMA of their own
    last closes there; null until the signal's warm-up (row slow+signal-2) is over."""

    def ema_from(start: int, n: int) -> list[float]:
        prev, alpha, out = sum(values[start - n + 1 : start + 1]) / n, 2 / (n + 1), []
        out.append(prev)
        for x in values[start + 1 :]:
            prev = (x - prev) * alpha + prev
            out.append(prev)
        return out

    out: list[float | None] = [None] * len(values)
    if len(values) < slow + signal - 1:
        return out
    lines = [a - b for a, b in zip(ema_from(slow - 1, fast), ema_from(slow - 1, slow), strict=True)]
    for i, line in enumerate(lines[signal - 1 :], start=slow + signal - 2):
        out[i] = line
    return out


@pytest.mark.parametrize("extra", [-1, 0, 1, 2, 40])
def test_seeds_at_the_edge_of_the_warm_up(extra: int) -> None:
    # Frames ending just before, at and just after each smoother's seed row: the seed
    # is the mean of its first n values (not a rolling mean), the recursion follows.
    for n in (2, 5, 14):
        bars = make_bars(n + 1 + extra, seed=n)
        closes = bars["close"].to_list()
        h, lo = bars["high"].to_list(), bars["low"].to_list()
        out = add_indicators(bars, [f"ema{n}", f"rsi{n}", f"atr{n}", "macd_3_7_4"])
        ema = loop_ema(closes, n) if len(closes) >= n else [None] * len(closes)
        assert out[f"ema{n}"].to_list() == approx_list(ema)
        rsi = loop_rsi(closes, n) if len(closes) > n else [None] * len(closes)
        assert out[f"rsi{n}"].to_list() == approx_list(rsi)
        ranges = [h[0] - lo[0]] + [
            max(h[i] - lo[i], abs(h[i] - closes[i - 1]), abs(lo[i] - closes[i - 1]))
            for i in range(1, len(closes))
        ]
        assert out[f"atr{n}"].to_list() == approx_list(loop_wilder(ranges, n, 1))
        assert out["macd_3_7_4"].to_list() == approx_list(loop_macd(closes, 3, 7, 4))


def test_shortest_and_long_periods_match_talib() -> None:
    talib = pytest.importorskip("talib")
    bars = make_bars(3000, seed=5, scale=40.0)
    specs = ["ema2", "rsi2", "atr2", "adx2", "ema300", "rsi120", "atr90", "adx40"]
    out = add_indicators(bars, [*specs, "macd_50_200_30", "bb150_1.5"])
    h, lo, c = (bars[name].to_numpy() for name in ("high", "low", "close"))
    for n in (2, 300):
        assert_same(column(out, f"ema{n}"), talib.EMA(c, n))
    for n in (2, 120):
        assert_same(column(out, f"rsi{n}"), talib.RSI(c, n))
    for n in (2, 90):
        assert_same(column(out, f"atr{n}"), talib.ATR(h, lo, c, n))
    for n in (2, 40):
        assert_same(column(out, f"adx{n}"), talib.ADX(h, lo, c, n))
    for ours, theirs in zip(
        ("macd_50_200_30", "macd_50_200_30_signal", "macd_50_200_30_hist"),
        talib.MACD(c, 50, 200, 30),
        strict=True,
    ):
        assert_same(column(out, ours), theirs)
    upper, middle, lower = talib.BBANDS(c, 150, 1.5, 1.5, 0)
    assert_same(column(out, "bb150_1.5_upper"), upper)
    assert_same(column(out, "bb150_1.5_middle"), middle)
    assert_same(column(out, "bb150_1.5_lower"), lower)


def test_true_range_is_talibs_to_the_bit() -> None:
    # max(high, prev close) - min(low, prev close) is TA-Lib's largest of three ranges
    # on every bar with high >= low, bit for bit.
    talib = pytest.importorskip("talib")
    from sptrader.indicators import _true_range

    for scale in (0.01, 1.0, 600.0):
        bars = make_bars(2000, seed=4, scale=scale)
        ours = bars.with_row_index("__row").select(_true_range())
        h, lo, c = (bars[name].to_numpy() for name in ("high", "low", "close"))
        reference = talib.TRANGE(h, lo, c)
        assert np.array_equal(column(ours, ours.columns[0]), reference, equal_nan=True)


def test_holes_match_talib_on_the_rows_left() -> None:
    # A skipped row is as if the bar did not exist: TA-Lib on the rows without holes.
    talib = pytest.importorskip("talib")
    bars = make_bars(2000, seed=9)
    holed = bars.with_columns(
        pl.when(pl.int_range(pl.len()) % 97 == 13)
        .then(None)
        .otherwise(pl.col("close"))
        .alias("close")
    )
    out = add_indicators(holed, ["ema20", "rsi14", "atr14", "macd"]).drop_nulls("close")
    h, lo, c = (out[name].to_numpy() for name in ("high", "low", "close"))
    assert_same(column(out, "ema20"), talib.EMA(c, 20))
    assert_same(column(out, "rsi14"), talib.RSI(c, 14))
    assert_same(column(out, "atr14"), talib.ATR(h, lo, c, 14))
    assert_same(column(out, "macd_signal"), talib.MACD(c, 12, 26, 9)[1])


def test_wilder_rsi_published_example() -> None:
    # The closes of StockCharts' RSI worked example (14 periods). Its sheet prints 70.53,
    # 66.32, 66.55, 69.41, 66.36; exact arithmetic (and TA-Lib 0.6, checked) gives
    # 70.46, 66.25, 66.48, 69.35, 66.29: the sheet's offset was not traced here.
    closes = [44.34, 44.09, 44.15, 43.61, 44.33, 44.83, 45.10, 45.42, 45.84, 46.08, 45.89]
    closes += [46.03, 45.61, 46.28, 46.28, 46.00, 46.03, 46.41, 46.22, 45.64]
    bars = make_bars(len(closes)).with_columns(pl.Series("close", closes))
    rsi = add_indicators(bars, ["rsi14"])["rsi14"].to_list()
    assert rsi[:14] == [None] * 14
    assert [round(v, 2) for v in rsi[14:19]] == [70.46, 66.25, 66.48, 69.35, 66.29]


def test_vwap_restarts_each_utc_day() -> None:
    start = datetime(2026, 1, 5, 23, 58)
    bars = pl.DataFrame(
        {
            "ts": [start + timedelta(minutes=i) for i in range(4)],
            "open": [1.0] * 4,
            "high": [3.0, 6.0, 9.0, 12.0],
            "low": [3.0, 6.0, 9.0, 12.0],
            "close": [3.0, 6.0, 9.0, 12.0],
            "volume": [1.0, 3.0, 2.0, 0.0],
            "trades": [1, 1, 1, 1],
        }
    )
    vwap = add_indicators(bars, ["vwap"])["vwap"].to_list()
    assert vwap == [3.0, pytest.approx(21 / 4), 9.0, 9.0]


# --- warm-up and column names -----------------------------------------------------------


def test_warmup_rows_are_null_and_then_values() -> None:
    bars = make_bars()
    out = add_indicators(bars, ALL)
    for text in ALL:
        spec = parse_spec(text)
        for name in spec.columns:
            values = out[name]
            first = warmup(text)
            assert values.head(first).null_count() == first, name
            assert values.slice(first).null_count() == 0, name
    assert warmup("macd") == 33 and warmup("stoch") == 17 and warmup("adx14") == 27
    assert warmup("rsi14") == 14 and warmup("sma20") == 19 and warmup("vwap") == 0
    assert lookback("sma20") == 19 and lookback("rsi14") == 14 + 280


def test_column_names() -> None:
    out = add_indicators(make_bars(50), ALL)
    added = out.columns[7:]
    assert added == [
        "sma20", "ema20", "wma10", "rsi14", "atr14", "adx14",
        "macd", "macd_signal", "macd_hist",
        "bb20_upper", "bb20_middle", "bb20_lower",
        "stoch_k", "stoch_d", "donchian20_upper", "donchian20_lower", "vwap",
    ]  # fmt: skip
    assert all(out[name].dtype == pl.Float64 for name in added)


def test_short_and_empty_frames() -> None:
    out = add_indicators(make_bars(10), ALL)
    assert out["macd"].null_count() == 10 and out["sma20"].null_count() == 10
    empty = add_indicators(make_bars(10).head(0), ALL)
    assert empty.height == 0 and "bb20_upper" in empty.columns


# --- missing inputs ---------------------------------------------------------------------


@pytest.mark.parametrize("bad", [None, float("nan")])
def test_a_missing_close_skips_that_row_only(bad: float | None) -> None:
    bars = make_bars(300)
    closes = bars["close"].to_list()
    closes[150] = bad
    holed = bars.with_columns(pl.Series("close", closes, dtype=pl.Float64))
    out = add_indicators(holed, ALL)
    for name in ("sma20", "ema20", "rsi14", "macd", "bb20_upper", "atr14", "stoch_k", "vwap"):
        values = out[name]
        assert values[150] is None, name
        assert values.slice(warmup(name.split("_")[0]) + 1).null_count() == 1, name
        assert values.tail(100).is_not_nan().all(), name
    # Computed as if the bar were not there.
    clean = add_indicators(holed.filter(pl.int_range(pl.len()) != 150), ["ema20", "rsi14"])
    assert out["ema20"].drop_nulls().to_list() == clean["ema20"].drop_nulls().to_list()
    assert out["rsi14"].drop_nulls().to_list() == clean["rsi14"].drop_nulls().to_list()
    # Indicators that do not read close are untouched.
    assert out["donchian20_upper"].null_count() == 19


def test_a_missing_high_does_not_touch_close_indicators() -> None:
    bars = make_bars(100)
    highs = bars["high"].to_list()
    highs[60] = None
    out = add_indicators(bars.with_columns(pl.Series("high", highs)), ["sma20", "atr14"])
    assert out["sma20"].null_count() == 19
    assert out["atr14"].null_count() == 15 and out["atr14"][60] is None


# --- several instruments stacked ---------------------------------------------------------

# Every form of KNOWN_FORMS, with default and explicit parameters.
EVERY_FORM = [*ALL, "sma5", "ema3", "wma2", "rsi5", "atr3", "adx5", "donchian3"]
EVERY_FORM += ["macd_5_10_4", "bb10_2.5", "stoch_5_2_4", "stoch_5_1_1"]


def stacked_bars() -> tuple[pl.DataFrame, list[pl.DataFrame]]:
    """Instruments of different lengths (one shorter than any warm-up, one of one bar),
    random walks of different scales, some with missing inputs (null and NaN), one
    crossing UTC midnight at another time than the others; stacked by instrument, ts."""
    parts = []
    for index, (n, scale) in enumerate(
        [(600, 1.0), (250, 0.01), (40, 600.0), (1, 1.0), (300, 5.0)]
    ):
        bars = make_bars(n, seed=index, scale=scale)
        if index == 4:
            bars = bars.with_columns(pl.col("ts") + timedelta(hours=5, minutes=17))
        if index in (1, 4):
            closes, highs = bars["close"].to_list(), bars["high"].to_list()
            closes[30], closes[120] = None, float("nan")
            highs[75] = None
            bars = bars.with_columns(
                pl.Series("close", closes, dtype=pl.Float64),
                pl.Series("high", highs, dtype=pl.Float64),
            )
        parts.append(bars.select(pl.lit(f"SIM:I{index}").alias("instrument"), pl.all()))
    return pl.concat(parts), parts


@pytest.mark.parametrize("spec", EVERY_FORM)
def test_stacked_instruments_give_exactly_each_instrument_alone(spec: str) -> None:
    stacked, parts = stacked_bars()
    alone = pl.concat([add_indicators(part, [spec]) for part in parts])
    together = add_indicators(stacked, [spec], over="instrument")
    assert_frame_equal(together, alone, check_exact=True)


def test_stacked_instruments_with_every_form_at_once() -> None:
    stacked, parts = stacked_bars()
    alone = pl.concat([add_indicators(part, EVERY_FORM) for part in parts])
    assert_frame_equal(
        add_indicators(stacked, EVERY_FORM, over="instrument"), alone, check_exact=True
    )
    # Without missing inputs too (the one-query path).
    clean = [part for index, part in enumerate(parts) if index not in (1, 4)]
    alone = pl.concat([add_indicators(part, EVERY_FORM) for part in clean])
    together = add_indicators(pl.concat(clean), EVERY_FORM, over="instrument")
    assert_frame_equal(together, alone, check_exact=True)


def test_stacked_needs_its_instrument_column() -> None:
    with pytest.raises(UsageError, match="no instrument column"):
        add_indicators(make_bars(10), ["sma5"], over="instrument")


# --- specs ------------------------------------------------------------------------------


def test_parse_specs() -> None:
    assert [s.text for s in parse_specs("RSI14, ema20,macd,bb20,atr14,rsi14")] == [
        "rsi14", "ema20", "macd", "bb20", "atr14",
    ]  # fmt: skip
    assert parse_spec("macd_12_26_9").columns == (
        "macd_12_26_9", "macd_12_26_9_signal", "macd_12_26_9_hist",
    )  # fmt: skip
    assert parse_spec("bb20_2.5").k == 2.5
    assert parse_spec("stoch").periods == (14, 3, 3)


@pytest.mark.parametrize(
    "spec", ["foo", "sma", "sma0", "sma1", "rsi-3", "macd_26_12_9", "bb20_0", "ema20x", "", " , "]
)
def test_bad_specs_name_the_known_forms(spec: str) -> None:
    with pytest.raises(UsageError) as error:
        parse_specs(spec)
    assert "known forms" in str(error.value) and "rsiN" in str(error.value)


# --- CLI --------------------------------------------------------------------------------


def test_candles_with_indicators_csv(run) -> None:
    # The reads must see the same newest bars: taken again when a minute turned between
    # them (the plain read before and after the one with indicators disagree).
    for _ in range(3):
        plain = run("candles", "SIM:EURUSD", "--last", "5", "--format", "csv")
        result = run(
            "candles", "SIM:EURUSD", "--last", "5", "--format", "csv",
            "--with", "rsi14,ema20,macd,bb20,atr14",
        )  # fmt: skip
        again = run("candles", "SIM:EURUSD", "--last", "5", "--format", "csv")
        if [line.split(",")[0] for line in plain.out.splitlines()] == [
            line.split(",")[0] for line in again.out.splitlines()
        ]:
            break
    assert result.code == 0, result.err
    rows = list(csv.DictReader(io.StringIO(result.out)))
    assert len(rows) == 5
    bar_columns = list(csv.DictReader(io.StringIO(plain.out)).fieldnames or [])
    assert bar_columns == [
        "ts", "open", "high", "low", "close", "volume", "trades", "buy_volume", "sell_volume",
    ]  # fmt: skip
    assert list(rows[0])[: len(bar_columns)] == bar_columns
    assert list(rows[0])[len(bar_columns) :] == [
        "rsi14", "ema20", "macd", "macd_signal", "macd_hist",
        "bb20_upper", "bb20_middle", "bb20_lower", "atr14",
    ]  # fmt: skip
    for row in rows:  # enough older bars were read: every printed row has values
        assert all(math.isfinite(float(row[name])) for name in list(row)[len(bar_columns) :])
        # SIM FX bars are built from quotes: no order flow, and no indicator fills it in.
        assert (row["buy_volume"], row["sell_volume"]) == ("", "")
        assert 0 <= float(row["rsi14"]) <= 100
        assert float(row["bb20_lower"]) <= float(row["bb20_middle"]) <= float(row["bb20_upper"])
    # The bars themselves are those printed without --with.
    plain_rows = list(csv.DictReader(io.StringIO(plain.out)))
    assert [r["ts"] for r in rows] == [r["ts"] for r in plain_rows]


def test_candles_with_indicators_json_and_range(run) -> None:
    recent = list(
        csv.DictReader(
            io.StringIO(run("candles", "SIM:EURUSD", "--last", "40", "--format", "csv").out)
        )
    )
    start, end = recent[-10]["ts"], recent[-7]["ts"]
    result = run(
        "candles", "SIM:EURUSD", "--from", start, "--to", end, "--format", "json", "--with", "sma20,vwap,stoch"
    )  # fmt: skip
    assert result.code == 0, result.err
    rows = json.loads(result.out)
    assert [r["ts"] for r in rows] == [r["ts"] for r in recent[-10:-7]]
    for row in rows:
        assert row["sma20"] is not None and row["vwap"] is not None
        assert row["stoch_k"] is not None and row["stoch_d"] is not None
    closes = [float(r["close"]) for r in recent]
    assert rows[0]["sma20"] == pytest.approx(sum(closes[-29:-9]) / 20, rel=1e-12)


def test_candles_with_an_unknown_indicator(run) -> None:
    result = run("candles", "SIM:EURUSD", "--last", "5", "--with", "rsi14,magic7")
    assert result.code == 2
    assert "magic7" in result.err and "known forms" in result.err and "Traceback" not in result.err


def test_candles_with_indicators_table(run) -> None:
    result = run("candles", "SIM:EURUSD", "--last", "3", "--with", "rsi14,macd")
    assert result.code == 0, result.err
    assert "rsi14" in result.out and "macd_hist" in result.out
