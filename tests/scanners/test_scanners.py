"""Scanners: cron schedule on a fake clock, no overlapping runs, coalescing, skips with
reasons, lineage rows, broken strategies, and `sptrader scan` / `sptrader runs`."""

from __future__ import annotations

import asyncio
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest
from conftest import make_config, make_settings, wait_until

from sptrader.clock import now_us
from sptrader.commands.scans import _levels
from sptrader.engine import Engine
from sptrader.errors import ConfigError
from sptrader.models import US_PER_MINUTE, ServiceState, SignalRaised
from sptrader.scanners import lineage
from sptrader.scanners.service import Scanner, ScannerService, signal_event
from sptrader.schedule import CronSchedule, FakeClock
from sptrader.strategies import registry
from sptrader.strategies.base import Strategy

# --- strategies for the tests ----------------------------------------------------------


def _signals(bars: pl.DataFrame, reason: str) -> pl.DataFrame:
    return bars.select(
        "instrument",
        "ts",
        pl.lit("buy").alias("side"),
        pl.lit(1.0).alias("strength"),
        pl.lit(reason).alias("reason"),
        pl.lit(None, pl.Float64).alias("stop"),
        pl.lit(None, pl.Float64).alias("target"),
    )


@registry.register
class UpBar(Strategy):
    name = "test_up_bar"

    def evaluate(self, bars: pl.DataFrame) -> pl.DataFrame:
        return _signals(bars.filter(pl.col("close") > pl.col("open")), "close above open")


@registry.register
class EveryBar(Strategy):
    name = "test_every_bar"

    def evaluate(self, bars: pl.DataFrame) -> pl.DataFrame:
        return _signals(bars, "every bar")


@registry.register
class TrailingEveryBar(Strategy):
    """A buy on every bar whose stop trails 1% below the best price (OPTIONAL_SIGNAL_SCHEMA)."""

    name = "test_trailing_every_bar"

    def evaluate(self, bars: pl.DataFrame) -> pl.DataFrame:
        return _signals(bars, "every bar, trailing").with_columns(
            pl.lit(1.0).alias("trail_pct"), (pl.col("stop").fill_null(95.0)).alias("stop")
        )


@registry.register
class Boom(Strategy):
    name = "test_boom"

    def evaluate(self, bars: pl.DataFrame) -> pl.DataFrame:
        if bars["instrument"][0] == "SIM:ETHUSD":
            return _signals(bars, "fine here")
        raise ValueError("boom")


@registry.register
class StackedEveryBar(Strategy):
    """Every bar, for all instruments at once; strength from an indicator."""

    name = "test_stacked_every_bar"
    stacked = True

    def indicators(self) -> list[str]:
        return ["sma3"]

    def evaluate(self, bars: pl.DataFrame) -> pl.DataFrame:
        return _signals(bars, "every bar").with_columns(
            (bars["sma3"] / 1000).alias("strength"),
            pl.format("sma3 {} after {}", bars["sma3"], pl.col("ts").shift(1).over("instrument"))
            .fill_null("first")
            .alias("reason"),
        )


class PerInstrumentEveryBar(StackedEveryBar):
    name = "test_per_instrument_every_bar"
    stacked = False


registry.register(PerInstrumentEveryBar)


@registry.register
class StackedBoom(StackedEveryBar):
    """Stacked, and raises when BTCUSD is among the instruments it gets."""

    name = "test_stacked_boom"

    def evaluate(self, bars: pl.DataFrame) -> pl.DataFrame:
        if "SIM:BTCUSD" in bars["instrument"].to_list():
            raise ValueError("boom on BTCUSD")
        return super().evaluate(bars)


@registry.register
class BadSpecs(StackedEveryBar):
    name = "test_bad_specs"

    def indicators(self) -> list[str]:
        raise RuntimeError("no specs")


class Slow(Strategy):
    name = "test_slow"
    entered = threading.Event()
    release = threading.Event()

    def evaluate(self, bars: pl.DataFrame) -> pl.DataFrame:
        Slow.entered.set()
        Slow.release.wait(10)
        return _signals(bars.tail(0), "")


registry.register(Slow)

T0 = datetime(2026, 1, 5, 10, 0, 30, tzinfo=UTC)


