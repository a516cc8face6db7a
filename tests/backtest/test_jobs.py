"""Backtest jobs (sptrader.backtest.jobs): a job's result is the engine's on the same
bars (a single run, a sweep's rows, a walk-forward's folds), it runs in a process of its
own with progress and cancel, and a bad request is one clear line."""

from __future__ import annotations

import asyncio
import math
import os
import time
from typing import Any

import numpy as np
import polars as pl
import pytest
from conftest import rollup_by_hand
from test_backtest import T0, synthetic

from sptrader.backtest import jobs, optimize, run_backtest
from sptrader.backtest.montecarlo import monte_carlo, to_json
from sptrader.backtest.sweep import Runner, build_strategy, combinations, run_sweep
from sptrader.backtest.walkforward import walk_forward
from sptrader.config import BrokerConfig, RiskConfig
from sptrader.errors import SptraderError, UsageError
from sptrader.models import US_PER_MINUTE, timeframe_minutes
from sptrader.strategies import registry

BROKER, RISK = BrokerConfig(), RiskConfig()
HOUR = 60 * US_PER_MINUTE
DAY = 24 * HOUR
WARMUP = 200  # bars before the window's start (the warm-up the jobs read)
START = T0 + WARMUP * US_PER_MINUTE
# Timing figures differ from run to run.
TIMING = ("elapsed_s", "bars_per_s")


class FakeClient:
    """The EngineClient calls a job makes, over bars in memory (every minute stored)."""

    def __init__(self, bars: pl.DataFrame, gaps: list[tuple[int, int]] | None = None) -> None:
        self.bars = bars
        self.gaps = gaps or []

    def _ts(self) -> pl.Expr:
        return pl.col("ts").dt.epoch("us")

    async def data_gaps(self, instrument: str, start_us: int, end_us: int) -> list:
        if instrument != "SIM:EURUSD":
            raise UsageError(f"unknown instrument {instrument}")
        return list(self.gaps)

    async def history_source(self, instrument: str) -> str | None:
        return None

    async def data_status(self, instruments: list[str], start_us: int, end_us: int) -> list:
        return [{"gaps": list(self.gaps), "coverage_pct": 100.0 if not self.gaps else 90.0}]

    async def candles(self, instrument: str, timeframe: str, *, start_us=None, end_us=None):
        ts = self._ts()
        window = self.bars.filter((ts >= start_us) & (ts < end_us)).drop("instrument")
        return rolled_up(window, timeframe)

    async def bars_before(self, instrument: str, timeframe: str, before_us: int, count: int):
        before = self.bars.filter(self._ts() < before_us).drop("instrument")
        return rolled_up(before, timeframe).tail(count)

    async def price_decimals(self, instruments: list[str]) -> dict[str, int]:
        return {"SIM:EURUSD": 5}


def rolled_up(bars: pl.DataFrame, timeframe: str) -> pl.DataFrame:
    """1m bars as the store rolls them up into ``timeframe`` bars."""
    return bars if timeframe == "1m" else rollup_by_hand(bars, timeframe_minutes(timeframe))


def spec(bars: pl.DataFrame, mode: str = "single", params=(), **options: Any) -> jobs.JobSpec:
    timeframe = options.pop("timeframe", "1m")
    end = int(bars["ts"].dt.epoch("us")[-1]) + timeframe_minutes(timeframe) * US_PER_MINUTE
    return jobs.JobSpec(
        strategy="sma_cross",
        modules=(),
        params=tuple(params),
        mode=mode,
        instrument="SIM:EURUSD",
        timeframe=timeframe,
        start_us=START,
        end_us=end,
        bars=bars,
        gaps=(),
        broker=BROKER,
        risk=RISK,
        **options,
    )


def request(**fields: Any) -> dict[str, Any]:
    return {
        "strategy": "sma_cross",
        "instrument": "SIM:EURUSD",
        "start_us": START,
        "end_us": T0 + 3000 * US_PER_MINUTE,
        **fields,
    }


