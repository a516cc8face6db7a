"""The journal (sptrader.broker.journal): notes by UTC day, trades rebuilt from fills, and
statistics checked against figures computed by hand."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest

from sptrader.broker import journal, records
from sptrader.broker.orders import Fill
from sptrader.errors import UsageError
from sptrader.schema import FILL_COLUMNS
from sptrader.store import Store

DAY1 = date(2026, 3, 2)
DAY2 = date(2026, 3, 3)
HOUR = 3_600_000_000


def at(day: date, hours: float) -> int:
    return journal.day_start_us(day) + int(hours * HOUR)


# (instrument, side, qty, price, fee, time). Hand-computed trades, in the order they close:
#   A  X long  10 @100 -> @110, fees 1+1:        +100 - 2   = +98   (day 1)
#   B  Y short  5 @50  -> @54,  fees .5+.5:       -20 - 1   = -21   (day 1)
#   C  X long   4 @100 -> 2 @90, 2 @95, no fees:  -20 - 10  = -30   (day 2)
#   D  X long   1 @200 -> @260:                              +60   (day 2)
#   E  Y long   3 @10, still open: not a trade.
FILLS = [
    ("X", "buy", 10, 100.0, 1.0, at(DAY1, 9)),
    ("Y", "sell", 5, 50.0, 0.5, at(DAY1, 9.5)),
    ("X", "sell", 10, 110.0, 1.0, at(DAY1, 10)),
    ("Y", "buy", 5, 54.0, 0.5, at(DAY1, 11)),
    ("X", "buy", 4, 100.0, 0.0, at(DAY2, 9)),
    ("X", "sell", 2, 90.0, 0.0, at(DAY2, 10)),
    ("X", "sell", 2, 95.0, 0.0, at(DAY2, 11)),
    ("X", "buy", 1, 200.0, 0.0, at(DAY2, 12)),
    ("X", "sell", 1, 260.0, 0.0, at(DAY2, 13)),
    ("Y", "buy", 3, 10.0, 0.0, at(DAY2, 14)),
]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    store = Store(tmp_path / "journal.duckdb")
    store.migrate()
    yield store
    store.close()


def save_fills(store: Store, rows=FILLS) -> None:
    fills = [
        Fill(index + 1, index + 1, f"SIM:{name}", side, qty, price, fee, ts)
        for index, (name, side, qty, price, fee, ts) in enumerate(rows)
    ]
    records.save_changes(store, ([], [records.fill_row(fill) for fill in fills]))


# --- notes ------------------------------------------------------------------------------


def test_notes_are_kept_by_day_in_the_order_written(store: Store) -> None:
    first = journal.add_note(store, "  patient morning  ", DAY1.isoformat(), now=at(DAY2, 8))
    assert first == {
        "note_id": 1,
        "day": "2026-03-02",
        "created_us": at(DAY2, 8),
        "text": "patient morning",
    }
    today = journal.add_note(store, "chased a breakout", now=at(DAY2, 20))
    assert today["day"] == "2026-03-03" and today["note_id"] == 2
    journal.add_note(store, "earlier note about day 1", DAY1, now=at(DAY2, 21))

    every = journal.notes(store)
    assert [note["text"] for note in every] == [
        "patient morning",
        "earlier note about day 1",
        "chased a breakout",
    ]
    assert [note["text"] for note in journal.notes(store, "2026-03-03")] == ["chased a breakout"]
    assert [n["note_id"] for n in journal.notes(store, None, "2026-03-02")] == [1, 3]
    assert journal.notes(store, "2026-03-04", "2026-03-09") == []
    json.dumps(every)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda s: journal.add_note(s, "   "), "needs some text"),
        (lambda s: journal.add_note(s, "x", "02/03/2026"), "bad day '02/03/2026'"),
        (lambda s: journal.notes(s, "2026-03-05", "2026-03-01"), "before the --from day"),
        (lambda s: journal.read(s, "soon"), "bad --from day 'soon'"),
    ],
)
def test_bad_input_is_one_line(store: Store, call, message: str) -> None:
    with pytest.raises(UsageError) as error:
        call(store)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_today_and_yesterday_are_utc_days() -> None:
    now = at(DAY2, 23.9)
    assert journal.parse_day("today", now=now) == DAY2
    assert journal.parse_day("Yesterday", now=now) == DAY1
    assert journal.parse_day(None) is None


# --- trades and statistics --------------------------------------------------------------


def test_trades_are_round_trips_with_pnl_net_of_fees(store: Store) -> None:
    save_fills(store)
    trades = journal.trades(records.fills(store))
    assert [(t["instrument"], t["side"], t["day"]) for t in trades] == [
        ("SIM:X", "long", "2026-03-02"),
        ("SIM:Y", "short", "2026-03-02"),
        ("SIM:X", "long", "2026-03-03"),
        ("SIM:X", "long", "2026-03-03"),
    ]
    assert [t["pnl"] for t in trades] == pytest.approx([98, -21, -30, 60])
    assert [t["fees"] for t in trades] == pytest.approx([2, 1, 0, 0])
    partial = trades[2]
    assert partial["qty"] == 4 and partial["entry_price"] == 100
    assert partial["exit_price"] == pytest.approx(92.5)
    assert partial["entry_time_us"] == at(DAY2, 9) and partial["exit_time_us"] == at(DAY2, 11)
    assert journal.trades([]) == []


def test_stats_of_every_day_by_hand(store: Store) -> None:
    save_fills(store)
    data = journal.read(store, starting_cash=1000.0)
    stats = data["stats"]
    assert stats["trades"] == 4
    assert (stats["wins"], stats["losses"]) == (2, 2)
    assert stats["win_rate"] == 0.5
    assert stats["avg_win"] == pytest.approx((98 + 60) / 2)
    assert stats["avg_loss"] == pytest.approx((-21 - 30) / 2)
    assert stats["profit_factor"] == pytest.approx(158 / 51)
    assert stats["expectancy"] == pytest.approx(107 / 4)
    assert stats["net_pnl"] == pytest.approx(107)
    assert stats["fees"] == pytest.approx(3)
    # Running total 0, 98, 77, 47, 107: the fall from 98 to 47.
    assert stats["max_drawdown"] == pytest.approx(51)
    assert stats["max_drawdown_pct"] == pytest.approx(51 / 1098 * 100)

    assert [p["cum_pnl"] for p in data["cumulative"]] == pytest.approx([98, 77, 47, 107])
    assert [p["time_us"] for p in data["cumulative"]] == [
        at(DAY1, 10),
        at(DAY1, 11),
        at(DAY2, 11),
        at(DAY2, 13),
    ]
    assert [(d["day"], d["trades"], d["wins"], d["losses"]) for d in data["days"]] == [
        ("2026-03-02", 2, 1, 1),
        ("2026-03-03", 2, 1, 1),
    ]
    assert [d["pnl"] for d in data["days"]] == pytest.approx([77, 30])
    assert data["from"] is None and data["to"] is None
    json.dumps(data, allow_nan=False)


def test_a_range_of_days_keeps_earlier_pnl_out_of_its_stats(store: Store) -> None:
    save_fills(store)
    journal.add_note(store, "day two", DAY2)
    journal.add_note(store, "day one", DAY1)
    data = journal.read(store, "2026-03-03", "2026-03-03", starting_cash=1000.0)
    assert data["from"] == data["to"] == "2026-03-03"
    assert [t["pnl"] for t in data["trades"]] == pytest.approx([-30, 60])
    assert [note["text"] for note in data["notes"]] == ["day two"]
    stats = data["stats"]
    assert stats["net_pnl"] == pytest.approx(30)
    assert stats["profit_factor"] == pytest.approx(2.0)
    # Running total 0, -30, 30 from an equity of 1000 + 77 (day one's trades).
    assert stats["max_drawdown"] == pytest.approx(30)
    assert stats["max_drawdown_pct"] == pytest.approx(30 / 1077 * 100)
    assert data["days"] == [
        {
            "day": "2026-03-03",
            "trades": 2,
            "wins": 1,
            "losses": 1,
            "pnl": pytest.approx(30),
            "fees": 0.0,
            "notes": ["day two"],
        }
    ]


def test_only_wins_has_no_finite_profit_factor_and_no_drawdown(store: Store) -> None:
    save_fills(store, [FILLS[0], FILLS[2]])
    stats = journal.read(store)["stats"]
    assert stats["trades"] == 1 and stats["wins"] == 1
    assert stats["profit_factor"] is None  # infinite: JSON has no infinity
    assert stats["max_drawdown"] == 0.0
    assert stats["max_drawdown_pct"] is None  # no starting cash given


def test_no_trades_at_all(store: Store) -> None:
    journal.add_note(store, "flat all day", DAY1)
    data = journal.read(store, starting_cash=1000.0)
    assert data["trades"] == [] and data["cumulative"] == []
    assert data["stats"]["trades"] == 0
    assert data["stats"]["win_rate"] is None and data["stats"]["profit_factor"] is None
    assert data["stats"]["max_drawdown"] == 0.0
    assert [d["notes"] for d in data["days"]] == [["flat all day"]]


def test_one_fill_layout() -> None:
    """A Fill, the journal's and the backtest's fill frames and the fills table hold the
    same values: sptrader.schema's FILL_COLUMNS."""
    assert [field.name for field in dataclasses.fields(Fill)] == FILL_COLUMNS
    assert sorted(records.FILL_FIELDS) == sorted(FILL_COLUMNS)


def test_the_drawdown_is_shown_as_a_positive_fall_in_the_cli_and_the_tui(store: Store) -> None:
    """One sign everywhere: the journal's figures (51 from the peak of 98, 4.64% of the
    equity at that peak) read the same in `sptrader journal stats` and the Journal
    screen, with no minus sign."""
    from sptrader.commands.journal import stats_lines
    from sptrader.screens.journal import stats_text

    save_fills(store)
    stats = journal.read(store, starting_cash=1000.0)["stats"]
    assert stats["max_drawdown"] > 0 and stats["max_drawdown_pct"] > 0
    (cli_line,) = [line for line in stats_lines(stats, "USD") if "max drawdown" in line]
    (tui_line,) = [
        line for line in stats_text(stats).plain.splitlines() if line.startswith("Max drawdown")
    ]
    for line in (cli_line, tui_line):
        assert "51.00 (4.64%" in line, line
        assert "-51" not in line and "-4.64" not in line, line
