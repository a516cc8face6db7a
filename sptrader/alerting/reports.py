"""Scheduled reports: the engine's health, the day's P&L per venue and the scanners'
activity, built through an ``EngineClient`` only (so the same report comes from the
daemon, the TUI-hosted engine or a store-only one), rendered for a phone and sent as a
``Notice`` on the ``[[reports]]`` cron schedules.

``build_report`` returns JSON-able data (times as ISO 8601 UTC text); ``render`` makes
text (a few short lines per section), markdown (what both Slack's mrkdwn and Telegram's
Markdown show: ``*bold*``, bullets, names in backticks) or JSON of it.

Sections by kind: ``health`` has the services, stale feeds, coverage of yesterday and
today per watched instrument, the store's size and the scanners' last 24 hours (runs,
signals, skips); ``pnl`` has, per enabled venue, the day's P&L, the trades closed today
and the open positions; ``all`` has both.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import math
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import polars as pl

from sptrader.alerting.notice import Notice
from sptrader.clock import format_us
from sptrader.config import LlmConfig, ReportConfig
from sptrader.errors import SptraderError
from sptrader.formatting import format_price, one_line
from sptrader.models import ServiceState, ServiceStatus
from sptrader.schedule import MAX_SLEEP_S, Clock, CronSchedule, SystemClock
from sptrader.supervisor import Service, ServiceContext

log = logging.getLogger(__name__)

KINDS = ("health", "pnl", "all", "briefing")
#: Hours of each watched instrument's moves a briefing shows the LLM (overnight).
BRIEFING_HOURS = 12
BRIEFING_SYSTEM = (
    "You are a trading desk assistant. From the report below, write a short morning"
    " briefing for the trader: the watchlist's notable overnight moves, the open"
    " positions and the day's P&L, and what the scanners did. Plain text, at most six"
    " short lines, no advice beyond what the data shows."
)
FORMATS = ("text", "markdown", "json")
SERVICE_NAME = "reports"

US_PER_DAY = 86_400_000_000
#: Scanner runs and signals looked at (the newest); a day of "* * * * *" is 1440 runs.
MAX_RUNS = 2000
#: Runs whose skip reasons are read (one call each): the newest with skips.
MAX_RUNS_WITH_SKIPS = 20
#: Rows of a list (trades, positions, signals) shown in text and markdown.
MAX_LINES = 5
#: Service states a trader should hear about.
TROUBLE = {ServiceState.FAILED, ServiceState.BACKOFF, ServiceState.STALE}


# --- what a report reads -------------------------------------------------------------
# Spelled out here rather than imported: sptrader.client (through the engine and the
# scanners) imports sptrader.alerting, and the import contract forbids the
# cycle. Every EngineClient (sptrader.client.protocol) is one of these.


class ReportClient(Protocol):
    """The part of ``sptrader.client.protocol.EngineClient`` a report uses."""

    @property
    def mode(self) -> str: ...

    @property
    def watchlist(self) -> list[str]: ...

    attached: bool

    async def services(self) -> list[ServiceStatus]: ...

    async def stale_instruments(self) -> set[str]: ...

    async def data_status(
        self, instruments: list[str] | None, start_us: int, end_us: int
    ) -> list[dict]: ...

    async def status(self) -> dict: ...

    async def runs(self, last: int = 20) -> list[dict]: ...

    async def run_steps(self, run_id: int) -> list[dict]: ...

    async def recent_signals(self, limit: int = 50) -> list[dict]: ...

    async def trading_venues(self) -> list[dict]: ...

    async def candles(
        self,
        instrument: str,
        timeframe: str,
        *,
        last: int | None = None,
        start_us: int | None = None,
        end_us: int | None = None,
    ) -> pl.DataFrame: ...

    async def account(self, venue: str = "paper") -> dict: ...

    async def journal(
        self, day_from: str | None = None, day_to: str | None = None, venue: str | None = None
    ) -> dict: ...

    async def positions(self, venue: str | None = None) -> list[dict]: ...

    async def price_decimals(self, instruments: list[str]) -> dict[str, int]: ...


# --- building -------------------------------------------------------------------------


async def build_report(
    client: ReportClient, kind: str, now_us: int, llm: LlmConfig | None = None
) -> dict[str, Any]:
    """The report of ``kind`` (health, pnl, all or briefing) as of ``now_us``, through
    ``client``. A briefing is everything plus the watchlist's overnight moves, and the
    ``llm``'s summary of it (``briefing``; ``briefing_error`` when there is none: the
    report still goes out)."""
    if kind not in KINDS:
        raise ValueError(f"unknown report kind {kind!r} (kinds: {', '.join(KINDS)})")
    report: dict[str, Any] = {
        "kind": kind,
        "generated": format_us(now_us),
        "day": _day_of(now_us),
        "engine": client.mode,
        "attached": client.attached,
    }
    if kind in ("health", "all", "briefing"):
        report["health"] = await _health(client, now_us)
        report["scanners"] = await _scanner_activity(client, now_us)
    if kind in ("pnl", "all", "briefing"):
        report["pnl"] = await _pnl(client, now_us)
    if kind == "briefing":
        report["moves"] = await _moves(client)
        await _brief(report, llm)
    return report


async def _moves(client: ReportClient) -> list[dict[str, Any]]:
    """Each watched instrument's change over the last BRIEFING_HOURS hourly bars."""
    moves = []
    for instrument in list(client.watchlist):
        bars = await client.candles(instrument, "1h", last=BRIEFING_HOURS)
        if bars.is_empty():
            continue
        first, last = bars["open"][0], bars["close"][-1]
        moves.append(
            {
                "instrument": instrument,
                "hours": bars.height,
                "open": first,
                "close": last,
                "change_pct": (last / first - 1) * 100 if first else None,
                "high": bars["high"].max(),
                "low": bars["low"].min(),
            }
        )
    return moves


