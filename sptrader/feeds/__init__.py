"""Market-data sources. Each module is one source; ``base`` holds the Feed protocol and
``registry`` the table of them (which class, config section and market kind each has)."""

from __future__ import annotations

from sptrader.feeds.base import Feed, FeedService, SymbolInfo

__all__ = ["Feed", "FeedService", "SymbolInfo"]
