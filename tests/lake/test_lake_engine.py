"""The lake sink beside a real Engine (SIM feed on a temporary home), added by
Engine.start: the seeded history and the live closed bars reach the lake once
each, the same bars the store holds."""

from __future__ import annotations

from pathlib import Path

import polars as pl
from conftest import make_settings, wait_until

from sptrader.engine import Engine
from sptrader.lake.read import coverage, read_bars
from sptrader.store import queries

WATCHLIST = ["SIM:EURUSD", "SIM:BTCUSD"]


async def test_an_engine_with_a_lake_appends_its_bars(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    settings = make_settings(
        home,
        watchlist=WATCHLIST,
        store={"seed_days": 0.1, "flush_interval_ms": 20},
        feeds={"sim": {"publish_interval_ms": 10, "tick_rate": 5.0}},
        lake={"uri": "lake", "flush_interval_s": 0.1},
    )
    engine = Engine(settings)
    await engine.start()
    sink = engine.lake  # [lake] uri set: Engine.start added the sink
    assert sink is not None and sink.name in engine.supervisor.names()
    try:

        def seeded() -> bool:
            held = {row.instrument: row.rows for row in coverage(str(home / "lake"))}
            return all(held.get(name, 0) >= 100 for name in WATCHLIST)

        await wait_until(seeded, timeout=30)
    finally:
        await sink.drain()
        store = engine.require_store()
        stored = {name: queries.bars_between(store, name, "1m", None, None) for name in WATCHLIST}
        await engine.stop()
    for name in WATCHLIST:
        held = read_bars(str(home / "lake"), name, 0, 2**62)
        assert held["ts"].is_unique().all()
        # Every bar the lake holds is the store's version of it (the forming bar aside:
        # the lake takes closed bars only).
        joined = held.join(stored[name], on="ts", suffix="_store")
        assert joined.height == held.height
        assert (joined["close"] == joined["close_store"]).all()
        assert held.height >= stored[name].filter(pl.col("ts") < held["ts"].max()).height
