"""``sptrader order | orders | positions | cancel | close | journal`` without a daemon, as a
user runs them (``sptrader.cli.main`` in-process, a temporary home with a small config).

``order`` and ``close`` start an engine streaming just the instrument, wait for its first
SIM quote and fill through the paper broker; the quote each order saw is recorded (from
inside ``PaperBook.place``) so fills are checked against it exactly (slippage 0).
"""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path
from typing import Any

import pytest
from conftest import CliResult

from sptrader.broker.book import PaperBook
from sptrader.commands.trading import ORDER_COLUMNS, POSITION_COLUMNS

ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
CONFIG = """\
watchlist = ["SIM:GBPUSD"]

[store]
seed_days = 0.05
flush_interval_ms = 50

[feeds.sim]
tick_rate = 5.0

[broker]
slippage_bps = 0.0
fee_bps = 1.0

[risk]
max_qty = { "SIM:EURUSD" = 50000 }
"""
FEE_RATE = 1e-4  # fee_bps = 1


@pytest.fixture
def home(cli_home: Path) -> Path:
    cli_home.mkdir(parents=True)
    (cli_home / "config.toml").write_text(CONFIG)
    return cli_home


@pytest.fixture
def quotes(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, float, float]]:
    """(instrument, bid, ask) of the quote each order was placed at."""
    seen: list[tuple[str, float, float]] = []
    place = PaperBook.place

    def recording(self: PaperBook, request: Any, now_us: int) -> Any:
        quote = self.quotes.get(request.instrument)
        if quote is not None:
            seen.append((request.instrument, quote.bid, quote.ask))
        return place(self, request, now_us)

    monkeypatch.setattr(PaperBook, "place", recording)
    return seen


def user_error(result: CliResult, code: int = 2) -> str:
    """Exit ``code`` with one ``sptrader: ...`` line on stderr and no traceback."""
    assert result.code == code, result
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got: {result.err!r}"
    assert lines[0].startswith("sptrader: "), lines[0]
    assert "Traceback" not in result.err + result.out
    return lines[0]


def ok(result: CliResult) -> str:
    assert result.code == 0, result
    return result.out


def as_json(result: CliResult) -> Any:
    return json.loads(ok(result))


def csv_rows(text: str, header: tuple[str, ...]) -> list[dict[str, str]]:
    reader = csv.DictReader(io.StringIO(text))
    assert tuple(reader.fieldnames or ()) == header, text
    return list(reader)


# --- order, positions, orders, cancel ---------------------------------------------------------


