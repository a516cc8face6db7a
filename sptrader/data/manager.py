"""The data manager: for any instrument and range, what is stored, what is missing
(open market hours no coverage holds), and fetching exactly that."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from sptrader.backfill import InFlight
from sptrader.clock import now_us
from sptrader.config import DataConfig, LakeConfig
from sptrader.feeds.registry import ALWAYS_OPEN_KINDS, market_kind
from sptrader.intervals import Interval, clip, merge, subtract, total
from sptrader.models import US_PER_DAY, US_PER_MINUTE
from sptrader.sessions import KIND_SESSIONS, open_ranges, parse_week_time
from sptrader.store import Store

log = logging.getLogger(__name__)


@dataclass(slots=True)
class DataStatus:
    """One instrument's row in `sptrader data status` and the Data screen."""

    instrument: str
    source: str
    first_us: int | None
    last_us: int | None
    bars: int
    coverage_pct: float  # of the window's open market time
    gaps: list[Interval]
    days: list[float]  # per UTC day of the window: share of open time covered (-1: closed)


def lake_coverage(config: LakeConfig, home: Any = None) -> dict[str, Any]:
    """What the ``[lake]`` holds per instrument (first and last bar, rows, days), from
    its Delta log; empty when no ``uri`` is set. Raises LakeError when it cannot be
    read."""
    if not config.uri.strip():
        return {}
    from sptrader.lake.read import coverage  # deltalake: only when a lake is set

    return {row.instrument: row for row in coverage(config, home=home)}


