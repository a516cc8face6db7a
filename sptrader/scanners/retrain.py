"""Scheduled retraining (``[[ml.retrain]]``): on its cron schedule, a scanner's model is
trained again on the labelled signals of the last ``days`` days and kept only if it
beats the current one out of sample; recorded either way.

The judge: the newest ``holdout_pct`` % of the signals, which the candidate never saw
(it is trained, walk-forward, on the older ones). The current model is scored on the
same signals; the candidate is kept when its AUC there is higher (or when there is no
current model, or the current one was trained on other features). A kept candidate is
then fitted on every signal of the window and saved as the scanner's next version.
Every attempt is a line of ``HOME/models/SCANNER/retrains.jsonl`` and a log line.
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

import polars as pl

from sptrader.clock import format_us, now_us
from sptrader.config import RetrainConfig, ScannerConfig
from sptrader.errors import SptraderError
from sptrader.models import US_PER_DAY
from sptrader.scanners import labels, models
from sptrader.scanners.features import bars_windows, describe, training_set
from sptrader.schedule import MAX_SLEEP_S, Clock, CronSchedule, SystemClock
from sptrader.store import Store, queries
from sptrader.strategies import registry
from sptrader.supervisor import Service, ServiceContext
from sptrader.threads import run_in_thread

log = logging.getLogger(__name__)

SERVICE_NAME = "ml-retrain"


def stored_training_set(
    store: Store, config: ScannerConfig, modules: list[str], start: int, end: int
) -> tuple[pl.DataFrame, list[str]]:
    """The labelled signals of ``config`` in [start, end), with their features, from the
    store (labelling first what became known)."""
    strategy = registry.build(config.strategy, dict(config.params), modules)
    labels.label_pending(store, [config])
    rows = labels.labels(store, [config.name], start, end)
    if not rows:
        return pl.DataFrame(), []
    bars = pl.concat(
        queries.bars_between(store, instrument, config.timeframe, first, last).with_columns(
            pl.lit(instrument).alias("instrument")
        )
        for instrument, (first, last) in sorted(bars_windows(rows, config, strategy).items())
    )
    return training_set(rows, bars, strategy.indicators())


def _auc(estimator: Any, frame: pl.DataFrame, features: list[str]) -> float | None:
    from sklearn.metrics import roc_auc_score

    wins = (frame["label"] == "target").to_numpy()
    if len(set(wins)) < 2:
        return None
    probability = estimator.predict_proba(models.matrix(frame, features))[:, 1]
    return float(roc_auc_score(wins, probability))


def retrain(
    store: Store,
    home: Path,
    config: ScannerConfig,
    entry: RetrainConfig,
    modules: list[str],
    now: int | None = None,
) -> dict[str, Any]:
    """One attempt; its record (also appended to the scanner's retrains.jsonl)."""
    now = now_us() if now is None else now
    record: dict[str, Any] = {"scanner": config.name, "at": format_us(now), "kind": entry.model}
    try:
        frame, features = stored_training_set(
            store, config, modules, now - entry.days * US_PER_DAY, now
        )
        frame = frame.sort("ts") if frame.height else frame
        cut = int(frame.height * (1 - entry.holdout_pct / 100))
        older, newer = frame.head(cut), frame.tail(frame.height - cut)
        record.update(signals=frame.height, holdout=newer.height)
        candidate = models.walk_forward(older, features, entry.model, entry.folds)
        record["candidate_auc"] = _auc(candidate.estimator, newer, features)
        record["current"], record["current_auc"] = None, None
        try:
            current, meta = models.load(home, config.name)
        except SptraderError:
            current = meta = None
        if current is not None and meta is not None:
            record["current"] = f"{config.name}@v{meta['version']}"
            if list(meta.get("features", [])) == features:
                record["current_auc"] = _auc(current, newer, features)
        beats = record["current_auc"] is None or (
            record["candidate_auc"] is not None and record["candidate_auc"] > record["current_auc"]
        )
        record["kept"] = bool(beats and (record["candidate_auc"] is not None or current is None))
        if record["kept"]:
            final = models.walk_forward(frame, features, entry.model, entry.folds)
            meta_out = {
                "kind": entry.model,
                **describe(config, frame, features, None, None),
                "retrained": record.copy(),
            }
            version, _ = models.save(home, config.name, final, meta_out)
            record["version"] = f"{config.name}@v{version}"
    except Exception as error:  # too few signals, one outcome only, a store error
        record.update(kept=False, error=str(error).splitlines()[0])
    _record(home, config.name, record)
    return record


def _record(home: Path, scanner: str, record: dict[str, Any]) -> None:
    directory = models.model_dir(home, scanner)
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / "retrains.jsonl").open("a", encoding="utf-8") as out:
        out.write(json.dumps(record) + "\n")
    if record.get("error"):
        log.warning("retraining %s failed: %s", scanner, record["error"])
    elif record["kept"]:
        log.info(
            "retrained %s: kept %s (holdout AUC %s against %s's %s)",
            scanner,
            record["version"],
            _shown(record["candidate_auc"]),
            record["current"] or "no model",
            _shown(record["current_auc"]),
        )
    else:
        log.info(
            "retrained %s: kept %s (its holdout AUC %s; the new one's %s)",
            scanner,
            record["current"],
            _shown(record["current_auc"]),
            _shown(record["candidate_auc"]),
        )


def _shown(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


class RetrainScheduler(Service):
    """Service "ml-retrain": each enabled ``[[ml.retrain]]`` entry at its cron times
    (UTC), one at a time, in a thread (training is blocking)."""

    kind = "ml"

    def __init__(
        self,
        entries: list[RetrainConfig],
        scanners: dict[str, ScannerConfig],
        store: Any,
        home: Path,
        modules: list[str],
        clock: Clock | None = None,
    ) -> None:
        super().__init__(SERVICE_NAME)
        self.entries = [entry for entry in entries if entry.enabled]
        self.scanners = scanners
        self.store = store
        self.home = home
        self.modules = modules
        self.clock: Clock = clock or SystemClock()
        self.schedules = [CronSchedule(entry.schedule) for entry in self.entries]

    async def run(self, context: ServiceContext) -> None:
        context.mark_running()
        now = self.clock.now()
        due = {
            index: when
            for index, schedule in enumerate(self.schedules)
            if (when := schedule.next_after(now)) is not None
        }
        while due:
            index = min(due, key=lambda key: due[key])
            wait = (due[index] - self.clock.now()).total_seconds()
            if wait > 0:
                await asyncio.sleep(min(wait, MAX_SLEEP_S))
                continue
            record = await self.run_entry(self.entries[index])
            context.events += 1
            context.count("kept" if record.get("kept") else "not_kept")
            following = self.schedules[index].next_after(max(due[index], self.clock.now()))
            if following is None:
                del due[index]
            else:
                due[index] = following

    async def run_entry(self, entry: RetrainConfig) -> dict[str, Any]:
        return await run_in_thread(
            retrain,
            self.store(),
            self.home,
            self.scanners[entry.scanner],
            entry,
            self.modules,
        )
