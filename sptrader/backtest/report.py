"""What ``sptrader backtest`` prints: the summary, trades and coverage as a table or as
JSON (ISO 8601 times with Z; non-finite numbers, like the profit factor of a run with
no losing trade, as null), the equity curve as a plotext chart, and a sweep's table.

Coverage (``coverage`` below) is a dict: ``from_us``, ``to_us``, ``coverage_pct`` (of the
window's open market time), ``gaps`` ([start, end) µs ranges still missing) and
``allow_gaps``.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import IO, Any

import polars as pl

from sptrader.backtest.engine import BacktestResult
from sptrader.backtest.sweep import SweepRow
from sptrader.clock import format_us
from sptrader.formatting import format_price
from sptrader.models import US_PER_MINUTE

# Trades listed by the table format (JSON lists them all).
TABLE_TRADES = 20
TABLE_REJECTED = 10


def clean(value: Any) -> Any:
    """JSON-safe: NaN and infinities become None, recursively."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: clean(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [clean(item) for item in value]
    return value


def coverage_dict(coverage: dict[str, Any]) -> dict[str, Any]:
    gaps = coverage.get("gaps") or []
    first = gaps[0] if gaps else None
    return {
        "from": format_us(coverage["from_us"]),
        "to": format_us(coverage["to_us"]),
        "coverage_pct": coverage.get("coverage_pct"),
        "gaps": len(gaps),
        "missing_minutes": sum(end - start for start, end in gaps) // US_PER_MINUTE,
        "first_gap": None
        if first is None
        else {
            "from": format_us(first[0]),
            "to": format_us(first[1]),
            "minutes": (first[1] - first[0]) // US_PER_MINUTE,
        },
        "allow_gaps": bool(coverage.get("allow_gaps")),
    }


def trade_dicts(trades: pl.DataFrame) -> list[dict[str, Any]]:
    frame = trades.with_columns(
        pl.col("entry_time_us")
        .cast(pl.Datetime("us"))
        .dt.strftime("%Y-%m-%dT%H:%M:%SZ")
        .alias("entry_time"),
        pl.col("exit_time_us")
        .cast(pl.Datetime("us"))
        .dt.strftime("%Y-%m-%dT%H:%M:%SZ")
        .alias("exit_time"),
    ).select(
        "entry_time",
        "entry_price",
        "exit_time",
        "exit_price",
        "side",
        "qty",
        "pnl",
        "fees",
        "exit_reason",
        "stop",
        "target",
        "bars",
        "reason",
        "spans_gap",
        "gap_minutes",
    )
    return frame.to_dicts()


def summary_dict(result: BacktestResult, data_s: float | None = None) -> dict[str, Any]:
    summary = {
        "strategy": result.strategy,
        "instrument": result.instrument,
        "timeframe": result.timeframe,
        "from": format_us(result.start_us),
        "to": format_us(result.end_us),
        "params": result.params,
        **result.summary,
    }
    if data_s is not None:
        summary["data_s"] = data_s
    return summary


def result_json(
    result: BacktestResult, coverage: dict[str, Any], data_s: float | None = None
) -> dict[str, Any]:
    return clean(
        {
            "summary": summary_dict(result, data_s),
            "trades": trade_dicts(result.trades),
            "rejected": [
                {**{k: v for k, v in row.items() if k != "ts_us"}, "time": format_us(row["ts_us"])}
                for row in result.rejected
            ],
            "coverage": coverage_dict(coverage),
        }
    )


def write_json(data: dict[str, Any] | list[Any], out: IO[str] | None = None) -> None:
    out = out or sys.stdout
    json.dump(data, out, allow_nan=False)
    out.write("\n")


# --- the table ------------------------------------------------------------------------


def _console(out: IO[str], least_width: int) -> Any:
    from rich.console import Console

    console = Console(file=out, soft_wrap=True, highlight=False)
    if console.width < least_width:
        # Rather long lines than figures squeezed over several rows.
        console = Console(file=out, soft_wrap=True, highlight=False, width=least_width)
    return console


def _money(value: float | None) -> str:
    return "-" if value is None else f"{value:,.2f}"


def _pct(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}%"


def _ratio(value: float | None) -> str:
    if value is None:
        return "-"
    return "∞" if math.isinf(value) else f"{value:.2f}"


