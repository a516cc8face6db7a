"""The ``sptrader`` command. Only argparse is imported up front so ``--help`` is fast;
each command imports what it needs when it runs."""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from sptrader import __version__
from sptrader.commands.arguments import Refused, count, output_dir, seconds, whole_id
from sptrader.limits import MAX_DAYS
from sptrader.venue_names import VENUES

FORMATS = ("table", "csv", "json")


#: Options of the whole program, accepted before or after the command
#: (``sptrader tui --config x.toml``, ``sptrader config check --home H``).
GLOBAL_OPTIONS = ("--home", "--config")


class _Suggested(argparse.ArgumentError):
    """A mistyped choice, said as a whole sentence with the nearest valid one."""

    def __str__(self) -> str:
        return self.message


class Parser(argparse.ArgumentParser):
    """argparse, with a mistake said in one line (exit 2) instead of the usage text,
    and a mistyped command, action, choice or option with the nearest valid one."""

    def error(self, message: str) -> None:  # type: ignore[override]
        # Called while argparse handles the ArgumentError; a Refused value (an argument
        # type in sptrader.commands.arguments) is already a whole sentence.
        error = sys.exc_info()[1]
        if isinstance(error, _Suggested):
            message = error.message
        elif isinstance(error, argparse.ArgumentError) and isinstance(error.__context__, Refused):
            message = str(error.__context__)
        else:
            message = f"{message} (see `{self.prog} --help`)"
        self.exit(2, f"sptrader: {message}\n")

    def _check_value(self, action: argparse.Action, value: object) -> None:
        if action.choices is None or value in action.choices:
            return
        choices = [str(choice) for choice in action.choices]
        if isinstance(action, argparse._SubParsersAction):
            words = self.prog.split()[1:]  # "sptrader data" -> a data action
            what = f"unknown {' '.join(words)} action" if words else "unknown command"
        else:
            what = f"{'/'.join(action.option_strings) or action.metavar}: unknown value"
        raise _Suggested(action, f"{what} {value!r}; {_nearest(str(value), choices)}")

    def parse_args(self, args=None, namespace=None):  # type: ignore[no-untyped-def,override]
        namespace, extras = self.parse_known_args(args, namespace)
        if extras:
            option = next((extra for extra in extras if extra.startswith("-")), None)
            if option is None:
                self.error(f"unrecognized arguments: {' '.join(extras)}")
            name = option.split("=", 1)[0]
            known = self._options_on_the_way(namespace)
            self.exit(2, f"sptrader: unknown option {name!r}; {_nearest(name, known)}\n")
        return namespace

    def _options_on_the_way(self, namespace: argparse.Namespace) -> list[str]:
        """The options of this parser and of each (sub)command the line chose."""
        parser: argparse.ArgumentParser | None = self
        options: list[str] = []
        while parser is not None:
            options += [option for action in parser._actions for option in action.option_strings]
            chosen = None
            for action in parser._actions:
                if isinstance(action, argparse._SubParsersAction):
                    chosen = action.choices.get(getattr(namespace, action.dest, None) or "")
            parser = chosen
        return options


def _nearest(word: str, choices: list[str]) -> str:
    """``did you mean 'candles'?``, else the valid choices (or where to find them)."""
    import difflib

    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    if close:
        return f"did you mean {close[0]!r}?"
    if len(choices) <= 8:
        return f"choose from {', '.join(choices)}"
    return "see `sptrader --help`"


