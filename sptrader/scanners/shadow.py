"""Shadow testing: a live scanner's parameter variations (``[[scanners.shadow]]``)
evaluated on the same bars at each run, their hypothetical signals and outcomes recorded
(table ``shadow_signals``, migration 012), and a report comparing each variation with
the live parameters (variation "live": the scanner's own signals, judged the same way).

A run: the live scan raises and emits its signals first; then (``after_run``, from the
service or a one-shot scan) each variation's strategy gets the run's loaded bars, adds
its own indicators and informative columns and evaluates, stacked or instrument by
instrument as the live strategy would (the Scanner's own steps); only signals on the
newest closed bar are new. Each variation is one "shadow" lineage step of the run (a
variation that raises fails only its step: the live run is written already), and so is
resolving the pending outcomes.

An outcome (``resolve_outcomes``: one vectorised polars pass over the stored 1m bars):
the entry is the open of the first 1m bar after the signal's bar (the next bar's open, as
the backtester fills); the stop and target are the signal's own, else
``shadow_stop_pct`` / ``shadow_target_pct`` from the entry; the first 1m bar whose range
reaches one decides (a bar that opens past a level fills at its open, target first, as
the backtester does; one whose range reaches both is a stop); none within
``shadow_bars`` bars of the scanner's timeframe (the entry bar's first) is a timeout at
the last close inside them. No lookahead: only closed minutes are read, and a timeout
exists only once its horizon has closed and its last minute is stored. A signal raised
again (a later run on the same bar) is recorded once. Each signal is its own trade (a
variation signalling twice holds two).

Blocking (DuckDB, polars): call from a thread.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import msgspec
import polars as pl

from sptrader.clock import now_us
from sptrader.config import ScannerConfig
from sptrader.models import US_PER_DAY, US_PER_MINUTE, timeframe_minutes
from sptrader.scanners import lineage
from sptrader.store import Store, queries
from sptrader.strategies import registry

log = logging.getLogger(__name__)

LIVE = "live"
OUTCOMES = ("target", "stop", "timeout")

# --- the outcome of a signal -------------------------------------------------------------

#: What ``resolve_outcomes`` needs of each pending signal (``key``: the caller's id).
PENDING_SCHEMA: dict[str, Any] = {
    "key": pl.Int64,
    "instrument": pl.String,
    "side": pl.String,  # buy | sell
    "ts": pl.Int64,  # µs: the signal's bar (its open time)
    "width": pl.Int64,  # µs: a bar of the scanner's timeframe
    "horizon_bars": pl.Int64,
    "stop": pl.Float64,  # the signal's own (null: stop_pct from the entry)
    "target": pl.Float64,
    "stop_pct": pl.Float64,
    "target_pct": pl.Float64,
}
RESOLVED_SCHEMA: dict[str, Any] = {
    "key": pl.Int64,
    "entry_ts": pl.Int64,
    "entry_price": pl.Float64,
    "stop": pl.Float64,
    "target": pl.Float64,
    "outcome": pl.String,
    "exit_ts": pl.Int64,
    "exit_price": pl.Float64,
    "bars_held": pl.Int64,
    "return_pct": pl.Float64,
}


def resolve_outcomes(pending: pl.DataFrame, bars: pl.DataFrame, now: int) -> pl.DataFrame:
    """Per pending signal whose entry bar is stored (the others are left out): its entry
    and levels, and its outcome, exit and return (null while still open). ``bars``: 1m
    bars (instrument, ts as µs or datetime, open, high, low, close); ``now`` in µs."""
    pending = pending.select(list(PENDING_SCHEMA)).cast(PENDING_SCHEMA)
    minute = pl.lit(US_PER_MINUTE)
    bars = (
        bars.select(
            "instrument",
            pl.col("ts").cast(pl.Datetime("us")).dt.epoch("us").alias("ts")
            if bars.schema["ts"] != pl.Int64
            else pl.col("ts"),
            "open",
            "high",
            "low",
            "close",
        )
        .filter(pl.col("ts") + minute <= now)  # closed minutes only
        .sort("instrument", "ts")
        .with_row_index("row")
        .with_columns(pl.col("row").cast(pl.Int64))
    )
    if pending.is_empty() or bars.is_empty():
        return pl.DataFrame(schema=RESOLVED_SCHEMA)
    by_ts = bars.select("instrument", "ts", "row", "open").sort("ts")
    newest = bars.group_by("instrument").agg(pl.col("ts").max().alias("newest"))
    # The entry bar: the first stored minute after the signal's bar.
    entered = (
        pending.with_columns((pl.col("ts") + pl.col("width")).alias("after"))
        .sort("after")
        .join_asof(
            by_ts.rename({"ts": "entry_ts", "row": "entry_row", "open": "entry_price"}),
            left_on="after",
            right_on="entry_ts",
            by="instrument",
            strategy="forward",
            check_sortedness=False,  # sorted just above, within each instrument too
        )
        .filter(pl.col("entry_ts").is_not_null())
    )
    if entered.is_empty():
        return pl.DataFrame(schema=RESOLVED_SCHEMA)
    long = pl.col("side") == "buy"
    entry = pl.col("entry_price")
    entered = entered.with_columns(
        # The horizon: shadow_bars bars of the timeframe, the entry's own bar first.
        (_bucket("entry_ts") + pl.col("horizon_bars") * pl.col("width")).alias("horizon_end"),
        pl.coalesce(
            "stop",
            pl.when(long)
            .then(entry * (1 - pl.col("stop_pct") / 100))
            .otherwise(entry * (1 + pl.col("stop_pct") / 100)),
        ).alias("stop"),
        pl.coalesce(
            "target",
            pl.when(long)
            .then(entry * (1 + pl.col("target_pct") / 100))
            .otherwise(entry * (1 - pl.col("target_pct") / 100)),
        ).alias("target"),
    )
    # The last stored minute inside the horizon (the timeout's exit).
    entered = (
        entered.with_columns((pl.col("horizon_end") - 1).alias("horizon_last"))
        .sort("horizon_last")
        .join_asof(
            by_ts.select(
                "instrument", pl.col("ts").alias("last_ts"), pl.col("row").alias("last_row")
            ),
            left_on="horizon_last",
            right_on="last_ts",
            by="instrument",
            strategy="backward",
            check_sortedness=False,  # sorted just above, within each instrument too
        )
        .join(newest, on="instrument", how="left")
    )
    # Every minute of each signal's horizon (stored so far): the first reaching a level.
    path = (
        entered.select(
            "key",
            "side",
            "stop",
            "target",
            pl.int_ranges("entry_row", pl.col("last_row") + 1).alias("row"),
        )
        .explode("row")
        .join(bars.drop("instrument"), on="row")
    )
    o, h, lo = pl.col("open"), pl.col("high"), pl.col("low")
    stop, target = pl.col("stop"), pl.col("target")
    gap_target = pl.when(long).then(o >= target).otherwise(o <= target)
    gap_stop = pl.when(long).then(o <= stop).otherwise(o >= stop)
    reach_stop = pl.when(long).then(lo <= stop).otherwise(h >= stop)
    reach_target = pl.when(long).then(h >= target).otherwise(lo <= target)
    hits = (
        path.with_columns(
            pl.when(gap_target)
            .then(pl.lit("target"))
            .when(gap_stop | reach_stop)
            .then(pl.lit("stop"))
            .when(reach_target)
            .then(pl.lit("target"))
            .alias("hit"),
            pl.when(gap_target | gap_stop)
            .then(o)
            .when(reach_stop)
            .then(stop)
            .otherwise(target)
            .alias("hit_price"),
        )
        .filter(pl.col("hit").is_not_null())
        .sort("row")
        .unique("key", keep="first")
        .select("key", "hit", pl.col("ts").alias("hit_ts"), "hit_price")
    )
    last_close = bars.select(pl.col("row").alias("last_row"), pl.col("close").alias("last_close"))
    closed = (pl.lit(now) >= pl.col("horizon_end")) & (
        pl.col("newest") >= pl.col("horizon_end") - minute
    )
    resolved = (
        entered.join(hits, on="key", how="left")
        .join(last_close, on="last_row", how="left")
        .with_columns(
            pl.coalesce("hit", pl.when(closed).then(pl.lit("timeout"))).alias("outcome"),
        )
        .with_columns(
            pl.when(pl.col("hit").is_not_null())
            .then(pl.col("hit_ts"))
            .when(pl.col("outcome").is_not_null())
            .then(pl.col("last_ts"))
            .alias("exit_ts"),
            pl.when(pl.col("hit").is_not_null())
            .then(pl.col("hit_price"))
            .when(pl.col("outcome").is_not_null())
            .then(pl.col("last_close"))
            .alias("exit_price"),
        )
        .with_columns(
            ((_bucket("exit_ts") - _bucket("entry_ts")) // pl.col("width") + 1).alias("bars_held"),
            pl.when(long)
            .then((pl.col("exit_price") / entry - 1) * 100)
            .otherwise((1 - pl.col("exit_price") / entry) * 100)
            .alias("return_pct"),
        )
    )
    return resolved.select(list(RESOLVED_SCHEMA)).cast(RESOLVED_SCHEMA).sort("key")


def _bucket(column: str) -> pl.Expr:
    """The open time of the timeframe's bar holding ``column`` (epoch-aligned, as the
    store's rollups)."""
    return pl.col(column) - pl.col(column) % pl.col("width")


