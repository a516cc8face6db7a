"""Market-data sources. Each module is one source; ``base`` holds the Feed protocol."""

from sptrader.feeds.base import Feed, FeedService

__all__ = ["Feed", "FeedService"]