def without_timing(summary: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in summary.items() if key not in TIMING}


def finite(value: Any) -> Any:
    return value if not isinstance(value, float) or math.isfinite(value) else None


async def finished(board: jobs.BacktestJobs, job_id: int, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        status = board.status(job_id)
        if status["state"] in jobs.FINISHED:
            return status
        assert time.monotonic() < deadline, f"job {job_id} still {status['state']}"
        await asyncio.sleep(0.05)


def living_in_group(group: int) -> list[int]:
    """Processes of process group ``group`` still running (a killed worker its parent
    did not reap is a zombie until init does: dead, not counted)."""
    living = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == group and fields[0] != "Z":
            living.append(int(entry))
    return living


# --- the work, in this process --------------------------------------------------------


def test_a_single_run_is_run_backtest_s_on_the_same_bars() -> None:
    bars = synthetic(3000)
    cls = registry.resolve("sma_cross")
    alone = run_backtest(
        build_strategy(cls, {"fast": "8"}), bars, BROKER, RISK, "1m", start_us=START
    )
    result = jobs.execute(spec(bars, params=["fast=8"]))
    run = result["run"]
    summary = run["summary"]
    assert summary["params"] == {"fast": 8, "slow": 30, "short": False}
    assert without_timing(summary) == {
        **{key: finite(value) for key, value in without_timing(alone.summary).items()},
        "strategy": "sma_cross",
        "params": alone.params,
        "instrument": "SIM:EURUSD",
        "timeframe": "1m",
        "start_us": alone.start_us,
        "end_us": alone.end_us,
    }
    assert run["trades_total"] == alone.trades.height > 10
    expected = alone.trades.select(jobs.TRADE_FIELDS).to_dicts()
    assert run["trades"] == [{k: finite(v) for k, v in trade.items()} for trade in expected]
    # The curve: cut to its extremes, from the first traded bar to the last.
    curve = run["equity"]
    ts = alone.equity["ts"].dt.epoch("us").to_numpy()
    times, values = jobs.downsample(ts, alone.equity["equity"].to_numpy(), jobs.EQUITY_POINTS)
    assert (curve["ts_us"], curve["equity"]) == (times, values)
    assert curve["points"] == alone.equity.height > jobs.EQUITY_POINTS
    assert curve["ts_us"][0] == START and curve["equity"][-1] == alone.summary["final_equity"]


def test_the_curve_is_cut_to_its_extremes_and_the_trades_to_a_count(monkeypatch) -> None:
    rng = np.random.default_rng(3)
    values = 1000 + np.cumsum(rng.normal(0, 1, 50_000))
    ts = np.arange(values.size, dtype=np.int64) * US_PER_MINUTE
    times, kept = jobs.downsample(ts, values, 1000)
    assert len(kept) <= 1000 and len(times) == len(kept)
    assert times == sorted(times) and times[0] == 0 and times[-1] == int(ts[-1])
    assert min(kept) == values.min() and max(kept) == values.max()  # the drawdown's depth
    assert jobs.downsample(ts[:10], values[:10], 1000)[1] == values[:10].tolist()

    monkeypatch.setattr(jobs, "TRADES_KEPT", 5)
    run = jobs.execute(spec(synthetic(3000)))["run"]
    assert len(run["trades"]) == 5 and run["trades_total"] > 5


def test_a_sweep_s_rows_are_run_sweep_s() -> None:
    bars = synthetic(3000)
    params = ["fast=5..15:5", "slow=30,40"]
    result = jobs.execute(spec(bars, "sweep", params, top=4, workers=2))
    sweep = result["sweep"]
    assert sweep["combinations"] == 6 and sweep["varied"] == ["fast", "slow"]
    cls = registry.resolve("sma_cross")
    strategies = [
        build_strategy(cls, combo)
        for combo in combinations(optimize.grid_of(optimize.dimensions(params)))
    ]
    rows = run_sweep(strategies, bars, BROKER, RISK, "1m", start_us=START, objective="sharpe")
    assert [row["params"] for row in sweep["rows"]] == [row.params for row in rows[:4]]
    for shown, row in zip(sweep["rows"], rows, strict=False):
        assert shown["score"] == finite(row.score)
        assert shown["summary"] == {key: finite(row.summary[key]) for key in jobs.ROW_FIGURES}
    # The best combination's own run: its curve and trades.
    best = result["run"]
    assert best["summary"]["params"] == rows[0].params
    assert best["summary"]["net_pnl"] == pytest.approx(rows[0].summary["net_pnl"])
    assert best["trades_total"] == rows[0].summary["trades"]


def test_a_walk_forward_s_folds_are_walk_forward_s() -> None:
    bars = synthetic(4 * 24 * 60, seed=11)
    params = ["fast=5,10", "slow=30,60"]
    job = spec(bars, "walk-forward", params, spans=(DAY, 12 * HOUR), workers=1)
    seen: list[tuple[int, int, str]] = []
    result = jobs.execute(job, lambda done, total, unit: seen.append((done, total, unit)))
    folds = result["walk_forward"]["folds"]
    cls = registry.resolve("sma_cross")
    with Runner(bars, BROKER, RISK, "1m", start_us=START, objective="sharpe") as runner:
        expected = walk_forward(
            cls,
            optimize.dimensions(params),
            runner,
            bars,
            BROKER,
            RISK,
            "1m",
            start_us=START,
            end_us=job.end_us,
            train_us=DAY,
            test_us=12 * HOUR,
        )
    assert len(folds) == expected.total_folds == 6
    for shown, fold in zip(folds, expected.folds, strict=True):
        assert shown["fold"] == fold.fold.index
        assert (shown["test_start_us"], shown["test_end_us"]) == (
            fold.fold.test_start,
            fold.fold.test_end,
        )
        assert shown["params"] == fold.params
        assert shown["out_score"] == finite(fold.out_score)
        assert shown["out_sample"]["net_pnl"] == pytest.approx(fold.out_sample["net_pnl"])
    assert seen[0] == (0, 6, "folds") and seen[-1] == (6, 6, "folds")
    stitched = result["run"]["summary"]
    assert stitched["net_pnl"] == pytest.approx(expected.stitched.summary["net_pnl"])
    assert result["walk_forward"]["efficiency"] == finite(expected.efficiency)


def test_a_single_run_with_detail_and_a_monte_carlo_is_the_engine_s() -> None:
    fine = synthetic(3000)
    coarse = rolled_up(fine.drop("instrument"), "5m")
    cls = registry.resolve("sma_cross")
    strategy = build_strategy(cls, {"fast": "5", "slow": "12"})
    alone = run_backtest(
        strategy, coarse, BROKER, RISK, "5m", instrument="SIM:EURUSD", start_us=START,
        detail=fine, detail_timeframe="1m",
    )  # fmt: skip
    job = spec(
        coarse, params=["fast=5", "slow=12"], timeframe="5m", detail=fine,
        detail_timeframe="1m", monte_carlo=300, seed=9,
    )  # fmt: skip
    result = jobs.execute(job)
    summary = result["run"]["summary"]
    assert (
        summary["detail_timeframe"] == "1m"
        and summary["detail_bars"] == alone.summary["detail_bars"]
    )
    assert summary["net_pnl"] == pytest.approx(alone.summary["net_pnl"])
    assert summary["net_pnl_without_detail"] == pytest.approx(
        alone.summary["net_pnl_without_detail"]
    )
    assert alone.trades.height > 10
    expected = to_json(monte_carlo(alone.trades["pnl"].to_numpy(), BROKER.starting_cash, 300, 9))
    assert result["monte_carlo"] == expected


def test_a_walk_forward_s_monte_carlo_draws_its_stitched_trades() -> None:
    bars = synthetic(4 * 24 * 60, seed=11)
    params = ["fast=5,10", "slow=30,60"]
    job = spec(bars, "walk-forward", params, spans=(DAY, 12 * HOUR), monte_carlo=100, seed=1)
    result = jobs.execute(job)
    drawn = result["monte_carlo"]
    assert drawn["trades"] == result["run"]["trades_total"] > 2
    assert drawn["reshuffled"]["runs"] == drawn["resampled"]["runs"] == 100


def test_a_monte_carlo_of_too_few_trades_keeps_the_run() -> None:
    flat = synthetic(300).with_columns(
        *(pl.lit(1.1).alias(name) for name in ("open", "high", "low", "close"))
    )
    result = jobs.execute(spec(flat, monte_carlo=100))
    assert result["run"]["trades_total"] == 0
    assert result["monte_carlo"] == {
        "error": "Monte Carlo needs at least 2 closed trades; this run has 0"
    }


# --- requests ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"colour": "red"}, "backtest request: Object contains unknown field `colour`"),
        ({"start_us": "yesterday"}, "Expected `int`, got `str` - at `$.start_us`"),
        ({"strategy": "nope"}, "unknown strategy 'nope'"),
        ({"mode": "fast"}, "unknown mode 'fast': single, sweep or walk-forward"),
        ({"params": ["speed=3"]}, "unknown field `speed`"),
        ({"params": ["fast"]}, "bad param 'fast': use NAME=VALUE"),
        ({"params": ["fast=5..9"]}, "several values of fast: give one value each"),
        ({"mode": "sweep"}, "a sweep searches ranges or lists"),
        ({"mode": "walk-forward", "params": ["fast=5,10"]}, "needs train and test spans"),
        (
            {"mode": "walk-forward", "params": ["fast=5,10"], "train": "9d", "test": "1d"},
            "is not longer than one train span",
        ),
        (
            {"mode": "walk-forward", "params": ["fast=5,10"], "train": "9x", "test": "1d"},
            "bad walk-forward train span '9x'",
        ),
        ({"end_us": START}, "the end must be later than the start"),
        ({"objective": "sharp"}, "unknown objective 'sharp'"),
        ({"trials": 5}, "trials searches a sweep's ranges"),
        ({"anchored": True}, "anchored is a kind of walk-forward"),
        ({"timeframe": "7x"}, "7x"),
        ({"detail": "1m"}, "detail 1m must be finer than tf 1m"),
        ({"timeframe": "1h", "detail": "7m"}, "detail 7m must divide tf 1h into whole bars"),
        ({"mode": "sweep", "params": ["fast=5,10"], "detail": "1m"}, "choose the single mode"),
        ({"mode": "sweep", "params": ["fast=5,10"], "monte_carlo": 50}, "reshuffles one run"),
        ({"monte_carlo": -1}, "the Monte Carlo takes 1 to 1,000,000 runs"),
    ],
)
async def test_bad_requests_are_one_clear_line(fields: dict, message: str) -> None:
    board = jobs.BacktestJobs()
    with pytest.raises(SptraderError) as raised:
        await board.start(request(**fields), FakeClient(synthetic(100)), BROKER, RISK)
    text = str(raised.value)
    assert message in text and "\n" not in text
    assert "--" not in text  # the form's words, not the command's options


