"""The one place that knows the feeds: for each instrument prefix its class, its config
section and the kind of market it trades in (which gives its instruments' hours); and the
FeedRegistry, the configured feed objects and which of them are delivering.

A new venue is a row in FEEDS, its feed module (with its ``market_kind``) and its config
section (sptrader.config). Feed classes are imported on first use: a feed's libraries
load only when it is used.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sptrader.config import KNOWN_FEEDS, Config, feed_config
from sptrader.feeds.base import Feed
from sptrader.models import ServiceState, ServiceStatus, parse_instrument
from sptrader.sessions import KIND_SESSIONS

if TYPE_CHECKING:
    from sptrader.feeds.replay import StoredLoader


@dataclass(frozen=True, slots=True)
class FeedEntry:
    prefix: str
    module: str
    class_name: str
    #: Plays stored data back (replay): made with the store's readers, and serves no
    #: history or symbol list of its own, so it is made only to stream.
    replays_store: bool = False


FEEDS: dict[str, FeedEntry] = {
    entry.prefix: entry
    for entry in (
        FeedEntry("SIM", "sptrader.feeds.sim", "SimFeed"),
        FeedEntry("REPLAY", "sptrader.feeds.replay", "ReplayFeed", replays_store=True),
        FeedEntry("BINANCE", "sptrader.feeds.binance", "BinanceFeed"),
        FeedEntry("COINBASE", "sptrader.feeds.coinbase", "CoinbaseFeed"),
        FeedEntry("KRAKEN", "sptrader.feeds.kraken", "KrakenFeed"),
        FeedEntry("OANDA", "sptrader.feeds.oanda", "OandaFeed"),
        FeedEntry("DUKASCOPY", "sptrader.feeds.dukascopy", "DukascopyFeed"),
        FeedEntry("ALPACA", "sptrader.feeds.alpaca", "AlpacaFeed"),
    )
}

if set(FEEDS) != set(KNOWN_FEEDS):  # a feed without a config section, or the reverse
    raise RuntimeError(
        f"sptrader.feeds.registry lists {sorted(FEEDS)}, the config's sections {sorted(KNOWN_FEEDS)}"
    )

# Kinds whose markets never close, whatever a symbol list calls their instruments.
ALWAYS_OPEN_KINDS = ("sim", "replay")

# Feed classes by prefix, once imported and checked.
_classes: dict[str, type[Feed]] = {}


def feed_class(prefix: str) -> type[Feed]:
    """The feed class of ``prefix``, imported on first use and checked then: one that
    declares no known ``market_kind`` is refused (its hours would silently be 24x7)."""
    loaded = _classes.get(prefix)
    if loaded is not None:
        return loaded
    entry = FEEDS[prefix]
    loaded = getattr(importlib.import_module(entry.module), entry.class_name)
    kind = getattr(loaded, "market_kind", None)
    if kind not in KIND_SESSIONS and kind not in ALWAYS_OPEN_KINDS:
        known = ", ".join([*KIND_SESSIONS, *ALWAYS_OPEN_KINDS])
        raise TypeError(
            f"{entry.module}.{entry.class_name} must declare its market_kind"
            f" (one of {known}), not {kind!r}"
        )
    if loaded.prefix != prefix:
        raise TypeError(
            f"{entry.module}.{entry.class_name} is registered as {prefix}"
            f" but its prefix is {loaded.prefix!r}"
        )
    _classes[prefix] = loaded
    return loaded


def serves_history(prefix: str) -> bool:
    """A feed of ``prefix`` serves history when enabled (replay only plays the store)."""
    entry = FEEDS.get(prefix)
    return entry is not None and not entry.replays_store


def market_kind(instrument: str, listed: str | None = None) -> str:
    """The kind of market ``instrument`` trades in, which gives its hours: the kind its
    feed's symbol list gives it (``listed``), else the one its feed declares; "" for a
    prefix no feed has."""
    prefix = parse_instrument(instrument)[0]
    if prefix not in FEEDS:
        return listed or ""
    kind = feed_class(prefix).market_kind
    if kind in ALWAYS_OPEN_KINDS:
        return kind
    if listed:
        return listed
    if prefix == "DUKASCOPY":
        # Its instrument table is built in: the kinds are known before its list is cached.
        from sptrader.feeds.dukascopy_instruments import INSTRUMENTS

        spec = INSTRUMENTS.get(instrument.split(":", 1)[1])
        if spec is not None:
            return spec.kind
    return kind


def _unchanged(feed: Feed) -> None:
    pass


class FeedRegistry:
    """The configured feeds as objects: per prefix one feed, made to stream the watched
    instruments or, for history and symbol lists, on first use; which of them stream
    (``streaming``, by service name) and which of those are not delivering.

    ``prepare`` is called with every feed made (the engine hooks its re-fetches on);
    ``service_status`` tells the feeds' service states; a replay feed reads the store
    through ``load_stored`` and ``first_stored``.
    """

    def __init__(
        self,
        config: Config,
        *,
        service_status: Callable[[], list[ServiceStatus]] = list,
        prepare: Callable[[Feed], None] = _unchanged,
        load_stored: StoredLoader | None = None,
        first_stored: Callable[[str], int | None] | None = None,
    ) -> None:
        self.config = config
        self._service_status = service_status
        self._prepare = prepare
        self._store_readers = (load_stored, first_stored)
        self.streaming: dict[str, Feed] = {}
        self._by_prefix: dict[str, Feed] = {}

    # --- what is configured -----------------------------------------------------------

    def is_enabled(self, prefix: str) -> bool:
        return bool(feed_config(self.config, prefix).enabled)

    def make(self, prefix: str, instruments: list[str]) -> Feed:
        """A new feed of ``prefix`` for ``instruments``, from its config section."""
        entry = FEEDS[prefix]
        section: Any = feed_config(self.config, prefix)
        cls: Any = feed_class(prefix)
        if entry.replays_store:
            feed = cls(instruments, section, *self._store_readers)
        else:
            feed = cls(instruments, section)
        self._prepare(feed)
        return feed

    # --- the feed objects -------------------------------------------------------------

    def stream(self, feed: Feed) -> None:
        """``feed`` streams its instruments from now on, in place of its prefix's feed."""
        self.streaming[feed.name] = feed
        self._by_prefix[feed.prefix] = feed

    def feed_of(self, prefix: str) -> Feed | None:
        """The feed of ``prefix`` made so far (streaming or not), if any."""
        return self._by_prefix.get(prefix)

    def forget(self, prefix: str) -> None:
        """Drop the feed of ``prefix`` (it is made again on demand for history)."""
        feed = self._by_prefix.pop(prefix, None)
        if feed is not None:
            self.streaming.pop(feed.name, None)

    def price_source(self, instrument: str) -> str:
        """What the bar builder makes ``instrument``'s bars of."""
        feed = self._by_prefix.get(instrument.split(":", 1)[0])
        return feed.price_source(instrument) if feed else "trade"

    def history_feed(self, instrument: str) -> Feed | None:
        """The feed that can serve history for ``instrument`` (even if not watched):
        any enabled feed, made on first use."""
        prefix = parse_instrument(instrument)[0]
        feed = self._by_prefix.get(prefix)
        if feed is not None:
            return feed
        if not serves_history(prefix) or not self.is_enabled(prefix):
            return None
        feed = self.make(prefix, [])
        self._by_prefix[prefix] = feed
        return feed

    def enabled_feeds(self) -> list[Feed]:
        """One feed object per enabled source (for symbol search and backfills)."""
        feeds = []
        for prefix in FEEDS:
            if serves_history(prefix) and self.is_enabled(prefix):
                feed = self.history_feed(f"{prefix}:X")
                if feed is not None:
                    feeds.append(feed)
        return feeds

    # --- delivering -------------------------------------------------------------------

    def states(self) -> dict[str, ServiceState]:
        """Each service's state, by name (the streaming feeds' among them)."""
        return {status.name: status.state for status in self._service_status()}

    def streaming_feed(self, instrument: str) -> Feed | None:
        """The feed streaming ``instrument``, if one does."""
        return next(
            (feed for feed in self.streaming.values() if instrument in feed.instruments), None
        )

    def stale_instruments(self) -> set[str]:
        """Instruments whose feed is not delivering (stale, reconnecting, stopped): the
        rest of the engine must not trust their prices."""
        states = self.states()
        return {
            instrument
            for name, feed in self.streaming.items()
            if states.get(name) != ServiceState.RUNNING
            for instrument in feed.instruments
        }

    def is_stale(self, instrument: str) -> bool:
        return instrument in self.stale_instruments()