def test_a_market_order_fills_at_the_quote_and_rests_its_stop_and_target(
    run, home: Path, quotes
) -> None:
    result = as_json(
        run("order", "buy", "sim:eurusd", "1000", "--sl", "0.5", "--tp", "2", "--json")
    )
    instrument, bid, ask = quotes[-1]
    assert instrument == "SIM:EURUSD" and 0 < bid <= ask
    order = result["order"]
    assert order["order_id"] == 1 and order["status"] == "filled"
    assert order["instrument"] == "SIM:EURUSD" and order["side"] == "buy"
    assert ISO_Z.match(order["created"]) and "created_us" not in order
    assert result["rejected"] is None
    [fill] = result["fills"]
    assert fill["price"] == pytest.approx(ask, rel=1e-11)  # a buy at the ask, no slippage
    assert fill["qty"] == 1000
    assert fill["fee"] == pytest.approx(1000 * ask * FEE_RATE)
    assert ISO_Z.match(fill["ts"])
    protective = {child["role"]: child for child in result["protective"]}
    assert protective["sl"]["type"] == "stop" and protective["sl"]["price"] == 0.5
    assert protective["tp"]["type"] == "limit" and protective["tp"]["price"] == 2.0
    assert {child["side"] for child in protective.values()} == {"sell"}
    assert {child["parent_id"] for child in protective.values()} == {1}

    # The table form of a second order: the order, its fill, and nothing resting.
    text = ok(run("order", "sell", "SIM:EURUSD", "400"))
    _instrument, bid, _ask = quotes[-1]
    assert text.splitlines()[0] == "order 4: sell 400 SIM:EURUSD market"
    assert re.search(r"filled 400 at [\d.]+ \(fee [\d.]+ USD\) at \d{4}-\d\d-\d\dT", text)
    assert f"filled 400 at {bid:,.5f} " in text  # a sell at the bid, at EURUSD's 5 decimals

    # positions: what is left (600 long), marked at the last stored close, and the account.
    out = ok(run("positions"))
    assert "SIM:EURUSD" in out and "long" in out and "600" in out
    assert "marked at their last stored 1m close" in out
    assert re.search(r"equity [\d,]+\.\d\d USD · cash [\d,]+\.\d\d · exposure", out)
    assert "day P&L" in out and "2 open orders" in out
    data = as_json(run("positions", "--format", "json"))
    assert data["marked_at"] == "last stored close"
    [position] = data["positions"]
    assert position["qty"] == pytest.approx(600) and position["side"] == "long"
    assert position["mark"] > 0 and ISO_Z.match(position["opened"])
    account = data["account"]
    assert account["open_positions"] == 1 and account["open_orders"] == 2
    assert account["equity"] == pytest.approx(account["cash"] + account["unrealized"])
    assert account["exposure"] == pytest.approx(600 * position["mark"])
    rows = csv_rows(ok(run("positions", "--format", "csv")), POSITION_COLUMNS)
    assert [row["instrument"] for row in rows] == ["SIM:EURUSD"]

    # orders: the two protective orders work; --all has every one, newest first.
    out = ok(run("orders"))
    assert "sl of 1" in out and "tp of 1" in out
    opened = as_json(run("orders", "--format", "json"))
    assert [(o["order_id"], o["role"], o["status"]) for o in opened] == [
        (2, "sl", "open"),
        (3, "tp", "open"),
    ]
    assert all(ISO_Z.match(o["created"]) for o in opened)
    every = csv_rows(ok(run("orders", "--all", "--format", "csv")), ORDER_COLUMNS)
    assert [row["order_id"] for row in every] == ["4", "3", "2", "1"]
    assert [row["status"] for row in every] == ["filled", "open", "open", "filled"]

    # cancel: the stored order is cancelled; again it is not open; unknown ids are named.
    assert ok(run("cancel", "2")).startswith("cancelled order 2: sell 1,000 SIM:EURUSD stop 0.5")
    assert [o["order_id"] for o in as_json(run("orders", "--format", "json"))] == [3]
    assert "order 2 is cancelled, not open" in user_error(run("cancel", "2"))
    assert "no order 99" in user_error(run("cancel", "99"))
    cancelled = as_json(run("orders", "--all", "--format", "json"))
    assert {o["order_id"]: o["status"] for o in cancelled}[2] == "cancelled"


def test_close_flattens_the_position_and_the_journal_has_the_trade(run, home: Path, quotes) -> None:
    ok(run("order", "buy", "SIM:EURUSD", "1000", "--sl", "0.5"))
    _instrument, _bid, ask = quotes[-1]
    out = ok(run("close", "sim:eurusd"))
    _instrument, bid, _ask = quotes[-1]
    assert out.splitlines()[0] == "order 3: sell 1,000 SIM:EURUSD market (closing the position)"
    assert "filled 1,000 at" in out
    assert "no open positions" in ok(run("positions"))
    assert as_json(run("orders", "--format", "json")) == []  # the stop-loss went with it
    stopped = as_json(run("orders", "--all", "--format", "json"))
    assert {o["order_id"]: o["reason"] for o in stopped}[2] == "position closed"
    assert "no open position in SIM:EURUSD" in user_error(run("close", "SIM:EURUSD"))

    expected = (bid - ask) * 1000 - 1000 * (ask + bid) * FEE_RATE
    [trade] = csv_rows(ok(run("journal", "--format", "csv")), TRADE_HEADER)
    assert trade["instrument"] == "SIM:EURUSD" and trade["side"] == "long"
    assert float(trade["pnl"]) == pytest.approx(expected, abs=1e-6)
    assert ISO_Z.match(trade["entry_time"]) and ISO_Z.match(trade["exit_time"])
    stats = as_json(run("journal", "stats", "--format", "json"))
    assert stats["trades"] == 1 and stats["net_pnl"] == pytest.approx(expected, abs=1e-6)
    assert stats["fees"] == pytest.approx(1000 * (ask + bid) * FEE_RATE, abs=1e-6)
    table = ok(run("journal"))
    assert "trades 1:" in table and "SIM:EURUSD" in table and "win rate" in table