async def test_no_bars_and_holes_fail_the_job_with_one_line() -> None:
    board = jobs.BacktestJobs()
    empty = synthetic(100)  # every bar before the window
    status = await board.start(request(), FakeClient(empty), BROKER, RISK)
    failed = await finished(board, status["job_id"])
    assert failed["state"] == "failed"
    assert failed["error"].startswith("no 1m bars of SIM:EURUSD stored between")
    assert failed["message"] == failed["error"]
    hole = (START + HOUR, START + 2 * HOUR)
    status = await board.start(request(), FakeClient(synthetic(3000), [hole]), BROKER, RISK)
    failed = await finished(board, status["job_id"])
    assert "60 minutes of open market time in the window are not stored" in failed["error"]
    assert failed["error"].endswith("or allow gaps to run anyway")
    unknown = await board.start(request(instrument="SIM:NOPE"), FakeClient(empty), BROKER, RISK)
    assert (await finished(board, unknown["job_id"]))["error"] == "unknown instrument SIM:NOPE"


# --- jobs in their own process ----------------------------------------------------------


async def test_a_job_runs_in_a_process_and_says_its_progress() -> None:
    bars = synthetic(3000)
    board = jobs.BacktestJobs()
    client = FakeClient(bars)
    status = await board.start(request(params=["fast=8"]), client, BROKER, RISK)
    assert status["job_id"] == 1 and status["state"] == "loading"
    assert status["request"]["params"] == ["fast=8"]
    done = await finished(board, 1)
    assert done["state"] == "done", done["error"]
    assert (done["done"], done["total"], done["unit"]) == (1, 1, "runs")
    same = jobs.execute(
        spec(bars.filter(pl.col("ts").dt.epoch("us") < request()["end_us"]), params=["fast=8"])
    )
    result = done["result"]
    assert result["price_decimals"] == 5
    assert result["coverage"] == {
        "coverage_pct": 100.0,
        "gaps": 0,
        "missing_minutes": 0,
        "allow_gaps": False,
    }
    assert result["run"]["trades"] == same["run"]["trades"]
    assert without_timing(result["run"]["summary"]) == without_timing(same["run"]["summary"])

    sweep = await board.start(
        request(mode="sweep", params=["fast=5..15:5", "slow=30,40"], top=3), client, BROKER, RISK
    )
    swept = await finished(board, sweep["job_id"])
    assert swept["state"] == "done", swept["error"]
    assert (swept["done"], swept["total"], swept["unit"]) == (6, 6, "combinations")
    assert len(swept["result"]["sweep"]["rows"]) == 3
    # A 5m run filled on the 1m bars, with its Monte Carlo: the finer bars are loaded too.
    fields = request(timeframe="5m", params=["fast=5", "slow=12"], detail="1m", monte_carlo=50)
    detailed = await finished(board, (await board.start(fields, client, BROKER, RISK))["job_id"])
    assert detailed["state"] == "done", detailed["error"]
    summary = detailed["result"]["run"]["summary"]
    assert summary["detail_timeframe"] == "1m" and summary["detail_bars"] > summary["bars"] * 4
    assert detailed["result"]["monte_carlo"]["reshuffled"]["runs"] == 50
    await board.close()