async def _brief(report: dict[str, Any], llm: LlmConfig | None) -> None:
    """The LLM's summary of ``report`` (what it was shown: the report's text)."""
    from sptrader.llm import chat

    if llm is None or not llm.enabled:
        report["briefing_error"] = "no LLM: set [llm] enabled = true for briefings"
        return
    shown = render(report, "text")
    try:
        reply = await asyncio.to_thread(chat, llm, BRIEFING_SYSTEM, shown)
    except SptraderError as error:
        report["briefing_error"] = str(error)
        return
    report["briefing"] = reply.text.strip()
    report["briefing_tokens"] = [reply.tokens_in, reply.tokens_out]
    report["briefing_latency_ms"] = round(reply.latency_ms)


def _day_of(ts_us: int) -> str:
    return datetime.fromtimestamp(ts_us / 1_000_000, UTC).date().isoformat()


def _day_start_us(ts_us: int) -> int:
    return ts_us - ts_us % US_PER_DAY


async def _health(client: ReportClient, now_us: int) -> dict[str, Any]:
    services = [
        {
            "name": status.name,
            "kind": status.kind,
            "state": str(status.state),
            "errors": status.errors,
            "restarts": status.restarts,
            "last_error": one_line(status.last_error, 200),
        }
        for status in await client.services()
    ]
    # Without a running engine (a store-only one answers) nothing streams: every feed
    # would be "stale", which says nothing the first line does not.
    streaming = any(service["state"] != str(ServiceState.STOPPED) for service in services)
    stale = sorted(await client.stale_instruments()) if streaming else []
    watched = list(client.watchlist)
    # Yesterday (a whole UTC day) and today so far: coverage of open market time.
    start = _day_start_us(now_us) - US_PER_DAY
    coverage = []
    for row in await client.data_status(watched, start, now_us) if watched else []:
        days = list(row.get("days") or [])
        missing_us = sum(end - begin for begin, end in row.get("gaps") or [])
        coverage.append(
            {
                "instrument": row["instrument"],
                "yesterday_pct": _pct(days[0]) if days else None,
                "today_pct": _pct(days[1]) if len(days) > 1 else None,
                "gaps": len(row.get("gaps") or []),
                "missing_minutes": round(missing_us / 60_000_000),
                "last_bar": None if row.get("last_us") is None else format_us(row["last_us"]),
            }
        )
    status = await client.status()
    return {
        "streaming": streaming,
        "services": services,
        "trouble": [service["name"] for service in services if service["state"] in TROUBLE],
        "stale_feeds": stale,
        "coverage": coverage,
        "store_bytes": (status.get("store") or {}).get("size_bytes"),
    }


def _pct(share: float | None) -> float | None:
    """A day's covered share as a percentage; None for a closed day (-1) or none."""
    if share is None or share < 0:
        return None
    return round(share * 100, 1)