def at(minute: int, second: int = 0) -> datetime:
    return datetime(2026, 1, 5, 10, minute, second, tzinfo=UTC)


def scanner_table(name: str = "up", strategy: str = "test_up_bar", **overrides) -> dict:
    return {
        "name": name,
        "strategy": strategy,
        "instruments": ["SIM:BTCUSD"],
        "schedule": "* * * * *",
        "bars": 30,
        **overrides,
    }


def store_bars(
    engine: Engine, instrument: str, minutes: int = 60, hole: int | None = None
) -> tuple[int, int]:
    """1m bars (close above open) up to a few minutes past now, covered; ``hole``
    minutes ago one minute is neither stored nor covered."""
    store = engine.require_store()
    now = now_us()
    end = now - now % US_PER_MINUTE + 5 * US_PER_MINUTE
    start = end - minutes * US_PER_MINUTE
    stamps = list(range(start, end, US_PER_MINUTE))
    if hole is not None:
        missing = now - now % US_PER_MINUTE - hole * US_PER_MINUTE
        stamps.remove(missing)
        store.add_coverage(instrument, "1m", "sim", start, missing)
        store.add_coverage(instrument, "1m", "sim", missing + US_PER_MINUTE, end)
    else:
        store.add_coverage(instrument, "1m", "sim", start, end)
    frame = pl.DataFrame(
        {
            "instrument": [instrument] * len(stamps),
            "ts": stamps,
            "open": [100.0] * len(stamps),
            "high": [102.0] * len(stamps),
            "low": [99.0] * len(stamps),
            "close": [101.0] * len(stamps),
            "volume": [1.0] * len(stamps),
            "trades": [1] * len(stamps),
        }
    ).with_columns(pl.col("ts").cast(pl.Datetime("us")))
    store.upsert_bars(frame)
    return start, end


@pytest.fixture
def make_engine(home: Path):
    engines: list[Engine] = []

    def build(*scanners: dict, **overrides) -> Engine:
        # The watchlist's feed is never started here: scanned instruments are others.
        engine = Engine(
            make_settings(home, watchlist=["SIM:EURUSD"], scanners=list(scanners), **overrides)
        )
        engine.open_store()
        engines.append(engine)
        return engine

    yield build
    for engine in engines:
        if engine.store is not None:
            engine.store.close()


def scan_runs(engine: Engine) -> list[tuple]:
    return (
        engine.require_store()
        .cursor()
        .execute("SELECT run_id, trigger, status, epoch_us(scheduled) FROM scan_runs ORDER BY 1")
        .fetchall()
    )


async def start_service(engine: Engine, clock: FakeClock, index: int = 0):
    service = ScannerService(engine.scanner_deps, engine.config.scanners[index], None, clock)
    context = engine.supervisor.add(service)
    engine.supervisor.start(service.name)
    await wait_until(lambda: service.next_due is not None)
    return service, context


def idle(*services: ScannerService) -> bool:
    """No run in progress (its counters are updated just before it ends)."""
    return all(s._task is None or s._task.done() for s in services)


def state_of(engine: Engine, name: str) -> ServiceState:
    return next(s.state for s in engine.supervisor.status() if s.name == name)


# --- schedule -----------------------------------------------------------------------------


def test_cron_next_fire_times() -> None:
    every_five = CronSchedule("*/5 * * * *")
    assert every_five.next_after(at(2, 10)) == at(5)
    assert every_five.next_after(at(5)) == at(10)  # strictly after
    assert every_five.count_between(at(0), at(20)) == 4  # 5, 10, 15, 20
    weekdays = CronSchedule("0 9 * * mon-fri")
    friday = datetime(2026, 1, 9, 10, 0, tzinfo=UTC)
    assert weekdays.next_after(friday) == datetime(2026, 1, 12, 9, 0, tzinfo=UTC)


async def test_service_runs_on_schedule_with_a_fake_clock(make_engine) -> None:
    engine = make_engine(scanner_table())
    store_bars(engine, "SIM:BTCUSD")
    clock = FakeClock(T0)
    service, context = await start_service(engine, clock)
    try:
        await asyncio.sleep(0.05)
        assert context.counters.get("runs", 0) == 0  # not due before 10:01
        clock.set(at(1))
        await wait_until(lambda: context.counters.get("runs") == 1 and idle(service))
        clock.set(at(2))
        await wait_until(lambda: context.counters.get("runs") == 2)
        assert [row[1] for row in scan_runs(engine)] == ["schedule", "schedule"]
        assert scan_runs(engine)[0][3] == int(at(1).timestamp() * 1e6)
        assert state_of(engine, service.name) == ServiceState.RUNNING
    finally:
        await engine.supervisor.stop_all()


