"""Models of a scanner's signals (`sptrader ml train`): does a labelled signal reach its
target? Trained with scikit-learn on a training set (``sptrader.scanners.features``),
judged walk-forward, saved versioned in the home.

- The question: ``label == "target"`` (a stop or a timeout is a no).
- The models: ``gbm`` (HistGradientBoostingClassifier: missing feature values are fine)
  and ``logistic`` (median-imputed, standardised logistic regression).
- Judged on a time-ordered split (scikit-learn's TimeSeriesSplit: each fold trains on
  the signals before its test span, never shuffled across time): per fold, the
  precision and recall of "take it" (probability >= 0.5), the AUC, and the expected
  value lift: the mean return of the signals the model takes against that of taking
  every signal of the span.
- Saved as ``HOME/models/SCANNER/vN.pkl`` with ``vN.json`` (kind, features, training
  window, fold figures); a model is named ``SCANNER`` (its newest version) or
  ``SCANNER@vN``.

scikit-learn is the optional ``ml`` extra (in ``.[dev]``): without it, training and
scoring are one clear error.
"""

from __future__ import annotations

import json
import pickle
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from sptrader.clock import format_us, now_us
from sptrader.errors import SptraderError, UsageError

KINDS = ("gbm", "logistic")
#: Fewer labelled signals than this cannot be judged walk-forward.
MIN_SIGNALS = 40
#: "Take it" at this probability or more (the fold figures; a scanner sets its own).
TAKE_AT = 0.5


def _sklearn() -> Any:
    try:
        import sklearn
    except ImportError:
        raise SptraderError(
            "training and scoring models needs scikit-learn: pip install 'sptrader[ml]'"
        ) from None
    return sklearn


def make_estimator(kind: str) -> Any:
    _sklearn()
    if kind == "gbm":
        from sklearn.ensemble import HistGradientBoostingClassifier

        return HistGradientBoostingClassifier(max_iter=200, learning_rate=0.05, random_state=0)
    if kind == "logistic":
        from sklearn.impute import SimpleImputer
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        return make_pipeline(
            SimpleImputer(strategy="median", keep_empty_features=True),
            StandardScaler(),
            LogisticRegression(max_iter=1000),
        )
    raise UsageError(f"unknown model {kind!r} (models: {', '.join(KINDS)})")


def matrix(frame: pl.DataFrame, features: list[str]) -> np.ndarray:
    """The feature columns as floats, nulls as NaN."""
    return frame.select(pl.col(name).cast(pl.Float64) for name in features).to_numpy()


@dataclass
class Trained:
    estimator: Any
    folds: list[dict[str, Any]]
    totals: dict[str, Any]