async def _scanner_activity(client: ReportClient, now_us: int) -> dict[str, Any]:
    since = now_us - US_PER_DAY
    runs = [run for run in await client.runs(MAX_RUNS) if (run.get("started_us") or 0) >= since]
    signals = [
        signal
        for signal in await client.recent_signals(MAX_RUNS)
        if (signal.get("created_us") or 0) >= since
    ]
    per_scanner: dict[str, dict[str, Any]] = {}
    for run in runs:  # newest first
        entry = per_scanner.setdefault(
            run["scanner"],
            {
                "scanner": run["scanner"],
                "runs": 0,
                "failed": 0,
                "signals": 0,
                "skipped": 0,
                "last_status": run["status"],
                "last_error": one_line(run.get("error") or "", 200),
                "skips": {},
            },
        )
        entry["runs"] += 1
        entry["failed"] += run["status"] == "failed"
        entry["signals"] += run.get("signals") or 0
        entry["skipped"] += run.get("skipped") or 0
    with_skips = [run for run in runs if run.get("skipped")][:MAX_RUNS_WITH_SKIPS]
    for run in with_skips:
        skips = per_scanner[run["scanner"]]["skips"]
        for step in await client.run_steps(run["run_id"]):
            if step.get("step") == "skip" and step.get("instrument") not in skips:
                skips[step["instrument"]] = step.get("output_summary") or ""
    return {
        "since": format_us(since),
        "runs": len(runs),
        "failed": sum(entry["failed"] for entry in per_scanner.values()),
        "skipped": sum(entry["skipped"] for entry in per_scanner.values()),
        "per_scanner": list(per_scanner.values()),
        "signals": [
            {
                "scanner": signal["scanner"],
                "instrument": signal["instrument"],
                "side": signal["side"],
                "reason": signal.get("reason") or "",
                "bar": format_us(signal["ts_us"]),
            }
            for signal in signals
        ],
    }


async def _pnl(client: ReportClient, now_us: int) -> dict[str, Any]:
    day = _day_of(now_us)
    venues = []
    for venue in await client.trading_venues():
        if not (venue.get("enabled", True) or venue.get("live")):
            continue
        venues.append(await _venue_pnl(client, venue["venue"], day))
    instruments = {row["instrument"] for venue in venues for row in venue["positions"]}
    decimals = await client.price_decimals(sorted(instruments)) if instruments else {}
    return {"day": day, "venues": venues, "price_decimals": decimals}


async def _venue_pnl(client: ReportClient, venue: str, day: str) -> dict[str, Any]:
    entry: dict[str, Any] = {"venue": venue, "error": "", "trades": [], "positions": []}
    try:
        account = await client.account(venue)
        journal = await client.journal(day, day, venue)
        positions = await client.positions(venue)
    except SptraderError as error:  # a live venue not connected here: said, not fatal
        entry["error"] = one_line(str(error), 200)
        return entry
    stats = journal.get("stats") or {}
    entry.update(
        currency=account.get("currency", ""),
        day_pnl=account.get("day_pnl"),
        equity=account.get("equity"),
        realized=account.get("realized"),
        unrealized=account.get("unrealized"),
        fees=account.get("fees"),
        halted=account.get("halted"),
        closed_trades=stats.get("trades", 0),
        wins=stats.get("wins", 0),
        losses=stats.get("losses", 0),
        closed_pnl=stats.get("net_pnl", 0.0),
    )
    entry["trades"] = [
        {
            "instrument": trade["instrument"],
            "side": trade["side"],
            "qty": trade["qty"],
            "pnl": trade["pnl"],
            "fees": trade.get("fees"),
            "exit": format_us(trade["exit_time_us"]),
        }
        for trade in journal.get("trades") or []
    ]
    entry["positions"] = [
        {
            "instrument": position["instrument"],
            "side": position["side"],
            "qty": position["qty"],
            "avg_price": position.get("avg_price"),
            "mark": position.get("mark"),
            "unrealized": position.get("unrealized"),
        }
        for position in positions
    ]
    return entry


# --- rendering ------------------------------------------------------------------------