def hoist_global_options(argv: Sequence[str]) -> list[str]:
    """``argv`` with the global options (and their values) moved before the command,
    where argparse looks for them; nothing after ``--`` is touched."""
    hoisted: list[str] = []
    rest: list[str] = []
    items = list(argv)
    index = 0
    while index < len(items):
        item = items[index]
        if item == "--":
            rest += items[index:]
            break
        if item in GLOBAL_OPTIONS and index + 1 < len(items):
            hoisted += items[index : index + 2]
            index += 2
            continue
        if item.split("=", 1)[0] in GLOBAL_OPTIONS and "=" in item:
            hoisted.append(item)
        else:
            rest.append(item)
        index += 1
    return hoisted + rest


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="sptrader",
        description="SPtrader: a terminal control center for traders."
        " --home and --config may come before or after the command. Every --from/--to"
        " range is [--from, --to): --to is exclusive.",
    )
    parser.add_argument("--version", action="version", version=f"sptrader {__version__}")
    parser.add_argument(
        "--home",
        metavar="DIR",
        help="state directory (default: $SPTRADER_HOME, else the user data dir)",
    )
    parser.add_argument(
        "--config",
        metavar="PATH",
        help="config file (default: $SPTRADER_CONFIG, ./config.toml, HOME/config.toml)",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    commands.add_parser("tui", help="open the control center on the configured market")

    candles = commands.add_parser(
        "candles",
        help="print stored bars of an instrument",
        description="Print bars of INSTRUMENT (FEED:SYMBOL). A range that is not fully stored is fetched from the feed's history: for up to --wait seconds, then in the background.",
    )
    candles.add_argument("instrument", metavar="INSTRUMENT", help="e.g. SIM:EURUSD")
    candles.add_argument(
        "--tf", default="1m", metavar="TF", help="timeframe: 1m 5m 15m 1h 4h 1d (default 1m)"
    )
    candles.add_argument(
        "--last", type=count("--last"), metavar="N", help="the newest N bars (default 100)"
    )
    candles.add_argument(
        "--from",
        dest="start",
        metavar="TIME",
        help="first bar time, ISO 8601 UTC (e.g. 2026-11-20T14:00Z)",
    )
    candles.add_argument(
        "--to", dest="end", metavar="TIME", help="end time (exclusive), ISO 8601 UTC; default now"
    )
    candles.add_argument(
        "--format", choices=FORMATS, default="table", help="output format (default table)"
    )
    candles.add_argument(
        "--wait",
        type=seconds("--wait", zero=True),
        default=2.0,
        metavar="S",
        help="fetch missing history for up to S seconds before printing; the rest is"
        " fetched in the background (default 2; 0 prints what is stored at once)",
    )
    candles.add_argument(
        "--with",
        dest="indicators",
        metavar="LIST",
        help="add indicator columns, comma-separated: smaN emaN wmaN rsiN atrN adxN donchianN"
        " macd bbN stoch vwap (e.g. rsi14,ema20,macd,bb20,atr14); enough older bars are read"
        " for the first rows to have values",
    )
    candles.add_argument(
        "--source",
        choices=("store", "lake", "auto"),
        default="store",
        help="where bars come from: the store (default), the [lake] Delta table, or auto"
        " (the store, and the lake for minutes the store does not hold; nothing fetched)",
    )

    symbols = commands.add_parser(
        "symbols",
        help="search the configured feeds' instruments",
        description="Search every enabled feed's instrument list (cached in the store, refreshed after symbols.ttl_hours). Separators are ignored: btcusd finds BTC-USD, BTC/USD and BTCUSDT.",
    )
    symbols.add_argument("query", nargs="?", default="", metavar="QUERY", help="e.g. btc or eurusd")
    symbols.add_argument("--feed", metavar="NAME", help="only this feed, e.g. binance")
    symbols.add_argument(
        "--limit", type=count("--limit"), default=50, metavar="N", help="at most N (default 50)"
    )
    symbols.add_argument("--refresh", action="store_true", help="fetch the lists again now")
    symbols.add_argument("--json", action="store_true", help="print JSON")

    backfill = commands.add_parser(
        "backfill",
        help="download history into the store",
        description="Download 1m bars of each INSTRUMENT from its feed's history API, resumably (ranges already done are skipped), a few requests at a time. Dukascopy ticks are aggregated to 1m bars, and also stored as ticks for instruments in store.keep_ticks.",
    )
    backfill.add_argument(
        "instruments", nargs="+", metavar="INSTRUMENT", help="e.g. BINANCE:BTCUSDT"
    )
    backfill.add_argument(
        "--from", dest="start", required=True, metavar="DATE", help="ISO 8601 UTC, e.g. 2026-11-01"
    )
    backfill.add_argument(
        "--to", dest="end", metavar="DATE", help="end (exclusive), ISO 8601 UTC; default now"
    )
    backfill.add_argument("--tf", default="1m", metavar="TF", help="stored timeframe (1m)")

    data = commands.add_parser("data", help="what is stored, what is missing, fetching it")
    data_commands = data.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    check = data_commands.add_parser(
        "check",
        help="list the gaps of a range (exit 0 complete, 1 gaps)",
        description="Gaps are open market hours that nothing stored covers: a weekend is not a gap for FX, a missing Tuesday hour is.",
    )
    check.add_argument("instrument", metavar="INSTRUMENT")
    check.add_argument("--from", dest="start", required=True, metavar="DATE")
    check.add_argument("--to", dest="end", metavar="DATE", help="end (exclusive); default now")
    check.add_argument("--tf", default="1m", metavar="TF", help="report gaps in bars of TF")
    check.add_argument("--format", choices=("table", "json"), default="table")
    ensure = data_commands.add_parser(
        "ensure", help="fetch only the missing ranges, then check again (exit 1 if gaps remain)"
    )
    ensure.add_argument("instruments", nargs="+", metavar="INSTRUMENT")
    ensure.add_argument("--from", dest="start", required=True, metavar="DATE")
    ensure.add_argument("--to", dest="end", metavar="DATE", help="end (exclusive); default now")
    status_data = data_commands.add_parser(
        "status", help="per instrument: first/last bar, bars, coverage, by-day heatmap"
    )
    status_data.add_argument("instruments", nargs="*", metavar="INSTRUMENT")
    status_data.add_argument(
        "--days",
        type=count("--days", MAX_DAYS),
        default=30,
        help="coverage window (default 30)",
    )
    status_data.add_argument("--json", action="store_true", help="print JSON")

    export = commands.add_parser(
        "export",
        help="write stored bars to Parquet or CSV files (Hive-partitioned)",
        description="Write the bars of each INSTRUMENT in [--from, --to) to DIR/instrument=<name>/date=<YYYY-MM-DD>/bars-<tf>.<format>, partition values escaped as Spark does (KRAKEN:BTC/USD -> instrument=KRAKEN%3ABTC%2FUSD); DuckDB, polars and Spark read DIR back with hive partitioning. Days already in DIR are replaced whole; a re-export writes identical files.",
    )
    export.add_argument("instruments", nargs="+", metavar="INSTRUMENT", help="e.g. SIM:EURUSD")
    export.add_argument(
        "--from", dest="start", required=True, metavar="DATE", help="first UTC day, e.g. 2026-01-01"
    )
    export.add_argument(
        "--to", dest="end", metavar="DATE", help="end UTC day (exclusive); default tomorrow"
    )
    export.add_argument(
        "--format",
        choices=("parquet", "csv", "delta"),
        default="parquet",
        help="default parquet; delta appends 1m bars to the Delta Lake table under --out",
    )
    export.add_argument(
        "--out",
        required=True,
        type=output_dir("--out"),
        metavar="DIR",
        help="output directory (delta: also file:// or s3://bucket/prefix, S3 options from [lake])",
    )
    export.add_argument(
        "--tf", default="1m", metavar="TF", help="timeframe: 1m 5m 15m 1h 4h 1d (default 1m)"
    )
    import_ = commands.add_parser(
        "import",
        help="load 1m bars from a CSV or Parquet file into the store",
        description="Load 1m bars (columns ts, open, high, low, close, volume, optional trades and instrument) from FILE, or from a directory written by `sptrader export`. Every row is checked first: with any bad row nothing is written and the bad rows are listed.",
    )
    import_.add_argument("path", metavar="FILE", help="a .csv or .parquet file, or a directory")
    import_.add_argument(
        "--instrument", metavar="NAME", help="instrument of every row (e.g. KRAKEN:BTC/USD)"
    )
    import_.add_argument(
        "--format", choices=("csv", "parquet"), help="default: from the file extension"
    )

    start = commands.add_parser("start", help="start the headless daemon in the background")
    start.add_argument(
        "--foreground",
        action="store_true",
        help="run attached (for systemd or containers); stops on SIGTERM/SIGINT",
    )
    role_help = (
        "all (default): one process collects, stores and serves; collector: feeds out to"
        " NATS; writer: NATS in, store, scanners, broker, API (both need [nats] enabled)"
    )
    start.add_argument(
        "--role", choices=("all", "collector", "writer"), default="all", help=role_help
    )
    commands.add_parser(
        "stop", help="stop the daemon (SIGTERM, then SIGKILL after daemon.stop_timeout_s)"
    )
    restart = commands.add_parser("restart", help="stop the daemon, then start it")
    restart.add_argument(
        "--role", choices=("all", "collector", "writer"), default="all", help=role_help
    )
    status = commands.add_parser(
        "status", help="the daemon's services, pid, uptime and store (exit 3 when not running)"
    )
    status.add_argument("--json", action="store_true", help="print JSON")

    service = commands.add_parser("service", help="list or control the daemon's services")
    service_commands = service.add_subparsers(
        dest="service_command", metavar="ACTION", required=True
    )
    service_commands.add_parser("list", help="services and their state")
    for action in ("start", "stop", "restart"):
        service_action = service_commands.add_parser(action, help=f"{action} a service")
        service_action.add_argument("name", metavar="NAME")

    db = commands.add_parser("db", help="database maintenance")
    db_commands = db.add_subparsers(dest="db_command", metavar="ACTION", required=True)
    db_commands.add_parser("migrate", help="apply pending schema migrations")
    compact = db_commands.add_parser(
        "compact",
        help="delete old ticks and shrink the database file",
        description="Delete ticks older than store.ticks_retention_days (0 keeps them all; bars are always kept), then rewrite the database into a fresh file (bars sorted by instrument and time) to give the space back to the disk. The daemon must be stopped.",
    )
    compact.add_argument(
        "--dry-run", action="store_true", help="say what would be deleted; change nothing"
    )

    scan = commands.add_parser(
        "scan",
        help="run a scanner (or every enabled one) now",
        description="Run scanner NAME (or every enabled scanner) on the stored bars now, after fetching recent history, and print what it found. Instruments whose window has a gap are skipped with the reason. Each run is recorded (see `sptrader runs`).",
    )
    scan.add_argument("name", nargs="?", metavar="NAME", help="a [[scanners]] name")
    backtest = commands.add_parser(
        "backtest",
        help="run a strategy over stored bars with the paper broker's fills",
        description="Run STRATEGY over INSTRUMENT's bars of [--from, --to) with the paper broker's fill model and risk limits ([broker], [risk]): a signal on a bar fills at the next bar's open, plus slippage and fees; stops inside a bar fill at the stop or a worse open. Missing history is fetched first; a window that still has gaps is refused unless --allow-gaps. Several values for a --param make a sweep over every combination, on all cores.",
    )
    backtest.add_argument("strategy", metavar="STRATEGY", help="e.g. sma_cross")
    backtest.add_argument("instrument", metavar="INSTRUMENT", help="e.g. SIM:EURUSD")
    backtest.add_argument(
        "--tf", default="1m", metavar="TF", help="timeframe: 1m 5m 15m 1h 4h 1d (default 1m)"
    )
    backtest.add_argument(
        "--from", dest="start", required=True, metavar="TIME", help="start, ISO 8601 UTC"
    )
    backtest.add_argument(
        "--to", dest="end", metavar="TIME", help="end (exclusive), ISO 8601 UTC; default now"
    )
    backtest.add_argument(
        "--param",
        dest="params",
        action="append",
        default=[],
        metavar="K=V",
        help="a strategy parameter (repeatable); a range START..STOP:STEP or a list A,B,C"
        " sweeps it, e.g. --param fast=5..30:5 --param slow=50,100",
    )
    backtest.add_argument(
        "--format", choices=("table", "json"), default="table", help="output format (default table)"
    )
    backtest.add_argument(
        "--plot", action="store_true", help="draw the equity curve (table format, one run)"
    )
    backtest.add_argument(
        "--allow-gaps",
        action="store_true",
        help="run even if the window has missing data; trades across a gap are marked",
    )
    backtest.add_argument(
        "--source",
        choices=("store", "lake", "auto"),
        default="store",
        help="bars from the store (default), the [lake] Delta table, or auto (the store,"
        " and the lake for minutes the store does not hold); lake and auto fetch nothing",
    )
    backtest.add_argument(
        "--detail",
        metavar="TF",
        help="fill on the stored TF bars inside each --tf bar (e.g. --tf 1h --detail 1m), so"
        " stop/target order and gaps inside a bar are as they happened",
    )
    # Research: walk-forward, Bayesian search, bias checks, Monte Carlo.
    backtest.add_argument(
        "--walk-forward",
        dest="walk_forward",
        metavar="train=D,test=D",
        help="walk-forward optimisation: optimise on each train fold, run the chosen"
        " parameters on the next test fold, e.g. train=90d,test=30d",
    )
    backtest.add_argument(
        "--anchored",
        action="store_true",
        help="walk-forward train folds all start at --from (growing) instead of rolling",
    )
    backtest.add_argument(
        "--trials",
        type=count("--trials"),
        metavar="N",
        help="Bayesian search (Optuna TPE) of N trials over the --param ranges instead of"
        " the full grid",
    )
    backtest.add_argument(
        "--objective",
        default="sharpe",
        metavar="NAME",
        help="what a sweep, search or walk-forward maximises: sharpe, sortino,"
        " profit_factor, net_pnl, calmar, or module:function (default sharpe)",
    )
    backtest.add_argument(
        "--top", type=count("--top"), metavar="N", help="show the best N combinations only"
    )
    backtest.add_argument(
        "--check-bias",
        dest="check_bias",
        action="store_true",
        help="re-run on truncated histories and report signals or indicator values that"
        " change when future bars are removed (exit 1 when a bias is found)",
    )
    backtest.add_argument(
        "--monte-carlo",
        dest="monte_carlo",
        type=count("--monte-carlo"),
        metavar="N",
        help="N reshuffled and resampled runs of the trade list: percentiles of max"
        " drawdown and final equity",
    )
    backtest.add_argument(
        "--seed",
        type=int,
        metavar="N",
        help="seed of the search's sampler and the Monte Carlo draws (repeatable runs)",
    )
    divergence = commands.add_parser(
        "divergence",
        help="a scanner's paper or live trades against a backtest of the same window",
        description="Replay [--from, --to) with the backtester (the scanner's strategy,"
        " parameters and timeframe over the stored bars) and match its trades with the"
        " trades the scanner's orders made: matched, missed and extra trades, entry and exit"
        " slippage, the P&L difference, and the causes the store can name (a gap, a skip"
        " for stale data, a rejected order, no scanner run, a fill cap).",
    )
    divergence.add_argument("scanner", metavar="SCANNER", help="a [[scanners]] name")
    divergence.add_argument(
        "--from", dest="start", required=True, metavar="TIME", help="start, ISO 8601 UTC"
    )
    divergence.add_argument(
        "--to", dest="end", metavar="TIME", help="end (exclusive), ISO 8601 UTC; default now"
    )
    divergence.add_argument(
        "--tolerance",
        type=count("--tolerance"),
        default=3,
        metavar="N",
        help="an account entry up to N bars after the backtest's matches it (default 3)",
    )
    divergence.add_argument("--format", choices=("table", "json"), default="table")
    runs = commands.add_parser(
        "runs",
        help="scanner runs and their lineage",
        description="`sptrader runs` lists recent scanner runs; `sptrader runs show ID` prints one run's steps with durations, summaries and errors.",
    )
    runs.add_argument(
        "--last", type=count("--last"), metavar="N", help="the newest N runs (default 20)"
    )
    runs_commands = runs.add_subparsers(dest="runs_command", metavar="ACTION")
    runs_show = runs_commands.add_parser("show", help="one run's step tree")
    runs_show.add_argument("id", type=whole_id("a run ID"), metavar="ID")
    shadow = commands.add_parser(
        "shadow",
        help="shadow testing: a scanner's parameter variations beside its live ones",
        description="Each [[scanners.shadow]] variation of a scanner is evaluated on the same bars at every run; its signals (and the live ones, as variation live) are entered at the next bar's open and end at their target, stop or a timeout after shadow_bars bars. `sptrader shadow report` compares them over the last N days.",
    )
    shadow_commands = shadow.add_subparsers(dest="shadow_command", metavar="ACTION", required=True)
    shadow_report = shadow_commands.add_parser(
        "report", help="signals, outcomes, hit rate and returns per variation, beside live's"
    )
    shadow_report.add_argument("scanner", nargs="?", metavar="SCANNER")
    shadow_report.add_argument(
        "--days",
        type=count("--days", MAX_DAYS),
        default=30,
        metavar="N",
        help="signals of the last N days (default 30)",
    )
    shadow_report.add_argument("--format", choices=("table", "json"), default="table")

    _add_ml_parsers(commands)
    _add_trading_parsers(commands)
    _add_venue_parsers(commands)
    _add_alert_parsers(commands)

    report = commands.add_parser(
        "report",
        help="print the health / P&L report the [[reports]] schedules send",
        description="The report a [[reports]] schedule sends, now: health (services, stale feeds, coverage of yesterday and today per watched instrument, store size, scanner runs, signals and skips of the last 24 h), pnl (per enabled venue: the day's P&L, today's closed trades, open positions), or all.",
    )
    report.add_argument("--kind", choices=("health", "pnl", "all", "briefing"), default="all")
    report.add_argument(
        "--format", choices=("text", "markdown", "json"), default="text", help="default text"
    )

    config = commands.add_parser("config", help="configuration")
    config_commands = config.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    config_commands.add_parser("check", help="validate the config and print a summary")
    return parser


def _add_ml_parsers(commands: argparse._SubParsersAction) -> None:
    ml = commands.add_parser(
        "ml",
        help="outcome labels of every signal, training sets and models of them",
        description="Every buy or sell signal a scanner emits is labelled once its horizon has closed: target, stop or timeout after label_bars bars (entered at the next bar's open, the scanner's label_target_pct / label_stop_pct when the signal carries no levels), with the bars taken, its maximum favourable and adverse excursion and its return.",
    )
    ml_commands = ml.add_subparsers(dest="ml_command", metavar="ACTION", required=True)
    labels = ml_commands.add_parser(
        "labels", help="one row per labelled signal, and label counts per strategy"
    )
    labels.add_argument("scanner", nargs="?", metavar="SCANNER")
    features = ml_commands.add_parser(
        "features",
        help="a Parquet training set: each labelled signal's features at its bar, and its label",
    )
    features.add_argument("scanner", metavar="SCANNER")
    train = ml_commands.add_parser(
        "train",
        help="a model of whether a signal reaches its target, judged walk-forward, saved versioned",
    )
    train.add_argument("scanner", metavar="SCANNER")
    for parser in (labels, features, train):  # which signals
        parser.add_argument(
            "--source",
            choices=("live", "shadow", "backtest"),
            default="live",
            help="the stored signals (live), the shadow variations', or the strategy replayed"
            " on the stored bars (backtest; default window the last 30 days)",
        )
        parser.add_argument(
            "--from", dest="start", metavar="TIME", help="signals from, ISO 8601 UTC"
        )
        parser.add_argument("--to", dest="end", metavar="TIME", help="signals before, ISO 8601 UTC")
    labels.add_argument("--format", choices=("table", "csv", "json"), default="table")
    features.add_argument(
        "--out", required=True, metavar="DIR", help="writes DIR/SCANNER.parquet and .json"
    )
    train.add_argument("--model", choices=("gbm", "logistic"), default="gbm")
    train.add_argument(
        "--folds",
        type=count("--folds", 20),
        default=4,
        metavar="N",
        help="walk-forward folds, at least 2 (default 4)",
    )
    train.add_argument("--format", choices=("table", "json"), default="table")


def _add_trading_parsers(commands: argparse._SubParsersAction) -> None:
    """order, orders, positions, cancel, close, journal (sptrader.commands.trading and
    sptrader.commands.journal): through the daemon's API while one runs."""
    order = commands.add_parser(
        "order",
        help="place a paper order",
        description="Place a paper order: market, or --limit/--stop; --sl/--tp attach a stop-loss and a take-profit to the entry. Size it by QTY, or by --risk PCT of equity lost at --sl. Without a daemon an engine starts here, streams just INSTRUMENT, waits up to --wait seconds for its first quote, places the order and stops; an order that rests is stored and worked whenever an engine runs. A rejected order prints the limit and the numbers (exit 1).",
    )
    # Checked by the command (one line, exit 2), not by argparse (usage text).
    order.add_argument("side", metavar="buy|sell")
    order.add_argument("instrument", metavar="INSTRUMENT", help="e.g. SIM:EURUSD")
    order.add_argument("qty", nargs="?", metavar="QTY", help="quantity (units)")
    order.add_argument("--limit", metavar="P", help="a limit order at P")
    order.add_argument(
        "--stop", metavar="P", help="a stop order triggering at P (not with --limit)"
    )
    order.add_argument("--sl", metavar="P", help="stop-loss price")
    order.add_argument("--tp", metavar="P", help="take-profit price")
    order.add_argument("--risk", metavar="PCT", help="size from --sl: lose PCT %% of equity there")
    order.add_argument("--day", action="store_true", help="expire at 00:00 UTC (default: gtc)")
    order.add_argument(
        "--wait",
        type=seconds("--wait"),
        default=10.0,
        metavar="S",
        help="wait for a quote (default 10)",
    )
    order.add_argument(
        "--venue",
        choices=VENUES,
        default="paper",
        help='where it goes (default paper; a live venue needs [brokers.NAME] trading = "live")',
    )
    order.add_argument("--json", action="store_true", help="print JSON")
    orders = commands.add_parser(
        "orders", help="working orders of every venue (--all: every order)"
    )
    orders.add_argument("--venue", choices=VENUES, help="only this venue's")
    orders.add_argument("--all", action="store_true", help="every status, newest first")
    orders.add_argument(
        "--limit", type=count("--limit"), default=100, metavar="N", help="with --all (100)"
    )
    orders.add_argument("--format", choices=FORMATS, default="table")
    positions = commands.add_parser(
        "positions", help="open positions of every venue and the accounts (equity, cash, P&L)"
    )
    positions.add_argument("--venue", choices=VENUES, help="only this venue's")
    positions.add_argument("--format", choices=FORMATS, default="table")
    cancel = commands.add_parser("cancel", help="cancel a working order (at its venue)")
    cancel.add_argument(
        "id", type=whole_id("an order id"), metavar="ID", help="order id (see `sptrader orders`)"
    )
    cancel.add_argument("--json", action="store_true", help="print JSON")
    close = commands.add_parser(
        "close", help="flatten a paper position with a market order (needs a quote, see order)"
    )
    close.add_argument("instrument", metavar="INSTRUMENT")
    close.add_argument("--venue", choices=VENUES, default="paper", help="default paper")
    close.add_argument("--wait", type=seconds("--wait"), default=10.0, metavar="S")
    close.add_argument("--json", action="store_true", help="print JSON")
    journal = commands.add_parser(
        "journal",
        help="notes, paper trades and their statistics",
        description="The journal of UTC days [--from, --to) (YYYY-MM-DD, today or yesterday; --to is exclusive, as in every command: --from 2026-03-02 --to 2026-03-03 is one day): per day the closed trades, their P&L and the notes; every trade (a round trip, flat to flat) with its P&L net of fees; win rate, average win/loss, profit factor, expectancy, max drawdown. --format csv prints the trades.",
    )
    journal.add_argument("--from", dest="start", metavar="DAY", help="first UTC day")
    journal.add_argument("--to", dest="end", metavar="DAY", help="end UTC day (exclusive)")
    journal.add_argument("--venue", choices=VENUES, help="only this venue's trades")
    journal.add_argument("--format", choices=FORMATS, default="table")
    journal_commands = journal.add_subparsers(dest="journal_command", metavar="ACTION")
    add = journal_commands.add_parser("add", help="write a note about a day")
    add.add_argument("text", metavar="TEXT")
    add.add_argument("--day", metavar="DAY", help="the UTC day (default today)")
    stats = journal_commands.add_parser(
        "stats", help="statistics only", argument_default=argparse.SUPPRESS
    )
    stats.add_argument("--from", dest="start", metavar="DAY", help="first UTC day")
    stats.add_argument("--to", dest="end", metavar="DAY", help="end UTC day (exclusive)")
    stats.add_argument("--venue", choices=VENUES, help="only this venue's trades")
    stats.add_argument("--format", choices=FORMATS)
    curve = journal_commands.add_parser(
        "equity",
        help="the account's equity curve",
        description="The paper account's mark-to-market equity per --tf bucket (default 1h) of UTC days [--from, --to) (--to exclusive; default from the first fill to now): cash (starting cash + realized P&L - fees), unrealized P&L of the open positions at the last stored 1m close before each bucket's end, exposure and equity.",
        argument_default=argparse.SUPPRESS,
    )
    curve.add_argument("--tf", dest="timeframe", metavar="TF", help="bucket width (default 1h)")
    curve.add_argument("--from", dest="start", metavar="DAY", help="first UTC day")
    curve.add_argument("--to", dest="end", metavar="DAY", help="end UTC day (exclusive)")
    curve.add_argument(
        "--venue", choices=VENUES, help="paper (default), or a live venue: its fills' P&L from 0"
    )
    curve.add_argument("--format", choices=FORMATS)


def _add_alert_parsers(commands: argparse._SubParsersAction) -> None:
    """alerts list | history | test (sptrader.commands.alerts)."""
    alerts = commands.add_parser(
        "alerts",
        help="alert rules, the alerts they sent, a test send",
        description="The [[alerts.rules]] of the config (price crosses or moves, P&L, orders filled or rejected, stops and targets hit, halts, stale feeds, the daemon, scanner signals) with their channels (tui, webhooks, telegram, desktop) and cooldowns; the alerts sent (stored); a test notice through a rule's channels.",
    )
    actions = alerts.add_subparsers(dest="alerts_command", metavar="ACTION")
    listing = actions.add_parser("list", help="the rules and how often each fired")
    listing.add_argument("--json", action="store_true", help="print JSON")
    history = actions.add_parser("history", help="the alerts sent, newest first")
    history.add_argument("--last", type=count("--last"), default=50, metavar="N")
    history.add_argument("--rule", metavar="NAME", help="only this rule's")
    history.add_argument("--json", action="store_true", help="print JSON")
    add = actions.add_parser(
        "add",
        help="add (or replace) a rule kept in the store",
        description="Add an alert rule (kept in the store; rules in the config file stay there). KIND: price_cross (--instrument, --level), price_move (--instrument, --pct, --window), pnl (--threshold, --scope day|position, --venue, --instrument), order (--events filled,rejected,stop,target), halt (--venue), feed (--after), daemon, signal (--scanner). A rule of the same name is replaced.",
    )
    add.add_argument("name", metavar="NAME")
    add.add_argument("kind", metavar="KIND")
    add.add_argument("--instrument", metavar="I")
    add.add_argument("--level", type=float, metavar="P")
    add.add_argument("--pct", type=float, metavar="N")
    add.add_argument("--window", dest="window_s", type=float, metavar="S")
    add.add_argument("--threshold", type=float, metavar="V")
    add.add_argument("--scope", choices=("day", "position"))
    add.add_argument("--venue", choices=VENUES)
    add.add_argument("--events", metavar="E,E")
    add.add_argument("--after", dest="after_s", type=float, metavar="S")
    add.add_argument("--scanner", metavar="NAME")
    add.add_argument("--channels", metavar="C,C", help="tui,webhooks,telegram,desktop")
    add.add_argument("--cooldown", dest="cooldown_s", type=float, metavar="S")
    add.add_argument("--json", action="store_true", help="print JSON")
    remove = actions.add_parser("remove", help="remove a rule kept in the store")
    remove.add_argument("name", metavar="NAME")
    for verb, what in (("pause", "pause a rule"), ("resume", "resume a paused rule")):
        paused = actions.add_parser(verb, help=what)
        paused.add_argument("name", metavar="NAME")
    test = actions.add_parser("test", help="send a test notice through a rule's channels")
    test.add_argument("name", metavar="NAME")
    test.add_argument("--json", action="store_true", help="print JSON")


def _add_venue_parsers(commands: argparse._SubParsersAction) -> None:
    """halt, resume, reconcile (sptrader.commands.venues): the kill switch and the
    venues' reconciliation."""
    halt = commands.add_parser(
        "halt",
        help="kill switch: cancel every working order and refuse new entries",
        description="Halt VENUE (every venue when none is named): its working orders are cancelled and new entries refused until `sptrader resume`; orders that only reduce a position still pass. It holds across restarts. A live venue no engine is connected to now is recorded halted and its working orders are cancelled as soon as an engine connects.",
    )
    halt.add_argument("venue", nargs="?", choices=VENUES, metavar="VENUE")
    halt.add_argument("--reason", default="", help="why (shown with every refused order)")
    halt.add_argument("--json", action="store_true", help="print JSON")
    resume = commands.add_parser("resume", help="lift a halt (every halted venue when none named)")
    resume.add_argument("venue", nargs="?", choices=VENUES, metavar="VENUE")
    resume.add_argument("--json", action="store_true", help="print JSON")
    reconcile = commands.add_parser(
        "reconcile",
        help="compare a live venue with the store now",
        description="Fetch VENUE's working orders, its fills since the last one on record, its positions and account, and compare them with the store (every live venue when none is named). Orders and trades made elsewhere are adopted; every difference is printed, logged and kept, never silently overwritten. Needs the engine connected to the venue (the daemon or the TUI; without one an engine connects here for it).",
    )
    reconcile.add_argument("venue", nargs="?", choices=VENUES[1:], metavar="VENUE")
    reconcile.add_argument("--json", action="store_true", help="print JSON")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(hoist_global_options(sys.argv[1:] if argv is None else argv))
    if args.command is None:
        parser.print_help()
        return 0
    import os

    from sptrader.errors import SptraderError

    # Orders, fills, journal notes and the API token are nobody else's business: every
    # file and directory this process (and the daemon or helper it starts) creates is
    # its owner's only, whatever the login umask. DuckDB creates its file and WAL with
    # the umask too. Put back on return, for callers that run main() in-process.
    umask = os.umask(PRIVATE_UMASK)
    try:
        code = _run(args)
        if code == INTERRUPTED and argv is None:
            _exit_now(code)
        return code
    except SptraderError as error:
        print(f"sptrader: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        if argv is None:
            _exit_now(INTERRUPTED)
        return INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`sptrader candles ... | head`): not an error. Point
        # stdout at devnull so the interpreter's final flush does not complain either.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as error:
        # A file or directory the system refused (permissions, a full disk, a path that
        # cannot exist): one line naming it; the traceback goes to the log, if any.
        import logging

        logging.getLogger("sptrader.cli").debug("%s failed", args.command, exc_info=True)
        print(f"sptrader: {describe_os_error(error)}", file=sys.stderr)
        return 1
    finally:
        os.umask(umask)


PRIVATE_UMASK = 0o077
#: The exit code of a command stopped by Ctrl+C (128 + SIGINT), as shells use.
INTERRUPTED = 130


def _exit_now(code: int) -> None:
    """Exit at once after Ctrl+C, as the program (not a caller of main()): output and
    logs flushed, exit handlers run, but not the interpreter's teardown of the native
    libraries (0.3-1 s here) nor requests still in flight in abandoned threads."""
    import atexit
    import os

    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    atexit._run_exitfuncs()
    os._exit(code)


def describe_os_error(error: OSError) -> str:
    """``cannot use PATH: Permission denied``, or the error's own words without a path."""
    reason = error.strerror or str(error) or type(error).__name__
    if error.filename is None:
        return reason
    return f"cannot use {error.filename}: {reason}"


@dataclass(frozen=True, slots=True)
class Command:
    """Where a command's code lives: ``module.function(settings, args)``, imported only
    when it runs (so ``--help`` stays fast)."""

    module: str
    function: str
    #: Feeds log retries and warnings: into the log file, not over the output.
    logs_to_file: bool = False
    #: Keeps its store, logs or state in the home: refused at once on a read-only home.
    writes_home: bool = True


#: Every command by name (its parser is in build_parser): a new command is its module,
#: its parser and one row here.
COMMANDS: dict[str, Command] = {
    "tui": Command("sptrader.app", "run_tui"),
    "candles": Command("sptrader.commands.candles", "run_candles", logs_to_file=True),
    "symbols": Command("sptrader.commands.symbols", "run_symbols", logs_to_file=True),
    "backfill": Command("sptrader.commands.backfill", "run_backfill", logs_to_file=True),
    "data": Command("sptrader.commands.data", "run_data", logs_to_file=True),
    "export": Command("sptrader.commands.export_import", "run_export"),
    "import": Command("sptrader.commands.export_import", "run_import"),
    **{
        name: Command("sptrader.commands.daemon_control", "run_daemon_command")
        for name in ("start", "stop", "restart", "service")
    },
    "status": Command("sptrader.commands.daemon_control", "run_daemon_command", writes_home=False),
    "db": Command("sptrader.commands.database", "run_db"),
    "scan": Command("sptrader.commands.scans", "run_scan", logs_to_file=True),
    "runs": Command("sptrader.commands.scans", "run_runs"),
    "shadow": Command("sptrader.commands.shadow", "run_shadow"),
    "ml": Command("sptrader.commands.ml", "run_ml"),
    "backtest": Command("sptrader.commands.backtest", "run_backtest_command", logs_to_file=True),
    "divergence": Command(
        "sptrader.commands.divergence", "run_divergence_command", logs_to_file=True
    ),
    "order": Command("sptrader.commands.trading", "run_order", logs_to_file=True),
    "close": Command("sptrader.commands.trading", "run_close", logs_to_file=True),
    "orders": Command("sptrader.commands.trading", "run_orders"),
    "positions": Command("sptrader.commands.trading", "run_positions"),
    "cancel": Command("sptrader.commands.trading", "run_cancel"),
    "journal": Command("sptrader.commands.journal", "run_journal"),
    "report": Command("sptrader.commands.report", "run_report"),
    "alerts": Command("sptrader.commands.alerts", "run_alerts", logs_to_file=True),
    "halt": Command("sptrader.commands.venues", "run_halt", logs_to_file=True),
    "resume": Command("sptrader.commands.venues", "run_resume"),
    "reconcile": Command("sptrader.commands.venues", "run_reconcile", logs_to_file=True),
    "config": Command("sptrader.commands.config_check", "run_config_check", logs_to_file=True),
}


def _run(args: argparse.Namespace) -> int:
    import importlib

    from sptrader.config import home_is_writable, load_settings, prepare_home
    from sptrader.errors import UsageError

    command = COMMANDS[args.command]
    settings = load_settings(args.home, args.config)
    prepare_home(settings)
    writable = home_is_writable(settings.home)
    if not writable and command.writes_home:
        raise UsageError(
            f"the home {settings.home} is read-only: `sptrader {args.command}` keeps its"
            " store and log there (choose another with --home or SPTRADER_HOME)"
        )
    if command.logs_to_file and writable:
        from sptrader.logs import setup_logging

        log_config = settings.config.log
        try:
            setup_logging(
                settings.log_path,
                log_config.level,
                max_bytes=log_config.max_bytes,
                backups=log_config.backups,
            )
        except OSError as error:
            raise UsageError(
                f"cannot write the log file: {describe_os_error(error)} (see [log] file)"
            ) from None
    run = getattr(importlib.import_module(command.module), command.function)
    return run(settings, args)


if __name__ == "__main__":
    sys.exit(main())
