"""The feed registry: every feed is registered with a config section and a market kind,
and the registry makes, serves and watches the configured feeds."""

from __future__ import annotations

import pytest
from conftest import make_config

from sptrader.config import KNOWN_FEEDS
from sptrader.feeds import registry
from sptrader.feeds.base import Feed
from sptrader.feeds.registry import FEEDS, FeedEntry, FeedRegistry, feed_class, market_kind
from sptrader.models import ServiceState, ServiceStatus


def test_every_feed_has_a_config_section_and_a_market_kind() -> None:
    assert list(FEEDS) == list(KNOWN_FEEDS)
    kinds = {prefix: feed_class(prefix).market_kind for prefix in FEEDS}
    assert kinds == {
        "SIM": "sim",
        "REPLAY": "replay",
        "BINANCE": "crypto",
        "COINBASE": "crypto",
        "KRAKEN": "crypto",
        "OANDA": "fx",
        "DUKASCOPY": "fx",
        "ALPACA": "equity",
    }


class NoKindFeed(Feed):
    prefix = "NOKIND"
    name = "nokind"

    async def stream(self, context: object) -> None:
        pass


def test_a_feed_class_without_a_market_kind_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(FEEDS, "NOKIND", FeedEntry("NOKIND", __name__, "NoKindFeed"))
    with pytest.raises(TypeError, match=r"NoKindFeed must declare its market_kind .*not None"):
        feed_class("NOKIND")
    monkeypatch.setattr(NoKindFeed, "market_kind", "crytpo", raising=False)
    with pytest.raises(TypeError, match="not 'crytpo'"):
        feed_class("NOKIND")
    assert "NOKIND" not in registry._classes


def test_market_kind_prefers_the_symbol_list_but_simulated_markets_never_close() -> None:
    assert market_kind("OANDA:EUR_USD") == "fx"
    assert market_kind("OANDA:US_AAPL", "equity") == "equity"
    assert market_kind("SIM:SPY", "equity") == "sim"
    assert market_kind("REPLAY:OANDA:EUR_USD") == "replay"
    assert market_kind("DUKASCOPY:XAUUSD") == "metal"  # its built-in table
    assert market_kind("DUKASCOPY:NOSUCH") == "fx"
    assert market_kind("NOFEED:X") == "" and market_kind("NOFEED:X", "crypto") == "crypto"


def test_history_feeds_are_made_once_and_only_for_enabled_feeds() -> None:
    made: list[str] = []
    feeds = FeedRegistry(
        make_config(feeds={"replay": {"enabled": True}}),
        prepare=lambda feed: made.append(feed.name),
    )
    sim = feeds.history_feed("SIM:EURUSD")
    assert sim is not None and feeds.history_feed("SIM:GBPUSD") is sim
    assert feeds.history_feed("BINANCE:BTCUSDT") is None  # not enabled
    assert feeds.history_feed("REPLAY:SIM:EURUSD") is None  # replays, serves no history
    assert [feed.name for feed in feeds.enabled_feeds()] == ["sim"]
    assert made == ["sim"] and feeds.streaming == {}


def test_stale_instruments_are_those_of_streaming_feeds_not_running() -> None:
    states = {"sim": ServiceState.RUNNING}

    def status() -> list[ServiceStatus]:
        return [
            ServiceStatus(name, "feed", state, 0.0, None, 0, 0) for name, state in states.items()
        ]

    feeds = FeedRegistry(make_config(), service_status=status)
    feeds.stream(feeds.make("SIM", ["SIM:EURUSD", "SIM:GBPUSD"]))
    assert feeds.streaming_feed("SIM:EURUSD") is feeds.streaming["sim"]
    assert feeds.streaming_feed("SIM:USDJPY") is None
    assert feeds.stale_instruments() == set()
    states["sim"] = ServiceState.BACKOFF
    assert feeds.stale_instruments() == {"SIM:EURUSD", "SIM:GBPUSD"}
    assert feeds.is_stale("SIM:EURUSD") and not feeds.is_stale("SIM:USDJPY")
    feeds.forget("SIM")
    assert feeds.streaming == {} and feeds.feed_of("SIM") is None