class DataManager:
    """Blocking methods: call them from a thread when a loop is running.

    ``store`` returns the open store (raising when it is not); ``store_if_open`` the
    store or None, for market hours, which do without it; ``watchlist`` the watched
    instruments (the status of everything lists them first)."""

    def __init__(
        self,
        config: DataConfig,
        *,
        store: Callable[[], Store],
        store_if_open: Callable[[], Store | None],
        watchlist: Callable[[], list[str]],
    ) -> None:
        self.config = config
        self._store = store
        self._store_if_open = store_if_open
        self._watchlist = watchlist
        self.in_flight = InFlight()
        self._fx_close = parse_week_time(config.fx_week_close, "data.fx_week_close")
        self._fx_open = parse_week_time(config.fx_week_open, "data.fx_week_open")

    # --- market hours -----------------------------------------------------------------

    def kind_of(self, instrument: str) -> str:
        return market_kind(instrument, self._listed_kind(instrument))

    def _listed_kind(self, instrument: str) -> str | None:
        """The kind the cached symbol lists give ``instrument`` (None: not listed)."""
        store = self._store_if_open()
        if store is None:
            return None
        rows = (
            store.cursor()
            .execute("SELECT kind FROM symbols WHERE instrument = ? LIMIT 1", [instrument])
            .fetchall()
        )
        return rows[0][0] if rows else None

    def session_of(self, instrument: str) -> str:
        """The config's session for the instrument or its kind, else the kind's usual
        one; the simulator never closes."""
        if instrument in self.config.sessions:
            return self.config.sessions[instrument]
        return self._session_of_kind(self.kind_of(instrument))

    def _session_of_kind(self, kind: str) -> str:
        sessions = self.config.sessions
        if kind in sessions:
            return sessions[kind]
        if kind in ALWAYS_OPEN_KINDS:
            return "24x7"
        return KIND_SESSIONS.get(kind, "24x7")

    def open_ranges(self, instrument: str, start_us: int, end_us: int) -> list[Interval]:
        return open_ranges(
            self.session_of(instrument),
            start_us,
            end_us,
            fx_close_us=self._fx_close,
            fx_open_us=self._fx_open,
        )

    # --- what is missing --------------------------------------------------------------

    def gaps(self, instrument: str, start_us: int, end_us: int) -> list[Interval]:
        """Open market time in [start, end) that no stored range covers. The current
        minute and the future are never gaps."""
        now = now_us()
        end_us = min(end_us, now - now % US_PER_MINUTE)
        opened = self.open_ranges(instrument, start_us, end_us)
        # Whole minutes only: a session opening at :30 s would leave slivers.
        opened = [
            (start - start % US_PER_MINUTE, -(-end // US_PER_MINUTE) * US_PER_MINUTE)
            for start, end in opened
        ]
        store = self._store()
        return clip(subtract(opened, store.coverage(instrument)), start_us, end_us)

    def gaps_many(
        self, instruments: list[str], start_us: int, end_us: int
    ) -> dict[str, list[Interval]]:
        """:meth:`gaps` of each instrument, with two queries in all (the instruments'
        kinds and their coverage) instead of two per instrument."""
        names = list(dict.fromkeys(instruments))
        if not names:
            return {}
        now = now_us()
        end_us = min(end_us, now - now % US_PER_MINUTE)
        cursor = self._store().cursor()
        listed: dict[str, str] = {}
        rows = cursor.execute(
            "SELECT instrument, kind FROM symbols WHERE instrument IN (SELECT unnest(?))",
            [names],
        ).fetchall()
        for name, kind in rows:
            listed.setdefault(name, kind)
        covered: dict[str, list[Interval]] = {}
        rows = cursor.execute(
            "SELECT instrument, epoch_us(start_ts), epoch_us(end_ts) FROM coverage"
            " WHERE timeframe = '1m' AND instrument IN (SELECT unnest(?))",
            [names],
        ).fetchall()
        for name, start, end in rows:
            covered.setdefault(name, []).append((start, end))
        result: dict[str, list[Interval]] = {}
        for name in names:
            opened = open_ranges(
                self._session_with(name, listed.get(name)),
                start_us,
                end_us,
                fx_close_us=self._fx_close,
                fx_open_us=self._fx_open,
            )
            opened = [
                (start - start % US_PER_MINUTE, -(-end // US_PER_MINUTE) * US_PER_MINUTE)
                for start, end in opened
            ]
            result[name] = clip(subtract(opened, merge(covered.get(name, []))), start_us, end_us)
        return result

    def _session_with(self, instrument: str, listed_kind: str | None) -> str:
        """:meth:`session_of`, given the kind the symbols table lists (None: none)."""
        if instrument in self.config.sessions:
            return self.config.sessions[instrument]
        return self._session_of_kind(market_kind(instrument, listed_kind))

    def status(self, instrument: str, start_us: int, end_us: int) -> DataStatus:
        store = self._store()
        first, last, bars = (
            store.cursor()
            .execute(
                "SELECT epoch_us(min(ts)), epoch_us(max(ts)), count(*) FROM bars_1m"
                " WHERE instrument = ?",
                [instrument],
            )
            .fetchall()[0]
        )
        now = now_us()
        window_end = min(end_us, now - now % US_PER_MINUTE)
        opened = self.open_ranges(instrument, start_us, window_end)
        gaps = self.gaps(instrument, start_us, window_end)
        open_time = total(opened)
        covered = 100.0 if open_time == 0 else 100.0 * (1 - total(gaps) / open_time)
        sources = (
            store.cursor()
            .execute(
                "SELECT DISTINCT source FROM coverage WHERE instrument = ? ORDER BY 1",
                [instrument],
            )
            .fetchall()
        )
        return DataStatus(
            instrument,
            ", ".join(row[0] for row in sources),
            first,
            last,
            bars,
            covered,
            gaps,
            _daily_shares(opened, gaps, start_us, window_end),
        )

    def statuses(
        self, instruments: list[str] | None, start_us: int, end_us: int
    ) -> list[dict[str, Any]]:
        """JSON-able status rows: the given instruments, or the watchlist and everything
        stored."""
        if not instruments:
            stored = [
                row[0]
                for row in self._store()
                .cursor()
                .execute("SELECT DISTINCT instrument FROM coverage ORDER BY 1")
                .fetchall()
            ]
            instruments = list(dict.fromkeys([*self._watchlist(), *stored]))
        return [asdict(self.status(name, start_us, end_us)) for name in instruments]


def _daily_shares(
    opened: list[Interval], gaps: list[Interval], start_us: int, end_us: int
) -> list[float]:
    """Per UTC day from start: the share of its open time that is covered (-1 when the
    market was closed all day)."""
    shares = []
    day = start_us - start_us % US_PER_DAY
    opened, gaps = merge(opened), merge(gaps)
    while day < end_us:
        open_time = total(clip(opened, day, day + US_PER_DAY))
        missing = total(clip(gaps, day, day + US_PER_DAY))
        shares.append(-1.0 if open_time == 0 else 1 - missing / open_time)
        day += US_PER_DAY
    return shares
