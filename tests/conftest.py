"""Shared fixtures: every test runs against a temporary home, never the user's."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import polars as pl
import pytest

from sptrader.config import Config, Settings, parse_config
from sptrader.models import US_PER_MINUTE


def _merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge ``overrides`` into a copy of ``base`` (tables merge, values replace)."""
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def make_config(**overrides: Any) -> Config:
    """A validated Config: defaults with top-level keys replaced and tables merged, e.g.
    ``make_config(watchlist=["SIM:EURUSD"], store={"seed_days": 0.1})``."""
    data = _merge(msgspec.to_builtins(Config()), overrides)
    return parse_config(data, "<test config>")


def make_settings(home: Path, **config_overrides: Any) -> Settings:
    """Settings on ``home`` with a default Config changed by ``config_overrides``."""
    return Settings(home=home, config_path=None, config=make_config(**config_overrides))


async def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll ``condition`` on the running loop until it holds (no fixed sleeps)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.005)


async def wait_for_history(engine: Any, instruments: list[str], timeout: float = 10.0) -> None:
    """Feeds backfill in the background when they start: wait until every instrument has
    stored bars."""
    from sptrader.store import queries

    store = engine.require_store()
    await wait_until(
        lambda: all(queries.last_bar_ts(store, name) is not None for name in instruments),
        timeout=timeout,
    )


@dataclass
class CliResult:
    code: int
    out: str
    err: str


@pytest.fixture
def cli_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh home for CLI tests; the working directory is an empty temporary one and
    neither SPTRADER_HOME nor SPTRADER_CONFIG is set (no ./config.toml is picked up)."""
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    monkeypatch.delenv("SPTRADER_HOME", raising=False)
    monkeypatch.delenv("SPTRADER_CONFIG", raising=False)
    return tmp_path / "home"


@pytest.fixture
def run(cli_home: Path, capsys: pytest.CaptureFixture[str]):
    """Run ``sptrader --home HOME ARGS...`` in-process; argparse exits become codes."""
    from sptrader.cli import main

    def run_cli(*args: str, with_home: bool = True) -> CliResult:
        argv = ["--home", str(cli_home), *args] if with_home else list(args)
        capsys.readouterr()
        try:
            code = main(argv)
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run_cli


async def wait_for(
    pilot: Any, condition: Callable[[], object], timeout: float = 10, what: str = ""
) -> None:
    """Let a Textual app run until ``condition()`` is true; fail clearly after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            description = what or getattr(condition, "__qualname__", repr(condition))
            pytest.fail(f"timed out after {timeout:g}s waiting for: {description}")
        await pilot.pause(0.05)


def first_palette_option(app: Any) -> str | None:
    """The title of the command palette's first option (None: no palette, or no options)."""
    from textual.command import CommandList

    lists = app.screen.query(CommandList)
    if not lists or not lists.first().option_count:
        return None
    prompt = lists.first().get_option_at_index(0).prompt
    return str(prompt).splitlines()[0]  # the title; the help text is on the next line


def rollup_by_hand(bars: pl.DataFrame, minutes: int) -> pl.DataFrame:
    """The reference for SQL rollups: buckets on epoch multiples of the width,
    open=first, high=max, low=min, close=last, volume=sum, trades=sum."""
    width = minutes * US_PER_MINUTE
    epoch = pl.col("ts").dt.epoch("us")
    return (
        bars.sort("ts")
        .with_columns((epoch - epoch % width).cast(pl.Datetime("us")).alias("bucket"))
        .group_by("bucket", maintain_order=True)
        .agg(
            pl.col("open").first(),
            pl.col("high").max(),
            pl.col("low").min(),
            pl.col("close").last(),
            pl.col("volume").sum(),
            pl.col("trades").sum(),
        )
        .rename({"bucket": "ts"})
    )


def assert_same_bars(actual: pl.DataFrame, expected: pl.DataFrame) -> None:
    """Equal bars in the query output layout (volume compared approximately: sums)."""
    from sptrader.schema import CANDLE_COLUMNS

    assert actual.columns == CANDLE_COLUMNS
    assert actual.schema["ts"] == pl.Datetime("us")
    exact = ["ts", "open", "high", "low", "close", "trades"]
    assert actual.select(exact).to_dicts() == expected.select(exact).to_dicts()
    assert actual["volume"].to_list() == pytest.approx(expected["volume"].to_list())


# --- logging ------------------------------------------------------------------------
# A CLI command run in-process (``main([...])``, the TUI's and the daemon's entry points)
# points the sptrader logger at the home's log file and stops its propagation, for a
# process that would normally exit; an engine sets the logger's level and hangs its bus
# handler on it. Left so, caplog sees no sptrader record in any later test of the same
# process (which ones those are depends on the order: pytest-xdist changes it).


@dataclass(frozen=True)
class _LoggerState:
    level: int = logging.NOTSET
    propagate: bool = True
    disabled: bool = False
    handlers: tuple[logging.Handler, ...] = ()


def _sptrader_loggers() -> dict[str, logging.Logger]:
    loggers = logging.root.manager.loggerDict
    return {
        name: logger
        for name, logger in list(loggers.items())
        if (name == "sptrader" or name.startswith("sptrader."))
        and isinstance(logger, logging.Logger)
    }


