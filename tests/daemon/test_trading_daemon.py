"""The paper account through the daemon's API: the CLI against a real daemon process
(``sptrader start``), and the TUI's RemoteEngineClient against an in-process ApiServer,
checked to give what the LocalEngineClient gives."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import make_settings, wait_for_history
from test_daemon import Daemon, daemon_home, describe, one_error_line, poll

from sptrader.api.server import ApiServer
from sptrader.client.local import LocalEngineClient
from sptrader.client.remote import RemoteEngineClient
from sptrader.engine import Engine
from sptrader.errors import SptraderError, UsageError
from sptrader.models import QuoteReceived

ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
CONFIG = """\
watchlist = ["SIM:EURUSD", "SIM:BTCUSD"]

[store]
seed_days = 0.05
flush_interval_ms = 50

[feeds.sim]
tick_rate = 5.0

[broker]
slippage_bps = 0.0

[risk]
max_qty = { "SIM:EURUSD" = 50000 }
"""


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    with daemon_home(tmp_path, CONFIG) as control:
        yield control


def ok(result: Any) -> str:
    assert result.returncode == 0, describe(result)
    return result.stdout


def as_json(result: Any) -> Any:
    return json.loads(ok(result))


# --- the CLI against a daemon -------------------------------------------------------------


def test_order_orders_positions_cancel_close_through_the_daemon(daemon: Daemon) -> None:
    daemon.start()

    def placed() -> Any:
        # The daemon's first quote of SIM:EURUSD may take a moment after its start.
        result = daemon.run("order", "buy", "SIM:EURUSD", "1000", "--sl", "0.5", "--json")
        if result.returncode == 1 and "stale_quotes" in result.stdout:
            return None
        return result

    result = poll(placed, 20, "a quote of SIM:EURUSD in the daemon", interval=0.2)
    order = as_json(result)
    assert order["order"]["status"] == "filled" and order["rejected"] is None
    [fill] = order["fills"]
    assert fill["qty"] == 1000 and ISO_Z.match(fill["ts"])
    [stop] = order["protective"]
    assert stop["role"] == "sl" and stop["price"] == 0.5
    entry_id, stop_id = order["order"]["order_id"], stop["order_id"]

    resting = ok(daemon.run("order", "sell", "SIM:BTCUSD", "0.5", "--limit", "900000"))
    assert "open: working in the daemon" in resting
    limit_id = int(re.match(r"order (\d+):", resting).group(1))

    opened = as_json(daemon.run("orders", "--format", "json"))
    assert [(o["order_id"], o["status"]) for o in opened] == [(stop_id, "open"), (limit_id, "open")]
    table = ok(daemon.run("orders"))
    assert f"sl of {entry_id}" in table and "900,000" in table

    positions = as_json(daemon.run("positions", "--format", "json"))
    assert positions["marked_at"] == "live quotes"
    [position] = positions["positions"]
    assert position["instrument"] == "SIM:EURUSD" and position["qty"] == 1000
    assert positions["account"]["open_orders"] == 2
    text = ok(daemon.run("positions"))
    assert "SIM:EURUSD" in text and "equity" in text and "last stored" not in text

    # A limit refuses: exit 1, the limit and the numbers; the daemon stored it rejected.
    rejected = daemon.run("order", "buy", "SIM:EURUSD", "60000")
    assert rejected.returncode == 1, describe(rejected)
    assert "rejected (max_qty)" in one_error_line(rejected)
    assert "the limit is 50000" in rejected.stderr
    # An instrument the daemon does not stream has no quotes to trust.
    unstreamed = daemon.run("order", "buy", "SIM:SOLUSD", "1")
    assert unstreamed.returncode == 1, describe(unstreamed)
    assert "not streamed" in one_error_line(unstreamed)

    # cancel through the API; the daemon's usage errors keep their exit code 2.
    assert ok(daemon.run("cancel", str(limit_id))).startswith(f"cancelled order {limit_id}:")
    again = daemon.run("cancel", str(limit_id))
    assert again.returncode == 2, describe(again)
    assert f"order {limit_id} is cancelled, not open" in one_error_line(again)
    missing = daemon.run("cancel", "999")
    assert missing.returncode == 2 and "999" in one_error_line(missing)
    every = as_json(daemon.run("orders", "--all", "--format", "json"))
    statuses = {o["order_id"]: o["status"] for o in every}
    assert statuses[limit_id] == "cancelled" and "rejected" in statuses.values()

    # The journal goes through the daemon too (it holds the store).
    assert ok(daemon.run("journal", "add", "attached", "--day", "2026-03-02")).startswith("note 1")
    closed = ok(daemon.run("close", "SIM:EURUSD"))
    assert "closing the position" in closed and "filled 1,000 at" in closed
    journal = as_json(daemon.run("journal", "--format", "json"))
    assert [note["text"] for note in journal["notes"]] == ["attached"]
    assert len(journal["trades"]) == 1 and journal["stats"]["trades"] == 1

    # Stopped, the same account is read from the store.
    ok(daemon.run("stop"))
    offline = as_json(daemon.run("positions", "--format", "json"))
    assert offline["marked_at"] == "last stored close" and offline["positions"] == []
    assert offline["account"]["realized"] == pytest.approx(journal["stats"]["net_pnl"])
    history = as_json(daemon.run("orders", "--all", "--format", "json"))
    assert len(history) == len(every) + 1  # and the close
    assert history[0]["role"] == "close" and history[0]["status"] == "filled"


# --- the TUI's client against the API -----------------------------------------------------


@contextlib.asynccontextmanager
async def serving(home: Path, **config: Any) -> AsyncIterator[tuple[Engine, RemoteEngineClient]]:
    settings = make_settings(
        home,
        watchlist=["SIM:EURUSD"],
        store={"seed_days": 0.05, "flush_interval_ms": 50},
        feeds={"sim": {"tick_rate": 20.0}},
        **config,
    )
    engine = Engine(settings)
    quoted = asyncio.Event()

    def tap(event: object) -> bool:
        if type(event) is QuoteReceived:
            quoted.set()
        return False

    engine.bus.subscribe("test-quotes", maxsize=1, accepts=tap)
    server = ApiServer(engine)
    remote: RemoteEngineClient | None = None
    try:
        await engine.start()
        await wait_for_history(engine, ["SIM:EURUSD"])
        await asyncio.wait_for(quoted.wait(), 10)
        await server.start()
        remote = RemoteEngineClient(home, welcome={})
        await remote.start()
        yield engine, remote
    finally:
        if remote is not None:
            await remote.close()
        await server.close()
        await engine.stop()


async def test_the_remote_client_trades_as_the_local_one(home: Path) -> None:
    async with serving(home, risk={"max_qty": {"SIM:EURUSD": 5000}}) as (engine, remote):
        local = LocalEngineClient(engine)
        result = await remote.place_order(
            {"instrument": "sim:eurusd", "side": "buy", "qty": 1000, "sl": 0.5}
        )
        assert result["order"]["status"] == "filled" and result["rejected"] is None
        assert result["fills"][0]["qty"] == 1000
        json.dumps(result)

        # Marks move with every quote: the same positions, each marked when it was asked.
        [position] = await remote.positions()
        [same] = await local.positions()
        stable = ("instrument", "side", "qty", "avg_price", "opened_us")
        assert position.keys() == same.keys()
        assert [position[k] for k in stable] == [same[k] for k in stable]
        assert position["qty"] == 1000 and position["mark"] > 0
        account = await remote.account()
        assert account.keys() == (await local.account()).keys()
        assert account["open_positions"] == 1 and account["open_orders"] == 1
        [stop] = await remote.open_orders()
        assert stop["role"] == "sl" and stop == (await local.open_orders())[0]
        assert await remote.order_history(10) == await local.order_history(10)
        fills = await remote.fills()
        assert fills == await local.fills() and len(fills) == 1
        assert await remote.fills(since_us=fills[0]["ts_us"] + 1) == []

        refused = await remote.place_order({"instrument": "SIM:EURUSD", "side": "buy", "qty": 9e3})
        assert refused["rejected"]["limit"] == "max_qty"
        assert refused["order"]["status"] == "rejected"

        for bad, message in [
            ({"instrument": "SIM:EURUSD", "side": "buy"}, "give a quantity"),
            ({"instrument": "SIM:EURUSD", "side": "buy", "qty": "ten"}, "qty must be a number"),
            ({"instrument": "SIM:EURUSD", "side": "up", "qty": 1}, "bad side"),
            ({"side": "buy", "qty": 1}, "needs an instrument"),
            ({"instrument": "SIM:EURUSD", "side": "buy", "qty": 1, "colour": 2}, "colour"),
            ({"instrument": "EURUSD", "side": "buy", "qty": 1}, "bad instrument"),
        ]:
            for client in (remote, local):
                with pytest.raises(UsageError) as error:
                    await client.place_order(bad)
                assert message in str(error.value) and "\n" not in str(error.value)

        cancelled = await remote.cancel_order(stop["order_id"])
        assert cancelled["status"] == "cancelled"
        with pytest.raises(UsageError, match="is cancelled, not open"):
            await remote.cancel_order(stop["order_id"])

        note = await remote.add_journal_note("remote note", "2026-03-02")
        assert note["day"] == "2026-03-02" and note["text"] == "remote note"
        with pytest.raises(UsageError, match="bad day"):
            await remote.add_journal_note("x", "someday")
        closed = await remote.close_position("SIM:EURUSD")
        assert closed["order"]["role"] == "close" and closed["order"]["status"] == "filled"
        with pytest.raises(UsageError, match="no open position"):
            await remote.close_position("SIM:EURUSD")

        journal = await remote.journal()
        assert journal == await local.journal()
        assert [n["text"] for n in journal["notes"]] == ["remote note"]
        assert len(journal["trades"]) == 1 and len(journal["cumulative"]) == 1
        assert (await remote.journal("2026-03-02", "2026-03-02"))["trades"] == []
        with pytest.raises(UsageError, match="before the --from day"):
            await remote.journal("2026-03-05", "2026-03-01")


async def test_a_disabled_broker_is_one_clear_error_over_the_api(home: Path) -> None:
    async with serving(home, broker={"enabled": False}) as (engine, remote):
        assert engine.broker is None
        message = r"the paper broker is disabled \(\[broker\] enabled = false\)"
        for call in (
            remote.account(),
            remote.positions(),
            remote.open_orders(),
            remote.order_history(),
            remote.fills(),
            remote.cancel_order(1),
            remote.close_position("SIM:EURUSD"),
            remote.place_order({"instrument": "SIM:EURUSD", "side": "buy", "qty": 1}),
        ):
            with pytest.raises(SptraderError, match=message):
                await call
        # The journal (notes; no fills) still works.
        await remote.add_journal_note("no broker")
        assert [n["text"] for n in (await remote.journal())["notes"]] == ["no broker"]