TRADE_HEADER = (
    "day",
    "venue",
    "instrument",
    "side",
    "qty",
    "entry_time",
    "entry_price",
    "exit_time",
    "exit_price",
    "pnl",
    "fees",
)


def test_a_limit_order_rests_in_the_store_for_the_next_engine(run, home: Path, quotes) -> None:
    out = ok(run("order", "sell", "SIM:EURUSD", "100", "--limit", "5", "--day"))
    assert out.splitlines()[0] == "order 1: sell 100 SIM:EURUSD limit 5.00000 day"
    assert "order 1 open: stored, and worked whenever an engine runs" in out
    [order] = as_json(run("orders", "--format", "json"))
    assert order["type"] == "limit" and order["status"] == "open" and order["tif"] == "day"
    assert ISO_Z.match(order["expires"]) and order["expires"].endswith("T00:00:00Z")
    assert "no open positions" in ok(run("positions"))


def test_risk_sizing_takes_the_quantity_from_the_stop(run, home: Path, quotes) -> None:
    result = as_json(run("order", "buy", "SIM:EURUSD", "--risk", "0.5", "--sl", "1", "--json"))
    _instrument, _bid, ask = quotes[-1]
    assert result["order"]["qty"] == pytest.approx(100_000 * 0.5 / 100 / (ask - 1.0))


def test_a_rejected_order_names_the_limit_and_the_numbers(run, home: Path, quotes) -> None:
    line = user_error(run("order", "buy", "SIM:EURUSD", "60000"), code=1)
    assert line == (
        "sptrader: order 1 rejected (max_qty): max quantity for SIM:EURUSD:"
        " the position would be 60000, the limit is 50000"
    )
    result = run("order", "buy", "SIM:EURUSD", "70000", "--json")
    assert result.code == 1
    data = json.loads(result.out)
    assert data["rejected"]["limit"] == "max_qty" and data["order"]["status"] == "rejected"
    history = as_json(run("orders", "--all", "--format", "json"))
    assert [(o["order_id"], o["status"]) for o in history] == [(2, "rejected"), (1, "rejected")]
    assert "the limit is 50000" in history[0]["reason"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("order", "buy", "SIM:EURUSD", "abc"), "the quantity must be a number, not 'abc'"),
        (("order", "buy", "SIM:EURUSD", "-5"), "the quantity must be a positive number"),
        (("order", "hold", "SIM:EURUSD", "1"), "bad side 'hold': use buy or sell"),
        (("order", "buy", "EURUSD", "1"), "bad instrument 'EURUSD'"),
        (("order", "buy", "SIM:EURUSD"), "give a quantity, or --risk PCT"),
        (("order", "buy", "SIM:EURUSD", "1", "--risk", "1"), "not both"),
        (("order", "buy", "SIM:EURUSD", "--risk", "1"), "needs a stop-loss (--sl)"),
        (("order", "buy", "SIM:EURUSD", "1", "--limit", "1", "--stop", "2"), "--limit or --stop"),
        (("order", "buy", "SIM:EURUSD", "1", "--limit", "1.2", "--sl", "1.3"), "below the entry"),
        (("order", "sell", "SIM:EURUSD", "1", "--stop", "1", "--tp", "1.1"), "below the entry"),
        (("order", "buy", "SIM:EURUSD", "1", "--wait", "0"), "--wait must be a positive"),
        (("order", "buy", "DUKASCOPY:EURUSD", "1"), "DUKASCOPY has no live quotes"),
        (("cancel", "abc"), "an order id is a positive whole number"),
        (("journal", "--from", "March"), "bad --from day 'March'"),
        (("journal", "--from", "2026-03-05", "--to", "2026-03-05"), "--to is exclusive"),
        (("journal", "add", "   "), "a journal note needs some text"),
        (("journal", "add", "x", "--day", "2026-13-01"), "bad day '2026-13-01'"),
    ],
)
def test_malformed_input_is_one_line_and_exit_2(run, home: Path, args, message: str) -> None:
    assert message in user_error(run(*args))


