"""``sptrader backtest --check-bias``: strategies that peek at later bars (``shift(-1)``,
a centred window, a column made in ``evaluate``) are caught at the right bar, the
built-ins pass clean, and indicators whose declared warm-up is too short are warned of."""

from __future__ import annotations

import io
import json
import re

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sptrader.backtest.bias import BiasFinding, check_bias, findings_json, print_report
from sptrader.models import US_PER_MINUTE
from sptrader.strategies import registry
from sptrader.strategies.base import Strategy

T0 = 1_767_571_200_000_000  # 2026-01-05T00:00:00Z
ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


def synthetic(count: int, seed: int = 7, *, rising: bool = False) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    steps = np.abs(rng.normal(0, 0.0005, count)) if rising else rng.normal(0, 0.0005, count)
    close = 1.1 * np.exp(np.cumsum(steps))
    open_ = np.concatenate(([1.1], close[:-1]))
    return pl.DataFrame(
        {
            "ts": pl.Series(T0 + np.arange(count, dtype=np.int64) * US_PER_MINUTE).cast(
                pl.Datetime("us")
            ),
            "open": open_,
            "high": np.maximum(open_, close) * 1.0002,
            "low": np.minimum(open_, close) * 0.9998,
            "close": close,
            "volume": np.ones(count),
            "trades": np.ones(count, dtype=np.int64),
        }
    )


def signals_where(bars: pl.DataFrame, condition: pl.Expr, side: str = "buy") -> pl.DataFrame:
    return bars.filter(condition.fill_null(False)).select(
        "instrument", "ts", pl.lit(side).alias("side")
    )


class NextClose(Strategy):
    """Buys when the next bar closes higher: ``shift(-1)`` inside the condition."""

    name = "next_close"

    def indicators(self) -> list[str]:
        return ["sma10"]

    def warmup_bars(self) -> int:
        return 11

    def evaluate(self, bars: pl.DataFrame) -> pl.DataFrame:
        return signals_where(bars, pl.col("close").shift(-1) > pl.col("close"))


class SmaPeek(Strategy):
    """Keeps the next close as a column of its own, then signals on it."""

    name = "sma_peek"

    def indicators(self) -> list[str]:
        return ["sma10"]

    def warmup_bars(self) -> int:
        return 11

    def evaluate(self, bars: pl.DataFrame) -> pl.DataFrame:
        bars = bars.with_columns(pl.col("close").shift(-1).alias("future_close"))
        return signals_where(bars, pl.col("future_close") > pl.col("sma10"))


class Centred(Strategy):
    """Buys below a centred moving average (it averages the 2 bars after, too)."""

    name = "centred"

    def warmup_bars(self) -> int:
        return 5

    def evaluate(self, bars: pl.DataFrame) -> pl.DataFrame:
        middle = pl.col("close").rolling_mean(5, center=True)
        return signals_where(bars, pl.col("close") < middle)


class PeekColumn(Strategy):
    """Adds a column two bars ahead that its signals never read: still a peek."""

    name = "peek_column"

    def indicators(self) -> list[str]:
        return ["sma20"]

    def warmup_bars(self) -> int:
        return 21

    def evaluate(self, bars: pl.DataFrame) -> pl.DataFrame:
        bars = bars.with_columns(
            pl.col("close").shift(2).alias("lag2"), pl.col("close").shift(-2).alias("lead2")
        )
        return signals_where(bars, pl.col("close") > pl.col("sma20"))


class ReplacesClose(Strategy):
    """Overwrites the bars' own close with the next one."""

    name = "replaces_close"

    def evaluate(self, bars: pl.DataFrame) -> pl.DataFrame:
        bars = bars.with_columns(pl.col("close").shift(-1))
        return signals_where(bars, pl.col("close") > pl.col("open"))


class HourTrend(Strategy):
    """Clean: reads the closed hour's close and SMA (informative bars)."""

    name = "hour_trend"

    def informative(self) -> dict[str, list[str]]:
        return {"1h": ["close", "sma3"]}

    def evaluate(self, bars: pl.DataFrame) -> pl.DataFrame:
        up = (pl.col("1h_close") > pl.col("1h_sma3")) & (pl.col("close") > pl.col("1h_close"))
        return signals_where(bars, up & ~up.shift(1).fill_null(False))


class LongEma(Strategy):
    """Declares far less warm-up than an EMA(200) needs to forget its seed."""

    name = "long_ema"

    def indicators(self) -> list[str]:
        return ["ema200", "sma20"]

    def warmup_bars(self) -> int:
        return 250

    def evaluate(self, bars: pl.DataFrame) -> pl.DataFrame:
        return signals_where(bars, pl.col("close") > pl.col("ema200"))


def only(findings: list[BiasFinding], column: str) -> BiasFinding:
    matching = [f for f in findings if f.column == column]
    assert len(matching) == 1, findings
    return matching[0]


