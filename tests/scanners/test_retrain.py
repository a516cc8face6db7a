"""Scheduled retraining: the new model is kept only if it beats the current one on the
newest signals it never saw, and every attempt is recorded; a window with too few
signals is recorded as such; the engine runs the schedule as a service."""

from __future__ import annotations

import json

import pytest
from conftest import make_settings, wait_until
from test_models import T0, store_random_signals

from sptrader.config import RetrainConfig
from sptrader.engine import Engine
from sptrader.errors import ConfigError
from sptrader.scanners import models
from sptrader.scanners.retrain import SERVICE_NAME, retrain
from sptrader.store import Store

NOW = T0 + 3 * 1440 * 60_000_000  # the end of the stored signals' three days


def scanner_config(home):
    from sptrader.config import load_settings

    return load_settings(home).config.scanners[0]


def test_a_candidate_is_kept_only_when_it_beats_the_current_model(cli_home) -> None:
    store_random_signals(cli_home)
    config = scanner_config(cli_home)
    entry = RetrainConfig(scanner="cross", model="gbm", days=5, folds=3)
    store = Store(cli_home / "sptrader.duckdb")
    try:
        first = retrain(store, cli_home, config, entry, [], now=NOW)
        assert first["kept"] and first["version"] == "cross@v1" and first["current"] is None
        assert first["signals"] == 200 and first["holdout"] == 50
        # The current model was fitted on every signal, the holdout too: the candidate,
        # which never saw the holdout, does not beat it there on a random walk.
        second = retrain(store, cli_home, config, entry, [], now=NOW)
    finally:
        store.close()
    assert second["current"] == "cross@v1" and not second["kept"]
    assert second["current_auc"] > second["candidate_auc"]
    assert models.versions(cli_home, "cross") == [1]
    lines = (cli_home / "models" / "cross" / "retrains.jsonl").read_text().splitlines()
    assert [json.loads(line)["kept"] for line in lines] == [True, False]
    described = json.loads((cli_home / "models" / "cross" / "v1.json").read_text())
    assert described["retrained"]["holdout"] == 50


def test_too_few_signals_is_recorded_not_raised(cli_home) -> None:
    store_random_signals(cli_home, count=20)
    store = Store(cli_home / "sptrader.duckdb")
    try:
        record = retrain(
            store, cli_home, scanner_config(cli_home), RetrainConfig(scanner="cross"), [], now=NOW
        )
    finally:
        store.close()
    assert not record["kept"] and "at least 40 labelled signals" in record["error"]
    assert models.versions(cli_home, "cross") == []


def test_retrain_entries_are_checked(tmp_path) -> None:
    with pytest.raises(ConfigError, match=r"ml.retrain\[0\].scanner: unknown scanner 'nope'"):
        make_settings(tmp_path, ml={"retrain": [{"scanner": "nope"}]})
    scanners = [{"name": "cross", "strategy": "sma_cross", "instruments": ["SIM:EURUSD"]}]
    with pytest.raises(ConfigError, match=r"ml.retrain\[0\].schedule: bad cron"):
        make_settings(
            tmp_path, scanners=scanners, ml={"retrain": [{"scanner": "cross", "schedule": "x"}]}
        )


async def test_the_engine_runs_the_schedule_as_a_service(tmp_path) -> None:
    scanners = [{"name": "cross", "strategy": "sma_cross", "instruments": ["SIM:EURUSD"]}]
    settings = make_settings(
        tmp_path / "home",
        watchlist=["SIM:EURUSD"],
        scanners=scanners,
        ml={"retrain": [{"scanner": "cross", "schedule": "0 3 * * 0"}]},
        store={"seed_days": 0.01},
    )
    engine = Engine(settings)
    await engine.start()
    try:
        assert SERVICE_NAME in engine.supervisor.names()

        def state() -> str:
            return {s.name: s.state.value for s in engine.supervisor.status()}[SERVICE_NAME]

        await wait_until(lambda: state() == "running")
    finally:
        await engine.stop()
