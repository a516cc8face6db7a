"""Research tools: objectives, the TPE search, walk-forward folds and stitching, the
Monte Carlo of a trade list, and the ``sptrader backtest`` options that run them."""

from __future__ import annotations

import itertools
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_backtest import (
    T0,
    WINDOW,
    assert_one_line_error,
    backfilled,
    stored_bars,
    synthetic,
)

from sptrader.backtest import objectives, optimize, run_backtest
from sptrader.backtest.montecarlo import monte_carlo, path_stats
from sptrader.backtest.sweep import Runner, build_strategy, combinations
from sptrader.backtest.walkforward import Fold, folds, parse_walk_forward, walk_forward
from sptrader.config import BrokerConfig, RiskConfig
from sptrader.errors import UsageError
from sptrader.models import US_PER_MINUTE
from sptrader.strategies import registry

HOUR = 60 * US_PER_MINUTE
DAY = 24 * HOUR

# --- objectives --------------------------------------------------------------------------


def summary(**figures: float) -> dict:
    base = {"trades": 3, "starting_cash": 1000.0, "final_equity": 1100.0}
    return {**base, **figures}


def test_named_objectives_score_a_summary() -> None:
    assert objectives.score_summary("sharpe", summary(sharpe=1.5), 1.0) == 1.5
    assert objectives.score_summary("net_pnl", summary(net_pnl=-20.0), 1.0) == -20.0
    assert objectives.score_summary("profit_factor", summary(profit_factor=math.inf), 1) == math.inf
    # Calmar: 10% a year over a 5% drawdown.
    calmar = objectives.score_summary("calmar", summary(max_drawdown_pct=5.0), 1.0)
    assert calmar == pytest.approx(2.0)
    # Over half a year, 10% is 21% a year.
    assert objectives.score_summary("calmar", summary(max_drawdown_pct=5.0), 0.5) == pytest.approx(
        (1.21 - 1.0) / 0.05
    )


def test_a_run_without_trades_scores_minus_infinity_whatever_the_objective() -> None:
    for name in objectives.NAMES:
        assert objectives.score_summary(name, summary(trades=0, sharpe=9.0), 1.0) == -math.inf
    assert objectives.score_summary("sharpe", summary(sharpe=None), 1.0) == -math.inf
    assert objectives.score_summary("sharpe", summary(sharpe=math.nan), 1.0) == -math.inf


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("sharp", "unknown --objective 'sharp'"),
        ("nosuchmodule_xyz:f", "cannot import nosuchmodule_xyz"),
        ("math:nothing_here", "math has no nothing_here"),
        ("math:pi", "math.pi is not callable"),
        (":f", "a user objective is module:function"),
    ],
)
def test_bad_objectives_are_usage_errors(spec: str, message: str) -> None:
    with pytest.raises(UsageError) as raised:
        optimize.validate_objective(spec)
    assert message in str(raised.value)


