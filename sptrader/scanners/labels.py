"""Outcome labels: for every signal a scanner emitted (table ``signals``), once known,
whether it reached its target, its stop or timed out, stored in ``signal_labels``
(migration 014) for training and for `sptrader ml labels`; its shadow variations'
signals (``shadow_signals``) the same way, with the same settings, in ``shadow_labels``
(migration 017). A backtest's signals (the strategy replayed on the stored bars) are
labelled when asked for (``replayed_labels``): they are a function of the bars alone.

A label is judged as a shadow outcome is (``shadow.resolve_outcomes``, one vectorised
polars pass over the stored 1m bars): entered at the open of the first 1m bar after the
signal's bar; the signal's own stop and target, else ``label_stop_pct`` /
``label_target_pct`` from the entry; the first 1m bar reaching one decides (both in one
bar: the stop); neither within ``label_bars`` bars of the scanner's timeframe is a
timeout at the last close inside them. To that it adds the excursions while held: the
most the trade was in profit (MFE) and in loss (MAE), in % of the entry, from the
highs and lows of the minutes held whole and the entry and exit prices (a target's or
stop's minute beyond the level was never held; a timeout holds its last minute whole). No lookahead: a label exists only
once its horizon has closed (or a level was reached) in stored, closed minutes.

Only buy and sell signals are labelled (an exit signal opens nothing). A signal whose
scanner is no longer configured is left unlabelled (its timeframe is unknown).

Blocking (DuckDB, polars): call from a thread.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import polars as pl

from sptrader.clock import now_us
from sptrader.config import ScannerConfig
from sptrader.models import US_PER_MINUTE, timeframe_minutes
from sptrader.scanners.shadow import PENDING_SCHEMA, resolve_outcomes
from sptrader.store import Store, queries

log = logging.getLogger(__name__)

LABELS = ("target", "stop", "timeout")

#: What ``label_outcomes`` gives per labelled signal.
LABEL_SCHEMA: dict[str, Any] = {
    "key": pl.Int64,
    "label": pl.String,
    "bars": pl.Int64,
    "mfe_pct": pl.Float64,
    "mae_pct": pl.Float64,
    "return_pct": pl.Float64,
    "entry_ts": pl.Int64,
    "entry_price": pl.Float64,
    "stop": pl.Float64,
    "target": pl.Float64,
    "exit_ts": pl.Int64,
    "exit_price": pl.Float64,
}


def label_outcomes(pending: pl.DataFrame, bars: pl.DataFrame, now: int) -> pl.DataFrame:
    """The label of each of ``pending`` (``shadow.PENDING_SCHEMA``) whose outcome is
    known by ``now`` (the others are left out), with its excursions. ``bars``: 1m bars
    (instrument, ts as µs or datetime, open, high, low, close)."""
    resolved = resolve_outcomes(pending, bars, now).filter(pl.col("outcome").is_not_null())
    if resolved.is_empty():
        return pl.DataFrame(schema=LABEL_SCHEMA)
    held = resolved.join(pending.select("key", "instrument", "side"), on="key")
    minutes = (
        bars.select(
            "instrument",
            (
                pl.col("ts").cast(pl.Datetime("us")).dt.epoch("us")
                if bars.schema["ts"] != pl.Int64
                else pl.col("ts")
            ),
            "high",
            "low",
        )
        .sort("instrument", "ts")
        .with_row_index("row")
        .with_columns(pl.col("row").cast(pl.Int64))
    )
    rows = minutes.select("instrument", "ts", "row")
    # The minutes held whole: a timeout's every minute (out at the last one's close); a
    # target's or stop's, those before the minute that reached it. As row ranges of the
    # sorted bars (a range join would pair every signal with every bar first).
    spans = (
        held.select("key", "instrument", "outcome", "entry_ts", "exit_ts")
        .join(rows.rename({"ts": "entry_ts", "row": "first"}), on=["instrument", "entry_ts"])
        .join(rows.rename({"ts": "exit_ts", "row": "exit_row"}), on=["instrument", "exit_ts"])
        .with_columns(
            pl.when(pl.col("outcome") == "timeout")
            .then(pl.col("exit_row") + 1)
            .otherwise(pl.col("exit_row"))
            .alias("stop_row")
        )
    )
    ranges = (
        spans.select("key", pl.int_ranges("first", "stop_row").alias("row"))
        .explode("row")
        .drop_nulls("row")
        .join(minutes.select("row", "high", "low"), on="row")
        .group_by("key")
        .agg(pl.col("high").max().alias("held_high"), pl.col("low").min().alias("held_low"))
    )
    entry, exit_ = pl.col("entry_price"), pl.col("exit_price")
    high = pl.max_horizontal("held_high", entry, exit_)
    low = pl.min_horizontal("held_low", entry, exit_)
    long = pl.col("side") == "buy"
    labelled = held.join(ranges, on="key", how="left").with_columns(
        pl.col("outcome").alias("label"),
        pl.col("bars_held").alias("bars"),
        pl.when(long)
        .then((high / entry - 1) * 100)
        .otherwise((1 - low / entry) * 100)
        .alias("mfe_pct"),
        pl.when(long)
        .then((1 - low / entry) * 100)
        .otherwise((high / entry - 1) * 100)
        .alias("mae_pct"),
    )
    return labelled.select(list(LABEL_SCHEMA)).cast(LABEL_SCHEMA).sort("key")


_UNLABELLED_SQL = """
SELECT s.scanner, s.instrument, epoch_us(s.ts) AS ts, s.side, min(s.run_id) AS run_id,
       any_value(s.stop) AS stop, any_value(s.target) AS target