def test_a_shift_minus_one_signal_is_caught_at_the_bar_before_the_first_cut() -> None:
    # Closes only rise: the full run buys on every bar but the last, so the first cut
    # already takes away the signal on the bar just before it.
    bars = synthetic(3000, rising=True)
    report = check_bias(NextClose(), bars, "1m")
    assert report.biased
    finding = only(report.lookahead, "signal")
    assert finding.kind == "signal"
    assert finding.strategy == "next_close"
    assert finding.cut_ts_us == report.cuts_us[0]
    assert finding.first_ts_us == report.cuts_us[0] - US_PER_MINUTE
    assert (finding.full_value, finding.truncated_value) == ("buy", None)
    # The first cut comes right after the warm-up (the indicators' lookback, 11 bars).
    assert report.cuts_us[0] == T0 + 12 * US_PER_MINUTE
    assert len(report.cuts_us) >= 10
    assert report.cuts_us[-1] == T0 + 2999 * US_PER_MINUTE


def test_a_column_made_in_evaluate_is_named_with_its_values() -> None:
    bars = synthetic(2000)
    report = check_bias(SmaPeek(), bars, "1m")
    assert report.biased
    finding = only(report.lookahead, "future_close")
    assert (finding.kind, finding.source) == ("indicator", "evaluate")
    first = report.cuts_us[0]
    assert finding.first_ts_us == first - US_PER_MINUTE
    row = (first - T0) // US_PER_MINUTE
    assert finding.full_value == pytest.approx(bars["close"][row])
    assert finding.truncated_value is None
    out = io.StringIO()
    print_report(report, out)
    lines = out.getvalue().splitlines()
    assert lines[0].startswith(
        "sma_peek: column future_close changes when later bars are"
        " removed, first at 2026-01-05 00:11 (full 1.0"
    )
    assert lines[0].endswith(", truncated null)")
    assert lines[-1].startswith("sma_peek: lookahead bias found")


def test_a_centred_window_is_caught() -> None:
    report = check_bias(Centred(), synthetic(3000), "1m")
    assert report.biased
    finding = only(report.lookahead, "signal")
    # The centred mean of a bar reads the two after it: the last two bars before a cut
    # lose theirs (null), and with them any signal on them.
    cut = next(c for c in report.cuts_us if c == finding.cut_ts_us)
    assert cut - finding.first_ts_us in (US_PER_MINUTE, 2 * US_PER_MINUTE)
    assert finding.truncated_value is None or finding.full_value is None


def test_a_peeking_column_is_named_even_when_no_signal_reads_it() -> None:
    report = check_bias(PeekColumn(), synthetic(3000), "1m")
    assert [f.column for f in report.lookahead] == ["lead2"]
    finding = report.lookahead[0]
    assert finding.first_ts_us == report.cuts_us[0] - 2 * US_PER_MINUTE
    assert finding.truncated_value is None and finding.full_value is not None


def test_a_replaced_bar_column_is_named() -> None:
    report = check_bias(ReplacesClose(), synthetic(2000), "1m")
    assert "close" in {f.column for f in report.lookahead}


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("sma_cross", {}),
        ("sma_cross", {"fast": 5, "slow": 20, "short": True}),
        ("breakout", {"short": True}),
        ("channel", {"kind": "regression"}),
        ("rsi_reversion", {"short": True}),
    ],
)
def test_built_ins_pass_clean(name: str, params: dict) -> None:
    strategy = registry.resolve(name, []).from_config(params)
    report = check_bias(strategy, synthetic(6000, seed=3), "1m")
    assert not report.biased, report.lookahead
    assert len(report.cuts_us) >= 10
    out = io.StringIO()
    print_report(report, out)
    assert out.getvalue().splitlines()[-1] == f"{name}: no lookahead found in 16 cuts"


def test_informative_bars_pass_clean() -> None:
    report = check_bias(HourTrend(), synthetic(3000), "1m")
    assert not report.biased, report.lookahead


def test_the_cuts_stay_after_start_us() -> None:
    start = T0 + 1000 * US_PER_MINUTE
    report = check_bias(NextClose(), synthetic(3000, rising=True), "1m", start_us=start)
    assert report.cuts_us[0] == start + US_PER_MINUTE
    assert report.lookahead[0].first_ts_us == start