# --- a run's variations ------------------------------------------------------------------


def variations(config: ScannerConfig) -> list[tuple[str, dict[str, Any]]]:
    """(name, params) of the live parameters ("live") and of each variation (its params
    merged over the scanner's), in the config's order."""
    live = dict(config.params)
    return [(LIVE, live)] + [(shadow.name, {**live, **shadow.params}) for shadow in config.shadow]


def after_run(scanner: Any, result: Any) -> None:
    """The shadow part of a run: ``scanner`` is the run's ``service.Scanner`` and
    ``result`` its ScanResult, written and emitted already (typed loosely: service.py
    imports this module). Records the live signals and each variation's, resolves the
    scanner's pending outcomes and appends those steps to the run's lineage. Never
    raises: whatever fails here is a failed shadow step (and a log line), the live run
    is untouched."""
    config = scanner.config
    if not config.shadow or not result.run_id:
        return
    try:
        store = scanner.deps.store()
        recorder = lineage.RunRecorder(config.name, "shadow", None)
        start, end, bars = scanner.loaded
        if bars is None and result.scanned:  # the run loaded instrument by instrument
            bars = queries.bars_between_many(store, result.scanned, config.timeframe, start, end)
        rows = _rows(config, LIVE, dict(config.params), result.signals, result.run_id)
        for name, params in variations(config)[1:]:
            if bars is not None and not bars.is_empty():
                signals = _variation(scanner, recorder, store, bars, (start, end), name, params)
                rows.extend(_rows(config, name, params, signals, result.run_id))
        with store.transaction() as cursor:
            _insert_signals(cursor, rows)
        try:
            with recorder.step(None, "shadow", "outcomes of the pending shadow signals") as step:
                done, pending = resolve_pending(store, config.name)
                step.output_summary = f"{done} resolved, {pending - done} still open"
        except Exception as error:
            log.warning("%s: resolving shadow outcomes failed: %s", config.name, error)
        with store.transaction() as cursor:
            lineage.append_steps(cursor, result.run_id, recorder.steps)
    except Exception:
        log.exception("%s: shadow testing of run %d failed", config.name, result.run_id)