async def test_cancel_stops_the_process_and_its_workers() -> None:
    bars = synthetic(30_000)
    board = jobs.BacktestJobs()
    status = await board.start(
        request(
            mode="sweep",
            params=["fast=2..60:1", "slow=61..90:3"],
            end_us=T0 + 30_000 * US_PER_MINUTE,
        ),
        FakeClient(bars),
        BROKER,
        RISK,
    )
    job_id = status["job_id"]
    job = board._jobs[job_id]
    deadline = time.monotonic() + 60
    while not (job.state == "running" and job.done >= 1):
        assert time.monotonic() < deadline and job.state not in jobs.FINISHED, job.status()
        await asyncio.sleep(0.05)
    process = job.process
    assert process is not None and process.poll() is None
    group = process.pid
    started = time.monotonic()
    cancelled = await board.cancel(job_id)
    assert cancelled["state"] == "cancelled", cancelled
    assert time.monotonic() - started < jobs.STOP_GRACE_S + 3
    assert 1 <= cancelled["done"] < cancelled["total"] == 59 * 10
    assert process.poll() is not None
    assert living_in_group(group) == []  # its workers went with it
    assert board.status(job_id)["state"] == "cancelled"  # still there to be read
    assert (await board.cancel(job_id))["state"] == "cancelled"