@pytest.fixture
def user_objectives(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A module of user objectives on the path; its name."""
    (tmp_path / "my_objectives.py").write_text(
        "def near_20_100(result):\n"
        "    p = result.params\n"
        "    return -((p['fast'] - 20) ** 2) - ((p['slow'] - 100) / 5) ** 2\n"
        "def per_trade(result):\n"
        "    return result.summary['net_pnl'] / max(1, result.summary['trades'])\n"
        "def words(result):\n"
        "    return 'high'\n",
        "utf-8",
    )
    monkeypatch.syspath_prepend(str(tmp_path))  # spawned workers get the parent's path
    return "my_objectives"


def test_a_user_objective_scores_the_result(user_objectives: str) -> None:
    result = run_backtest(registry.build("sma_cross", {"fast": 10, "slow": 30}), synthetic(3000))
    expected = result.summary["net_pnl"] / result.summary["trades"]
    assert objectives.score(f"{user_objectives}:per_trade", result) == pytest.approx(expected)
    with pytest.raises(TypeError, match="returned str, not a number"):
        objectives.score(f"{user_objectives}:words", result)


# --- the search --------------------------------------------------------------------------

SMA = registry.resolve("sma_cross")


def runner(bars, workers: int = 1, objective: str = "sharpe") -> Runner:
    return Runner(bars, BrokerConfig(), RiskConfig(), "1m", workers=workers, objective=objective)


def test_ranges_are_ordered_dimensions_and_lists_categories() -> None:
    dims = optimize.dimensions(["fast=5..15:5", "slow=30,60", "short=false"])
    assert [(d.name, d.values, d.ordinal) for d in dims] == [
        ("fast", ("5", "10", "15"), True),
        ("slow", ("30", "60"), False),
        ("short", ("false",), False),
    ]
    assert optimize.space_size(dims) == 6


def test_the_grid_ranks_every_combination_by_the_objective() -> None:
    bars = synthetic(3000)
    dims = optimize.dimensions(["fast=5,10", "slow=20,40"])
    with runner(bars, objective="sortino") as pool:
        found = optimize.search(SMA, dims, pool, objective="sortino")
    assert found.method == "grid" and found.evaluated == 4
    scores = [row.score for row in found.rows]
    assert scores == sorted(scores, reverse=True)
    for row in found.rows:
        alone = run_backtest(build_strategy(SMA, {k: str(v) for k, v in row.params.items()}), bars)
        assert row.score == objectives.score("sortino", alone)


def test_tpe_spends_its_budget_on_distinct_combinations_and_finds_the_peak(
    user_objectives: str,
) -> None:
    """A user objective with a known peak (fast=20, slow=100) over a 26 x 37 grid: 60
    trials find a combination among the grid's best 2%, with no combination run twice."""
    bars = synthetic(1500)
    dims = optimize.dimensions(["fast=5..30:1", "slow=40..220:5"])
    objective = f"{user_objectives}:near_20_100"
    with runner(bars, objective=objective) as pool:
        found = optimize.search(SMA, dims, pool, objective=objective, trials=60, seed=11)
    assert found.method == "tpe" and found.evaluated == 60 and found.space == 26 * 37
    keys = [tuple(row.params.items()) for row in found.rows]
    assert len(set(keys)) == 60
    best = found.best.params
    everything = sorted(
        -((f - 20) ** 2) - ((s - 100) / 5) ** 2 for f in range(5, 31) for s in range(40, 221, 5)
    )
    assert found.best.score >= everything[int(len(everything) * 0.98)], best


def test_tpe_with_a_seed_repeats_itself_and_a_small_space_is_run_whole() -> None:
    bars = synthetic(1500)
    dims = optimize.dimensions(["fast=5..30:5", "slow=40..100:20"])  # 6 x 4 = 24

    def trials(seed: int, budget: int) -> list:
        with runner(bars) as pool:
            found = optimize.search(SMA, dims, pool, objective="sharpe", trials=budget, seed=seed)
        return found

    first, again = trials(5, 10), trials(5, 10)
    assert [r.params for r in first.rows] == [r.params for r in again.rows]
    whole = trials(5, 50)
    assert whole.evaluated == 24 and whole.extra["exhaustive"]


def test_a_search_over_spawned_workers_equals_one_in_process() -> None:
    bars = synthetic(2000)
    dims = optimize.dimensions(["fast=5,10,15", "slow=30,50"])
    with runner(bars, workers=2) as pool:
        spread = optimize.search(SMA, dims, pool, objective="net_pnl")
    with runner(bars, workers=1) as pool:
        alone = optimize.search(SMA, dims, pool, objective="net_pnl")
    assert [(r.params, r.score) for r in spread.rows] == [(r.params, r.score) for r in alone.rows]


# --- walk-forward ------------------------------------------------------------------------


def test_walk_forward_spans_parse() -> None:
    assert parse_walk_forward("train=90d,test=30d") == (90 * DAY, 30 * DAY)
    assert parse_walk_forward(" test=2w , train=36h ") == (36 * HOUR, 14 * DAY)
    assert parse_walk_forward("train=90m,test=15m") == (90 * US_PER_MINUTE, 15 * US_PER_MINUTE)
    for bad in (
        "train=90d",
        "train=90d,test=0d",
        "train=90x,test=1d",
        "90d,30d",
        "train=1d,train=2d",
    ):
        with pytest.raises(UsageError, match="--walk-forward"):
            parse_walk_forward(bad)


def test_rolling_folds_slide_by_a_test_span_and_the_last_is_cut_at_the_end() -> None:
    made = folds(0, 100, 40, 25, anchored=False)
    assert made == [
        Fold(1, 0, 40, 40, 65),
        Fold(2, 25, 65, 65, 90),
        Fold(3, 50, 90, 90, 100),
    ]
    anchored = folds(0, 100, 40, 25, anchored=True)
    assert [(f.train_start, f.train_end, f.test_start, f.test_end) for f in anchored] == [
        (0, 40, 40, 65),
        (0, 65, 65, 90),
        (0, 90, 90, 100),
    ]
    with pytest.raises(UsageError, match="not longer than one train span"):
        folds(0, 40, 40, 10, anchored=False)


@given(
    start=st.integers(0, 10**6),
    length=st.integers(2, 10**6),
    train=st.integers(1, 10**5),
    test=st.integers(1, 10**5),
    anchored=st.booleans(),
)
@settings(max_examples=200, deadline=None)
def test_every_bar_after_the_first_train_span_is_tested_once(
    start: int, length: int, train: int, test: int, anchored: bool
) -> None:
    end = start + length
    if start + train >= end or length > 500 * test:
        return  # no fold fits, or so many folds (test spans a few µs) the check is slow
    made = folds(start, end, train, test, anchored)
    assert made[0].test_start == start + train and made[-1].test_end == end
    for before, after in itertools.pairwise(made):
        assert before.test_end == after.test_start  # no overlap, no hole
    for fold in made:
        assert fold.train_end == fold.test_start  # the test follows its train span
        assert fold.train_start == (start if anchored else fold.test_start - train)


def walk(bars, **options):
    dims = optimize.dimensions(options.pop("params", ["fast=5,10,20", "slow=30,60"]))
    with runner(bars, objective=options.get("objective", "sharpe")) as pool:
        return walk_forward(
            SMA,
            dims,
            pool,
            bars,
            BrokerConfig(),
            RiskConfig(),
            "1m",
            start_us=T0 + 60 * US_PER_MINUTE,
            end_us=T0 + bars.height * US_PER_MINUTE,
            **options,
        )


def test_each_fold_tests_the_parameters_its_train_span_chose() -> None:
    bars = synthetic(6000)
    result = walk(bars, train_us=1500 * US_PER_MINUTE, test_us=1000 * US_PER_MINUTE)
    assert result.total_folds == len(result.folds) == 5 and not result.interrupted
    broker, limits = BrokerConfig(), RiskConfig()
    for fold in result.folds:
        f = fold.fold
        # The choice: the best of the grid run on the train span alone.
        scores = {}
        for combo in combinations({"fast": ["5", "10", "20"], "slow": ["30", "60"]}):
            strategy = build_strategy(SMA, combo)
            alone = run_backtest(
                strategy,
                _window(bars, f.train_start, f.train_end, 60),
                broker,
                limits,
                start_us=f.train_start,
            )
            scores[(int(combo["fast"]), int(combo["slow"]))] = objectives.score("sharpe", alone)
        chosen = (fold.params["fast"], fold.params["slow"])
        assert scores[chosen] == max(scores.values()) == fold.in_score
        # The test: those parameters on the test span only.
        strategy = build_strategy(SMA, {"fast": str(chosen[0]), "slow": str(chosen[1])})
        tested = run_backtest(
            strategy,
            _window(bars, f.test_start, f.test_end, 60),
            broker,
            limits,
            start_us=f.test_start,
        )
        assert fold.out_sample["net_pnl"] == pytest.approx(tested.summary["net_pnl"])
        assert fold.out_sample["trades"] == tested.summary["trades"]


def _window(bars, start: int, end: int, warmup: int):
    ts = bars["ts"].dt.epoch("us").to_numpy()
    first = max(0, int(np.searchsorted(ts, start)) - warmup)
    return bars.slice(first, int(np.searchsorted(ts, end)) - first)


def test_the_stitched_account_adds_up_the_folds() -> None:
    bars = synthetic(6000, seed=3)
    result = walk(bars, train_us=1500 * US_PER_MINUTE, test_us=1000 * US_PER_MINUTE)
    stitched = result.stitched
    nets = [fold.out_sample["net_pnl"] for fold in result.folds]
    assert stitched.summary["net_pnl"] == pytest.approx(sum(nets))
    assert stitched.summary["trades"] == sum(f.out_sample["trades"] for f in result.folds)
    assert stitched.summary["final_equity"] == pytest.approx(100_000 + sum(nets))
    assert stitched.equity.height == sum(f.out_sample["bars"] for f in result.folds)
    ts = stitched.equity["ts"].to_list()
    assert ts == sorted(ts) and len(set(ts)) == len(ts)
    assert result.extra["stitched_score"] == objectives.score("sharpe", stitched)


def test_a_fold_s_choice_does_not_see_the_bars_after_its_train_span() -> None:
    bars = synthetic(6000, seed=5)
    options = {"train_us": 1500 * US_PER_MINUTE, "test_us": 1000 * US_PER_MINUTE}
    result = walk(bars, **options)
    first = result.folds[0].fold
    # Another future after fold 1's train span: its choice and in-sample score stay.
    cut = int((first.train_end - T0) // US_PER_MINUTE)
    other = synthetic(6000, seed=99)
    changed = bars.head(cut).vstack(
        other.tail(6000 - cut).with_columns(bars["ts"].tail(6000 - cut).alias("ts"))
    )
    again = walk(changed, **options)
    assert again.folds[0].params == result.folds[0].params
    assert again.folds[0].in_score == result.folds[0].in_score
    assert again.folds[0].out_sample != result.folds[0].out_sample


# --- Monte Carlo -------------------------------------------------------------------------


def test_path_figures_by_hand() -> None:
    pnl = np.array([[100.0, -300.0, 50.0, 400.0, -500.0]])
    # equity 1000 1100 800 850 1250 750: peak 1250, the deepest fall 500 (40% of 1250).
    drawdown, fraction, final, ruined = path_stats(pnl, 1000.0)
    assert drawdown[0] == 500.0 and fraction[0] == pytest.approx(0.4)
    assert final[0] == 750.0 and not ruined[0]
    assert path_stats(np.array([[-600.0, -600.0]]), 1000.0)[3][0]  # reached -200: ruined


@given(
    pnl=st.lists(
        st.floats(-500, 500, allow_nan=False, allow_infinity=False), min_size=2, max_size=60
    ),
    seed=st.integers(0, 2**32 - 1),
)
@settings(max_examples=60, deadline=None)
def test_monte_carlo_properties(pnl: list[float], seed: int) -> None:
    result = monte_carlo(pnl, 10_000.0, 200, seed=seed)
    total = 10_000.0 + math.fsum(pnl)
    # Reshuffling keeps the trades: every order ends at the same equity.
    for p in (5, 50, 95):
        assert result.reshuffled.final_equity[p] == pytest.approx(total, abs=1e-6)
    worst_loss = max(0.0, -min(pnl))
    for dist in (result.reshuffled, result.resampled):
        values = [dist.max_drawdown[p] for p in (5, 25, 50, 75, 95)]
        assert values == sorted(values)  # percentiles in order
        assert values[0] >= 0
        assert 0 <= dist.loss_pct <= 100 and 0 <= dist.ruin_pct <= 100
    # Any order contains the worst single trade: no drawdown is smaller than it.
    assert result.reshuffled.max_drawdown[5] >= worst_loss - 1e-6
    assert 0 <= result.original_drawdown_percentile <= 100
    assert result.original["final_equity"] == pytest.approx(total, abs=1e-6)


def test_monte_carlo_repeats_with_a_seed_and_winners_never_draw_down() -> None:
    pnl = np.random.default_rng(1).normal(5, 50, 300)
    a, b = monte_carlo(pnl, 1000.0, 500, seed=4), monte_carlo(pnl, 1000.0, 500, seed=4)
    assert a.resampled.final_equity == b.resampled.final_equity
    assert a.reshuffled.max_drawdown == b.reshuffled.max_drawdown
    wins = monte_carlo([10.0, 20.0, 5.0], 1000.0, 100, seed=1)
    assert wins.resampled.max_drawdown[95] == 0.0 and wins.resampled.loss_pct == 0.0
    with pytest.raises(UsageError, match="at least 2 closed trades; this run has 1"):
        monte_carlo([5.0], 1000.0, 100)


def test_monte_carlo_memory_is_chunked(monkeypatch: pytest.MonkeyPatch) -> None:
    """Many runs are computed a chunk at a time, with the same answer as one matrix."""
    import sptrader.backtest.montecarlo as mc

    pnl = np.random.default_rng(2).normal(0, 10, 50)
    whole = mc.monte_carlo(pnl, 1000.0, 400, seed=9)
    monkeypatch.setattr(mc, "_CHUNK_CELLS", 50 * 7)  # 7 runs a chunk
    chunked = mc.monte_carlo(pnl, 1000.0, 400, seed=9)
    assert chunked.resampled.loss_pct == pytest.approx(whole.resampled.loss_pct, abs=15)
    assert chunked.reshuffled.final_equity == whole.reshuffled.final_equity


# --- the command -------------------------------------------------------------------------

SWEEP = ("--param", "fast=5,10", "--param", "slow=20,40")


def test_a_sweep_ranks_by_the_objective_and_top_keeps_the_best(run, cli_home: Path) -> None:
    backfilled(run, ("2026-11-02", "2026-11-03"))
    result = run("backtest", "sma_cross", "SIM:EURUSD", *WINDOW, *SWEEP, "--format", "json")
    assert result.code == 0, result.err
    data = json.loads(result.out)
    assert data["objective"] == "sharpe" and data["search"]["method"] == "grid"
    sharpes = [r["summary"]["sharpe"] for r in data["results"]]
    assert sharpes == sorted(sharpes, reverse=True)
    assert [r["score"] for r in data["results"]] == sharpes
    top = run(
        "backtest",
        "sma_cross",
        "SIM:EURUSD",
        *WINDOW,
        *SWEEP,
        "--objective",
        "net_pnl",
        "--top",
        "2",
        "--format",
        "json",
    )
    assert top.code == 0, top.err
    ranked = json.loads(top.out)
    assert ranked["combinations"] == 4 and len(ranked["results"]) == 2
    every = sorted((r["summary"]["net_pnl"] for r in data["results"]), reverse=True)
    assert [r["summary"]["net_pnl"] for r in ranked["results"]] == pytest.approx(every[:2])
    table = run(
        "backtest",
        "sma_cross",
        "SIM:EURUSD",
        *WINDOW,
        *SWEEP,
        "--objective",
        "calmar",
        "--top",
        "3",
    )
    assert table.code == 0, table.err
    lines = table.out.splitlines()
    assert lines[0].endswith("best Calmar first; the top 3 shown")
    assert "Calmar" in lines[2].split() and len(lines) == 3 + 3


def test_a_tpe_search_from_the_command(run, cli_home: Path) -> None:
    backfilled(run, ("2026-11-02", "2026-11-03"))
    args = (
        "backtest",
        "sma_cross",
        "SIM:EURUSD",
        *WINDOW,
        "--param",
        "fast=3..30:1",
        "--param",
        "slow=20..120:10",
        "--trials",
        "12",
        "--seed",
        "7",
        "--format",
        "json",
    )
    first, again = run(*args), run(*args)
    assert first.code == 0, first.err
    data = json.loads(first.out)
    assert data["combinations"] == 12
    assert data["search"] == {
        "method": "tpe",
        "space": 28 * 11,
        "trials": 12,
        "asked": data["search"]["asked"],
        "duplicates": data["search"]["duplicates"],
        "seed": 7,
    }
    assert [r["params"] for r in data["results"]] == [
        r["params"] for r in json.loads(again.out)["results"]
    ]


def test_a_walk_forward_from_the_command(run, cli_home: Path) -> None:
    backfilled(run, ("2026-11-01T18:00Z", "2026-11-03"))
    args = (
        "backtest",
        "sma_cross",
        "SIM:EURUSD",
        *WINDOW,
        *SWEEP,
        "--walk-forward",
        "train=6h,test=4h",
    )
    result = run(*args, "--format", "json")
    assert result.code == 0, result.err
    data = json.loads(result.out)
    assert data["walk_forward"] == {"train": "6h", "test": "4h", "anchored": False, "folds": 5}
    assert [(f["test_from"], f["test_to"]) for f in data["folds"]] == [
        ("2026-11-02T06:00:00Z", "2026-11-02T10:00:00Z"),
        ("2026-11-02T10:00:00Z", "2026-11-02T14:00:00Z"),
        ("2026-11-02T14:00:00Z", "2026-11-02T18:00:00Z"),
        ("2026-11-02T18:00:00Z", "2026-11-02T22:00:00Z"),
        ("2026-11-02T22:00:00Z", "2026-11-03T00:00:00Z"),
    ]
    assert data["folds"][1]["train_from"] == "2026-11-02T04:00:00Z"
    oos = data["out_of_sample"]
    assert oos["summary"]["trades"] == sum(f["out_of_sample"]["trades"] for f in data["folds"])
    assert oos["summary"]["net_pnl"] == pytest.approx(
        sum(f["out_of_sample"]["net_pnl"] for f in data["folds"])
    )
    assert len(oos["trades"]) == oos["summary"]["trades"]
    assert "fold 1/5: best fast=" in result.err
    # The first fold chooses as a sweep of its train span alone would.
    bars = stored_bars(cli_home, "2026-11-01T18:00Z", "2026-11-03")
    start = int(np.datetime64("2026-11-02T00:00", "us").astype(np.int64))
    train = _window(bars, start, start + 6 * HOUR, 60)
    best = max(
        combinations({"fast": ["5", "10"], "slow": ["20", "40"]}),
        key=lambda combo: objectives.score(
            "sharpe",
            run_backtest(
                build_strategy(SMA, combo), train, instrument="SIM:EURUSD", start_us=start
            ),
        ),
    )
    assert data["folds"][0]["params"] == {
        "fast": int(best["fast"]),
        "slow": int(best["slow"]),
        "short": False,
    }

    anchored = run(*args, "--anchored", "--monte-carlo", "200", "--seed", "1", "--format", "json")
    assert anchored.code == 0, anchored.err
    grown = json.loads(anchored.out)
    assert {f["train_from"] for f in grown["folds"]} == {"2026-11-02T00:00:00Z"}
    assert grown["monte_carlo"]["trades"] == grown["out_of_sample"]["summary"]["trades"]
    assert set(grown["monte_carlo"]["resampled"]["max_drawdown"]) == {
        "p5",
        "p25",
        "p50",
        "p75",
        "p95",
    }

    table = run(*args, "--plot")
    assert table.code == 0, table.err
    out = table.out
    assert out.startswith(
        "sma_cross SIM:EURUSD 1m: walk-forward, rolling train 6h / test 4h, 5 of 5 folds in"
    )
    for label in (
        "in-sample (fold mean)",
        "out-of-sample stitched",
        "walk-forward efficiency",
        "IS Sharpe",
        "OOS Sharpe",
        "2026-11-02 06:00 → 10:00",
    ):
        assert label in out, label
    assert "equity, SIM:EURUSD 1m sma_cross" in out


def test_monte_carlo_of_one_run_from_the_command(run, cli_home: Path) -> None:
    backfilled(run, ("2026-11-02", "2026-11-03"))
    args = ("backtest", "sma_cross", "SIM:EURUSD", *WINDOW, "--monte-carlo", "300", "--seed", "2")
    data = json.loads(run(*args, "--format", "json").out)
    assert data["monte_carlo"]["trades"] == data["summary"]["trades"]
    assert data["monte_carlo"]["reshuffled"]["runs"] == 300
    total = data["summary"]["net_pnl"] + data["summary"]["starting_cash"]
    # All trades were closed by the end: every reshuffled order ends where the run did.
    assert data["monte_carlo"]["reshuffled"]["final_equity"]["p50"] == pytest.approx(total)
    table = run(*args)
    assert table.code == 0, table.err
    assert "Monte Carlo of" in table.out and "reshuffled: max drawdown" in table.out


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--anchored"], "--anchored is a kind of walk-forward"),
        (["--walk-forward", "train=6h,test=2h"], "--walk-forward optimises the --param ranges"),
        ([*SWEEP, "--walk-forward", "train=6h"], "bad --walk-forward 'train=6h'"),
        ([*SWEEP, "--walk-forward", "train=2d,test=1d"], "not longer than one train span"),
        ([*SWEEP, "--monte-carlo", "100"], "--monte-carlo reshuffles one run's trades"),
        (["--top", "3"], "--top N ranks a sweep's combinations"),
        (["--seed", "3"], "--seed seeds a --trials search or --monte-carlo"),
        (["--trials", "10"], "--trials searches the --param ranges"),
        ([*SWEEP, "--objective", "best"], "unknown --objective 'best'"),
        ([*SWEEP, "--check-bias"], "--check-bias checks one parameter set"),
        (["--plot", "--format", "json"], "--plot draws an equity curve in the table format"),
        (["--trials", "0", *SWEEP], "--trials"),
    ],
)
def test_research_option_mistakes_are_one_line(run, extra: list[str], message: str) -> None:
    line = assert_one_line_error(run("backtest", "sma_cross", "SIM:EURUSD", *WINDOW, *extra), 2)
    assert message in line, line


