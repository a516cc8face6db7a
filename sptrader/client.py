"""EngineClient: everything a screen may ask of the engine.

Screens never touch DuckDB or sockets; they use this interface. ``LocalEngineClient``
runs against an Engine in the same process; a remote one (attached to a daemon) will
implement the same methods.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import polars as pl

from sptrader.bus import Subscription
from sptrader.clock import now_us
from sptrader.engine import Engine
from sptrader.feeds.base import SymbolInfo
from sptrader.models import (
    US_PER_DAY,
    Bar,
    ServiceState,
    ServiceStatus,
)
from sptrader.store import Store, queries
from sptrader.threads import run_in_thread


@dataclass(slots=True)
class InstrumentSummary:
    """What a watchlist row needs before live ticks arrive."""

    instrument: str
    session_open: float | None
    last: float | None
    closes: list[float] = field(default_factory=list)


class EngineClient(Protocol):
    """What screens may ask of an engine, local or (later) attached over the API."""

    @property
    def mode(self) -> str:
        """Shown in the header: "local engine" or "attached to daemon pid N"."""
        ...

    @property
    def watchlist(self) -> list[str]: ...

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


def last_runs(store: Store) -> dict[str, dict]:
    """The newest run of every scanner, by scanner name. Blocking."""
    frame = (
        store.cursor()
        .sql(
            "SELECT scanner, arg_max(run_id, run_id) AS last_run_id,"
            " arg_max(status, run_id) AS last_status,"
            " arg_max(duration_ms, run_id) AS last_duration_ms,"
            " arg_max(epoch_us(started), run_id) AS last_started_us"
            " FROM scan_runs GROUP BY scanner"
        )
        .pl()
    )
    return {row["scanner"]: row for row in frame.to_dicts()}


def recent_signals(store: Store, limit: int) -> list[dict]:
    """The newest ``limit`` signals, newest first. Blocking."""
    return (
        store.cursor()
        .sql(
            "SELECT run_id, scanner, instrument, epoch_us(ts) AS ts_us, side, strength, reason,"
            " stop, target, epoch_us(created) AS created_us FROM signals"
            " ORDER BY created DESC, run_id DESC, instrument LIMIT ?",
            params=[limit],
        )
        .pl()
        .to_dicts()
    )


def run_steps(store: Store, run_id: int) -> list[dict]:
    """A run's lineage steps in order. Blocking."""
    from sptrader.scanners import lineage

    _, steps, _ = lineage.run_detail(store, run_id)
    return steps.to_dicts()


