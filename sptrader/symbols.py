"""Every configured feed's instrument list, cached in DuckDB with a TTL: instrument
search (``sptrader symbols``, the TUI's ``/``) and symbol validation.

Lists are fetched on first use and refreshed in the background once older than
``symbols.ttl_hours``; when a refresh fails the older list keeps serving.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import polars as pl

from sptrader.clock import now_us
from sptrader.config import SymbolsConfig
from sptrader.feeds.base import Feed, SymbolInfo
from sptrader.feeds.registry import FeedRegistry
from sptrader.models import parse_instrument
from sptrader.store import Store
from sptrader.threads import run_in_thread

log = logging.getLogger(__name__)

# After a failed fetch of a feed's list, use what is cached for this long before trying again.
RETRY_AFTER_S = 300.0

SYMBOL_SCHEMA = {
    "feed": pl.String,
    "instrument": pl.String,
    "description": pl.String,
    "kind": pl.String,
    "base": pl.String,
    "quote": pl.String,
    "price_decimals": pl.Int32,  # null: the feed's metadata does not say
}


class SymbolDirectory:
    """Blocking methods (they may fetch): call them from a thread on a running loop.

    ``store`` returns the open store (raising when it is not); ``feeds`` makes the
    enabled feeds whose lists are searched and checked."""

    def __init__(
        self, config: SymbolsConfig, *, store: Callable[[], Store], feeds: FeedRegistry
    ) -> None:
        self.config = config
        self._store = store
        self._feeds = feeds
        # A feed whose list could not be fetched is not asked again for a while: with
        # the exchange down, every search would otherwise wait for its retries.
        self._failed: dict[str, tuple[float, Exception]] = {}
        # One fetch of a feed's list at a time (the background refresh and a feed's
        # symbol check start together).
        self._fetching: dict[str, threading.Lock] = {}
        self._fetching_guard = threading.Lock()

    @property
    def ttl_us(self) -> int:
        return int(self.config.ttl_hours * 3600 * 1_000_000)

    # --- cache ------------------------------------------------------------------------

    def fetched_at(self, feed: str) -> int | None:
        rows = (
            self._store()
            .cursor()
            .execute("SELECT epoch_us(max(fetched_at)) FROM symbol_lists WHERE feed = ?", [feed])
            .fetchall()
        )
        return rows[0][0]

    def count(self, feed: str) -> int:
        rows = (
            self._store()
            .cursor()
            .execute("SELECT coalesce(max(count), 0) FROM symbol_lists WHERE feed = ?", [feed])
            .fetchall()
        )
        return rows[0][0]

    def refresh(self, feed: Feed) -> int:
        """Fetch ``feed``'s list now and replace the cached one; returns its length."""
        symbols = feed.symbols()
        store = self._store()
        frame = pl.DataFrame(
            {
                "feed": [feed.name] * len(symbols),
                "instrument": [item.instrument for item in symbols],
                "description": [item.description for item in symbols],
                "kind": [item.kind for item in symbols],
                "base": [item.base for item in symbols],
                "quote": [item.quote for item in symbols],
                "price_decimals": [item.price_decimals for item in symbols],
            },
            schema=SYMBOL_SCHEMA,
        )
        store.replace_symbols(feed.name, frame, now_us())
        log.info("cached %d %s symbols", len(symbols), feed.name)
        return len(symbols)

    def ensure(self, feed: Feed, *, refresh: bool = False) -> bool:
        """Make sure a list of ``feed`` is cached (fetched if missing, expired or
        ``refresh``); raises when there is none and it cannot be fetched."""
        with self._fetching_guard:
            lock = self._fetching.setdefault(feed.name, threading.Lock())
        with lock:
            return self._ensure(feed, refresh=refresh)

    def _ensure(self, feed: Feed, *, refresh: bool) -> bool:
        fetched = self.fetched_at(feed.name)
        if not refresh and fetched is not None and now_us() - fetched < self.ttl_us:
            return True
        failed = self._failed.get(feed.name)
        if not refresh and failed is not None and time.monotonic() - failed[0] < RETRY_AFTER_S:
            if fetched is None:
                raise failed[1]
            return True
        try:
            self.refresh(feed)
            self._failed.pop(feed.name, None)
            return True
        except Exception as error:  # offline, or the exchange is down
            self._failed[feed.name] = (time.monotonic(), error)
            if fetched is None:
                raise
            log.warning(
                "could not refresh %s symbols (%s); using the cached list", feed.name, error
            )
            return True

    def unknown(self, instruments: list[str], unchecked: list[str] | None = None) -> list[str]:
        """Those of ``instruments`` missing from their feed's list (feeds without a list,
        or whose list cannot be fetched right now, validate nothing)."""
        unknown: list[str] = []
        for prefix, names in _group(instruments).items():
            feed = self._feeds.history_feed(f"{prefix}:X")
            if feed is None or feed.open_symbols:
                continue
            try:
                self.ensure(feed)
            except Exception as error:
                log.warning("cannot check %s symbols now: %s", feed.name, error)
                if unchecked is not None:
                    unchecked.append(f"{feed.name}: {error}")
                continue
            if not self.count(feed.name):
                continue  # no list (or an empty one): nothing to check against
            known = {
                row[0]
                for row in self._store()
                .cursor()
                .execute(
                    "SELECT instrument FROM symbols WHERE feed = ? AND list_contains(?, instrument)",
                    [feed.name, names],
                )
                .fetchall()
            }
            unknown.extend(name for name in names if name not in known)
        return unknown

    # --- search -----------------------------------------------------------------------

    def search(self, query: str, feed: str | None = None, limit: int = 50) -> list[SymbolInfo]:
        """Instruments whose symbol or description matches ``query`` (separators
        ignored: "btcusd" finds BTC-USD, BTC/USD and BTCUSDT), best matches first."""
        feeds = self._feeds.enabled_feeds()
        if feed is not None:
            feeds = [item for item in feeds if item.name == feed.lower()]
        problems = []
        for item in feeds:
            try:
                self.ensure(item)
            except Exception as error:
                problems.append(f"{item.name}: {error}")
        for problem in problems:
            log.warning("symbol list unavailable: %s", problem)
        names = [item.name for item in feeds]
        compact = _compact(query)
        # "gold" finds XAUUSD wherever a feed's description does not say gold.
        alias = NAME_ALIASES.get(query.strip().lower(), compact)
        rows = (
            self._store()
            .cursor()
            .execute(
                """
                SELECT instrument, description, kind, base, quote, price_decimals FROM (
                    SELECT *, regexp_replace(upper(split_part(instrument, ':', 2)),
                                             '[^A-Z0-9]', '', 'g') AS compact
                    FROM symbols WHERE list_contains($feeds, feed)
                )
                WHERE compact LIKE '%' || $compact || '%'
                   OR starts_with(compact, $alias)
                   OR description ILIKE '%' || $query || '%'
                ORDER BY compact = $compact DESC, starts_with(compact, $compact) DESC,
                         starts_with(compact, $alias) DESC,
                         length(compact), instrument
                LIMIT $limit
                """,
                {
                    "feeds": names,
                    "compact": compact,
                    "alias": alias,
                    "query": query.strip(),
                    "limit": limit,
                },
            )
            .fetchall()
        )
        return [SymbolInfo(*row) for row in rows]

    def price_decimals(self, instruments: list[str]) -> dict[str, int]:
        """The decimals each instrument's prices show, as its feed's metadata says (those
        it does not say are left out). Feeds whose list is built in (SIM, Dukascopy)
        answer themselves; the others from their cached list only: a price format never
        waits for the network (the background refresh fetches the lists)."""
        found: dict[str, int] = {}
        asked = set(instruments)
        for prefix in _group(instruments):
            feed = self._feeds.history_feed(f"{prefix}:X")
            if feed is not None and feed.builtin_symbols:
                found.update(
                    (item.instrument, item.price_decimals)
                    for item in feed.symbols()
                    if item.instrument in asked and item.price_decimals is not None
                )
        rest = [name for name in instruments if name not in found]
        if rest:
            rows = (
                self._store()
                .cursor()
                .execute(
                    "SELECT instrument, price_decimals FROM symbols"
                    " WHERE list_contains(?, instrument) AND price_decimals IS NOT NULL",
                    [rest],
                )
                .fetchall()
            )
            found.update(rows)
        return found

    async def refresh_stale(self) -> None:
        """Background: refresh every enabled feed's list that is missing or expired."""
        for feed in self._feeds.enabled_feeds():
            if feed.prefix == "REPLAY":
                continue
            try:
                await run_in_thread(self.ensure, feed)
            except Exception as error:
                log.warning("could not fetch %s symbols: %s", feed.name, error)


#: Everyday names of what symbols abbreviate, as the `/` search and `sptrader symbols`
#: take them: "gold" finds the symbols starting XAU (XAUUSD, XAU/USD).
NAME_ALIASES = {
    "gold": "XAU",
    "silver": "XAG",
    "platinum": "XPT",
    "palladium": "XPD",
    "bitcoin": "BTC",
    "ether": "ETH",
    "ethereum": "ETH",
    "solana": "SOL",
    "euro": "EUR",
    "pound": "GBP",
    "sterling": "GBP",
    "cable": "GBPUSD",
    "yen": "JPY",
    "swissy": "USDCHF",
    "aussie": "AUD",
    "loonie": "USDCAD",
    "kiwi": "NZD",
}


def _compact(text: str) -> str:
    return "".join(char for char in text.upper() if char.isalnum())


def _group(instruments: list[str]) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = {}
    for name in instruments:
        grouped.setdefault(parse_instrument(name)[0], []).append(name)
    return grouped
