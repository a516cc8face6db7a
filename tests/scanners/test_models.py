"""Models of a scanner's signals, judged walk-forward: on a synthetic market where one
feature decides the outcome, the model finds it out of sample; on noise it does not
beat chance. Versions are saved and loaded by name; too few signals is one line."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from sptrader.errors import SptraderError, UsageError
from sptrader.scanners import models

T0 = 1_767_225_600_000_000
FEATURES = ["side_sign", "signal", "noise_a", "noise_b", "noise_c"]


def market(rows: int, predictive: bool, seed: int = 5) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    signal = rng.normal(size=rows)
    noise = rng.normal(size=(rows, 3))
    decided = signal + 0.3 * rng.normal(size=rows) > 0
    wins = decided if predictive else rng.random(rows) < 0.4
    return pl.DataFrame(
        {
            "ts": pl.Series(T0 + np.arange(rows) * 3_600_000_000).cast(pl.Datetime("us")),
            "side_sign": rng.choice([1, -1], rows),
            "signal": signal,
            "noise_a": noise[:, 0],
            "noise_b": noise[:, 1],
            "noise_c": noise[:, 2],
            "label": np.where(wins, "target", rng.choice(["stop", "timeout"], rows)),
            "return": np.where(wins, 1.0, -0.5),
        }
    )


@pytest.mark.parametrize("kind", models.KINDS)
def test_the_model_finds_the_feature_that_decides(kind: str) -> None:
    trained = models.walk_forward(market(1000, predictive=True), FEATURES, kind, folds=4)
    assert trained.totals["folds"] == 4
    assert trained.totals["auc_mean"] > 0.85
    assert trained.totals["ev_lift_mean_pct"] > 0.3  # taking only its picks pays
    for fold in trained.folds:  # each fold tested on signals after all it trained on
        assert fold["train"] < fold["train"] + fold["test"] <= 1000


@pytest.mark.parametrize("kind", models.KINDS)
def test_on_noise_the_model_does_not_beat_chance(kind: str) -> None:
    trained = models.walk_forward(market(1000, predictive=False), FEATURES, kind, folds=4)
    assert 0.4 < trained.totals["auc_mean"] < 0.6
    lift = trained.totals["ev_lift_mean_pct"]
    assert lift is None or abs(lift) < 0.15


def test_too_few_signals_and_bad_folds_are_one_line() -> None:
    with pytest.raises(UsageError, match=r"at least 40 labelled signals .* has 10"):
        models.walk_forward(market(10, predictive=True), FEATURES, "gbm", folds=4)
    with pytest.raises(UsageError, match="--folds must be at least 2"):
        models.walk_forward(market(100, predictive=True), FEATURES, "gbm", folds=1)


def test_versions_are_saved_and_loaded_by_name(tmp_path) -> None:
    frame = market(200, predictive=True)
    trained = models.walk_forward(frame, FEATURES, "logistic", folds=3)
    meta = {"kind": "logistic", "features": FEATURES}
    assert models.save(tmp_path, "cross", trained, meta)[0] == 1
    assert models.save(tmp_path, "cross", trained, meta)[0] == 2
    estimator, described = models.load(tmp_path, "cross")
    assert described["version"] == 2 and described["features"] == FEATURES
    probability = estimator.predict_proba(models.matrix(frame, FEATURES))[:, 1]
    assert probability.shape == (200,) and ((probability >= 0) & (probability <= 1)).all()
    assert models.load(tmp_path, "cross@v1")[1]["version"] == 1
    with pytest.raises(SptraderError, match=r"has no v9 \(versions: v1, v2\)"):
        models.load(tmp_path, "cross@v9")
    with pytest.raises(SptraderError, match=r"no model 'other'.*sptrader ml train other"):
        models.load(tmp_path, "other")


def test_ml_train_on_too_few_signals_says_so(run, cli_home) -> None:
    from test_labels import store_crafted_signals

    store_crafted_signals(cli_home)
    done = run("ml", "train", "cross")
    assert done.code == 2
    assert "needs at least 40 labelled signals" in done.err and "has 4" in done.err
    assert not (cli_home / "models").exists()


def store_random_signals(cli_home, count: int = 200) -> None:
    """Three days of a random walk as SIM:EURUSD and ``count`` signals of scanner
    "cross" at random minutes, with a horizon and levels the walk reaches either way."""
    from datetime import UTC, datetime

    from test_labels import SCANNER_TOML, random_bars

    from sptrader.store import Store

    cli_home.mkdir(parents=True, exist_ok=True)
    # A horizon and levels a 0.2%-a-minute walk reaches either way.
    (cli_home / "config.toml").write_text(
        SCANNER_TOML.replace("label_bars = 3", "label_bars = 30")
        .replace("label_target_pct = 1.0", "label_target_pct = 0.3")
        .replace("label_stop_pct = 0.5", "label_stop_pct = 0.3")
    )
    bars = random_bars(3 * 1440, instruments=("SIM:EURUSD",))
    store = Store(cli_home / "sptrader.duckdb")
    store.migrate()
    store.upsert_bars(bars)
    rng = np.random.default_rng(1)
    minutes = np.sort(rng.choice(np.arange(40, 3 * 1440 - 40), count, replace=False))
    with store.transaction() as cursor:
        for number, minute in enumerate(minutes, 1):
            when = datetime.fromtimestamp((T0 + int(minute) * 60_000_000) / 1e6, UTC)
            cursor.execute(
                "INSERT INTO signals (run_id, scanner, instrument, ts, side, strength, reason, stop, target, created) VALUES (?, 'cross', 'SIM:EURUSD', ?, ?, 1, 'x', NULL, NULL, ?)",
                [number, when.replace(tzinfo=None), rng.choice(["buy", "sell"]), when],
            )
    store.close()


def test_ml_train_saves_a_version_from_the_stored_signals(run, cli_home) -> None:
    import json

    store_random_signals(cli_home)
    done = run("ml", "train", "cross", "--model", "logistic", "--folds", "3")
    assert done.code == 0, done.err
    assert "mean out of sample: AUC" in done.out and "saved cross@v1" in done.out
    described = json.loads((cli_home / "models" / "cross" / "v1.json").read_text())
    assert described["kind"] == "logistic" and described["rows"] == 200
    assert described["features"][0] == "side_sign" and len(described["folds"]) == 3
    again = run("ml", "train", "cross", "--format", "json")
    assert again.code == 0, again.err
    assert json.loads(again.out)["model"] == "cross@v2"


def test_labels_and_a_model_from_the_strategy_replayed_on_the_stored_bars(run, cli_home) -> None:
    """--source backtest: the scanner's strategy evaluated on the stored bars gives the
    signals (no live signal needed), labelled the same way, and a model trains on them."""
    import json

    from test_labels import SCANNER_TOML, random_bars

    from sptrader.store import Store

    cli_home.mkdir(parents=True, exist_ok=True)
    (cli_home / "config.toml").write_text(
        SCANNER_TOML.replace("label_bars = 3", "label_bars = 30")
        .replace("label_target_pct = 1.0", "label_target_pct = 0.3")
        .replace("label_stop_pct = 0.5", "label_stop_pct = 0.3")
        + "params = { fast = 3, slow = 8, short = true }\n"
    )
    store = Store(cli_home / "sptrader.duckdb")
    store.migrate()
    store.upsert_bars(random_bars(3 * 1440, instruments=("SIM:EURUSD",)))
    store.close()
    window = ["--from", "2026-01-01T01:00Z", "--to", "2026-01-03T22:00Z"]
    listed = run("ml", "labels", "cross", "--source", "backtest", *window, "--format", "json")
    assert listed.code == 0, listed.err
    rows = json.loads(listed.out)
    assert len(rows) > 100 and {row["source"] for row in rows} == {"backtest"}
    assert {row["side"] for row in rows} == {"buy", "sell"}
    assert {row["label"] for row in rows} <= {"target", "stop", "timeout"}
    assert all(row["ts"] >= "2026-01-01T01:00:00Z" for row in rows)
    assert not json.loads(run("ml", "labels", "cross", "--format", "json").out)  # no live ones
    trained = run("ml", "train", "cross", "--source", "backtest", *window, "--format", "json")
    assert trained.code == 0, trained.err
    assert json.loads(trained.out)["model"] == "cross@v1"
    described = json.loads((cli_home / "models" / "cross" / "v1.json").read_text())
    assert described["source"] == "backtest" and described["rows"] == len(rows)