def _params_text(params: dict[str, Any]) -> str:
    return " ".join(f"{key}={_value_text(value)}" for key, value in params.items())


def _value_text(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def coverage_line(coverage: dict[str, Any]) -> str:
    info = coverage_dict(coverage)
    pct = info["coverage_pct"]
    text = f"data: {pct:.1f}% of open market time covered" if pct is not None else "data:"
    count = info["gaps"]
    if count:
        first = info["first_gap"]
        text += (
            f", {count} gap{'s' if count != 1 else ''} ({info['missing_minutes']:,} min missing;"
            f" first {first['from']} → {first['to']})"
        )
        if info["allow_gaps"]:
            text += "; run with --allow-gaps: trades across a gap are marked"
    else:
        text += ", no gaps"
    return text


def print_result(
    result: BacktestResult,
    coverage: dict[str, Any],
    *,
    data_s: float | None = None,
    plot: bool = False,
    out: IO[str] | None = None,
    decimals: int | None = None,
) -> None:
    """The result as a rich report; trade prices at the instrument's ``decimals``."""
    from rich.table import Table

    out = out or sys.stdout
    console = _console(out, 110)
    s = result.summary
    console.print(
        f"[bold]{result.strategy}[/bold] {result.instrument} {result.timeframe}"
        f"  {format_us(result.start_us)} → {format_us(result.end_us)}"
        f"  {_params_text(result.params)}",
        markup=True,
    )
    console.print(coverage_line(coverage), markup=False)
    figures = Table.grid(padding=(0, 3))
    for _ in range(3):
        figures.add_column(justify="left", no_wrap=True)
        figures.add_column(justify="right", no_wrap=True)
    trades = s["trades"]
    net = s["net_pnl"]
    colour = "green" if net > 0 else "red" if net < 0 else ""

    def cell(text: str) -> str:
        return f"[{colour}]{text}[/{colour}]" if colour else text

    rows = [
        (
            "trades",
            f"{trades:,} ({s['wins']} won, {s['losses']} lost)",
            "net P&L",
            cell(_money(net)),
            "return",
            cell(_pct(s["return_pct"])),
        ),
        (
            "win rate",
            _pct(None if s["win_rate"] is None else s["win_rate"] * 100, 1),
            "profit factor",
            _ratio(s["profit_factor"]),
            "expectancy",
            _money(s["expectancy"]),
        ),
        (
            "avg win",
            _money(s["avg_win"]),
            "avg loss",
            _money(s["avg_loss"]),
            "fees",
            _money(s["fees"]),
        ),
        (
            "max drawdown",
            f"{_money(s['max_drawdown'])} ({_pct(s['max_drawdown_pct'])})",
            "Sharpe",
            _ratio(s["sharpe"]),
            "Sortino",
            _ratio(s["sortino"]),
        ),
        (
            "exposure",
            _pct(s["exposure_pct"], 1),
            "bars",
            f"{s['bars']:,}",
            "rejected entries",
            f"{s['rejected']:,}",
        ),
        (
            "final equity",
            _money(s["final_equity"]),
            "signals",
            f"{s['signals']:,}",
            "",
            "",
        ),
    ]
    for row in rows:
        figures.add_row(*row)
    console.print(figures)
    console.print(f"time: {_time_text(s, data_s)}", markup=False)
    ambiguous = s.get("ambiguous_bars") or 0
    both = (
        f"{f'{ambiguous:,}' if ambiguous else 'no'} exit{'s' if ambiguous != 1 else ''} on a"
        f" {result.timeframe} bar that reached both the stop and the target"
    )
    if s.get("detail_timeframe"):
        console.print(
            f"intra-bar detail: filled on the {s['detail_timeframe']} path"
            f" ({s['detail_bars']:,} bars); without it {both} (the stop assumed first),"
            f" net P&L {_money(s['net_pnl_without_detail'])}",
            markup=False,
        )
    elif ambiguous:
        console.print(
            f"{both}: the stop is assumed first; --detail 1m would resolve them on the 1m path",
            markup=False,
        )
    cap = s.get("volume_cap") or "off"
    if cap.startswith("off:"):  # asked for, but the bars say nothing of their volume
        console.print(f"[yellow]volume cap {cap}: every fill was whole[/yellow]")
    elif cap != "off":
        partial = s.get("partial_fills") or 0
        console.print(
            f"volume cap: fills take at most {cap}; {partial:,} partial"
            f" fill{'s' if partial != 1 else ''} (the rest worked on the next bars)",
            markup=False,
        )
    if s.get("trades_spanning_gaps"):
        console.print(
            f"[yellow]{s['trades_spanning_gaps']} trade(s) span a gap in the data:"
            " their P&L may not be real[/yellow]"
        )
    if result.trades.height:
        _print_trades(console, result, decimals)
    if result.rejected:
        shown = result.rejected[:TABLE_REJECTED]
        more = len(result.rejected) - len(shown)
        console.print(
            f"rejected entries{f' (first {len(shown)} of {len(result.rejected):,})' if more else ''}:",
            markup=False,
        )
        for row in shown:
            console.print(
                f"  {format_us(row['ts_us'])}  {row['side']:<4} {row['message']}", markup=False
            )
    if plot:
        out.write(equity_chart(result, width=min(console.width, 120)))
        out.write("\n")


def _time_text(summary: dict[str, Any], data_s: float | None) -> str:
    text = f"{summary['elapsed_s']:.3f}s backtest"
    if summary.get("bars_per_s"):
        text += f" ({summary['bars_per_s']:,.0f} bars/s)"
    if data_s is not None:
        text += f", {data_s:.3f}s reading the bars"
    return text


def _print_trades(console: Any, result: BacktestResult, decimals: int | None = None) -> None:
    from rich.table import Table

    trades = result.trades
    shown = trades.tail(TABLE_TRADES)
    title = (
        "trades"
        if shown.height == trades.height
        else (f"last {shown.height} of {trades.height:,} trades (--format json lists them all)")
    )
    table = Table(title=title, title_justify="left", box=None)
    gap_column = bool(trades["spans_gap"].any())
    for column in (
        "entry (UTC)",
        "side",
        "qty",
        "entry",
        "exit (UTC)",
        "exit",
        "why",
        "P&L",
        "fees",
    ):
        table.add_column(
            column, justify="left" if column in ("side", "why") or "UTC" in column else "right"
        )
    if gap_column:
        table.add_column("gap", justify="right")
    for row in shown.iter_rows(named=True):
        pnl = row["pnl"]
        cells = [
            _short_time(row["entry_time_us"]),
            row["side"],
            f"{row['qty']:,.6g}",
            format_price(row["entry_price"], decimals),
            _short_time(row["exit_time_us"]),
            format_price(row["exit_price"], decimals),
            row["exit_reason"],
            f"[{'green' if pnl > 0 else 'red' if pnl < 0 else ''}]{_money(pnl)}[/]"
            if pnl
            else _money(pnl),
            _money(row["fees"]),
        ]
        if gap_column:
            cells.append(f"{row['gap_minutes']:,} min" if row["spans_gap"] else "")
        table.add_row(*cells)
    console.print(table)


def _short_time(ts_us: int) -> str:
    return datetime.fromtimestamp(ts_us / 1e6, UTC).strftime("%Y-%m-%d %H:%M")


def equity_chart(result: BacktestResult, width: int = 100, height: int = 18) -> str:
    """The equity curve (at each bar's close) as a plotext line chart; colour only on a
    terminal."""
    import plotext

    equity = result.equity
    fig = plotext.figure
    fig.clear()
    plotext.terminal.limit(False, False)
    fig.plot_size(max(width, 40), max(height, 8))
    fig.theme("simple")
    fig.canvas("default")
    if equity.is_empty():
        fig.title("no bars")
        return fig.build().string()
    # One point per text cell column is all a terminal shows: thin long curves out.
    step = max(1, equity.height // (max(width, 40) * 2))
    thinned = equity.gather_every(step)
    if (equity.height - 1) % step:
        thinned = pl.concat([thinned, equity.tail(1)])
    values = thinned["equity"].to_list()
    positions = list(range(len(values)))
    signal = fig.signal(positions, values)
    signal.lines(True)
    fig.draw(signal)
    fig.title(f"equity, {result.instrument} {result.timeframe} {result.strategy}")
    low, high = min(values), max(values)
    if high > low:
        ticks = [low + (high - low) * i / 4 for i in range(5)]
        fig.ruler(1).ticks(ticks, [f"{tick:,.0f}" for tick in ticks])
    count = 5
    xs = sorted({round(i * (len(values) - 1) / (count - 1)) for i in range(count)})
    times = thinned["ts"].dt.epoch("us").to_list()
    fig.ruler(0).ticks(xs, [_short_time(times[x]) for x in xs])
    text = fig.build().string()
    if not getattr(sys.stdout, "isatty", lambda: False)():
        text = plotext.uncolorize(text)
    return text


# --- sweeps ---------------------------------------------------------------------------


def sweep_json(
    rows: Sequence[SweepRow],
    *,
    strategy: str,
    instrument: str,
    timeframe: str,
    coverage: dict[str, Any],
    elapsed_s: float,
    objective: str | None = None,
    search: dict[str, Any] | None = None,
    top: int | None = None,
) -> dict[str, Any]:
    """``combinations``: the runs made; ``results``: best first, the first ``top`` only
    when given; ``search``: how they were chosen (grid or TPE, its budget and seed)."""
    shown = rows[:top] if top else rows
    return clean(
        {
            "strategy": strategy,
            "instrument": instrument,
            "timeframe": timeframe,
            "combinations": len(rows),
            "objective": objective,
            "search": search or {"method": "grid"},
            "elapsed_s": elapsed_s,
            "results": [
                {"params": row.params, "score": row.score, "summary": row.summary}
                if row.error is None
                else {"params": row.params, "error": row.error}
                for row in shown
            ],
            "coverage": coverage_dict(coverage),
        }
    )


# The sweep table's figures; an objective among them is not shown twice.
_SWEEP_COLUMNS = (
    ("trades", None),
    ("net P&L", "net_pnl"),
    ("return", None),
    ("win rate", None),
    ("PF", "profit_factor"),
    ("max DD", None),
    ("Sharpe", "sharpe"),
)


def print_sweep(
    rows: Sequence[SweepRow],
    *,
    strategy: str,
    instrument: str,
    timeframe: str,
    coverage: dict[str, Any],
    varied: Sequence[str],
    elapsed_s: float,
    workers: int,
    objective: str | None = None,
    search: dict[str, Any] | None = None,
    top: int | None = None,
    out: IO[str] | None = None,
) -> None:
    from rich.table import Table

    from sptrader.backtest.objectives import describe

    out = out or sys.stdout
    console = _console(out, 100)
    search = search or {"method": "grid"}
    how = ""
    if search.get("method") == "tpe":
        how = f" of {search['space']:,} (TPE search"
        if search.get("seed") is not None:
            how += f", seed {search['seed']}"
        how += ")"
    ranking = describe(objective) if objective else "net P&L"
    shown = list(rows[:top] if top else rows)
    console.print(
        f"{strategy} {instrument} {timeframe}: {len(rows)} combinations{how} in"
        f" {elapsed_s:.1f}s on {workers} process{'es' if workers != 1 else ''},"
        f" best {ranking} first"
        + (f"; the top {len(shown)} shown" if len(shown) < len(rows) else ""),
        markup=False,
    )
    console.print(coverage_line(coverage), markup=False)
    table = Table(box=None)
    names = list(varied) or (list(rows[0].params) if rows else [])
    for name in names:
        table.add_column(name, justify="right")
    scored = objective is not None and objective not in {key for _, key in _SWEEP_COLUMNS}
    if scored:
        table.add_column(ranking, justify="right")
    for column, _ in _SWEEP_COLUMNS:
        table.add_column(column, justify="right")
    failed = []
    for row in shown:
        cells = [_value_text(row.params.get(name)) for name in names]
        s = row.summary
        if s is None:
            table.add_row(*cells, "[red]error[/red]")
            failed.append(row)
            continue
        if scored:
            cells.append(_score_text(row.score))
        table.add_row(
            *cells,
            f"{s['trades']:,}",
            _money(s["net_pnl"]),
            _pct(s["return_pct"]),
            _pct(None if s["win_rate"] is None else s["win_rate"] * 100, 1),
            _ratio(s["profit_factor"]),
            _pct(s["max_drawdown_pct"]),
            _ratio(s["sharpe"]),
        )
    console.print(table)
    for row in failed:
        console.print(f"error with {_params_text(row.params)}: {row.error}", markup=False)


def _score_text(score: float | None) -> str:
    """An objective's score: ``-`` for a run that cannot be scored (no trades)."""
    if score is None or (math.isinf(score) and score < 0):
        return "-"
    return "∞" if math.isinf(score) else f"{score:,.3f}"