def _variation(
    scanner: Any,
    recorder: lineage.RunRecorder,
    store: Store,
    bars: pl.DataFrame,
    window: tuple[int, int],
    name: str,
    params: dict[str, Any],
) -> list[dict[str, Any]]:
    """One variation's signals on the newest bar of ``bars`` (a "shadow" step; [] when
    it fails)."""
    config = scanner.config
    try:
        with recorder.step(None, "shadow", f"variation {name}: {params_text(params)}") as step:
            strategy = registry.build(config.strategy, params, scanner.deps.strategy_modules)
            variant = type(scanner)(
                scanner.deps, msgspec.structs.replace(config, params=params), strategy
            )
            signals, failed = _evaluate(variant, store, bars, *window)
            shown = [f"{signal['instrument']} {signal['side']}" for signal in signals[:5]]
            step.output_summary = f"{len(signals)} signal(s) on the newest bar" + (
                f": {', '.join(shown)}" if shown else ""
            )
            if failed:
                step.output_summary += f"; failed on {', '.join(item[0] for item in failed)}"
        if failed:
            recorder.steps[-1].error = "\n".join(f"{where}: {error}" for where, error in failed)
        return signals
    except Exception as error:
        log.warning("%s: shadow variation %s failed: %s", config.name, name, error)
        return []


def _evaluate(
    variant: Any, store: Store, bars: pl.DataFrame, start: int, end: int
) -> tuple[list[dict[str, Any]], list[tuple[str, str]]]:
    """The variation's own indicators and informative columns on the run's bars, then
    its evaluate, stacked or instrument by instrument as the live scan does (the
    Scanner's own steps, recorded in a scratch lineage): its signals on the newest bar,
    and the instruments it failed on."""
    from sptrader.indicators import add_indicators

    scratch = lineage.RunRecorder(variant.config.name, "shadow", None)
    strategy = variant.strategy
    specs = strategy.indicators()
    if specs:
        bars = add_indicators(bars, specs, over="instrument")
    if strategy.informative():
        bars = variant._informative(scratch, None, bars, over="instrument")
    if strategy.stacked:
        instruments = bars["instrument"].unique(maintain_order=True).to_list()
        try:
            return variant._evaluate_stacked(scratch, bars, instruments, end), []
        except Exception as error:  # as live: one instrument at a time
            variant._batch_failed("shadow evaluate", error)
    signals: list[dict[str, Any]] = []
    failed: list[tuple[str, str]] = []
    parts = bars.partition_by("instrument", as_dict=True, maintain_order=True)
    for (instrument, *_), part in parts.items():
        try:
            signals.extend(variant._scan_one(store, scratch, instrument, start, end, part, True))
        except Exception as error:
            failed.append((str(instrument), str(error)))
    return signals, failed