def _logging_state() -> tuple[int, int, bool, dict[str, _LoggerState]]:
    """What the tests (and the code they run) may change: the root logger's level, the
    module-wide ``logging.disable`` level and every sptrader logger. (The root logger's
    handlers are pytest's own: its log capture adds and removes them.)"""
    loggers = {
        name: _LoggerState(logger.level, logger.propagate, logger.disabled, tuple(logger.handlers))
        for name, logger in _sptrader_loggers().items()
    }
    return logging.root.manager.disable, logging.root.level, logging.root.disabled, loggers


def _restore_logging_state(state: tuple[int, int, bool, dict[str, _LoggerState]]) -> None:
    disable, root_level, root_disabled, saved = state
    if logging.root.manager.disable != disable:
        logging.disable(disable)
    if logging.root.level != root_level:
        logging.root.setLevel(root_level)
    logging.root.disabled = root_disabled
    for name, logger in _sptrader_loggers().items():
        # A logger created since (a module imported later) goes back to the defaults.
        was = saved.get(name, _LoggerState())
        for handler in list(logger.handlers):
            if handler not in was.handlers:
                logger.removeHandler(handler)
                handler.close()
        for handler in was.handlers:
            if handler not in logger.handlers:
                logger.addHandler(handler)
        if logger.level != was.level:
            logger.setLevel(was.level)
        logger.propagate = was.propagate
        logger.disabled = was.disabled


@contextlib.contextmanager
def logging_restored() -> Iterator[None]:
    """Puts logging back as it was: for a fixture wider than a test that runs a CLI
    command in-process (the autouse fixture below restores around each test only)."""
    state = _logging_state()
    try:
        yield
    finally:
        _restore_logging_state(state)


@pytest.fixture(scope="session", autouse=True)
def _logging_baseline() -> tuple[int, int, bool, dict[str, _LoggerState]]:
    """Logging as the session found it, before any test or fixture changed it."""
    return _logging_state()


@pytest.fixture(autouse=True)
def _restore_logging(
    _logging_baseline: tuple[int, int, bool, dict[str, _LoggerState]],
) -> Iterator[None]:
    """Every test starts and ends with logging as the session found it: not as the
    previous test left it, nor as a module- or session-scoped fixture set up before
    this one (a per-test snapshot would take that in, and keep it for good). A test
    that wants the sptrader logger configured does so itself or in a function-scoped
    fixture (those run after this one)."""
    _restore_logging_state(_logging_baseline)
    yield
    _restore_logging_state(_logging_baseline)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh home directory; SPTRADER_HOME and SPTRADER_CONFIG point nowhere else."""
    directory = tmp_path / "home"
    directory.mkdir()
    monkeypatch.setenv("SPTRADER_HOME", str(directory))
    monkeypatch.delenv("SPTRADER_CONFIG", raising=False)
    return directory


@pytest.fixture
def settings(home: Path) -> Settings:
    """Default configuration on the temporary home."""
    return Settings(home=home, config_path=None, config=Config())


_HOLD_DATABASE = """
import sys, time, duckdb
connection = duckdb.connect(sys.argv[1])
print("ready", flush=True)
time.sleep(120)
"""


@contextlib.contextmanager
def holding_database(path: Path) -> Iterator[subprocess.Popen[str]]:
    """Another process holding the DuckDB file at ``path`` open (and so its lock)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD_DATABASE, str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        ready = holder.stdout.readline().strip()
        assert ready == "ready", holder.stderr.read() if holder.stderr else ""
        yield holder
    finally:
        holder.kill()
        holder.wait(timeout=10)


def run_cli(home: Path, config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`sptrader --home HOME --config CONFIG ARGS...` in a subprocess, free of SPTRADER_*."""
    import os

    env = {key: value for key, value in os.environ.items() if not key.startswith("SPTRADER_")}
    return subprocess.run(
        [sys.executable, "-m", "sptrader.cli", "--home", str(home), "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=home.parent,
    )


@contextlib.contextmanager
def running_daemon(
    tmp_path: Path, config_text: str, home_name: str = "home"
) -> Iterator[tuple[Path, Path]]:
    """A real daemon (`sptrader start`) on a fresh home with this config; stopped (and
    killed if it lingers) afterwards. Yields (home, config path)."""
    import os
    import signal

    from sptrader.client.paths import running_pid

    home = tmp_path / home_name
    config = tmp_path / "config.toml"
    config.write_text(config_text)
    started = run_cli(home, config, "start")
    assert started.returncode == 0, started.stderr
    try:
        yield home, config
    finally:
        run_cli(home, config, "stop")
        pid = running_pid(home)
        if pid is not None:
            os.kill(pid, signal.SIGKILL)


#: Real messages recorded from the live services by other projects (``../shared/wire``,
#: beside the checkout; SOURCES.md says where each came from). Read there, never copied.
WIRE_DIR = Path(__file__).resolve().parents[2] / "shared" / "wire"


def wire_path(*parts: str) -> Path:
    """A recorded sample under ``../shared/wire``; the test is skipped without it."""
    path = WIRE_DIR.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"recorded sample {path} is not beside the checkout")
    return path


def wire_bytes(*parts: str) -> bytes:
    """A recorded sample's bytes (``.gz`` files unpacked)."""
    import gzip

    path = wire_path(*parts)
    data = path.read_bytes()
    return gzip.decompress(data) if path.suffix == ".gz" else data