def test_monte_carlo_with_too_few_trades_says_so(run, cli_home: Path) -> None:
    backfilled(run, ("2026-11-02", "2026-11-02T01:00Z"))
    result = run(
        "backtest",
        "sma_cross",
        "SIM:EURUSD",
        "--from",
        "2026-11-02",
        "--to",
        "2026-11-02T00:40Z",
        "--param",
        "fast=20",
        "--param",
        "slow=35",
        "--monte-carlo",
        "100",
    )
    line = assert_one_line_error(result, 2)
    assert "--monte-carlo needs at least 2 closed trades" in line


def test_the_user_objective_module_is_reported_by_name(
    run, cli_home: Path, user_objectives
) -> None:
    backfilled(run, ("2026-11-02", "2026-11-03"))
    result = run(
        "backtest",
        "sma_cross",
        "SIM:EURUSD",
        *WINDOW,
        *SWEEP,
        "--objective",
        f"{user_objectives}:per_trade",
        "--format",
        "json",
    )
    assert result.code == 0, result.err
    data = json.loads(result.out)
    expected = [r["summary"]["net_pnl"] / r["summary"]["trades"] for r in data["results"]]
    assert [r["score"] for r in data["results"]] == pytest.approx(expected)
    assert expected == sorted(expected, reverse=True)