def params_text(params: dict[str, Any]) -> str:
    """``fast=5, slow=30`` ("defaults" for none)."""
    return ", ".join(f"{key}={value}" for key, value in params.items()) or "defaults"


# --- the table ---------------------------------------------------------------------------

_ROW_SCHEMA: dict[str, Any] = {
    "scanner": pl.String,
    "variation": pl.String,
    "params": pl.String,
    "instrument": pl.String,
    "ts": pl.Int64,
    "side": pl.String,
    "timeframe": pl.String,
    "horizon_bars": pl.Int32,
    "target_pct": pl.Float64,
    "stop_pct": pl.Float64,
    "run_id": pl.Int64,
    "created": pl.Int64,
    "stop": pl.Float64,
    "target": pl.Float64,
}
_TIMESTAMPS = {"ts", "created"}


def _rows(
    config: ScannerConfig,
    variation: str,
    params: dict[str, Any],
    signals: list[dict[str, Any]],
    run_id: int,
) -> list[dict[str, Any]]:
    """shadow_signals rows of a run's signals (entries only: an exit opens nothing)."""
    text = json.dumps(params, sort_keys=True, default=str)
    return [
        {
            "scanner": config.name,
            "variation": variation,
            "params": text,
            "instrument": signal["instrument"],
            "ts": signal["ts_us"],
            "side": signal["side"],
            "timeframe": config.timeframe,
            "horizon_bars": config.shadow_bars,
            "target_pct": config.shadow_target_pct,
            "stop_pct": config.shadow_stop_pct,
            "run_id": run_id,
            "created": signal["created_us"],
            "stop": signal["stop"],
            "target": signal["target"],
        }
        for signal in signals
        if signal["side"] in ("buy", "sell")
    ]


def _insert_signals(cursor: Any, rows: list[dict[str, Any]]) -> None:
    """One INSERT of ``rows``; a signal already recorded (same bar, side) stays as it is."""
    if not rows:
        return
    frame = pl.DataFrame(rows, schema=_ROW_SCHEMA)
    columns = ", ".join(frame.columns)
    values = ", ".join(
        f"make_timestamp({column})" if column in _TIMESTAMPS else column for column in frame.columns
    )
    cursor.register("incoming_shadow", frame)
    try:
        cursor.execute(
            f"INSERT OR IGNORE INTO shadow_signals ({columns}) SELECT {values} FROM incoming_shadow"
        )
    finally:
        cursor.unregister("incoming_shadow")


_PENDING_SQL = """
SELECT scanner, variation, instrument, epoch_us(ts) AS ts, side, timeframe, horizon_bars,
       stop, target, stop_pct, target_pct
FROM shadow_signals
WHERE outcome IS NULL AND ($scanner IS NULL OR scanner = $scanner)
"""

_UPDATE_SQL = """
UPDATE shadow_signals AS s SET
    entry_ts = make_timestamp(r.entry_ts), entry_price = r.entry_price,
    stop = r.stop, target = r.target, outcome = r.outcome,
    exit_ts = make_timestamp(r.exit_ts), exit_price = r.exit_price,
    bars_held = r.bars_held, return_pct = r.return_pct
FROM resolved_shadow AS r
WHERE s.scanner = r.scanner AND s.variation = r.variation AND s.instrument = r.instrument
  AND s.ts = make_timestamp(r.ts) AND s.side = r.side
"""