async def test_a_few_finished_jobs_are_kept_and_a_few_run_at_once(monkeypatch) -> None:
    board = jobs.BacktestJobs()
    client = FakeClient(synthetic(100))  # no bars in the window: each fails at once
    ids = []
    for _ in range(jobs.KEEP_FINISHED + 2):
        ids.append((await board.start(request(), client, BROKER, RISK))["job_id"])
        await finished(board, ids[-1])
    assert sorted(board._jobs) == ids[-jobs.KEEP_FINISHED :]
    with pytest.raises(UsageError, match=f"no backtest job {ids[0]}"):
        board.status(ids[0])

    gate = asyncio.Event()

    async def slow_gaps(*args: Any) -> list:
        await gate.wait()
        return []

    monkeypatch.setattr(client, "data_gaps", slow_gaps)
    for _ in range(jobs.MAX_RUNNING):
        await board.start(request(), client, BROKER, RISK)
    with pytest.raises(SptraderError, match="2 backtests are running already"):
        await board.start(request(), client, BROKER, RISK)
    await board.close()
    assert all(job.state == "cancelled" for job in board._jobs.values() if job.job_id > ids[-1])


# --- through the clients ----------------------------------------------------------------


async def _until_done(call: Any, job_id: int, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        status = await call(job_id)
        if status["state"] in jobs.FINISHED:
            return status
        assert time.monotonic() < deadline, status
        await asyncio.sleep(0.05)


async def test_a_job_over_the_api_is_the_local_client_s(home) -> None:
    """The daemon's API rows start, follow and cancel the engine's jobs; the result is
    the local client's, through JSON."""
    from conftest import make_settings, wait_for_history

    from sptrader.api.server import ApiServer
    from sptrader.client.connection import ApiConnection
    from sptrader.client.local import LocalEngineClient
    from sptrader.engine import Engine
    from sptrader.store import queries

    settings = make_settings(
        home, watchlist=["SIM:EURUSD"], store={"seed_days": 0.2}, feeds={"sim": {"tick_rate": 2}}
    )
    engine = Engine(settings)
    server = ApiServer(engine)
    connection = ApiConnection(home)
    try:
        await engine.start()
        await wait_for_history(engine, ["SIM:EURUSD"])
        await server.start()
        await connection.open()
        last = queries.last_bar_ts(engine.require_store(), "SIM:EURUSD")
        end = last - last % HOUR
        asked = request(start_us=end - 3 * HOUR, end_us=end, params=["fast=5"], allow_gaps=True)
        started = await connection.call("start_backtest", request=asked)
        remote = await _until_done(
            lambda job_id: connection.call("backtest_job", job_id=job_id), started["job_id"]
        )
        local = LocalEngineClient(engine)
        mine = await local.start_backtest(asked)
        here = await _until_done(local.backtest_job, mine["job_id"])
        assert remote["state"] == here["state"] == "done", (remote["error"], here["error"])
        assert mine["job_id"] == started["job_id"] + 1  # one engine's jobs
        ours, theirs = here["result"], remote["result"]
        assert theirs["run"]["trades"] == ours["run"]["trades"]
        assert theirs["run"]["equity"] == ours["run"]["equity"]
        assert without_timing(theirs["run"]["summary"]) == without_timing(ours["run"]["summary"])
        assert theirs["price_decimals"] == 5
        again = await connection.call("cancel_backtest", job_id=started["job_id"])
        assert again["state"] == "done"  # a finished job stays as it ended
        with pytest.raises(UsageError, match="start_backtest: request must be a JSON object"):
            await connection.call("start_backtest", request="sma_cross")
        with pytest.raises(UsageError, match="no backtest job 99"):
            await connection.call("backtest_job", job_id=99)
        with pytest.raises(SptraderError, match="unknown strategy 'nope'"):
            await connection.call("start_backtest", request={**asked, "strategy": "nope"})
    finally:
        await connection.close()
        await server.close()
        await engine.stop()
