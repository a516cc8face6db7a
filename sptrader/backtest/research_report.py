"""What ``sptrader backtest --walk-forward`` and ``--monte-carlo`` print: the fold table,
in-sample beside out-of-sample, the Monte Carlo percentiles; or the same as JSON (the
conventions of :mod:`sptrader.backtest.report`: ISO times, non-finite numbers as null)."""

from __future__ import annotations

import sys
from typing import IO, Any

from sptrader.backtest import report
from sptrader.backtest.montecarlo import PERCENTILES, MonteCarlo
from sptrader.backtest.montecarlo import to_json as monte_carlo_json
from sptrader.backtest.objectives import describe
from sptrader.backtest.walkforward import SPAN_US, FoldResult, WalkForward
from sptrader.clock import format_us

__all__ = ["print_monte_carlo", "print_walk_forward", "walk_forward_json"]

# The side-by-side figures: (label, summary key, how shown).
_FIGURES = (
    ("net P&L", "net_pnl", "money"),
    ("return", "return_pct", "pct"),
    ("trades", "trades", "count"),
    ("win rate", "win_rate", "rate"),
    ("profit factor", "profit_factor", "ratio"),
    ("max drawdown", "max_drawdown_pct", "pct"),
    ("Sharpe", "sharpe", "ratio"),
    ("Sortino", "sortino", "ratio"),
)


def _span_text(us: int) -> str:
    for unit in ("w", "d", "h", "m"):
        if us % SPAN_US[unit] == 0:
            return f"{us // SPAN_US[unit]}{unit}"
    return f"{us / SPAN_US['m']:g}m"


def _shown(value: Any, kind: str) -> str:
    if value is None:
        return "-"
    if kind == "money":
        return report._money(value)
    if kind == "pct":
        return report._pct(value)
    if kind == "rate":
        return report._pct(value * 100, 1)
    if kind == "count":
        return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.1f}"
    return report._ratio(value)


def _day(us: int) -> str:
    """``2026-08-01``, or ``2026-08-01 06:00`` off midnight."""
    text = format_us(us)  # 2026-08-01T06:00:00Z
    day, clock = text[:10], text[11:16]
    return day if clock == "00:00" else f"{day} {clock}"


def _range_text(start: int, end: int) -> str:
    """``2026-08-01 → 08-31``, ``2026-11-02 06:00 → 10:00``: what the end repeats of
    the start (its year, its day) left out."""
    first, last = _day(start), _day(end)
    if len(first) == len(last) == 10:
        return f"{first} → {last[5:] if last[:4] == first[:4] else last}"
    first, last = format_us(start), format_us(end)
    begin = f"{first[:10]} {first[11:16]}"
    if last[:10] == first[:10]:
        return f"{begin} → {last[11:16]}"
    day = last[5:10] if last[:4] == first[:4] else last[:10]
    return f"{begin} → {day} {last[11:16]}"


def print_walk_forward(
    result: WalkForward,
    *,
    instrument: str,
    timeframe: str,
    coverage: dict[str, Any],
    varied: list[str],
    workers: int,
    out: IO[str] | None = None,
) -> None:
    from rich.table import Table

    out = out or sys.stdout
    console = report._console(out, 140)
    label = describe(result.objective)
    method = "grid" if result.method == "grid" else "TPE search"
    console.print(
        f"{result.strategy} {instrument} {timeframe}: walk-forward,"
        f" {'anchored' if result.anchored else 'rolling'} train {_span_text(result.train_us)}"
        f" / test {_span_text(result.test_us)}, {len(result.folds)} of {result.total_folds}"
        f" folds in {result.elapsed_s:.1f}s on {workers} process{'es' if workers != 1 else ''}"
        f" ({method}, best {label} in-sample)",
        markup=False,
    )
    console.print(report.coverage_line(coverage), markup=False)
    table = Table(box=None)
    for column in ("fold", "train", "test", *varied):
        table.add_column(column, justify="right" if column in varied else "left", no_wrap=True)
    for column in (f"IS {label}", f"OOS {label}", "OOS trades", "OOS P&L", "OOS DD"):
        table.add_column(column, justify="right", no_wrap=True)
    for fold in result.folds:
        table.add_row(*_fold_cells(fold, varied))
    console.print(table)
    for fold in result.folds:
        if fold.error:
            console.print(f"fold {fold.fold.index}: {fold.error}", markup=False)

    stitched = result.stitched.summary if result.stitched is not None else {}
    side = Table(box=None)
    side.add_column("")
    side.add_column("in-sample (fold mean)", justify="right")
    side.add_column("out-of-sample (fold mean)", justify="right")
    side.add_column("out-of-sample stitched", justify="right")
    side.add_row(
        label,
        report._ratio(result.mean_score("in_score")),
        report._ratio(result.mean_score("out_score")),
        report._ratio(result.extra.get("stitched_score")),
    )
    for name, key, kind in _FIGURES:
        if key == result.objective:
            continue  # its row is the first
        side.add_row(
            name,
            _shown(result.mean("in_sample", key), kind),
            _shown(result.mean("out_sample", key), kind),
            _shown(stitched.get(key), kind),
        )
    console.print(side)
    efficiency = result.efficiency
    console.print(
        "walk-forward efficiency (annualised OOS / IS return): "
        + ("-" if efficiency is None else f"{efficiency:.2f}")
        + (
            "; stitched out-of-sample"
            f" {_range_text(result.stitched.start_us, result.stitched.end_us)}, final equity"
            f" {report._money(stitched.get('final_equity'))}"
            if result.stitched is not None
            else "; no fold has an out-of-sample run"
        ),
        markup=False,
    )