# --- journal ----------------------------------------------------------------------------------


def test_journal_notes_by_day(run, home: Path) -> None:
    assert ok(run("journal", "add", "waited for the London open", "--day", "2026-03-02")) == (
        "note 1 for 2026-03-02 saved\n"
    )
    assert ok(run("journal", "add", "overtraded")).startswith("note 2 for 20")
    out = ok(run("journal", "--from", "2026-03-01", "--to", "2026-03-03"))  # [from, to)
    assert "2026-03-01 to 2026-03-02" in out
    assert "waited for the London open" in out and "overtraded" not in out
    assert "no closed trades" in out
    data = as_json(run("journal", "--format", "json"))
    assert [note["text"] for note in data["notes"]] == ["waited for the London open", "overtraded"]
    assert all(ISO_Z.match(note["created"]) for note in data["notes"])
    assert data["trades"] == [] and data["stats"]["trades"] == 0
    assert data["days"][0]["day"] == "2026-03-02"
    assert ok(run("journal", "--format", "csv")) == ",".join(TRADE_HEADER) + "\n"
    assert "no closed trades" in ok(run("journal", "stats"))
    [row] = csv_rows(ok(run("journal", "stats", "--format", "csv")), STAT_HEADER)
    assert row["trades"] == "0" and row["win_rate"] == ""
    assert "2026-03-02" not in ok(run("journal", "--from", "today"))


STAT_HEADER = (
    "trades",
    "wins",
    "losses",
    "breakeven",
    "win_rate",
    "avg_win",
    "avg_loss",
    "profit_factor",
    "expectancy",
    "net_pnl",
    "gross_profit",
    "gross_loss",
    "largest_win",
    "largest_loss",
    "fees",
    "max_drawdown",
    "max_drawdown_pct",
)


def test_a_disabled_broker_says_so(run, cli_home: Path) -> None:
    cli_home.mkdir(parents=True)
    config = CONFIG.replace("[broker]\n", "[broker]\nenabled = false\n")
    (cli_home / "config.toml").write_text(config)
    message = "sptrader: the paper broker is disabled ([broker] enabled = false)"
    for args in (
        ("positions",),
        ("orders",),
        ("cancel", "1"),
        ("order", "buy", "SIM:EURUSD", "1"),
        ("close", "SIM:EURUSD"),
    ):
        assert user_error(run(*args), code=1) == message, args
    # The journal is the trader's notes: it works all the same.
    assert ok(run("journal", "add", "no broker today")).startswith("note 1 for ")


def test_no_quote_in_time_places_nothing(run, home: Path) -> None:
    # The feed backfills before it streams: no quote comes within a millisecond.
    line = user_error(run("order", "buy", "SIM:EURUSD", "1", "--wait", "0.001"), code=1)
    assert line.startswith("sptrader: no quote for SIM:EURUSD within 0.001s (feed sim is ")
    assert line.endswith("nothing was placed (try --wait)")
    assert "no orders yet" in ok(run("orders", "--all"))


def test_halt_without_a_daemon_cancels_paper_orders_and_holds_until_resume(run, home: Path) -> None:
    ok(run("order", "buy", "SIM:EURUSD", "1000", "--limit", "0.5"))
    halted = ok(run("halt", "--reason", "news at 14:30"))
    assert halted == (
        "paper: HALTED, new entries refused until `sptrader resume`; 1 working order cancelled\n"
    )
    (order,) = as_json(run("orders", "--all", "--format", "json"))
    assert order["status"] == "cancelled" and order["reason"] == "halted: news at 14:30"
    refused = run("order", "buy", "SIM:EURUSD", "1000")
    assert refused.code == 1 and "trading is halted (news at 14:30)" in refused.err
    assert ok(run("resume")) == "paper: trading resumed\n"
    assert ok(run("resume", "paper")) == "paper is not halted: nothing to resume\n"
    ok(run("order", "buy", "SIM:EURUSD", "1000"))
