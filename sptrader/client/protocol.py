"""EngineClient: everything a caller (a screen, a command, the API) may ask of an engine.

Screens and commands never touch DuckDB or sockets; they use this interface, whichever
engine answers: ``LocalEngineClient`` (an Engine in this process: every service running
for the TUI, a few instruments streaming for a one-shot order, or only its store open for
offline reads and one-shot work) or ``RemoteEngineClient`` (a daemon over the API).
``connect()`` picks one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import polars as pl

from sptrader.bus import Subscription
from sptrader.models import BackfillProgressed, Bar, ServiceStatus, SymbolInfo


@dataclass(slots=True)
class InstrumentSummary:
    """What a watchlist row needs before live ticks arrive."""

    instrument: str
    session_open: float | None
    last: float | None
    closes: list[float] = field(default_factory=list)


class EngineClient(Protocol):
    """What a screen, a command or the API may ask of an engine, wherever it runs."""

    @property
    def mode(self) -> str:
        """Shown in the header: "local engine" or "attached to daemon pid N"."""
        ...

    @property
    def watchlist(self) -> list[str]: ...

    #: True when a daemon's engine answers (over its API), False for this process's.
    attached: bool

    async def start(self) -> None:
        """Start the local engine, or connect to the daemon."""
        ...

    async def close(self) -> None:
        """Stop the local engine (flushing the store), or disconnect."""
        ...

    def subscribe(self, name: str, maxsize: int) -> Subscription:
        """A lossy (drop-oldest, drops counted) subscription to every engine event."""
        ...

    async def services(self) -> list[ServiceStatus]: ...

    async def start_service(self, name: str) -> None: ...

    async def stop_service(self, name: str) -> None: ...

    async def restart_service(self, name: str) -> None: ...

    async def candles(
        self,
        instrument: str,
        timeframe: str,
        *,
        last: int | None = None,
        start_us: int | None = None,
        end_us: int | None = None,
    ) -> pl.DataFrame:
        """Stored bars (``ts, open, high, low, close, volume, trades``)."""
        ...

    def forming_bar(self, instrument: str) -> Bar | None: ...

    async def summaries(
        self, instruments: list[str], points: int
    ) -> dict[str, InstrumentSummary]: ...

    async def price_decimals(self, instruments: list[str]) -> dict[str, int]:
        """How many decimals each instrument's prices show (sptrader.formatting's
        price_decimals rule): its feed's symbol metadata, else what its stored closes
        use; an instrument with neither is left out (format_price then guesses by size)."""
        ...

    async def stale_instruments(self) -> set[str]:
        """Instruments whose feed is not delivering right now."""
        ...

    async def search_symbols(
        self, query: str, feed: str | None = None, limit: int = 50
    ) -> list[SymbolInfo]: ...

    async def add_instrument(self, instrument: str) -> str:
        """Watch and stream one more instrument (kept across restarts)."""
        ...

    async def remove_instrument(self, instrument: str) -> None: ...

    async def start_backfill(self, instruments: list[str], start_us: int, end_us: int) -> None:
        """Fetch what is missing of the range in the background (only open market hours
        the store lacks); progress arrives as BackfillProgressed, then HistoryStored."""
        ...

    async def data_gaps(self, instrument: str, start_us: int, end_us: int) -> list[tuple[int, int]]:
        """Open market time in [start, end) that nothing stored covers."""
        ...

    async def data_status(
        self, instruments: list[str] | None, start_us: int, end_us: int
    ) -> list[dict]:
        """Per instrument: source, first/last bar, bars, coverage_pct, gaps, days (the
        share of each UTC day's open time covered; -1 for a closed day)."""
        ...

    async def scanners(self) -> list[dict]:
        """Per configured scanner: name, strategy, instruments, timeframe, schedule,
        next_run_us, paused (its service stopped) and its newest run (last_run_id,
        last_status, last_duration_ms, last_started_us; None before the first)."""
        ...

    async def run_scanner(self, name: str) -> dict:
        """Run scanner ``name`` now; its run_id, status, signals (a count) and error."""
        ...

    async def pause_scanner(self, name: str) -> None:
        """Stop the scanner's service (no more scheduled runs)."""
        ...

    async def resume_scanner(self, name: str) -> None: ...

    async def recent_signals(self, limit: int = 50) -> list[dict]:
        """The newest signals, newest first: run_id, scanner, instrument, ts_us (the
        bar), side, strength, reason, stop, target, created_us."""
        ...

    async def run_steps(self, run_id: int) -> list[dict]:
        """A run's lineage steps in order: step_no, instrument, step, duration_ms,
        input_summary, output_summary, error."""
        ...

    async def scan(self, name: str) -> dict:
        """Run scanner ``name`` now, as a scheduled run (its signals published and
        alerted): its ScanResult as JSON-able data (scanner, run_id, status, signals,
        error ...). An unknown name is a usage error."""
        ...

    async def runs(self, last: int = 20) -> list[dict]:
        """The newest ``last`` scanner runs, newest first (the lineage's run rows)."""
        ...

    async def run_detail(self, run_id: int) -> dict:
        """One run: ``run`` (its row), ``steps`` and ``signals``."""
        ...

    async def scanner_activity(self, name: str, start_us: int, end_us: int) -> dict:
        """What scanner ``name`` did in [start_us, end_us): ``runs``, ``skips``,
        ``signals`` and ``orders`` (with their ``fills``), as stored
        (:func:`sptrader.scanners.activity.scanner_activity`)."""
        ...

    async def shadow_report(self, scanner: str | None = None, days: int = 30) -> list[dict]:
        """Shadow testing over the signals of the last ``days`` days (pending outcomes
        resolved first), per scanner with ``[[scanners.shadow]]`` variations (or just
        ``scanner``; an unknown name is a usage error) and variation, "live" first:
        scanner, variation, configured, params, changed (those unlike live's), signals,
        resolved, pending, wins (target), losses (stop), timeouts, hit_rate_pct,
        avg_return_pct, total_return_pct and vs_live_* of the last three
        (``sptrader.scanners.shadow.report``)."""
        ...

    async def signal_labels(
        self,
        scanner: str | None = None,
        start_us: int | None = None,
        end_us: int | None = None,
        source: str = "live",
    ) -> list[dict]:
        """One row per labelled signal (of ``scanner``, whose bar is in [start_us,
        end_us)) of ``source``: ``live`` (the stored signals, labelling first what
        became known), ``shadow`` (the shadow variations') or ``backtest`` (the
        strategy replayed on the stored bars; default window the last 30 days):
        scanner, source, instrument, ts_us, side,
        label (target | stop | timeout), bars, mfe, mae, return (all %), run_id,
        entry_ts_us, entry_price, stop, target, exit_ts_us, exit_price
        (``sptrader.scanners.labels``). An unknown scanner is a usage error."""
        ...

    async def status(self) -> dict:
        """The engine's home, its store (path, size_bytes, rows per table) and services
        (encoded as the API sends them)."""
        ...

    # --- the brokers: paper, and each live venue (sptrader.broker.live) ---------------
    # Every order, position and account row carries its ``venue`` ("paper", "binance",
    # "oanda", "ibkr", "alpaca"). The paper broker raises an SptraderError when it is
    # disabled; a live venue one when its [brokers.NAME] trading is not "live". An engine
    # with only its store open (a command's without a daemon) reads and changes the
    # stored paper account: positions marked at the last stored 1m closes, and orders
    # are placed only by an engine that streams (``connect(streaming=...)``).

    async def place_order(self, request: dict) -> dict:
        """Place an order (``OrderRequest`` fields: instrument, side, qty or risk_pct,
        type, price, tif, sl, tp, venue (default paper)). Returns ``OrderResult.to_dict()``:
        ``order``, ``fills``, ``rejected`` ({"limit", "message"} or None). A malformed
        request raises a UsageError (one line)."""
        ...

    async def cancel_order(self, order_id: int) -> dict:
        """Cancel a working order (at its venue); the order as it is now."""
        ...

    async def close_position(self, instrument: str, venue: str = "paper") -> dict:
        """A market order flattening the position; ``OrderResult.to_dict()``."""
        ...

    async def account(self, venue: str = "paper") -> dict:
        """currency, cash, equity, unrealized, realized, fees, exposure, day_pnl,
        open_positions, open_orders (at the newest quotes); paper also starting_cash, a
        live venue also venue, live, connected, halted, buying_power, last_error."""
        ...

    async def positions(self, venue: str | None = None) -> list[dict]:
        """Open positions of ``venue`` (every venue when None): venue, instrument, side,
        qty, avg_price, mark, unrealized, realized, fees, notional, opened_us."""
        ...

    async def open_orders(self, venue: str | None = None) -> list[dict]:
        """Working orders (of ``venue``; every venue when None), oldest first."""
        ...

    async def order_history(self, limit: int = 100, venue: str | None = None) -> list[dict]:
        """The newest ``limit`` orders of any status (of ``venue``), newest first."""
        ...

    async def trading_venues(self) -> list[dict]:
        """Every venue: venue, live (trading = "live"), connected, halted (the reason or
        None), last_error, working_orders, last_reconcile (the report or None)."""
        ...

    async def halt(self, venue: str | None = None, reason: str = "") -> list[dict]:
        """The kill switch: refuse new entries at ``venue`` (every venue when None) until
        ``resume``, and cancel its working orders; per venue {venue, cancelled}."""
        ...

    async def resume(self, venue: str | None = None) -> list[str]:
        """Lift the halt of ``venue`` (every halted venue when None); those resumed."""
        ...

    async def alert_rules(self) -> list[dict]:
        """Every rule (``[[alerts.rules]]`` and those added with ``add_alert_rule``):
        name, kind, enabled, paused, source ("config" or "stored"), channels,
        cooldown_s, rule (every field), fired (since the engine started), last_sent_us."""
        ...

    async def alert_history(self, limit: int = 50, rule: str | None = None) -> list[dict]:
        """The newest notices sent (of ``rule``), newest first: ts_us, rule, kind,
        title, text, channels, data."""
        ...

    async def add_alert_rule(self, rule: dict) -> dict:
        """Add (or, by the same name, replace) a rule kept in the store: its
        ``AlertRuleConfig`` fields (name, kind, channels, cooldown_s, the kind's own).
        Checked as the config is (a bad one is a one-line UsageError); a name the config
        file defines is refused (edit it there). Returns the rule as ``alert_rules`` lists
        it."""
        ...

    async def remove_alert_rule(self, name: str) -> None:
        """Remove a stored rule (one from the config file is refused: edit it there)."""
        ...

    async def pause_alert_rule(self, name: str, paused: bool = True) -> dict:
        """Pause (or resume) any rule, from the config or stored; kept across restarts."""
        ...

    async def test_alert(self, name: str) -> list[str]:
        """Send a test notice through rule ``name``'s channels; the channels it went to."""
        ...

    async def wait_venue_ready(self, venue: str, timeout_s: float) -> None:
        """Wait until ``venue`` is connected and reconciled (an engine that has just
        started); an SptraderError with the venue's last error after ``timeout_s``."""
        ...

    async def reconcile(self, venue: str | None = None) -> list[dict]:
        """Reconcile ``venue`` (every live venue when None) with the store now: per
        venue the report (open_orders, fills_checked, adopted_orders, new_fills,
        changed, differences [{kind, detail}], duration_ms)."""
        ...

    async def fills(self, since_us: int | None = None, limit: int | None = None) -> list[dict]:
        """Fills at or after ``since_us``, oldest first (the newest ``limit``)."""
        ...

    async def journal(
        self, day_from: str | None = None, day_to: str | None = None, venue: str | None = None
    ) -> dict:
        """The journal of the UTC days from ``day_from`` to ``day_to`` (both included;
        YYYY-MM-DD, open ends when None), of ``venue``'s trades (every venue's when None;
        each trade says its venue): notes, trades with their P&L, stats,
        cumulative P&L points and a per-day summary (``sptrader.broker.journal``)."""
        ...

    async def equity_curve(
        self,
        start_us: int | None = None,
        end_us: int | None = None,
        timeframe: str = "1h",
        venue: str = "paper",
    ) -> list[dict]:
        """``venue``'s mark-to-market equity (a live venue's: the P&L of its fills on
        record, from 0) per ``timeframe`` bucket opening in
        [start_us, end_us) (default: from the first fill to now), each valued at its end:
        ``ts_us`` (the bucket's open), ``equity``, ``cash``, ``unrealized``, ``exposure``
        (``sptrader.broker.equity``)."""
        ...

    async def add_journal_note(self, text: str, day: str | None = None) -> dict:
        """Store a note about ``day`` (YYYY-MM-DD, default today UTC); the note."""
        ...

    # --- data commands (candles, backfill, data, symbols, export) ---

    async def backfill(
        self,
        instruments: list[str],
        start_us: int,
        end_us: int,
        on_progress: Callable[[BackfillProgressed], None] | None = None,
    ) -> dict[str, BackfillProgressed]:
        """Fetch what is missing of the range (as ``start_backfill``) and wait until it
        is stored; ``on_progress`` sees each report as it comes, on the loop. Returns each
        instrument's last report (state "done" or "failed"); an SptraderError when the
        daemon goes away meanwhile."""
        ...

    async def recent_window(self, instrument: str, timeframe: str, bars: int) -> tuple[int, int]:
        """[start, now): enough open market time back from now for the newest ``bars``
        bars of ``timeframe`` and the one still forming."""
        ...

    async def fetch_missing(
        self, instrument: str, start_us: int, end_us: int, wait_s: float
    ) -> list[tuple[int, int]]:
        """Fetch what is missing of [start, end) for at most ``wait_s`` seconds; returns
        what is still missing. That goes on being fetched in the background: by the
        engine when it keeps running (a daemon's), else by a detached ``sptrader data
        ensure`` started once this client has closed the store."""
        ...

    async def bars_before(
        self, instrument: str, timeframe: str, before_us: int, count: int
    ) -> pl.DataFrame:
        """Up to ``count`` stored bars opening before ``before_us``, the newest of them
        (looking back over gaps): the warm-up of indicators over a range."""
        ...

    async def refresh_symbols(self, feed: str | None = None) -> None:
        """Fetch the instrument lists of the enabled feeds (or of ``feed``) again now;
        a feed that is not enabled is a usage error."""
        ...

    async def unknown_symbols(self, instruments: list[str]) -> tuple[list[str], list[str]]:
        """Those of ``instruments`` missing from their feed's instrument list, and the
        feeds whose list cannot be fetched now ("name: why"; their instruments pass)."""
        ...

    async def import_bars(self, bars: pl.DataFrame) -> dict:
        """Store checked bars (``transfer.load_bars``) in one transaction and record
        them as covered; rows, instruments, first_us, last_us. Only an engine in this
        process takes them: a daemon's raises StoreLockedError (the API carries no
        bars; stop the daemon first)."""
        ...

    # --- trading commands (order, journal, scan, backtest) ---

    async def wait_for_quote(self, instrument: str, timeout_s: float) -> None:
        """Before an order in ``instrument``: an engine started just to stream it
        (``connect(streaming=[instrument])``) has no quote yet, so wait up to
        ``timeout_s`` for its first (an SptraderError naming the feed's state when none
        comes; a symbol its feed does not list is a usage error). An engine that was
        running already (a daemon's) returns at once: its broker rejects an order on
        quotes it cannot trust."""
        ...

    async def history_source(self, instrument: str) -> str | None:
        """The enabled feed that can fetch ``instrument``'s history (its name), or None
        (then a gap in the store stays a gap)."""
        ...

    async def start_backtest(self, request: dict) -> dict:
        """Start a backtest job (``sptrader.backtest.jobs.BacktestRequest`` fields:
        strategy, instrument, start_us, end_us, timeframe, params (``k=v`` texts, ranges
        for a sweep), mode (single, sweep, walk-forward; train, test, anchored), trials,
        objective, seed, top, allow_gaps). Checked at once (a bad one is a one-line
        error); the bars load and the run goes on in the engine's background, in a
        process of its own. Returns the job's status, as ``backtest_job``."""
        ...

    async def backtest_job(self, job_id: int) -> dict:
        """A backtest job's status: job_id, state (loading, running, done, failed,
        cancelled), message, done/total/unit (runs, combinations or folds), error (one
        line), started_us, finished_us, elapsed_s, request, and once done its result
        (summary, equity curve, trades, sweep rows or walk-forward folds). The newest few
        finished jobs are kept; an unknown id is a usage error."""
        ...

    async def cancel_backtest(self, job_id: int) -> dict:
        """Stop a running backtest job (its process and workers); its status."""
        ...
