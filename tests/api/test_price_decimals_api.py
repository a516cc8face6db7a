"""``price_decimals`` over the API: a daemon answers as this process's engine does, and
a daemon started before the method existed leaves prices to be formatted by their own
digits instead of failing the command."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_api import serving

from sptrader.api import methods
from sptrader.client.local import LocalEngineClient
from sptrader.client.remote import RemoteEngineClient

ASKED = ["SIM:EURUSD", "SIM:USDJPY", "SIM:BTCUSD"]


async def test_the_daemon_answers_as_the_local_engine(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with serving(home) as (engine, _server):
        local = await LocalEngineClient(engine).price_decimals(ASKED)
        remote = RemoteEngineClient(home, welcome={})
        await remote.start()
        try:
            assert await remote.price_decimals(ASKED) == local
            assert local == {"SIM:EURUSD": 5, "SIM:USDJPY": 3, "SIM:BTCUSD": 2}
            # An older daemon: no such method.
            monkeypatch.delitem(methods.METHODS, "price_decimals")
            assert await remote.price_decimals(ASKED) == {}
        finally:
            await remote.close()