def _fold_cells(fold: FoldResult, varied: list[str]) -> list[str]:
    f = fold.fold
    params = fold.params or {}
    out = fold.out_sample or {}
    return [
        str(f.index),
        _range_text(f.train_start, f.train_end),
        _range_text(f.test_start, f.test_end),
        *(report._value_text(params[name]) if name in params else "-" for name in varied),
        report._score_text(fold.in_score),
        report._score_text(fold.out_score),
        _shown(out.get("trades"), "count"),
        _shown(out.get("net_pnl"), "money"),
        _shown(out.get("max_drawdown_pct"), "pct"),
    ]


def walk_forward_json(
    result: WalkForward,
    *,
    instrument: str,
    timeframe: str,
    coverage: dict[str, Any],
    monte_carlo: MonteCarlo | None = None,
) -> dict[str, Any]:
    stitched = result.stitched
    data: dict[str, Any] = {
        "strategy": result.strategy,
        "instrument": instrument,
        "timeframe": timeframe,
        "objective": result.objective,
        "method": result.method,
        "walk_forward": {
            "train": _span_text(result.train_us),
            "test": _span_text(result.test_us),
            "anchored": result.anchored,
            "folds": result.total_folds,
        },
        "folds": [
            {
                "fold": f.fold.index,
                "train_from": format_us(f.fold.train_start),
                "train_to": format_us(f.fold.train_end),
                "test_from": format_us(f.fold.test_start),
                "test_to": format_us(f.fold.test_end),
                "params": f.params,
                "evaluated": f.evaluated,
                "in_sample_score": f.in_score,
                "out_of_sample_score": f.out_score,
                "in_sample": f.in_sample,
                "out_of_sample": f.out_sample,
                "error": f.error,
            }
            for f in result.folds
        ],
        "in_sample_mean": {key: result.mean("in_sample", key) for _, key, _ in _FIGURES},
        "out_of_sample_mean": {key: result.mean("out_sample", key) for _, key, _ in _FIGURES},
        "in_sample_score_mean": result.mean_score("in_score"),
        "out_of_sample_score_mean": result.mean_score("out_score"),
        "efficiency": result.efficiency,
        "out_of_sample": None
        if stitched is None
        else {
            "summary": report.summary_dict(stitched),
            "score": result.extra.get("stitched_score"),
            "trades": report.trade_dicts(stitched.trades),
        },
        "elapsed_s": result.elapsed_s,
        "interrupted": result.interrupted,
        "coverage": report.coverage_dict(coverage),
    }
    if monte_carlo is not None:
        data["monte_carlo"] = monte_carlo_json(monte_carlo)
    return report.clean(data)


def print_monte_carlo(result: MonteCarlo, out: IO[str] | None = None) -> None:
    from rich.table import Table

    out = out or sys.stdout
    console = report._console(out, 120)
    runs = result.reshuffled.runs
    console.print(
        f"Monte Carlo of {result.trades:,} trades: {runs:,} reshuffled and {runs:,} resampled"
        f" runs{'' if result.seed is None else f', seed {result.seed}'}"
        " (drawdowns of the closed-trade equity)",
        markup=False,
    )
    table = Table(box=None)
    table.add_column("", no_wrap=True)
    for p in PERCENTILES:
        table.add_column(f"p{p}", justify="right", no_wrap=True)
    for dist in (result.reshuffled, result.resampled):
        table.add_row(
            f"{dist.method}: max drawdown",
            *(
                f"{report._money(dist.max_drawdown[p])} ({dist.max_drawdown_pct[p]:.1f}%)"
                for p in PERCENTILES
            ),
        )
        if dist.method == "resampled":
            table.add_row(
                "resampled: final equity",
                *(report._money(dist.final_equity[p]) for p in PERCENTILES),
            )
            table.add_row(
                "resampled: return", *(report._pct(dist.return_pct[p]) for p in PERCENTILES)
            )
    console.print(table)
    original = result.original
    console.print(
        f"this run: max drawdown {report._money(original['max_drawdown'])}"
        f" ({original['max_drawdown_pct']:.1f}%), deeper than"
        f" {result.original_drawdown_percentile:.0f}% of the reshuffled orders;"
        f" resampled runs ending in a loss {result.resampled.loss_pct:.1f}%,"
        f" ruined {result.resampled.ruin_pct:.1f}%",
        markup=False,
    )
