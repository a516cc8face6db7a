"""A model in front of the orders: a scanner with ``model = "NAME"`` scores each of its
signals with that model (``sptrader.scanners.models``) on the same features its
training set had (``sptrader.scanners.features``, at the signal's bar), stores the
probability with the signal, and only those at ``min_probability`` or more go on to
the broker and the alerts.

A missing model stops the scanner's service with a clear error (it never runs without
its filter). A model whose features this scanner does not make, or a signal that cannot
be scored, fails the run's "model" step: then no signal of that run goes on (never a
silent pass-through), and each is still stored (and labelled) with no probability.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from sptrader.config import ScannerConfig
from sptrader.errors import SptraderError
from sptrader.scanners import models
from sptrader.scanners.features import feature_frame


@dataclass
class ModelFilter:
    name: str
    estimator: Any
    meta: dict[str, Any]
    min_probability: float

    @classmethod
    def load(cls, home: Path | None, config: ScannerConfig) -> ModelFilter | None:
        """The scanner's filter, or None when it has no ``model`` (blocking)."""
        if not config.model:
            return None
        if home is None:
            raise SptraderError(f"scanner {config.name}: model {config.model!r} needs a home")
        estimator, meta = models.load(home, config.model)
        return cls(f"{config.model} (v{meta['version']})", estimator, meta, config.min_probability)

    def score(self, bars: pl.DataFrame, specs: list[str], signals: list[dict[str, Any]]) -> str:
        """Set each signal's ``probability`` and ``taken``; the step's summary. ``bars``:
        the run's bars of the scanner's timeframe (instrument, ts, OHLCV), up to the
        signals' bar. Exit signals open nothing: they are not scored, and go on."""
        for signal in signals:
            if signal["side"] == "exit":
                signal["taken"] = True
        signals = [signal for signal in signals if signal["side"] != "exit"]
        if not signals:
            return "no entry signal to score"
        for signal in signals:
            signal["probability"], signal["taken"] = None, False
        framed, names = feature_frame(bars, specs)
        wanted = list(self.meta["features"])
        missing = [name for name in wanted if name != "side_sign" and name not in names]
        if missing:
            raise SptraderError(
                f"model {self.name} is incompatible: it was trained on {', '.join(missing)},"
                " which this scanner does not make (retrain it with `sptrader ml train`)"
            )
        keys = pl.DataFrame(
            {
                "instrument": [signal["instrument"] for signal in signals],
                "ts": pl.Series([signal["ts_us"] for signal in signals]).cast(pl.Datetime("us")),
                "side_sign": [1 if signal["side"] == "buy" else -1 for signal in signals],
            }
        )
        at = framed.select("instrument", pl.col("ts").cast(pl.Datetime("us")), *names)
        rows = keys.join(at, on=["instrument", "ts"], how="left", maintain_order="left")
        probability = self.estimator.predict_proba(models.matrix(rows, wanted))[:, 1]
        taken = []
        for signal, value in zip(signals, probability, strict=True):
            signal["probability"] = float(value)
            signal["taken"] = bool(value >= self.min_probability)
            if signal["taken"]:
                taken.append(f"{signal['instrument']} {signal['side']} {value:.2f}")
        return f"{len(taken)} of {len(signals)} at p >= {self.min_probability:g}" + (
            f": {', '.join(taken[:5])}" if taken else ""
        )