def resolve_pending(
    store: Store, scanner: str | None = None, now: int | None = None
) -> tuple[int, int]:
    """Resolve the pending signals (of ``scanner``) from the stored 1m bars up to
    ``now``: (how many got their outcome, how many were pending)."""
    now = now_us() if now is None else now
    pending = store.cursor().sql(_PENDING_SQL, params={"scanner": scanner}).pl()
    if pending.is_empty():
        return 0, 0
    widths = {
        timeframe: timeframe_minutes(timeframe) * US_PER_MINUTE
        for timeframe in pending["timeframe"].unique()
    }
    pending = pending.with_row_index("key").with_columns(
        pl.col("key").cast(pl.Int64),
        pl.col("timeframe").replace_strict(widths, return_dtype=pl.Int64).alias("width"),
    )
    start = int((pending["ts"] + pending["width"]).min())  # type: ignore[arg-type]
    instruments = pending["instrument"].unique().sort().to_list()
    bars = queries.bars_between_many(store, instruments, "1m", start, now - now % US_PER_MINUTE)
    resolved = resolve_outcomes(pending, bars, now)
    if resolved.is_empty():
        return 0, pending.height
    keys = pending.select("key", "scanner", "variation", "instrument", "ts", "side")
    update = keys.join(resolved, on="key")
    with store.transaction() as cursor:
        cursor.register("resolved_shadow", update)
        try:
            cursor.execute(_UPDATE_SQL)
        finally:
            cursor.unregister("resolved_shadow")
    return int(resolved["outcome"].is_not_null().sum()), pending.height


# --- the report --------------------------------------------------------------------------

_REPORT_SQL = """
SELECT scanner, variation, arg_max(params, created) AS params, count(*) AS signals,
       count(outcome) AS resolved,
       count(*) FILTER (WHERE outcome = 'target') AS wins,
       count(*) FILTER (WHERE outcome = 'stop') AS losses,
       count(*) FILTER (WHERE outcome = 'timeout') AS timeouts,
       avg(return_pct) AS avg_return_pct,
       sum(return_pct) AS total_return_pct
FROM shadow_signals
WHERE ts >= make_timestamp($since) AND scanner IN (SELECT unnest($scanners))
GROUP BY scanner, variation
"""


def report(
    store: Store,
    configs: list[ScannerConfig],
    scanner: str | None,
    days: int,
    now: int | None = None,
) -> list[dict[str, Any]]:
    """Per scanner with variations (or just ``scanner``) and variation ("live" first,
    then the config's, then any no longer configured), over the signals of the last
    ``days`` days (pending outcomes resolved first): params, signals, resolved, pending,
    wins (target), losses (stop), timeouts, hit_rate_pct (wins of resolved), average
    and total return % of the resolved, and each figure's difference from live's."""
    now = now_us() if now is None else now
    chosen = [c for c in configs if c.shadow and scanner in (None, c.name)]
    if not chosen:
        return []
    try:
        resolve_pending(store, scanner, now)
    except Exception as error:  # what is stored is still worth showing
        log.warning("resolving shadow outcomes failed: %s", error)
    params = {"since": now - days * US_PER_DAY, "scanners": [c.name for c in chosen]}
    stored = store.cursor().sql(_REPORT_SQL, params=params).pl()
    found = {(row["scanner"], row["variation"]): row for row in stored.to_dicts()}
    rows = []
    for config in chosen:
        named = dict(variations(config))
        extra = sorted(v for s, v in found if s == config.name and v not in named)
        live: dict[str, Any] | None = None
        for variation in [*named, *extra]:
            row = _report_row(config.name, variation, named, found)
            if variation == LIVE:
                live = row
            _compare(row, live)
            rows.append(row)
    return rows


def _report_row(
    scanner: str,
    variation: str,
    named: dict[str, dict[str, Any]],
    found: dict[tuple[str, str], dict[str, Any]],
) -> dict[str, Any]:
    stored = found.get((scanner, variation), {})
    configured = variation in named  # if not: what it ran with
    params = named[variation] if configured else json.loads(stored.get("params") or "{}")
    resolved = int(stored.get("resolved") or 0)
    wins = int(stored.get("wins") or 0)
    return {
        "scanner": scanner,
        "variation": variation,
        "configured": configured,
        "params": params,
        "changed": {key: value for key, value in params.items() if named[LIVE].get(key) != value},
        "signals": int(stored.get("signals") or 0),
        "resolved": resolved,
        "pending": int(stored.get("signals") or 0) - resolved,
        "wins": wins,
        "losses": int(stored.get("losses") or 0),
        "timeouts": int(stored.get("timeouts") or 0),
        "hit_rate_pct": wins / resolved * 100 if resolved else None,
        "avg_return_pct": stored.get("avg_return_pct"),
        "total_return_pct": stored.get("total_return_pct") if resolved else None,
    }


_COMPARED = ("hit_rate_pct", "avg_return_pct", "total_return_pct")


def _compare(row: dict[str, Any], live: dict[str, Any] | None) -> None:
    """``vs_live_*``: the row's figure minus live's (None for live, or when either lacks
    it)."""
    for figure in _COMPARED:
        mine = row[figure]
        theirs = None if live is None or live is row else live[figure]
        row[f"vs_live_{figure}"] = None if mine is None or theirs is None else mine - theirs