FROM signals AS s
ANTI JOIN signal_labels AS l
    ON l.scanner = s.scanner AND l.instrument = s.instrument AND l.ts = s.ts
   AND l.side = s.side
WHERE s.side IN ('buy', 'sell') AND list_contains($scanners, s.scanner)
GROUP BY s.scanner, s.instrument, s.ts, s.side
"""

_INSERT_SQL = """
INSERT OR IGNORE INTO signal_labels
SELECT scanner, instrument, make_timestamp(ts), side, run_id, label, bars, mfe_pct,
       mae_pct, return_pct, make_timestamp(entry_ts), entry_price, stop, target,
       make_timestamp(exit_ts), exit_price, make_timestamp($now)
FROM new_labels
"""


_SHADOW_UNLABELLED_SQL = """
SELECT s.scanner, s.variation, s.instrument, epoch_us(s.ts) AS ts, s.side, s.run_id,
       s.stop, s.target
FROM shadow_signals AS s
ANTI JOIN shadow_labels AS l
    ON l.scanner = s.scanner AND l.variation = s.variation AND l.instrument = s.instrument
   AND l.ts = s.ts AND l.side = s.side
WHERE s.variation <> 'live' AND s.side IN ('buy', 'sell') AND list_contains($scanners, s.scanner)
"""

_SHADOW_INSERT_SQL = """
INSERT OR IGNORE INTO shadow_labels
SELECT scanner, variation, instrument, make_timestamp(ts), side, run_id, label, bars,
       mfe_pct, mae_pct, return_pct, make_timestamp(entry_ts), entry_price, stop, target,
       make_timestamp(exit_ts), exit_price, make_timestamp($now)
FROM new_labels
"""


def _pending(signals: pl.DataFrame, settings: dict[str, ScannerConfig]) -> pl.DataFrame:
    """``signals`` (scanner, instrument, ts µs, side, stop, target, and whatever else)
    keyed by row, with their scanner's label settings: what ``label_outcomes`` takes."""

    def setting(kind: Any, pick: Any) -> pl.Expr:
        values = {name: pick(config) for name, config in settings.items()}
        return pl.col("scanner").replace_strict(values, return_dtype=kind)

    return signals.with_row_index("key").with_columns(
        pl.col("key").cast(pl.Int64),
        pl.col("ts").cast(pl.Int64),
        pl.col("stop").cast(pl.Float64),
        pl.col("target").cast(pl.Float64),
        setting(pl.Int64, lambda config: timeframe_minutes(config.timeframe) * US_PER_MINUTE).alias(
            "width"
        ),
        setting(pl.Int64, lambda config: config.label_bars).alias("horizon_bars"),
        setting(pl.Float64, lambda config: config.label_stop_pct).alias("stop_pct"),
        setting(pl.Float64, lambda config: config.label_target_pct).alias("target_pct"),
    )


def _judged(store: Store, pending: pl.DataFrame, now: int) -> pl.DataFrame:
    """``label_outcomes`` of ``pending`` over the closed 1m bars it needs, read at once."""
    start = int((pending["ts"] + pending["width"]).min())  # type: ignore[arg-type]
    instruments = pending["instrument"].unique().sort().to_list()
    bars = queries.bars_between_many(store, instruments, "1m", start, now - now % US_PER_MINUTE)
    return label_outcomes(pending.select(list(PENDING_SCHEMA)), bars, now)