async def test_a_run_still_going_makes_the_next_one_skipped(make_engine) -> None:
    Slow.entered.clear()
    Slow.release.clear()
    engine = make_engine(scanner_table(strategy="test_slow"))
    store_bars(engine, "SIM:BTCUSD")
    clock = FakeClock(T0)
    service, context = await start_service(engine, clock)
    try:
        clock.set(at(1))
        await wait_until(lambda: Slow.entered.is_set())
        clock.set(at(2))
        await wait_until(lambda: context.counters.get("skipped_overlap") == 1)
        clock.set(at(3))
        await wait_until(lambda: context.counters.get("skipped_overlap") == 2)
        Slow.release.set()
        await wait_until(lambda: context.counters.get("runs") == 1 and idle(service))
        clock.set(at(4))
        await wait_until(lambda: context.counters.get("runs") == 2)
        assert context.counters["skipped_overlap"] == 2
        assert len(scan_runs(engine)) == 2
    finally:
        Slow.release.set()
        await engine.supervisor.stop_all()


async def test_runs_missed_while_stopped_are_coalesced_into_one(make_engine) -> None:
    engine = make_engine(scanner_table())
    store_bars(engine, "SIM:BTCUSD")
    clock = FakeClock(T0)
    service, context = await start_service(engine, clock)
    clock.set(at(1))
    await wait_until(lambda: context.counters.get("runs") == 1 and idle(service))
    await engine.supervisor.stop(service.name)
    clock.set(at(6, 30))  # 10:02 .. 10:06 missed
    engine.supervisor.start(service.name)
    try:
        # Idle too: a run is counted before its after-run steps (labels) end, and one still
        # going when 10:07 comes makes 10:07's skipped.
        await wait_until(lambda: context.counters.get("runs") == 2 and idle(service))
        await wait_until(lambda: service.next_due == at(7))
        assert context.counters["coalesced"] == 5
        await asyncio.sleep(0.05)
        assert context.counters["runs"] == 2  # one catch-up run, not five
        assert [row[1] for row in scan_runs(engine)] == ["schedule", "catchup"]
        clock.set(at(7))
        await wait_until(lambda: context.counters.get("runs") == 3)
    finally:
        await engine.supervisor.stop_all()


async def test_runs_missed_while_the_machine_slept_are_coalesced(make_engine) -> None:
    engine = make_engine(scanner_table())
    store_bars(engine, "SIM:BTCUSD")
    clock = FakeClock(T0)
    _, context = await start_service(engine, clock)
    try:
        clock.set(at(4, 10))  # waiting for 10:01, woke at 10:04:10
        await wait_until(lambda: context.counters.get("runs") == 1)
        assert context.counters["coalesced"] == 3  # 10:02, 10:03, 10:04
        assert [row[1] for row in scan_runs(engine)] == ["catchup"]
    finally:
        await engine.supervisor.stop_all()


# --- one run ------------------------------------------------------------------------------


def make_scanner(engine: Engine, index: int = 0) -> Scanner:
    config = engine.config.scanners[index]
    strategy = registry.build(config.strategy, dict(config.params))
    return Scanner(engine.scanner_deps, config, strategy)


def test_stale_and_gapped_instruments_are_skipped_with_reasons(make_engine) -> None:
    engine = make_engine(
        scanner_table(
            instruments=["SIM:BTCUSD", "SIM:ETHUSD", "SIM:SPY"], strategy="test_every_bar"
        )
    )
    for name in ("SIM:BTCUSD", "SIM:ETHUSD"):
        store_bars(engine, name)
    store_bars(engine, "SIM:SPY", hole=10)
    # Streamed: its gap means its feed missed data, so it is skipped, not fetched.
    engine.watchlist.append("SIM:SPY")
    result = make_scanner(engine).scan("manual", stale={"SIM:ETHUSD"})
    assert result.status == "ok"
    assert result.scanned == ["SIM:BTCUSD"]
    reasons = dict(result.skipped)
    assert reasons["SIM:ETHUSD"].startswith("stale")
    assert reasons["SIM:SPY"].startswith("gap: 1 min missing")
    steps = (
        engine.require_store()
        .cursor()
        .execute("SELECT instrument, output_summary FROM scan_steps WHERE step = 'skip' ORDER BY 1")
        .fetchall()
    )
    assert [row[0] for row in steps] == ["SIM:ETHUSD", "SIM:SPY"]
    assert steps[1][1].startswith("gap")
    assert [signal["instrument"] for signal in result.signals] == ["SIM:BTCUSD"]