class LocalEngineClient:
    """EngineClient for an Engine running in this process."""

    mode = "local engine"

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    async def start(self) -> None:
        await self.engine.start()

    async def close(self) -> None:
        await self.engine.stop()

    @property
    def watchlist(self) -> list[str]:
        return list(self.engine.watchlist)

    def subscribe(self, name: str, maxsize: int) -> Subscription:
        """A lossy (drop-oldest) subscription to every engine event."""
        return self.engine.subscribe(name, maxsize)

    async def services(self) -> list[ServiceStatus]:
        return self.engine.supervisor.status()

    async def start_service(self, name: str) -> None:
        self.engine.supervisor.start(name)

    async def stop_service(self, name: str) -> None:
        await self.engine.supervisor.stop(name)

    async def restart_service(self, name: str) -> None:
        await self.engine.supervisor.restart(name)

    async def candles(
        self,
        instrument: str,
        timeframe: str,
        *,
        last: int | None = None,
        start_us: int | None = None,
        end_us: int | None = None,
    ) -> pl.DataFrame:
        store = self.engine.require_store()

        def read() -> pl.DataFrame:
            if last is not None:
                return queries.last_bars(store, instrument, timeframe, last)
            return queries.bars_between(store, instrument, timeframe, start_us, end_us)

        return await run_in_thread(read)

    def forming_bar(self, instrument: str) -> Bar | None:
        return self.engine.forming_bar(instrument)

    async def stale_instruments(self) -> set[str]:
        return self.engine.stale_instruments()

    async def search_symbols(
        self, query: str, feed: str | None = None, limit: int = 50
    ) -> list[SymbolInfo]:
        return await run_in_thread(self.engine.symbols.search, query, feed, limit)

    async def add_instrument(self, instrument: str) -> str:
        return await self.engine.add_instrument(instrument)

    async def remove_instrument(self, instrument: str) -> None:
        await self.engine.remove_instrument(instrument)

    async def start_backfill(self, instruments: list[str], start_us: int, end_us: int) -> None:
        self.engine.start_backfill(instruments, start_us, end_us)

    async def data_gaps(self, instrument: str, start_us: int, end_us: int) -> list[tuple[int, int]]:
        return await run_in_thread(self.engine.data.gaps, instrument, start_us, end_us)

    async def data_status(
        self, instruments: list[str] | None, start_us: int, end_us: int
    ) -> list[dict]:
        return await run_in_thread(self.engine.data.statuses, instruments, start_us, end_us)

    async def summaries(self, instruments: list[str], points: int) -> dict[str, InstrumentSummary]:
        """Session open (first 1m bar of the UTC day), last close and the last ``points``
        1m closes of each instrument."""
        store = self.engine.require_store()
        now = now_us()
        day_start = now - now % US_PER_DAY
        since = min(day_start, now - (points + 1) * 60_000_000)

        def read() -> dict[str, InstrumentSummary]:
            frame = queries.recent_closes(store, instruments, since)
            result = {name: InstrumentSummary(name, None, None) for name in instruments}
            for (name,), rows in frame.partition_by("instrument", as_dict=True).items():
                today = rows.filter(pl.col("ts") >= pl.lit(day_start).cast(pl.Datetime("us")))
                result[name] = InstrumentSummary(
                    name,
                    today["open"][0] if today.height else None,
                    rows["close"][-1],
                    rows["close"].tail(points).to_list(),
                )
            return result

        return await run_in_thread(read)

    # --- scanners ---------------------------------------------------------------------

    async def scanners(self) -> list[dict]:
        store = self.engine.require_store()
        runs = await run_in_thread(last_runs, store)
        states = {status.name: status.state for status in self.engine.supervisor.status()}
        result = []
        for name, service in self.engine.scanners.items():
            config = service.config
            last = runs.get(name, {})
            result.append(
                {
                    "name": name,
                    "strategy": config.strategy,
                    "instruments": list(config.instruments),
                    "timeframe": config.timeframe,
                    "schedule": config.schedule,
                    "next_run_us": (
                        int(service.next_due.timestamp() * 1_000_000) if service.next_due else None
                    ),
                    "paused": states.get(service.name) == ServiceState.STOPPED,
                    "last_run_id": last.get("last_run_id"),
                    "last_status": last.get("last_status"),
                    "last_duration_ms": last.get("last_duration_ms"),
                    "last_started_us": last.get("last_started_us"),
                }
            )
        return result

    async def run_scanner(self, name: str) -> dict:
        result = await self.engine.run_scanner(name)
        return {
            "run_id": result.run_id,
            "status": result.status,
            "signals": len(result.signals),
            "error": result.error,
        }

    def _scanner_service(self, name: str) -> str:
        from sptrader.scanners.service import find_scanner

        return find_scanner(self.engine.scanners, name).name

    async def pause_scanner(self, name: str) -> None:
        await self.engine.supervisor.stop(self._scanner_service(name))

    async def resume_scanner(self, name: str) -> None:
        self.engine.supervisor.start(self._scanner_service(name))

    async def recent_signals(self, limit: int = 50) -> list[dict]:
        return await run_in_thread(recent_signals, self.engine.require_store(), limit)

    async def run_steps(self, run_id: int) -> list[dict]:
        return await run_in_thread(run_steps, self.engine.require_store(), run_id)
