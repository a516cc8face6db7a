"""How many decimals an instrument's prices show, as the engine client answers it
(``price_decimals``): the feed's symbol metadata cached with its list, SIM's and
Dukascopy's built-in tables, else what its stored closes use; and the migration that
added the cache's column."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import fake_binance
import polars as pl
import pytest
from conftest import make_settings
from fakes import FakeHttpServer, FakeRequest, FakeResponse, free_port

from sptrader.client.connect import connect
from sptrader.engine import Engine
from sptrader.models import US_PER_MINUTE
from sptrader.store import Store
from sptrader.store.database import available_migrations


class Binance:
    """The fake Binance REST side, which can be taken down (503)."""

    def __init__(self) -> None:
        self.down = False
        self.server = FakeHttpServer(self)

    def __call__(self, request: FakeRequest) -> FakeResponse | None:
        if self.down:
            return FakeResponse(503, "Service Unavailable")
        return fake_binance.history_route(request)

    @property
    def list_requests(self) -> int:
        return sum(r.path == "/api/v3/exchangeInfo" for r in self.server.requests)


@pytest.fixture
def binance() -> Iterator[Binance]:
    exchange = Binance()
    with exchange.server:
        yield exchange


def settings(home: Path, binance: Binance):
    live = f"ws://127.0.0.1:{free_port()}"
    return make_settings(
        home,
        watchlist=["SIM:EURUSD"],
        feeds={
            "binance": fake_binance.config_section(live, binance.server.url),
            "dukascopy": {"enabled": True},
        },
    )


def test_a_binance_tick_size_is_cached_with_the_list(home: Path, binance: Binance) -> None:
    engine = Engine(settings(home, binance))
    store = engine.open_store()
    try:
        # Nothing cached yet: the answer does not wait for the exchange.
        assert engine.symbols.price_decimals(["BINANCE:BTCUSDT"]) == {}
        assert binance.list_requests == 0
        feed = engine.history_feed("BINANCE:X")
        assert feed is not None
        engine.symbols.ensure(feed)
        binance.down = True  # from here on, the cache answers
        assert engine.symbols.price_decimals(["BINANCE:BTCUSDT", "BINANCE:ETHBTC"]) == {
            "BINANCE:BTCUSDT": 2,  # tickSize 0.01000000
            "BINANCE:ETHBTC": 2,
        }
        stored = store.cursor().execute(
            "SELECT price_decimals FROM symbols WHERE instrument = 'BINANCE:BTCUSDT'"
        )
        assert stored.fetchall() == [(2,)]
    finally:
        store.close()


async def test_the_client_answers_from_tables_metadata_and_stored_closes(
    home: Path, binance: Binance
) -> None:
    config = settings(home, binance)
    # An instrument no enabled feed lists: its stored closes say 2 decimals.
    store = Store(home / "sptrader.duckdb")
    store.migrate()
    start = 1_700_000_000_000_000 - 1_700_000_000_000_000 % US_PER_MINUTE
    closes = [48109.96, 48110.0, 48109.5]
    store.upsert_bars(
        pl.DataFrame(
            {
                "instrument": ["KRAKEN:BTC/USD"] * 3,
                "ts": [start + i * US_PER_MINUTE for i in range(3)],
                "open": closes,
                "high": closes,
                "low": closes,
                "close": closes,
                "volume": [1.0] * 3,
                "trades": [1] * 3,
            }
        ).with_columns(pl.col("ts").cast(pl.Datetime("us")))
    )
    store.close()
    async with connect(config) as client:
        decimals = await client.price_decimals(
            ["SIM:USDJPY", "SIM:EURUSD", "DUKASCOPY:USDJPY", "KRAKEN:BTC/USD", "BINANCE:NOPE"]
        )
    assert decimals == {
        "SIM:USDJPY": 3,  # a JPY pair: tick 0.001
        "SIM:EURUSD": 5,
        "DUKASCOPY:USDJPY": 3,
        "KRAKEN:BTC/USD": 2,
    }


def test_the_migration_adds_the_column_and_marks_old_lists_stale(home: Path) -> None:
    store = Store(home / "old.duckdb")
    cursor = store.cursor()
    cursor.execute(
        "CREATE TABLE schema_version (version INTEGER PRIMARY KEY, name VARCHAR NOT NULL,"
        " applied_at TIMESTAMP NOT NULL DEFAULT current_localtimestamp())"
    )
    for version, name, sql in available_migrations():
        if version < 8:
            cursor.execute(sql)
            cursor.execute(
                "INSERT INTO schema_version (version, name) VALUES (?, ?)", [version, name]
            )
    cursor.execute("INSERT INTO symbols VALUES ('sim', 'SIM:EURUSD', 'x', 'fx', '', '')")
    cursor.execute("INSERT INTO symbol_lists VALUES ('sim', TIMESTAMP '2026-01-01', 1)")
    assert "008_symbol_price_decimals.sql" in store.migrate()
    rows = cursor.execute("SELECT instrument, price_decimals FROM symbols").fetchall()
    assert rows == [("SIM:EURUSD", None)]  # kept, serving until the refetch
    fetched = cursor.execute("SELECT epoch_us(fetched_at) FROM symbol_lists").fetchall()
    assert fetched == [(0,)]  # older than any TTL: fetched again on next use
    store.close()