def test_a_gap_of_an_unstreamed_instrument_is_fetched_before_scanning(make_engine) -> None:
    engine = make_engine(scanner_table(instruments=["SIM:SPY"], strategy="test_every_bar"))
    store_bars(engine, "SIM:SPY", hole=10)
    assert engine.watchlist and "SIM:SPY" not in engine.watchlist
    result = make_scanner(engine).scan("manual")
    assert (result.scanned, result.skipped) == (["SIM:SPY"], [])


def test_lineage_of_a_successful_run(make_engine) -> None:
    engine = make_engine(scanner_table())
    store_bars(engine, "SIM:BTCUSD")
    result = make_scanner(engine).scan("manual")
    assert result.status == "ok" and len(result.signals) == 1  # the newest bar only
    run, steps, signals = lineage.run_detail(engine.require_store(), result.run_id)
    assert run is not None and run["status"] == "ok" and run["signals"] == 1
    # Loaded for the whole run; a strategy that is not stacked is evaluated per instrument.
    assert steps["step"].to_list() == ["load_bars", "evaluate", "emit"]
    assert steps["instrument"].to_list() == [None, "SIM:BTCUSD", "SIM:BTCUSD"]
    assert steps["output_summary"][0].startswith("1 instrument, 30 bars")
    assert "1 on the newest bar" in steps["output_summary"][1]
    assert steps["error"].null_count() == 3
    assert signals.height == 1 and signals["side"][0] == "buy"
    newest = signals["ts_us"][0]
    now = now_us()
    assert newest == now - now % US_PER_MINUTE - US_PER_MINUTE


def test_a_strategys_trailing_stop_is_stored_and_raised_with_its_signal(make_engine) -> None:
    # The backtester trails a signal's stop; the scanner must hand the broker the same.
    engine = make_engine(scanner_table(strategy="test_trailing_every_bar"))
    store_bars(engine, "SIM:BTCUSD")
    result = make_scanner(engine).scan("manual")
    (signal,) = result.signals
    assert (signal["stop"], signal["trail"], signal["trail_pct"]) == (95.0, None, 1.0)
    _run, _steps, stored = lineage.run_detail(engine.require_store(), result.run_id)
    assert stored.select("stop", "trail", "trail_pct").row(0) == (95.0, None, 1.0)
    event = signal_event(signal)
    assert (event.stop, event.trail, event.trail_pct) == (95.0, None, 1.0)
    # `sptrader scan` and `runs show` say what the signal protects with.
    assert _levels(signal, 2) == " stop 95.00, trailing 1%"
    assert _levels({**signal, "trail_pct": None, "target": 110.0}, 2) == " stop 95.00 target 110.00"
    # A strategy without the optional columns raises signals with no trail.
    plain = make_engine(scanner_table())
    store_bars(plain, "SIM:BTCUSD")
    (untrailed,) = make_scanner(plain).scan("manual").signals
    assert (untrailed["trail"], untrailed["trail_pct"]) == (None, None)


def test_lineage_of_failing_and_partly_failing_runs(make_engine) -> None:
    engine = make_engine(
        scanner_table(strategy="test_boom"),
        scanner_table("mixed", "test_boom", instruments=["SIM:BTCUSD", "SIM:ETHUSD"]),
    )
    for name in ("SIM:BTCUSD", "SIM:ETHUSD"):
        store_bars(engine, name)
    failed = make_scanner(engine, 0).scan("manual")
    assert failed.status == "failed"
    run, steps, _ = lineage.run_detail(engine.require_store(), failed.run_id)
    assert run is not None and run["status"] == "failed"
    assert "ValueError: boom" in run["error"]
    evaluate = steps.filter(pl.col("step") == "evaluate").row(0, named=True)
    assert evaluate["error"].startswith("ValueError: boom")
    assert "Traceback" in evaluate["error"]
    partial = make_scanner(engine, 1).scan("manual")
    assert partial.status == "partial"
    assert partial.scanned == ["SIM:ETHUSD"] and len(partial.signals) == 1