def label_pending(
    store: Store, configs: Iterable[ScannerConfig], now: int | None = None
) -> tuple[int, int]:
    """Label the signals of ``configs``' scanners whose outcome is known by ``now``:
    (how many were labelled, how many were waiting)."""
    return _label_waiting(store, configs, _UNLABELLED_SQL, _INSERT_SQL, [], now)


def label_pending_shadow(
    store: Store, configs: Iterable[ScannerConfig], now: int | None = None
) -> tuple[int, int]:
    """``label_pending`` for the scanners' shadow variations' signals (with the
    scanners' label settings and the levels shadow testing recorded for them: their
    own, else the shadow percentages once it resolved them)."""
    return _label_waiting(
        store, configs, _SHADOW_UNLABELLED_SQL, _SHADOW_INSERT_SQL, ["variation"], now
    )


def _label_waiting(
    store: Store,
    configs: Iterable[ScannerConfig],
    waiting_sql: str,
    insert_sql: str,
    keys: list[str],
    now: int | None,
) -> tuple[int, int]:
    """Label the rows ``waiting_sql`` finds (scanner, *keys, instrument, ts µs, side,
    run_id, stop, target) whose outcome is known by ``now`` and store them with
    ``insert_sql`` (from ``new_labels``)."""
    now = now_us() if now is None else now
    settings = {config.name: config for config in configs}
    if not settings:
        return 0, 0
    waiting = store.cursor().sql(waiting_sql, params={"scanners": list(settings)}).pl()
    if waiting.is_empty():
        return 0, 0
    pending = _pending(waiting, settings)
    labelled = _judged(store, pending, now)
    if labelled.is_empty():
        return 0, pending.height
    new_labels = pending.select("key", "scanner", *keys, "instrument", "ts", "side", "run_id").join(
        labelled, on="key"
    )
    with store.transaction() as cursor:
        cursor.register("new_labels", new_labels)
        try:
            cursor.execute(insert_sql, {"now": now})
        finally:
            cursor.unregister("new_labels")
    return new_labels.height, pending.height


_LABELS_SQL = """
SELECT scanner, {source} AS source, instrument, epoch_us(ts) AS ts_us, side, label, bars,
       mfe_pct AS mfe,
       mae_pct AS mae, return_pct AS "return", run_id, epoch_us(entry_ts) AS entry_ts_us,
       entry_price, stop, target, epoch_us(exit_ts) AS exit_ts_us, exit_price
FROM {table}
WHERE list_contains($scanners, scanner)
  AND ts >= make_timestamp($start) AND ts < make_timestamp($end)
ORDER BY ts, source, scanner, instrument, side
"""
#: Where each stored source's labels are, and what it calls their source.
_STORED = {
    "live": ("signal_labels", "'live'"),
    "shadow": ("shadow_labels", "'shadow:' || variation"),
}


def labels(
    store: Store, scanners: list[str], start_us: int, end_us: int, source: str = "live"
) -> list[dict[str, Any]]:
    """One row per labelled signal of ``scanners`` whose bar is in [start, end) (of
    ``source``: live, or shadow, whose rows say which variation), times as ``*_us``
    (JSON-able, as every client method's rows)."""
    table, named = _STORED[source]
    rows = store.cursor().sql(
        _LABELS_SQL.format(table=table, source=named),
        params={"scanners": scanners, "start": start_us, "end": end_us},
    )
    return rows.pl().to_dicts()


def summary(rows: list[dict[str, Any]], strategies: dict[str, str]) -> list[dict[str, Any]]:
    """Per strategy (``strategies``: scanner -> its strategy): label counts, the hit rate
    (targets of target + stop; timeouts count in neither) and the mean return."""
    by: dict[str, dict[str, Any]] = {}
    for row in rows:
        name = strategies.get(row["scanner"], row["scanner"])
        entry = by.setdefault(
            name, {"strategy": name, "signals": 0, "returns": 0.0, **dict.fromkeys(LABELS, 0)}
        )
        entry["signals"] += 1
        entry[row["label"]] += 1
        entry["returns"] += row["return"]
    result = []
    for entry in by.values():
        decided = entry["target"] + entry["stop"]
        result.append(
            {
                "strategy": entry["strategy"],
                "signals": entry["signals"],
                "target": entry["target"],
                "stop": entry["stop"],
                "timeout": entry["timeout"],
                "hit_rate_pct": 100 * entry["target"] / decided if decided else None,
                "avg_return_pct": entry["returns"] / entry["signals"],
            }
        )
    return sorted(result, key=lambda entry: entry["strategy"])