def test_check_bias_from_the_command(
    run, cli_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A strategy that reads the next bar's close fails the check (exit 1, naming it and
    the first bar where its signals change); a built-in passes (exit 0)."""
    from sptrader.strategies import registry as strategies

    modules = tmp_path / "modules"
    modules.mkdir()
    (modules / "peeking_strategies.py").write_text(
        "import polars as pl\n"
        "from sptrader.strategies.base import SIGNAL_SCHEMA, Strategy\n"
        "class Peek(Strategy):\n"
        "    name = 'peek'\n"
        "    def evaluate(self, bars):\n"
        "        rises = pl.col('close').shift(-1) > pl.col('close')\n"
        "        return bars.filter(rises.fill_null(False)).select(\n"
        "            'instrument', 'ts', pl.lit('buy').alias('side'),\n"
        "            pl.lit(1.0).alias('strength'), pl.lit('it rises next').alias('reason'),\n"
        "            pl.lit(None).alias('stop'), pl.lit(None).alias('target'),\n"
        "        ).cast(SIGNAL_SCHEMA)\n"
    )
    monkeypatch.syspath_prepend(str(modules))
    config = cli_home.parent / "peek.toml"
    config.write_text('[strategies]\nmodules = ["peeking_strategies"]\n')
    backfilled(run, ("2026-11-02", "2026-11-03"))
    try:
        args = ("--config", str(config), "backtest", "peek", "SIM:EURUSD", *WINDOW)
        caught = run(*args, "--check-bias")
        assert caught.code == 1, caught
        assert "peek: signal changes when later bars are removed, first at" in caught.out
        assert "lookahead bias found" in caught.out.splitlines()[-1]
        listed = run(*args, "--check-bias", "--format", "json")
        assert listed.code == 1
        findings = json.loads(listed.out)
        assert isinstance(findings, list) and findings
        signal = next(f for f in findings if f["kind"] == "signal")
        assert signal["strategy"] == "peek" and signal["first_ts"].startswith("2026-11-02T")
        clean = run("backtest", "sma_cross", "SIM:EURUSD", *WINDOW, "--check-bias")
        assert clean.code == 0, clean
        assert clean.out.splitlines()[-1].startswith("sma_cross: no lookahead found in")
    finally:
        strategies.unregister("peek")
        sys.modules.pop("peeking_strategies", None)