def render(report: dict[str, Any], format: str = "text") -> str:
    if format == "json":
        return json.dumps(_clean(report), allow_nan=False)
    if format not in FORMATS:
        raise ValueError(f"unknown report format {format!r} (formats: {', '.join(FORMATS)})")
    style = _Markdown() if format == "markdown" else _Text()
    lines = [style.title(f"SPtrader {report['kind']} report · {_short_time(report)}")]
    if report.get("briefing"):
        lines += [report["briefing"], ""]
    elif report.get("briefing_error"):
        lines.append(f"briefing unavailable: {report['briefing_error']}")
    lines.append(f"engine: {report['engine']}")
    if report.get("moves"):
        lines += _move_lines(report["moves"], style)
    if "health" in report:
        lines += _health_lines(report["health"], style)
    if "scanners" in report:
        lines += _scanner_lines(report["scanners"], style)
    if "pnl" in report:
        lines += _pnl_lines(report["pnl"], style)
    return "\n".join(lines)


def _move_lines(moves: list[dict[str, Any]], style: _Text | _Markdown) -> list[str]:
    lines = [style.section(f"Moves (last {BRIEFING_HOURS}h)")]
    for move in moves:
        change = move["change_pct"]
        shown = "?" if change is None else f"{change:+.2f}%"
        lines.append(
            f"{style.bullet}{style.name(move['instrument'])} {shown} over {move['hours']}h"
        )
    return lines