def step_rows(engine: Engine, run_id: int) -> list[tuple]:
    _, steps, _ = lineage.run_detail(engine.require_store(), run_id)
    return steps.select("instrument", "step").rows()


def test_a_stacked_strategy_runs_once_for_all_instruments(make_engine) -> None:
    instruments = ["SIM:BTCUSD", "SIM:ETHUSD", "SIM:SPY", "SIM:XAUUSD", "SIM:QUIET"]
    engine = make_engine(scanner_table(instruments=instruments, strategy="test_stacked_every_bar"))
    for name in ("SIM:BTCUSD", "SIM:ETHUSD", "SIM:XAUUSD"):
        store_bars(engine, name)
    store_bars(engine, "SIM:SPY", hole=10)
    engine.watchlist.append("SIM:SPY")  # streamed: its gap is skipped, not fetched
    # Covered but no bars stored: scanned, without signals.
    now = now_us()
    engine.require_store().add_coverage(
        "SIM:QUIET", "1m", "sim", now - 60 * US_PER_MINUTE, now + 5 * US_PER_MINUTE
    )
    result = make_scanner(engine).scan("manual", stale={"SIM:ETHUSD"})
    assert result.status == "ok"
    assert result.scanned == ["SIM:BTCUSD", "SIM:XAUUSD", "SIM:QUIET"]
    assert [name for name, _ in result.skipped] == ["SIM:ETHUSD", "SIM:SPY"]
    assert [signal["instrument"] for signal in result.signals] == ["SIM:BTCUSD", "SIM:XAUUSD"]
    assert all(signal["reason"].startswith("sma3 101.0 after") for signal in result.signals)
    run, steps, signals = lineage.run_detail(engine.require_store(), result.run_id)
    assert run is not None and run["instruments"] == 5 and run["skipped"] == 2
    # Skips per instrument; the rest once for the run (instrument NULL).
    assert steps.select("instrument", "step").rows() == [
        ("SIM:ETHUSD", "skip"),
        ("SIM:SPY", "skip"),
        (None, "load_bars"),
        (None, "indicators"),
        (None, "evaluate"),
        (None, "emit"),
    ]
    load, indicators, evaluate, emit = steps.slice(2).rows(named=True)
    assert load["input_summary"].startswith("3 instruments (SIM:BTCUSD, SIM:XAUUSD, SIM:QUIET)")
    assert load["output_summary"].startswith("3 instruments, 60 bars, newest")
    assert load["output_summary"].endswith("no bars for SIM:QUIET")
    assert indicators["output_summary"] == "columns: sma3"
    assert "on 2 instruments, 60 bars" in evaluate["input_summary"]
    assert "60 signal rows, 2 on the newest bar" in evaluate["output_summary"]
    assert emit["output_summary"] == "SIM:BTCUSD buy 0.10, SIM:XAUUSD buy 0.10"
    assert signals["instrument"].to_list() == ["SIM:BTCUSD", "SIM:XAUUSD"]
    assert steps["error"].null_count() == steps.height


def test_stacked_and_per_instrument_runs_raise_the_same_signals(make_engine) -> None:
    instruments = ["SIM:BTCUSD", "SIM:ETHUSD", "SIM:XAUUSD"]
    engine = make_engine(
        scanner_table("stacked", "test_stacked_every_bar", instruments=instruments),
        scanner_table("each", "test_per_instrument_every_bar", instruments=instruments),
    )
    for name in instruments:
        store_bars(engine, name)
    at_us = now_us()
    stacked = make_scanner(engine, 0).scan("manual", at_us=at_us)
    each = make_scanner(engine, 1).scan("manual", at_us=at_us)
    keys = ("instrument", "ts_us", "side", "strength", "reason", "stop", "target")
    assert [[signal[key] for key in keys] for signal in stacked.signals] == [
        [signal[key] for key in keys] for signal in each.signals
    ]
    assert len(stacked.signals) == 3 and stacked.scanned == each.scanned == instruments
    assert [row[0] for row in step_rows(engine, each.run_id)] == [
        None,
        None,
        *[name for name in instruments for _ in ("evaluate", "emit")],
    ]