def test_an_ema_with_too_short_a_warm_up_is_a_recursive_warning() -> None:
    report = check_bias(LongEma(), synthetic(8000), "1m")
    assert not report.biased  # a warning, not lookahead
    assert [f.column for f in report.recursive] == ["ema200"]
    finding = report.recursive[0]
    assert finding.kind == "recursive"
    assert finding.history_bars == 250
    assert finding.rel_diff is not None and finding.rel_diff > 1e-6
    assert finding.first_ts_us in report.probes_us
    assert finding.cut_ts_us == finding.first_ts_us - 250 * US_PER_MINUTE
    # Stable once the seed has faded: well past the declared 250 bars.
    assert finding.stable_bars is not None and 250 < finding.stable_bars <= 8000
    out = io.StringIO()
    print_report(report, out)
    warning, verdict = out.getvalue().splitlines()
    assert warning.startswith(
        "long_ema: warning: ema200 depends on the history before it: with the declared"
        " warm-up of 250 bars it is "
    )
    assert warning.endswith(f"; stable from {finding.stable_bars:,} bars of history")
    assert verdict == "long_ema: no lookahead found in 16 cuts"


def test_sma_cross_has_no_recursive_warning() -> None:
    report = check_bias(registry.resolve("sma_cross", [])(), synthetic(3000), "1m")
    assert report.findings == []


def test_findings_json_lists_every_field() -> None:
    report = check_bias(LongEma(), synthetic(8000), "1m")
    peek = check_bias(SmaPeek(), synthetic(2000), "1m")
    rows = findings_json(peek) + findings_json(report)
    json.dumps(rows)
    assert {row["kind"] for row in rows} == {"indicator", "signal", "recursive"}
    for row in rows:
        assert set(row) == {
            "strategy",
            "kind",
            "column",
            "source",
            "first_ts",
            "full_value",
            "truncated_value",
            "cut_ts",
            "rel_diff",
            "history_bars",
            "stable_bars",
        }
        assert ISO_Z.match(row["first_ts"]) and ISO_Z.match(row["cut_ts"])
    column = next(row for row in rows if row["column"] == "future_close")
    assert column["strategy"] == "sma_peek"
    assert column["first_ts"] == "2026-01-05T00:11:00Z"
    assert column["truncated_value"] is None and isinstance(column["full_value"], float)


def test_tracing_leaves_polars_as_it_was_even_when_evaluate_fails() -> None:
    methods = {name: pl.DataFrame.__dict__[name] for name in ("with_columns", "select")}

    class Fails(Strategy):
        name = "fails"

        def evaluate(self, bars: pl.DataFrame) -> pl.DataFrame:
            bars.with_columns(pl.lit(1).alias("x"))
            raise RuntimeError("broken")

    with pytest.raises(RuntimeError, match="broken"):
        check_bias(Fails(), synthetic(100), "1m")
    assert {name: pl.DataFrame.__dict__[name] for name in methods} == methods


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    lags=st.lists(st.integers(min_value=0, max_value=30), min_size=1, max_size=4),
    window=st.integers(min_value=2, max_value=40),
    seed=st.integers(min_value=0, max_value=1000),
)
def test_strategies_reading_only_past_bars_never_flag(
    lags: list[int], window: int, seed: int
) -> None:
    class Past(Strategy):
        name = "past"

        def evaluate(self, bars: pl.DataFrame) -> pl.DataFrame:
            level = sum(pl.col("close").shift(k) for k in lags) / len(lags)
            bars = bars.with_columns(
                level.alias("level"), pl.col("close").rolling_mean(window).alias("mean")
            )
            up = (pl.col("level") > pl.col("mean")) & (pl.col("close").diff() > 0)
            return signals_where(bars, up, "buy").vstack(signals_where(bars, ~up, "exit"))

    report = check_bias(Past(), synthetic(600, seed=seed), "1m")
    assert not report.biased, report.lookahead


def test_a_stop_that_peeks_is_a_signal_stop_finding() -> None:
    class NextLowStop(Strategy):
        name = "next_low_stop"

        def evaluate(self, bars: pl.DataFrame) -> pl.DataFrame:
            bars = bars.lazy().with_columns(  # lazy: not traced, seen in the signals
                pl.col("low").shift(-1).fill_null(pl.col("low")).alias("stop")
            )
            return bars.select("instrument", "ts", pl.lit("buy").alias("side"), "stop").collect()

    bars = synthetic(2000)
    report = check_bias(NextLowStop(), bars, "1m")
    assert [f.column for f in report.lookahead] == ["signal stop"]
    finding = report.lookahead[0]
    assert finding.first_ts_us == report.cuts_us[0] - US_PER_MINUTE
    row = (finding.first_ts_us - T0) // US_PER_MINUTE
    # The full run's stop is the next bar's low; cut there, the bar's own.
    assert finding.full_value == bars["low"][row + 1]
    assert finding.truncated_value == bars["low"][row]


def test_too_few_bars_are_not_checked_and_say_so() -> None:
    report = check_bias(NextClose(), synthetic(2), "1m")
    assert report.cuts_us == [] and not report.biased
    out = io.StringIO()
    print_report(report, out)
    assert out.getvalue() == "next_close: not checked for lookahead: too few bars (2)\n"
