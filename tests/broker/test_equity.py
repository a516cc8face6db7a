"""The equity curve (sptrader.broker.equity): cash, unrealized P&L and exposure per hour,
checked against figures computed by hand; and ``sptrader journal equity``."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import polars as pl
import pytest

from sptrader.broker import equity, journal, records
from sptrader.broker.orders import Fill
from sptrader.errors import UsageError
from sptrader.store import Store

DAY = date(2026, 3, 2)
NEXT_DAY = date(2026, 3, 3)  # --to is exclusive
MINUTE = 60_000_000
HOUR = 60 * MINUTE
T0 = journal.day_start_us(DAY)
CASH = 10_000.0


def at(hours: int, minutes: int = 0) -> int:
    return T0 + hours * HOUR + minutes * MINUTE


# 1m bars (open time, close). A 03:00 bar closes after 02:xx's end: not in hour 2.
BARS = [
    ("SIM:A", at(0, 30), 100.0),
    ("SIM:A", at(1, 10), 110.0),
    ("SIM:A", at(2, 59), 105.0),
    ("SIM:A", at(3, 0), 999.0),
    ("SIM:B", at(1, 30), 50.0),
]
# (instrument, side, qty, price, fee, time); SIM:C has no bars (marked at its average).
FILLS = [
    ("SIM:A", "buy", 10, 101.0, 1.0, at(0, 45)),  # long 10 @101
    ("SIM:A", "sell", 4, 112.0, 0.5, at(1, 20)),  # partial: +44 realized, long 6 @101
    ("SIM:B", "sell", 5, 52.0, 0.25, at(1, 40)),  # short 5 @52
    ("SIM:C", "buy", 2, 20.0, 0.0, at(2, 0)),  # at 02:00 sharp: hour 2's, not hour 1's
]
# Per hour bucket, at its end: (cash, unrealized, exposure), by hand.
#  0: cash 10000-1; A (100-101)*10 = -10; 10*100
#  1: cash 10000-1+44-0.5-0.25; A (110-101)*6 = 54, B (50-52)*-5 = 10; 660+250
#  2: A (105-101)*6 = 24, B 10, C 0; 630+250+40
#  3: A (999-101)*6 = 5388, B 10, C 0; 5994+250+40
EXPECTED = [
    (9_999.0, -10.0, 1_000.0),
    (10_042.25, 64.0, 910.0),
    (10_042.25, 34.0, 920.0),
    (10_042.25, 5_398.0, 6_284.0),
]


def save(store: Store) -> None:
    store.upsert_bars(
        pl.DataFrame(
            {
                "instrument": [name for name, _, _ in BARS],
                "ts": [ts for _, ts, _ in BARS],
                "open": [close for _, _, close in BARS],
                "high": [close for _, _, close in BARS],
                "low": [close for _, _, close in BARS],
                "close": [close for _, _, close in BARS],
                "volume": [1.0] * len(BARS),
                "trades": [1] * len(BARS),
            }
        ).with_columns(pl.col("ts").cast(pl.Datetime("us")))
    )
    fills = [
        Fill(index + 1, index + 1, name, side, qty, price, fee, ts)
        for index, (name, side, qty, price, fee, ts) in enumerate(FILLS)
    ]
    records.save_changes(store, ([], [records.fill_row(fill) for fill in fills]))


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    store = Store(tmp_path / "equity.duckdb")
    store.migrate()
    save(store)
    yield store
    store.close()


def rows(frame: pl.DataFrame) -> list[tuple[float, float, float]]:
    return [
        (round(cash, 6), round(unrealized, 6), round(exposure, 6))
        for cash, unrealized, exposure in frame.select("cash", "unrealized", "exposure").rows()
    ]


def test_the_curve_hour_by_hour(store: Store) -> None:
    frame = equity.equity_curve(store, CASH, T0, at(4), "1h")
    assert frame.columns == list(equity.COLUMNS)
    assert frame.schema["ts"] == pl.Datetime("us")
    assert frame["ts"].cast(pl.Int64).to_list() == [at(hour) for hour in range(4)]
    assert rows(frame) == EXPECTED
    for (cash, unrealized, _), value in zip(EXPECTED, frame["equity"], strict=True):
        assert value == pytest.approx(cash + unrealized)


def test_a_later_start_marks_at_the_closes_before_it(store: Store) -> None:
    # From 02:00: B's only close (01:30) is before the first bucket; the state before
    # the range (the fills of hours 0 and 1) carries in.
    frame = equity.equity_curve(store, CASH, at(2), at(3) + 1, "1h")
    assert rows(frame) == EXPECTED[2:]
    # Before any fill: flat, the starting cash.
    early = equity.equity_curve(store, CASH, T0 - 2 * HOUR, T0, "1h")
    assert rows(early) == [(CASH, 0.0, 0.0)] * 2
    assert equity.equity_curve(store, CASH, at(2), at(2), "1h").is_empty()


def test_points_default_from_the_first_fill_to_now(store: Store) -> None:
    points = equity.curve_points(store, CASH, timeframe="1h", now=at(3, 30))
    assert [point["ts_us"] for point in points] == [at(hour) for hour in range(4)]
    assert points[1]["equity"] == pytest.approx(10_106.25)
    assert json.loads(json.dumps(points)) == points
    with pytest.raises(UsageError, match="unknown timeframe"):
        equity.curve_points(store, CASH, timeframe="1x")
    with pytest.raises(UsageError, match="too many"):
        equity.equity_curve(store, CASH, 0, at(0), "1m")


def test_the_cli_prints_the_curve(run, cli_home: Path) -> None:
    cli_home.mkdir(parents=True)
    (cli_home / "config.toml").write_text("[broker]\nstarting_cash = 10000.0\n")
    store = Store(cli_home / "sptrader.duckdb")
    store.migrate()
    save(store)
    store.close()
    result = run(
        "journal",
        "equity",
        "--from",
        DAY.isoformat(),
        "--to",
        NEXT_DAY.isoformat(),
        "--format",
        "csv",
    )
    assert result.code == 0, result
    lines = list(csv.DictReader(io.StringIO(result.out)))
    assert len(lines) == 24
    assert lines[0]["ts"] == "2026-03-02T00:00:00Z"
    assert [float(line["equity"]) for line in lines[:4]] == [
        9_989.0,
        10_106.25,
        10_076.25,
        15_440.25,
    ]
    assert float(lines[-1]["cash"]) == 10_042.25
    table = run("journal", "equity", "--from", DAY.isoformat(), "--to", NEXT_DAY.isoformat())
    assert table.code == 0, table
    assert "15,440.25" in table.out and "EQUITY" in table.out
    bad = run("journal", "equity", "--tf", "1x")
    assert bad.code == 2 and "unknown timeframe" in bad.err