def test_a_failing_stacked_evaluate_falls_back_to_each_instrument(make_engine) -> None:
    engine = make_engine(
        scanner_table(instruments=["SIM:BTCUSD", "SIM:ETHUSD"], strategy="test_stacked_boom")
    )
    for name in ("SIM:BTCUSD", "SIM:ETHUSD"):
        store_bars(engine, name)
    result = make_scanner(engine).scan("manual")
    assert result.status == "partial"
    assert result.scanned == ["SIM:ETHUSD"]
    assert result.failed == [("SIM:BTCUSD", "evaluate: ValueError: boom on BTCUSD")]
    assert [signal["instrument"] for signal in result.signals] == ["SIM:ETHUSD"]
    run, steps, signals = lineage.run_detail(engine.require_store(), result.run_id)
    assert run is not None and run["status"] == "partial" and run["signals"] == 1
    assert steps.select("instrument", "step").rows() == [
        (None, "load_bars"),
        (None, "indicators"),
        (None, "evaluate"),  # failed: then instrument by instrument
        ("SIM:BTCUSD", "evaluate"),
        ("SIM:ETHUSD", "evaluate"),
        ("SIM:ETHUSD", "emit"),
    ]
    errors = steps["error"].to_list()
    assert errors[2].startswith("ValueError: boom on BTCUSD") and "Traceback" in errors[2]
    assert errors[3].startswith("ValueError: boom on BTCUSD") and "Traceback" in errors[3]
    assert errors[4] is None and errors[5] is None
    assert signals["instrument"].to_list() == ["SIM:ETHUSD"]