def after_run(scanner: Any, result: Any) -> None:
    """After a run (its signals out, its shadow step done): label this scanner's signals
    whose outcome is now known, as a "label" step of the run's lineage (a failure is
    that step's error, never the run's). ``scanner`` is the run's ``service.Scanner``,
    ``result`` its ScanResult (typed loosely: service.py imports this module)."""
    from sptrader.scanners import lineage

    config = scanner.config
    if not result.run_id:
        return

    def label() -> str:
        store = scanner.deps.store()
        done, waiting = label_pending(store, [config])
        said = f"{done} labelled, {waiting - done} still open"
        if config.shadow:
            done, waiting = label_pending_shadow(store, [config])
            said += f"; shadow: {done} labelled, {waiting - done} still open"
        return said

    try:
        lineage.append_step(
            scanner.deps.store(),
            result.run_id,
            config.name,
            "label",
            "outcome labels of the waiting signals",
            label,
        )
    except Exception:
        log.exception("%s: labelling after run %d failed", config.name, result.run_id)


# --- labels of a backtest's signals (the strategy replayed; never stored) ------------

SOURCES = ("live", "shadow", "backtest")


def _rows_of(
    store: Store, config: ScannerConfig, signals: pl.DataFrame, source: str, now: int
) -> list[dict[str, Any]]:
    """Label ``signals`` now, as rows like ``labels()``'s (no run: ``run_id`` None)."""
    signals = signals.filter(pl.col("side").is_in(["buy", "sell"]))
    if signals.is_empty():
        return []
    scanned = signals.with_columns(pl.lit(config.name).alias("scanner"))
    pending = _pending(scanned, {config.name: config})
    labelled = _judged(store, pending, now)
    joined = pending.select("key", "instrument", "ts", "side").join(labelled, on="key")
    return [
        {
            "scanner": config.name,
            "source": source,
            "instrument": row["instrument"],
            "ts_us": row["ts"],
            "side": row["side"],
            "label": row["label"],
            "bars": row["bars"],
            "mfe": row["mfe_pct"],
            "mae": row["mae_pct"],
            "return": row["return_pct"],
            "run_id": None,
            "entry_ts_us": row["entry_ts"],
            "entry_price": row["entry_price"],
            "stop": row["stop"],
            "target": row["target"],
            "exit_ts_us": row["exit_ts"],
            "exit_price": row["exit_price"],
        }
        for row in joined.sort("ts", "instrument").iter_rows(named=True)
    ]


def replayed_labels(
    store: Store,
    config: ScannerConfig,
    modules: list[str],
    start_us: int,
    end_us: int,
    now: int | None = None,
) -> list[dict[str, Any]]:
    """The labels of the signals the scanner's strategy gives on the stored bars of
    [start, end) (as a backtest evaluates it, instrument by instrument, with its warm-up
    before ``start``): far more training rows than the live signals so far."""
    from sptrader.backtest.sweep import warmup_of
    from sptrader.indicators import add_indicators
    from sptrader.strategies import registry
    from sptrader.strategies.informative import with_informative

    now = now_us() if now is None else now
    strategy = registry.build(config.strategy, dict(config.params), modules)
    width = timeframe_minutes(config.timeframe) * US_PER_MINUTE
    specs = list(dict.fromkeys(strategy.indicators()))
    found = []
    for instrument in dict.fromkeys(config.instruments):
        bars = queries.bars_between(
            store, instrument, config.timeframe, start_us - warmup_of(strategy) * width, end_us
        )
        if bars.is_empty():
            continue
        bars = bars.with_columns(pl.lit(instrument).alias("instrument"))
        framed = add_indicators(bars, specs) if specs else bars
        signals = strategy.evaluate(with_informative(strategy, framed, config.timeframe))
        stamps = pl.col("ts").cast(pl.Datetime("us")).dt.epoch("us")
        found.append(
            signals.select("instrument", stamps.alias("ts"), "side", "stop", "target").filter(
                pl.col("ts").is_between(start_us, end_us, closed="left")
            )
        )
    if not found:
        return []
    return _rows_of(store, config, pl.concat(found), "backtest", now)
