"""The watchlist kept in the home (watchlist.json), and adding and removing instruments
on a running engine."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import fake_coinbase
import pytest
from conftest import make_settings, wait_for_history, wait_until
from fakes import FakeHttpServer

from sptrader import watchlist as watchlist_module
from sptrader.config import Settings
from sptrader.engine import Engine
from sptrader.errors import UsageError
from sptrader.models import QuoteReceived, WatchlistChanged
from sptrader.watchlist import load_watchlist, save_watchlist, watchlist_path

CONFIG_WATCHLIST = ["SIM:EURUSD", "SIM:GBPUSD"]


def settings_for(home: Path, **overrides) -> Settings:
    overrides.setdefault("watchlist", CONFIG_WATCHLIST)
    return make_settings(home, **overrides)


# --- the file ---------------------------------------------------------------------------


def test_without_a_file_the_configs_watchlist_is_used(home: Path) -> None:
    settings = settings_for(home)
    assert load_watchlist(settings) == CONFIG_WATCHLIST
    assert not watchlist_path(settings).exists()


def test_save_then_load_round_trips(home: Path) -> None:
    settings = settings_for(home, feeds={"kraken": {"enabled": True}})
    saved = ["SIM:BTCUSD", "KRAKEN:BTC/USD", "SIM:EURUSD"]
    save_watchlist(settings, saved)
    assert load_watchlist(settings) == saved  # in the saved order, not the config's
    path = watchlist_path(settings)
    assert path == home / "watchlist.json"
    assert json.loads(path.read_text("utf-8")) == {"instruments": saved}
    assert [entry.name for entry in home.iterdir()] == ["watchlist.json"]  # no temporary left
    save_watchlist(settings, ["SIM:SPY"])
    assert load_watchlist(settings) == ["SIM:SPY"]


def test_save_creates_the_home(tmp_path: Path) -> None:
    settings = settings_for(tmp_path / "new" / "home")
    save_watchlist(settings, ["SIM:SPY"])
    assert load_watchlist(settings) == ["SIM:SPY"]


def test_a_write_that_fails_midway_leaves_the_old_file(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = settings_for(home)
    save_watchlist(settings, ["SIM:SPY", "SIM:QQQ"])
    before = watchlist_path(settings).read_bytes()

    def crash(source, destination) -> None:
        raise OSError("disk full")

    replace = os.replace
    monkeypatch.setattr(watchlist_module.os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        save_watchlist(settings, ["SIM:AAPL"])
    assert watchlist_path(settings).read_bytes() == before
    assert load_watchlist(settings) == ["SIM:SPY", "SIM:QQQ"]
    monkeypatch.setattr(watchlist_module.os, "replace", replace)
    save_watchlist(settings, ["SIM:AAPL"])  # the next save replaces the leftover temporary
    assert load_watchlist(settings) == ["SIM:AAPL"]


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"{not json",
        b"\xff\xfe\x00garbage",
        b"[]",
        b'["SIM:EURUSD"]',
        b"{}",
        b'{"instruments": 5}',
        b'{"instruments": null}',
        b'{"instruments": "SIM:SPY"}',
        b'{"instruments": {"SIM:SPY": 1}}',
    ],
)
def test_a_corrupt_file_falls_back_to_the_configs_watchlist_with_a_warning(
    home: Path, content: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    settings = settings_for(home)
    watchlist_path(settings).write_bytes(content)
    with caplog.at_level(logging.WARNING, logger="sptrader.watchlist"):
        assert load_watchlist(settings) == CONFIG_WATCHLIST
    [record] = caplog.records
    assert "using the config's watchlist" in record.getMessage()
    # The engine starts on it too.
    assert Engine(settings).watchlist == CONFIG_WATCHLIST


def test_instruments_of_disabled_feeds_are_skipped(
    home: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = settings_for(home, feeds={"coinbase": {"enabled": True}})
    save_watchlist(
        settings,
        [
            "KRAKEN:BTC/USD",  # kraken is not enabled
            "SIM:SPY",
            "DUKASCOPY:EURUSD",  # history only: never watched
            "COINBASE:BTC-USD",
            "SIM:SPY",  # twice
            "sim:qqq",  # not written as the engine writes names
            "REPLAY:SIM:SPY",  # replay is not enabled
            7,
        ],
    )
    with caplog.at_level(logging.WARNING, logger="sptrader.watchlist"):
        assert load_watchlist(settings) == ["SIM:SPY", "COINBASE:BTC-USD"]
    skipped = caplog.text
    for name in ("KRAKEN:BTC/USD", "DUKASCOPY:EURUSD", "REPLAY:SIM:SPY", "sim:qqq"):
        assert repr(name) in skipped


def test_when_nothing_saved_is_usable_the_configs_watchlist_is_used(home: Path) -> None:
    settings = settings_for(home)
    save_watchlist(settings, ["KRAKEN:BTC/USD", "OANDA:EUR_USD"])
    assert load_watchlist(settings) == CONFIG_WATCHLIST
    save_watchlist(settings, [])
    assert load_watchlist(settings) == CONFIG_WATCHLIST


# --- the engine ---------------------------------------------------------------------------


def engine_settings(home: Path, **overrides) -> Settings:
    overrides.setdefault("watchlist", ["SIM:EURUSD"])
    return make_settings(
        home,
        store={"seed_days": 0.01, "flush_interval_ms": 20},
        feeds={"sim": {"publish_interval_ms": 10, "tick_rate": 5.0}, **overrides.pop("feeds", {})},
        **overrides,
    )


def quotes_of(events: list[object]) -> set[str]:
    return {event.instrument for event in events if isinstance(event, QuoteReceived)}


def watchlist_changes(events: list[object]) -> list[list[str]]:
    return [event.instruments for event in events if isinstance(event, WatchlistChanged)]


async def test_an_added_instrument_streams_is_kept_and_survives_a_restart(home: Path) -> None:
    settings = engine_settings(home)
    engine = Engine(settings)
    subscription = engine.subscribe("test", 200_000)
    seen: list[object] = []
    await engine.start()
    try:
        await wait_for_history(engine, ["SIM:EURUSD"])
        assert await engine.add_instrument(" sim:btcusd ") == "SIM:BTCUSD"
        assert engine.watchlist == ["SIM:EURUSD", "SIM:BTCUSD"]
        assert load_watchlist(settings) == ["SIM:EURUSD", "SIM:BTCUSD"]

        def streaming() -> bool:
            seen.extend(subscription.get_nowait())
            return quotes_of(seen) >= {"SIM:EURUSD", "SIM:BTCUSD"}

        await wait_until(streaming)
        # Restarted with it, the feed backfilled its history first.
        await wait_for_history(engine, ["SIM:BTCUSD"])
        assert engine.feeds["sim"].instruments == ["SIM:EURUSD", "SIM:BTCUSD"]
        assert watchlist_changes(seen) == [["SIM:EURUSD", "SIM:BTCUSD"]]

        # Adding it again changes nothing.
        assert await engine.add_instrument("SIM:BTCUSD") == "SIM:BTCUSD"
        assert engine.watchlist == ["SIM:EURUSD", "SIM:BTCUSD"]
        seen.extend(subscription.get_nowait())
        assert len(watchlist_changes(seen)) == 1
    finally:
        await engine.stop()

    again = Engine(engine_settings(home))
    assert again.watchlist == ["SIM:EURUSD", "SIM:BTCUSD"]
    subscription = again.subscribe("test", 200_000)
    seen = []
    await again.start()
    try:

        def both_stream() -> bool:
            seen.extend(subscription.get_nowait())
            return quotes_of(seen) >= {"SIM:EURUSD", "SIM:BTCUSD"}

        await wait_until(both_stream)
    finally:
        await again.stop()


async def test_removing_instruments(home: Path) -> None:
    settings = engine_settings(home, watchlist=["SIM:EURUSD", "SIM:BTCUSD"])
    engine = Engine(settings)
    subscription = engine.subscribe("test", 200_000)
    await engine.start()
    try:
        await engine.remove_instrument("sim:btcusd")
        assert engine.watchlist == ["SIM:EURUSD"]
        assert load_watchlist(settings) == ["SIM:EURUSD"]
        assert engine.feeds["sim"].instruments == ["SIM:EURUSD"]
        seen: list[object] = []

        def changed() -> bool:
            seen.extend(subscription.get_nowait())
            return bool(watchlist_changes(seen))

        await wait_until(changed)
        assert watchlist_changes(seen) == [["SIM:EURUSD"]]
        # The restarted feed streams the rest only.
        seen.clear()
        subscription.get_nowait()

        def quotes_again() -> bool:
            seen.extend(subscription.get_nowait())
            return "SIM:EURUSD" in quotes_of(seen)

        await wait_until(quotes_again)
        assert quotes_of(seen) == {"SIM:EURUSD"}

        with pytest.raises(UsageError, match="at least one"):
            await engine.remove_instrument("SIM:EURUSD")
        with pytest.raises(UsageError, match="not in the watchlist"):
            await engine.remove_instrument("SIM:BTCUSD")
        assert engine.watchlist == ["SIM:EURUSD"]
    finally:
        await engine.stop()


@pytest.fixture
def coinbase_url() -> Iterator[str]:
    with FakeHttpServer(fake_coinbase.history_route) as server:
        yield server.url


async def test_instruments_that_cannot_be_watched_are_usage_errors(
    home: Path, coinbase_url: str
) -> None:
    settings = engine_settings(
        home,
        feeds={
            "coinbase": fake_coinbase.config_section("ws://127.0.0.1:9", coinbase_url),
            "dukascopy": {"enabled": True},
        },
    )
    engine = Engine(settings)
    store = engine.open_store()
    try:
        with pytest.raises(UsageError, match=r"unknown symbol COINBASE:NOPE-USD.*--feed coinbase"):
            await engine.add_instrument("coinbase:nope-usd")
        with pytest.raises(UsageError, match=r"feeds\.kraken\.enabled = true"):
            await engine.add_instrument("KRAKEN:BTC/USD")
        with pytest.raises(UsageError, match="DUKASCOPY has no live stream"):
            await engine.add_instrument("DUKASCOPY:EURUSD")
        with pytest.raises(UsageError, match="has no live stream"):
            await engine.add_instrument("NOSUCHFEED:EURUSD")
        with pytest.raises(UsageError, match="bad instrument"):
            await engine.add_instrument("EURUSD")
        assert engine.watchlist == ["SIM:EURUSD"]
        assert not watchlist_path(settings).exists()

        # A listed symbol is fine (the engine is not started: it streams once it is).
        assert await engine.add_instrument("COINBASE:BTC-USD") == "COINBASE:BTC-USD"
        assert load_watchlist(settings) == ["SIM:EURUSD", "COINBASE:BTC-USD"]
        assert engine.feeds["coinbase"].instruments == ["COINBASE:BTC-USD"]
    finally:
        store.close()