def test_failing_batched_indicators_and_coverage_checks_fall_back(
    make_engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sptrader import indicators

    instruments = ["SIM:BTCUSD", "SIM:ETHUSD"]
    engine = make_engine(scanner_table(instruments=instruments, strategy="test_stacked_every_bar"))
    for name in instruments:
        store_bars(engine, name)
    add_indicators = indicators.add_indicators

    def only_one(bars: pl.DataFrame, specs: list, *, over: str | None = None) -> pl.DataFrame:
        if over is not None:
            raise RuntimeError("no stacking today")
        return add_indicators(bars, specs)

    def no_batch(*args: object) -> None:
        raise RuntimeError("no batched coverage")

    monkeypatch.setattr(indicators, "add_indicators", only_one)
    monkeypatch.setattr(engine.data, "gaps_many", no_batch)
    result = make_scanner(engine).scan("manual")
    assert result.status == "ok" and result.scanned == instruments
    assert len(result.signals) == 2
    _, steps, _ = lineage.run_detail(engine.require_store(), result.run_id)
    assert steps.select("instrument", "step").rows() == [
        (None, "load_bars"),  # the coverage check, failed: then one by one
        (None, "load_bars"),
        (None, "indicators"),  # failed: then one by one, each evaluated alone
        *[(name, step) for name in instruments for step in ("indicators", "evaluate", "emit")],
    ]
    errors = steps["error"].to_list()
    assert errors[0].startswith("RuntimeError: no batched coverage")
    assert steps["input_summary"][0].startswith("coverage check of 2 instruments")
    assert errors[2].startswith("RuntimeError: no stacking today")
    assert steps["error"].null_count() == steps.height - 2
    # One by one, each step names the indicator columns only (not buy_volume/sell_volume).
    alone = steps.filter(pl.col("instrument").is_not_null() & (pl.col("step") == "indicators"))
    assert alone["output_summary"].to_list() == ["columns: sma3"] * len(instruments)


def test_a_strategy_whose_indicators_raise_fails_every_instrument(make_engine) -> None:
    engine = make_engine(
        scanner_table(instruments=["SIM:BTCUSD", "SIM:ETHUSD"], strategy="test_bad_specs")
    )
    for name in ("SIM:BTCUSD", "SIM:ETHUSD"):
        store_bars(engine, name)
    result = make_scanner(engine).scan("manual")
    assert result.status == "failed" and result.scanned == []
    assert result.failed == [
        ("SIM:BTCUSD", "indicators: RuntimeError: no specs"),
        ("SIM:ETHUSD", "indicators: RuntimeError: no specs"),
    ]
    rows = step_rows(engine, result.run_id)
    assert rows == [(None, "load_bars"), (None, "indicators")]
    _, steps, _ = lineage.run_detail(engine.require_store(), result.run_id)
    assert (
        steps["error"][1].startswith("RuntimeError: no specs") and "Traceback" in steps["error"][1]
    )


async def test_a_failing_run_does_not_stop_the_service_and_signals_are_published(
    make_engine,
) -> None:
    engine = make_engine(
        scanner_table(strategy="test_boom"),
        scanner_table("good", "test_every_bar", instruments=["SIM:ETHUSD"]),
    )
    for name in ("SIM:BTCUSD", "SIM:ETHUSD"):
        store_bars(engine, name)
    events = engine.bus.subscribe("test", maxsize=1000)
    clock = FakeClock(T0)
    bad, bad_context = await start_service(engine, clock, 0)
    good, good_context = await start_service(engine, clock, 1)
    try:
        clock.set(at(1))
        await wait_until(lambda: bad_context.counters.get("runs") == 1 and idle(bad, good))
        clock.set(at(2))
        await wait_until(lambda: bad_context.counters.get("runs") == 2)
        assert bad_context.counters["runs_failed"] == 2
        assert state_of(engine, bad.name) == ServiceState.RUNNING
        await wait_until(lambda: good_context.counters.get("signals") == 2)
        raised = [event for event in events.get_nowait() if type(event) is SignalRaised]
        assert {event.scanner for event in raised} == {"good"}
        assert raised[0].instrument == "SIM:ETHUSD" and raised[0].side == "buy"
    finally:
        await engine.supervisor.stop_all()


async def test_a_broken_user_module_fails_only_its_scanner(
    make_engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog
) -> None:
    modules = tmp_path / "user_strategies"
    modules.mkdir()
    (modules / "broken_strategies.py").write_text("import nowhere_to_be_found\n")
    monkeypatch.syspath_prepend(str(modules))
    engine = make_engine(
        scanner_table("mine", "my_strategy"),
        scanner_table("fine", "test_every_bar"),
        strategies={"modules": ["broken_strategies"]},
    )
    store_bars(engine, "SIM:BTCUSD")
    clock = FakeClock(T0)
    mine = ScannerService(engine.scanner_deps, engine.config.scanners[0], None, clock)
    mine_context = engine.supervisor.add(mine)
    engine.supervisor.start(mine.name)
    _, fine_context = await start_service(engine, clock, 1)
    try:
        await wait_until(lambda: state_of(engine, mine.name) == ServiceState.FAILED)
        assert "broken_strategies" in mine_context.problem
        assert "ModuleNotFoundError" in mine_context.problem
        assert "Traceback" in caplog.text
        clock.set(at(1))
        await wait_until(lambda: fine_context.counters.get("signals") == 1)
    finally:
        await engine.supervisor.stop_all()
        sys.modules.pop("broken_strategies", None)


def test_user_module_strategies_register_by_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "good_strategies.py").write_text(
        "import polars as pl\n"
        "from sptrader.strategies.base import Strategy, empty_signals\n"
        "class Never(Strategy):\n"
        "    name = 'user_never'\n"
        "    def evaluate(self, bars):\n"
        "        return empty_signals()\n"
        "class Other(Strategy):\n"
        "    def evaluate(self, bars):\n"
        "        return empty_signals()\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        assert registry.resolve("user_never", ["good_strategies"]).__name__ == "Never"
        assert registry.resolve("Other", ["good_strategies:Other"]).__name__ == "Other"
    finally:
        registry.unregister("user_never")
        registry.unregister("Other")
        sys.modules.pop("good_strategies", None)


async def test_engine_starts_scanners_and_runs_one_now(home: Path) -> None:
    settings = make_settings(
        home,
        watchlist=["SIM:EURUSD"],
        store={"seed_days": 0.05, "flush_interval_ms": 20},
        feeds={"sim": {"publish_interval_ms": 10}},
        scanners=[scanner_table(instruments=["SIM:BTCUSD"], schedule="0 0 1 1 *")],
    )
    engine = Engine(settings)
    await engine.start()
    try:
        store_bars(engine, "SIM:BTCUSD")
        service = engine.scanners["up"]
        await wait_until(lambda: state_of(engine, service.name) == ServiceState.RUNNING)
        result = await engine.run_scanner("up")
        assert result.status == "ok" and len(result.signals) == 1
        kinds = {s.name: s.kind for s in engine.supervisor.status()}
        assert kinds["scanner:up"] == "scanner"
    finally:
        await engine.stop()


# --- config ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scanners", "extra", "problem"),
    [
        ([scanner_table(), scanner_table()], {}, "scanners[1].name: 'up' is used"),
        ([scanner_table(schedule="every minute")], {}, "scanners[0].schedule: bad cron"),
        ([scanner_table(strategy="nope")], {}, "scanners[0].strategy: unknown strategy 'nope'"),
        ([scanner_table(timeframe="7x")], {}, "scanners[0].timeframe: unknown timeframe"),
        ([scanner_table(instruments=["btc"])], {}, "scanners[0].instruments[0]: bad instrument"),
        ([scanner_table(params={"x": 1})], {}, "scanners[0].params: bad params"),
        ([], {"alerts": {"webhooks": [{"url": "ftp://x"}]}}, "alerts.webhooks[0].url"),
        ([], {"alerts": {"webhooks": [{"url": "http://x", "format": "irc"}]}}, "format"),
    ],
)
def test_config_problems_name_the_key(scanners: list, extra: dict, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        make_config(scanners=scanners, **extra)
    assert problem in str(caught.value)


def test_config_defers_unknown_strategies_to_user_modules() -> None:
    config = make_config(
        scanners=[scanner_table(strategy="mine")], strategies={"modules": ["pkg.mod"]}
    )
    assert config.scanners[0].timeframe == "1m" and config.scanners[0].paper is False
    assert config.scanners[0].enabled is True and config.alerts.notify is True


# --- the CLI -------------------------------------------------------------------------------

CLI_CONFIG = """
watchlist = ["SIM:EURUSD"]

[store]
seed_days = 0.05

[[scanners]]
name = "every"
strategy = "test_every_bar"
instruments = ["SIM:BTCUSD", "SIM:ETHUSD"]
bars = 20

[[scanners]]
name = "boom"
strategy = "test_boom"
instruments = ["SIM:BTCUSD"]
bars = 20
enabled = false
"""


def test_scan_and_runs_through_the_cli(run, cli_home: Path) -> None:
    cli_home.mkdir(parents=True, exist_ok=True)
    (cli_home / "config.toml").write_text(CLI_CONFIG)
    scanned = run("scan")
    assert scanned.code == 0, scanned.err
    assert "every: run 1 ok: 2 scanned, 0 skipped, 0 failed, 2 signals" in scanned.out
    assert "BUY  SIM:BTCUSD" in scanned.out

    failing = run("scan", "boom")
    assert failing.code == 1
    assert "boom: run 2 failed" in failing.out
    assert "failed  SIM:BTCUSD: evaluate: ValueError: boom" in failing.out

    unknown = run("scan", "nope")
    assert unknown.code == 2 and "unknown scanner 'nope'" in unknown.err

    runs = run("runs")
    assert runs.code == 0
    lines = runs.out.splitlines()
    assert lines[0].split() == ["ID", "SCANNER", "START", "DURATION", "STATUS", "SIGNALS"]
    assert lines[1].split()[:2] == ["1", "every"] and lines[1].split()[-2:] == ["ok", "2"]
    assert lines[2].split()[:2] == ["2", "boom"] and "failed" in lines[2]
    assert len(run("runs", "--last", "1").out.splitlines()) == 2

    shown = run("runs", "show", "2")
    assert shown.code == 0
    assert "run 2  boom  manual" in shown.out
    assert "evaluate" in shown.out and "! ValueError: boom" in shown.out
    assert "! Traceback" in shown.out
    detail = run("runs", "show", "1")
    assert "load_bars" in detail.out and "emit" in detail.out and "signals" in detail.out
    missing = run("runs", "show", "99")
    assert missing.code == 2 and "no scanner run 99" in missing.err


def test_runs_on_a_fresh_home(run) -> None:
    result = run("runs")
    assert result.code == 0 and "no scanner runs yet" in result.out