def _clean(value: Any) -> Any:
    """JSON-able without float noise (12 significant digits) or non-finite numbers."""
    if isinstance(value, dict):
        return {key: _clean(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(item) for item in value]
    if isinstance(value, float):
        return float(f"{value:.12g}") if math.isfinite(value) else None
    return value


def _short_time(report: dict[str, Any]) -> str:
    return report["generated"].replace("T", " ")[:16] + "Z"


class _Text:
    bullet = "  "
    sub = "    "

    def title(self, text: str) -> str:
        return text

    def section(self, text: str) -> str:
        return text

    def name(self, text: str) -> str:
        return text


class _Markdown:
    bullet = "• "
    sub = "    ◦ "

    def title(self, text: str) -> str:
        return f"*{text}*"

    def section(self, text: str) -> str:
        return f"*{text}*"

    def name(self, text: str) -> str:
        # A code span: underscores and asterisks in names and errors stay literal in
        # both Slack's mrkdwn and Telegram's Markdown (which has no escapes for them).
        return "`" + text.replace("`", "'") + "`"


def _money(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "-"
    if abs(value) < 0.005:
        value = 0.0
    return f"{value:+,.2f}" if signed else f"{value:,.2f}"


def _qty(value: float) -> str:
    text = f"{value:,.8f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def _size(size: int | None) -> str:
    if size is None:
        return "unknown"
    amount = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if amount < 1024 or unit == "GB":
            return f"{amount:,.0f} {unit}" if unit == "B" else f"{amount:,.1f} {unit}"
        amount /= 1024
    return f"{amount:,.1f} TB"


def _health_lines(health: dict[str, Any], style: _Text | _Markdown) -> list[str]:
    lines = [style.section("Health")]
    b = style.bullet
    services = health["services"]
    if not health["streaming"]:
        lines.append(f"{b}no engine running here: nothing streams")
    else:
        running = sum(service["state"] == str(ServiceState.RUNNING) for service in services)
        lines.append(f"{b}services: {running}/{len(services)} running")
    for service in services:
        if service["state"] in TROUBLE:
            why = f": {style.name(service['last_error'])}" if service["last_error"] else ""
            lines.append(f"{b}{style.name(service['name'])} {service['state']}{why}")
    if health["stale_feeds"]:
        names = ", ".join(style.name(name) for name in health["stale_feeds"])
        lines.append(f"{b}stale: {names}")
    # The least covered first: on a phone the list is cut after MAX_LINES.
    rows = sorted(health["coverage"], key=lambda row: (row["today_pct"] or 0, -row["gaps"]))
    for row in rows[:MAX_LINES]:
        gaps = (
            f", {_count(row['gaps'], 'gap')} ({row['missing_minutes']} min)" if row["gaps"] else ""
        )
        lines.append(
            f"{b}{style.name(row['instrument'])} covered yesterday {_percent(row['yesterday_pct'])}"
            f", today {_percent(row['today_pct'])}{gaps}"
        )
    lines += _more(rows, "instruments", style)
    lines.append(f"{b}store: {_size(health['store_bytes'])}")
    return lines


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def _percent(value: float | None) -> str:
    return "closed" if value is None else f"{value:g}%"


def _scanner_lines(activity: dict[str, Any], style: _Text | _Markdown) -> list[str]:
    b = style.bullet
    lines = [style.section("Scanners (24h)")]
    if not activity["runs"]:
        return [*lines, f"{b}no runs"]
    lines.append(
        f"{b}{_count(activity['runs'], 'run')}, {activity['failed']} failed,"
        f" {_count(len(activity['signals']), 'signal')}, {activity['skipped']} skipped"
    )
    for entry in activity["per_scanner"]:
        text = f"{b}{style.name(entry['scanner'])}: {_count(entry['runs'], 'run')}, last {entry['last_status']}"
        if entry["last_status"] == "failed" and entry["last_error"]:
            text += f" ({style.name(entry['last_error'])})"
        lines.append(text)
        for instrument, reason in list(entry["skips"].items())[:3]:
            lines.append(f"{style.sub}skipped {style.name(instrument)}: {style.name(reason)}")
    for signal in activity["signals"][:MAX_LINES]:
        lines.append(
            f"{b}signal {signal['side']} {style.name(signal['instrument'])}"
            f" ({style.name(signal['scanner'])}) {signal['bar'][11:16]}Z"
        )
    return lines + _more(activity["signals"], "signals", style)


def _more(rows: list[Any], what: str, style: _Text | _Markdown) -> list[str]:
    """The line saying how many rows a phone-sized list left out (the JSON has them)."""
    if len(rows) <= MAX_LINES:
        return []
    return [f"{style.sub}… {len(rows) - MAX_LINES} more {what}"]


def _pnl_lines(pnl: dict[str, Any], style: _Text | _Markdown) -> list[str]:
    b = style.bullet
    lines = [style.section(f"P&L {pnl['day']}")]
    if not pnl["venues"]:
        return [*lines, f"{b}no trading venue enabled"]
    decimals = pnl.get("price_decimals") or {}
    for venue in pnl["venues"]:
        name = style.name(venue["venue"])
        if venue["error"]:
            lines.append(f"{b}{name}: {style.name(venue['error'])}")
            continue
        currency = venue["currency"]
        halted = " (halted)" if venue.get("halted") else ""
        lines.append(
            f"{b}{name}{halted}: day {_money(venue['day_pnl'], signed=True)} {currency},"
            f" equity {_money(venue['equity'])}"
        )
        if venue["closed_trades"]:
            lines.append(
                f"{b}{venue['closed_trades']} closed today ({venue['wins']} won):"
                f" {_money(venue['closed_pnl'], signed=True)}"
            )
        for trade in venue["trades"][:MAX_LINES]:
            lines.append(
                f"{style.sub}{trade['side']} {_qty(trade['qty'])} {style.name(trade['instrument'])}"
                f" {_money(trade['pnl'], signed=True)} at {trade['exit'][11:16]}Z"
            )
        lines += _more(venue["trades"], "trades", style)
        if venue["positions"]:
            lines.append(f"{b}{len(venue['positions'])} open:")
        for position in venue["positions"][:MAX_LINES]:
            digits = decimals.get(position["instrument"])
            lines.append(
                f"{style.sub}{position['side']} {_qty(position['qty'])}"
                f" {style.name(position['instrument'])}"
                f" @ {format_price(position['avg_price'], digits)},"
                f" {_money(position['unrealized'], signed=True)}"
            )
        lines += _more(venue["positions"], "positions", style)
    return lines


def headline(report: dict[str, Any]) -> str:
    """One line for a notice's title: the day's P&L and how many things need a look."""
    parts = [f"SPtrader {report['kind']} report {_short_time(report)[11:]}"]
    for venue in (report.get("pnl") or {}).get("venues", []):
        if not venue["error"]:
            money = _money(venue["day_pnl"], signed=True)
            parts.append(f"{venue['venue']} {money} {venue['currency']}")
    health = report.get("health")
    if health is not None:
        trouble = len(health["trouble"]) + len(health["stale_feeds"])
        parts.append(f"{trouble} problems" if trouble else "all healthy")
    return " · ".join(parts)


def report_notice(report: dict[str, Any], format: str = "text") -> Notice:
    """The report as a notice (kind "report"): ``text`` rendered in ``format``, the
    report itself in ``data``."""
    generated = datetime.strptime(report["generated"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    return Notice(
        kind="report",
        title=headline(report),
        text=render(report, format),
        ts_us=int(generated.timestamp()) * 1_000_000,
        data=_clean(report),
    )


# --- the schedule (sptrader.schedule: the scanners' cron and clock rules) ------------

#: Hands a notice to the channels named (Engine.deliver_notice); may be a coroutine.
Deliver = Callable[[Notice, list[str]], Awaitable[None] | None]


class ReportScheduler(Service):
    """Service "reports": each enabled ``[[reports]]`` entry fires at its cron times
    (UTC); its report is built through ``client`` and handed to ``deliver``. A build or
    delivery that fails is logged and counted (``reports_failed``,
    ``deliveries_failed``) and the schedule goes on. Fire times missed while the machine
    slept are folded into one report (counted in ``coalesced``)."""

    kind = "reports"

    def __init__(
        self,
        reports: list[ReportConfig],
        client: ReportClient,
        deliver: Deliver,
        *,
        clock: Clock | None = None,
        format: str = "text",
        llm: LlmConfig | None = None,
    ) -> None:
        super().__init__(SERVICE_NAME)
        #: The endpoint a briefing asks ([llm]).
        self.llm = llm
        self.reports = [report for report in reports if report.enabled]
        self.client = client
        self.deliver = deliver
        self.clock: Clock = clock or SystemClock()
        self.format = format
        self.schedules = {report.name: CronSchedule(report.schedule) for report in self.reports}
        #: Each report's next fire time (empty while stopped).
        self.next_due: dict[str, datetime] = {}
        self.context: ServiceContext | None = None
        self._tasks: dict[str, asyncio.Task[Notice | None]] = {}

    async def run(self, context: ServiceContext) -> None:
        self.context = context
        context.mark_running()
        now = self.clock.now()
        self.next_due = {
            name: due
            for name, schedule in self.schedules.items()
            if (due := schedule.next_after(now)) is not None
        }
        try:
            while self.next_due:
                await self._sleep_until(min(self.next_due.values()))
                now = self.clock.now()
                for report in self.reports:
                    due = self.next_due.get(report.name)
                    if due is None or due > now:
                        continue
                    self._fire(report, due, now)
                    following = self.schedules[report.name].next_after(now)
                    if following is None:
                        del self.next_due[report.name]
                    else:
                        self.next_due[report.name] = following
        finally:
            self.next_due = {}
            tasks, self._tasks = list(self._tasks.values()), {}
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _sleep_until(self, due: datetime) -> None:
        while (left := (due - self.clock.now()).total_seconds()) > 0:
            await self.clock.sleep(min(left, MAX_SLEEP_S))

    def _fire(self, report: ReportConfig, due: datetime, now: datetime) -> None:
        missed = self.schedules[report.name].count_between(due, now)
        if missed:
            self._count("coalesced", missed)
        running = self._tasks.get(report.name)
        if running is not None and not running.done():
            self._count("skipped_overlap")
            log.warning(
                "report %r due at %s skipped: the previous one is still being built",
                report.name,
                due.strftime("%H:%M"),
                extra={"source": self.name},
            )
            return
        self._tasks[report.name] = asyncio.get_running_loop().create_task(
            self.send(report, _to_us(now if missed else due)), name=f"report:{report.name}"
        )

    async def send(self, report: ReportConfig, at_us: int) -> Notice | None:
        """Build ``report`` as of ``at_us`` and deliver it; None when that failed."""
        try:
            data = await build_report(self.client, report.kind, at_us, self.llm)
            data["name"] = report.name
            notice = report_notice(data, self.format)
        except asyncio.CancelledError:
            raise
        except Exception as error:  # one bad report must never end the schedule
            self._count("reports_failed")
            log.error(
                "report %r failed: %s",
                report.name,
                error,
                exc_info=error,
                extra={"source": self.name},
            )
            return None
        try:
            outcome = self.deliver(notice, list(report.channels))
            if inspect.isawaitable(outcome):
                await outcome
        except asyncio.CancelledError:
            raise
        except Exception as error:
            self._count("deliveries_failed")
            log.error(
                "report %r was not delivered: %s",
                report.name,
                error,
                exc_info=error,
                extra={"source": self.name},
            )
            return None
        self._count("reports_sent")
        return notice

    def _count(self, counter: str, amount: int = 1) -> None:
        if self.context is not None:
            self.context.count(counter, amount)


def _to_us(moment: datetime) -> int:
    return int((moment - datetime(1970, 1, 1, tzinfo=UTC)) / timedelta(microseconds=1))