def walk_forward(frame: pl.DataFrame, features: list[str], kind: str, folds: int) -> Trained:
    """Judge ``kind`` fold by fold on ``frame`` (a training set, any order: sorted by
    ``ts`` here), then fit it on every row."""
    _sklearn()
    from sklearn.metrics import precision_score, recall_score, roc_auc_score
    from sklearn.model_selection import TimeSeriesSplit

    if folds < 2:
        raise UsageError(f"--folds must be at least 2, got {folds}")
    if frame.height < MIN_SIGNALS:
        raise UsageError(
            f"a model needs at least {MIN_SIGNALS} labelled signals to be judged walk-forward"
            f" (this window has {frame.height})"
        )
    frame = frame.sort("ts")
    x = matrix(frame, features)
    y = (frame["label"] == "target").to_numpy()
    returns = frame["return"].to_numpy()
    rows = []
    for number, (train, test) in enumerate(TimeSeriesSplit(n_splits=folds).split(x), 1):
        if len(set(y[train])) < 2:
            continue  # a span with one outcome only teaches nothing
        model = make_estimator(kind).fit(x[train], y[train])
        probability = model.predict_proba(x[test])[:, 1]
        take = probability >= TAKE_AT
        both = len(set(y[test])) == 2
        rows.append(
            {
                "fold": number,
                "train": len(train),
                "test": len(test),
                "from_us": int(frame["ts"][int(test[0])].timestamp() * 1e6),
                "to_us": int(frame["ts"][int(test[-1])].timestamp() * 1e6),
                "hit_rate_pct": float(100 * y[test].mean()),
                "taken": int(take.sum()),
                "precision": float(precision_score(y[test], take, zero_division=0)),
                "recall": float(recall_score(y[test], take, zero_division=0)),
                "auc": float(roc_auc_score(y[test], probability)) if both else None,
                "ev_all_pct": float(returns[test].mean()),
                "ev_taken_pct": float(returns[test][take].mean()) if take.any() else None,
            }
        )
    for row in rows:
        row["ev_lift_pct"] = (
            None if row["ev_taken_pct"] is None else row["ev_taken_pct"] - row["ev_all_pct"]
        )
    if not rows:
        raise UsageError("every fold's training span has one outcome only: nothing to learn")
    aucs = [row["auc"] for row in rows if row["auc"] is not None]
    lifts = [row["ev_lift_pct"] for row in rows if row["ev_lift_pct"] is not None]
    totals = {
        "folds": len(rows),
        "signals": frame.height,
        "auc_mean": float(np.mean(aucs)) if aucs else None,
        "precision_mean": float(np.mean([row["precision"] for row in rows])),
        "recall_mean": float(np.mean([row["recall"] for row in rows])),
        "ev_lift_mean_pct": float(np.mean(lifts)) if lifts else None,
    }
    final = make_estimator(kind).fit(x, y) if len(set(y)) == 2 else None
    if final is None:
        raise UsageError("every labelled signal has the same outcome: nothing to learn")
    return Trained(final, rows, totals)


def model_dir(home: Path, scanner: str) -> Path:
    return home / "models" / scanner


def versions(home: Path, scanner: str) -> list[int]:
    found = []
    for path in model_dir(home, scanner).glob("v*.json"):
        match = re.fullmatch(r"v(\d+)\.json", path.name)
        if match:
            found.append(int(match.group(1)))
    return sorted(found)


def save(home: Path, scanner: str, trained: Trained, meta: dict[str, Any]) -> tuple[int, Path]:
    """The next version of ``scanner``'s model: (its number, its file)."""
    directory = model_dir(home, scanner)
    directory.mkdir(parents=True, exist_ok=True)
    version = (versions(home, scanner) or [0])[-1] + 1
    path = directory / f"v{version}.pkl"
    path.write_bytes(pickle.dumps(trained.estimator))
    record = {
        **meta,
        "version": version,
        "created": format_us(now_us()),
        "folds": trained.folds,
        "totals": trained.totals,
    }
    # The description last: a model file without one is not a version yet.
    (directory / f"v{version}.json").write_text(json.dumps(record, indent=2) + "\n")
    return version, path


def load(home: Path, name: str) -> tuple[Any, dict[str, Any]]:
    """The estimator and description of model ``name`` (``SCANNER`` or ``SCANNER@vN``);
    a missing one is an error naming what exists."""
    scanner, _, wanted = name.partition("@")
    have = versions(home, scanner)
    if not have:
        raise SptraderError(
            f"no model {scanner!r} in {model_dir(home, scanner)} (train one: `sptrader ml train {scanner}`)"
        )
    version = have[-1] if not wanted else int(wanted.removeprefix("v") or 0)
    if version not in have:
        shown = ", ".join(f"v{number}" for number in have)
        raise SptraderError(f"model {scanner!r} has no {wanted} (versions: {shown})")
    directory = model_dir(home, scanner)
    meta = json.loads((directory / f"v{version}.json").read_text())
    _sklearn()
    estimator = pickle.loads((directory / f"v{version}.pkl").read_bytes())
    return estimator, meta
