"""``sptrader ml labels [SCANNER] [--from --to] [--format table|csv|json]``: one row per
labelled signal (``EngineClient.signal_labels``: the daemon's engine while one runs,
else this process's store; what became known is labelled first) and, in the table,
label counts and hit rates per strategy.

``sptrader ml features SCANNER [--from --to] --out DIR``: the labelled signals' training
set (``sptrader.scanners.features``), its bars read through the same client, written
as ``DIR/SCANNER.parquet`` with ``DIR/SCANNER.json`` (the feature names, the window,
the label counts).

``sptrader ml train SCANNER [--model gbm|logistic] [--from --to] [--folds N]``: a model
of that training set (``sptrader.scanners.models``), judged walk-forward, saved as the
scanner's next version in the home."""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path
from typing import Any

import polars as pl

from sptrader.client.connect import connect
from sptrader.clock import datetime_to_us, format_us, parse_time
from sptrader.commands.trading import iso_fields, print_table, write_csv, write_json
from sptrader.config import ScannerConfig, Settings
from sptrader.errors import SptraderError, UsageError
from sptrader.scanners.features import describe
from sptrader.scanners.labels import summary
from sptrader.scanners.service import unknown_scanner

COLUMNS = (
    "scanner",
    "source",
    "instrument",
    "ts",
    "side",
    "label",
    "bars",
    "mfe",
    "mae",
    "return",
)
HEADERS = (
    "SCANNER",
    "SOURCE",
    "INSTRUMENT",
    "BAR",
    "SIDE",
    "LABEL",
    "BARS",
    "MFE %",
    "MAE %",
    "RETURN %",
)


def run_ml(settings: Settings, args: argparse.Namespace) -> int:
    if args.ml_command == "features":
        return run_features(settings, args)
    if args.ml_command == "train":
        return run_train(settings, args)
    return run_labels(settings, args)


def _window(args: argparse.Namespace) -> tuple[int | None, int | None]:
    start = datetime_to_us(parse_time(args.start, what="--from time")) if args.start else None
    end = datetime_to_us(parse_time(args.end, what="--to time")) if args.end else None
    if start is not None and end is not None and end <= start:
        raise UsageError("--to must be after --from")
    return start, end


def _scanner(settings: Settings, name: str) -> ScannerConfig:
    configs = {config.name: config for config in settings.config.scanners}
    if name not in configs:
        raise unknown_scanner(name, list(configs))
    return configs[name]


def _training_set(
    settings: Settings,
    config: ScannerConfig,
    start: int | None,
    end: int | None,
    source: str = "live",
) -> tuple[pl.DataFrame, list[str]]:
    """The labelled signals of ``config`` in the window, with their features (bars read
    through the client: the daemon's while one runs)."""
    from sptrader.scanners.features import bars_windows, training_set
    from sptrader.strategies import registry

    strategy = registry.build(
        config.strategy, dict(config.params), settings.config.strategies.modules
    )

    async def read() -> tuple[list[dict[str, Any]], pl.DataFrame]:
        async with connect(settings) as client:
            rows = await client.signal_labels(config.name, start, end, source)
            frames = [
                (
                    await client.candles(instrument, config.timeframe, start_us=first, end_us=last)
                ).with_columns(pl.lit(instrument).alias("instrument"))
                for instrument, (first, last) in sorted(
                    bars_windows(rows, config, strategy).items()
                )
            ]
            return rows, pl.concat(frames, how="diagonal_relaxed") if frames else pl.DataFrame()

    rows, bars = asyncio.run(read())
    if not rows:
        raise SptraderError(
            f"scanner {config.name!r} has no labelled signal in that window (see `sptrader ml labels`)"
        )
    return training_set(rows, bars, strategy.indicators())


def run_features(settings: Settings, args: argparse.Namespace) -> int:
    config = _scanner(settings, args.scanner)
    start, end = _window(args)
    frame, features = _training_set(settings, config, start, end, args.source)
    out = Path(args.out).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    target = out / f"{config.name}.parquet"
    frame.write_parquet(target)
    counts = dict(frame["label"].value_counts().sort("label").rows())
    (out / f"{config.name}.json").write_text(
        json.dumps(describe(config, frame, features, start, end), indent=2) + "\n"
    )
    shown = ", ".join(f"{count:,} {label}" for label, count in counts.items())
    print(
        f"wrote {frame.height:,} labelled signals ({shown}) x {len(features)} features to {target}"
    )
    return 0


def run_train(settings: Settings, args: argparse.Namespace) -> int:
    from sptrader.scanners import models

    config = _scanner(settings, args.scanner)
    start, end = _window(args)
    frame, features = _training_set(settings, config, start, end, args.source)
    trained = models.walk_forward(frame, features, args.model, args.folds)
    meta = {
        "kind": args.model,
        "source": args.source,
        **describe(config, frame, features, start, end),
    }
    version, path = models.save(settings.home, config.name, trained, meta)
    if args.format == "json":
        write_json(
            {
                "model": f"{config.name}@v{version}",
                "path": str(path),
                "totals": trained.totals,
                "folds": [iso_fields(row) for row in trained.folds],
            }
        )
        return 0
    print_table(
        f"{args.model} on {frame.height:,} labelled signals of {config.name}, walk-forward"
        " (each fold trained on the signals before it)",
        (
            "FOLD",
            "TRAIN",
            "TEST",
            "FROM",
            "TO",
            "HIT %",
            "TAKEN",
            "PRECISION",
            "RECALL",
            "AUC",
            "EV ALL %",
            "EV TAKEN %",
            "LIFT %",
        ),
        [_fold_cells(row) for row in trained.folds],
        left=("FROM", "TO"),
        width=140,
    )
    totals = trained.totals
    auc = "-" if totals["auc_mean"] is None else f"{totals['auc_mean']:.3f}"
    lift = "-" if totals["ev_lift_mean_pct"] is None else f"{totals['ev_lift_mean_pct']:+.3f}%"
    print(f"mean out of sample: AUC {auc}, EV lift {lift} a signal against taking every one")
    print(f'saved {config.name}@v{version}: {path} (use it: model = "{config.name}")')
    return 0


def _fold_cells(row: dict[str, Any]) -> list[str]:
    def num(value: float | None, places: int = 3, sign: str = "") -> str:
        return "-" if value is None else f"{value:{sign}.{places}f}"

    return [
        str(row["fold"]),
        str(row["train"]),
        str(row["test"]),
        format_us(row["from_us"])[:16],
        format_us(row["to_us"])[:16],
        num(row["hit_rate_pct"], 1),
        str(row["taken"]),
        num(row["precision"]),
        num(row["recall"]),
        num(row["auc"]),
        num(row["ev_all_pct"], sign="+"),
        num(row["ev_taken_pct"], sign="+"),
        num(row["ev_lift_pct"], sign="+"),
    ]


def run_labels(settings: Settings, args: argparse.Namespace) -> int:
    if args.scanner is not None:
        _scanner(settings, args.scanner)
    start, end = _window(args)

    async def read() -> list[dict[str, Any]]:
        async with connect(settings) as client:
            return await client.signal_labels(args.scanner, start, end, args.source)

    rows = [iso_fields(row) for row in asyncio.run(read())]
    if args.format == "json":
        write_json(rows)
        return 0
    if args.format == "csv":
        write_csv([{column: row[column] for column in COLUMNS} for row in rows], COLUMNS)
        return 0
    if not rows:
        print("no labelled signal yet (a signal is labelled once its horizon has closed)")
        return 0
    print_table(
        "Labelled signals (entry at the next bar's open; target, stop or timeout)",
        HEADERS,
        [_cells(row) for row in rows],
        left=("SCANNER", "SOURCE", "INSTRUMENT", "BAR", "SIDE", "LABEL"),
        width=120,
    )
    strategies = {config.name: config.strategy for config in settings.config.scanners}
    print_table(
        "Per strategy (hit rate: targets of targets and stops)",
        ("STRATEGY", "SIGNALS", "TARGET", "STOP", "TIMEOUT", "HIT %", "AVG RETURN %"),
        [
            [
                entry["strategy"],
                str(entry["signals"]),
                str(entry["target"]),
                str(entry["stop"]),
                str(entry["timeout"]),
                "-" if entry["hit_rate_pct"] is None else f"{entry['hit_rate_pct']:.1f}",
                f"{entry['avg_return_pct']:+.3f}",
            ]
            for entry in summary(rows, strategies)
        ],
        left=("STRATEGY",),
        width=120,
    )
    return 0


def _cells(row: dict[str, Any]) -> list[str]:
    return [
        row["scanner"],
        row["source"],
        row["instrument"],
        str(row["ts"]),
        row["side"],
        row["label"],
        str(row["bars"]),
        f"{row['mfe']:.3f}",
        f"{row['mae']:.3f}",
        f"{row['return']:+.3f}",
    ]
