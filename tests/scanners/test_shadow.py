"""Shadow testing: outcomes against a hand-computed table, a scanner run recording its
variations' signals (a failing one fails only its lineage step), the report's figures
against the stored rows, `sptrader shadow report`, config errors and the Strategies
screen's shadow table."""

from __future__ import annotations

import json

import msgspec
import polars as pl
import pytest
from conftest import make_config, make_settings, wait_for
from test_scanners import make_engine, scanner_table, store_bars

from sptrader.clock import now_us
from sptrader.engine import Engine
from sptrader.errors import ConfigError
from sptrader.models import US_PER_DAY, US_PER_MINUTE
from sptrader.scanners import lineage, shadow
from sptrader.scanners.service import ScannerService
from sptrader.scanners.shadow import resolve_outcomes
from sptrader.store import Store
from sptrader.strategies import registry
from sptrader.strategies.base import Strategy

__all__ = ["make_engine"]  # the fixture, imported from test_scanners


class AboveSma(Strategy):
    """Buy on each bar whose close is at least ``factor`` times its SMA(``sma``) (stacked:
    all instruments in one call); ``explode`` raises."""

    name = "test_above_sma"
    stacked = True

    class Params(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
        sma: int = 3
        factor: float = 1.0
        explode: bool = False

    def indicators(self) -> list[str]:
        return [f"sma{self.params.sma}"]

    def evaluate(self, bars: pl.DataFrame) -> pl.DataFrame:
        if self.params.explode:
            raise RuntimeError("this variation explodes")
        column = f"sma{self.params.sma}"  # missing unless its own indicators were added
        return bars.filter(pl.col("close") >= pl.col(column) * self.params.factor).select(
            "instrument",
            "ts",
            pl.lit("buy").alias("side"),
            pl.lit(1.0).alias("strength"),
            pl.format("close above {}", pl.lit(column)).alias("reason"),
        )


registry.register(AboveSma)

M = US_PER_MINUTE
T0 = 1_767_607_200_000_000  # 2026-01-05 10:00 UTC: the signal bar of most rows below

# 1m bars from 10:00 (open, high, low, close); 10:07 is still forming at NOW.
BARS = [
    (100.0, 100.0, 100.0, 100.0),  # 10:00 the signal bar
    (100.0, 100.6, 99.7, 100.4),  # 10:01 the entry bar: entry at its open, 100
    (100.4, 101.05, 100.3, 101.0),  # 10:02
    (101.0, 101.1, 99.0, 99.2),  # 10:03 a wide bar
    (99.2, 99.5, 98.9, 99.4),  # 10:04
    (99.4, 99.6, 99.3, 99.5),  # 10:05
    (101.5, 101.6, 101.4, 101.5),  # 10:06 opens with a gap up
    (99.0, 106.0, 94.0, 100.0),  # 10:07 not closed at NOW: never read
]
NOW = T0 + 7 * M


def crafted_bars() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "instrument": ["SIM:A"] * len(BARS),
            "ts": [T0 + index * M for index in range(len(BARS))],
            "open": [bar[0] for bar in BARS],
            "high": [bar[1] for bar in BARS],
            "low": [bar[2] for bar in BARS],
            "close": [bar[3] for bar in BARS],
        }
    )


# key, side, signal bar (minutes after 10:00), horizon (bars), own stop, own target
SIGNALS = [
    (1, "buy", 0, 5, None, None),  # 0.5 % / 1 %: stop 99.5, target 101
    (2, "sell", 0, 5, 100.5, 99.0),  # the entry bar's high reaches the stop
    (3, "buy", 0, 5, 99.0, 101.1),  # 10:03 reaches both: the stop
    (4, "buy", 0, 5, 95.0, 105.0),  # neither within 10:01-10:05: timeout
    (5, "buy", 0, 10, 95.0, 105.0),  # its horizon (to 10:11) is still open
    (6, "buy", 6, 5, None, None),  # its entry bar (10:07) is not closed yet
    (7, "buy", 3, 5, 98.0, 100.0),  # entry 10:04 at 99.2; 10:06 opens past the target
]
# key: entry minute, entry, stop, target, outcome, exit minute, exit, bars held, return %
EXPECTED = {
    1: (1, 100.0, 99.5, 101.0, "target", 2, 101.0, 2, 1.0),
    2: (1, 100.0, 100.5, 99.0, "stop", 1, 100.5, 1, -0.5),
    3: (1, 100.0, 99.0, 101.1, "stop", 3, 99.0, 3, -1.0),
    4: (1, 100.0, 95.0, 105.0, "timeout", 5, 99.5, 5, -0.5),
    5: (1, 100.0, 95.0, 105.0, None, None, None, None, None),
    7: (4, 99.2, 98.0, 100.0, "target", 6, 101.5, 3, (101.5 / 99.2 - 1) * 100),
}


def crafted_pending() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "key": [row[0] for row in SIGNALS],
            "instrument": "SIM:A",
            "side": [row[1] for row in SIGNALS],
            "ts": [T0 + row[2] * M for row in SIGNALS],
            "width": M,
            "horizon_bars": [row[3] for row in SIGNALS],
            "stop": [row[4] for row in SIGNALS],
            "target": [row[5] for row in SIGNALS],
            "stop_pct": 0.5,
            "target_pct": 1.0,
        },
        schema_overrides={"stop": pl.Float64, "target": pl.Float64},
    )


def minutes(ts: int | None) -> int | None:
    return None if ts is None else (ts - T0) // M


def test_outcomes_match_the_hand_computed_table() -> None:
    resolved = resolve_outcomes(crafted_pending(), crafted_bars(), NOW)
    got = {
        row["key"]: (
            minutes(row["entry_ts"]),
            row["entry_price"],
            row["stop"],
            row["target"],
            row["outcome"],
            minutes(row["exit_ts"]),
            row["exit_price"],
            row["bars_held"],
            row["return_pct"],
        )
        for row in resolved.to_dicts()
    }
    assert set(got) == set(EXPECTED)  # 6: no entry bar yet, so nothing known
    for key, expected in EXPECTED.items():
        assert got[key][:-1] == expected[:-1], key
        assert got[key][-1] == pytest.approx(expected[-1]), key


def test_an_outcome_waits_for_its_horizon_and_its_last_minute() -> None:
    pending = crafted_pending().filter(pl.col("key") == 4)
    bars = crafted_bars()
    # At 10:05:30 the horizon (10:01-10:05) has not closed: still open.
    early = resolve_outcomes(pending, bars, T0 + 5 * M + 30_000_000)
    assert early["outcome"].to_list() == [None] and early["entry_price"].to_list() == [100.0]
    # Closed by the clock, but its last minute is not stored yet: still open.
    missing = bars.filter(pl.col("ts") < T0 + 5 * M)
    assert resolve_outcomes(pending, missing, NOW)["outcome"].to_list() == [None]
    # Bars after the horizon are never read: the same timeout an hour later.
    later = resolve_outcomes(pending, bars, NOW + 60 * M)
    assert later.row(0, named=True)["outcome"] == "timeout"
    assert later.row(0, named=True)["exit_price"] == 99.5
    # A horizon of 1h bars counts hours: 2 bars from 10:00 end at 12:00.
    hourly = pending.with_columns(width=pl.lit(60 * M), ts=pl.lit(T0 - 60 * M), horizon_bars=2)
    assert resolve_outcomes(hourly, bars, NOW)["outcome"].to_list() == [None]


# --- config --------------------------------------------------------------------------------


def shadowed(*variations: dict, **overrides) -> dict:
    return scanner_table(
        "cross",
        "sma_cross",
        params={"fast": 10, "slow": 30},
        shadow=list(variations),
        **overrides,
    )


@pytest.mark.parametrize(
    ("table", "problem"),
    [
        (
            shadowed({"name": "fast", "params": {"fast": 5}}, {"name": "fast"}),
            "scanners[0].shadow[1].name: 'fast' is used by another variation of 'cross'",
        ),
        (shadowed({"name": "live"}), "scanners[0].shadow[0].name: 'live' stands for"),
        (shadowed({"name": "a b"}), "scanners[0].shadow[0].name: use letters"),
        (
            shadowed({"name": "bad", "params": {"fast": "five"}}),
            "scanners[0].shadow[0].params: scanner 'cross', variation 'bad': bad params",
        ),
        (
            shadowed({"name": "odd", "params": {"nope": 1}}),
            "scanners[0].shadow[0].params: scanner 'cross', variation 'odd'",
        ),
        (shadowed({"name": "x", "parms": {}}), "scanners[0].shadow[0].parms: unknown key"),
        (shadowed(shadow_bars=0), "scanners[0].shadow_bars: must be greater than 0"),
        (shadowed(shadow_stop_pct=-1), "scanners[0].shadow_stop_pct: must be above 0"),
        (shadowed(shadow_target_pct="1"), "scanners[0].shadow_target_pct"),
    ],
)
def test_shadow_config_problems_name_the_key(table: dict, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        make_config(scanners=[table])
    assert problem in str(caught.value)


def test_shadow_config_defaults() -> None:
    config = make_config(scanners=[shadowed({"name": "fast", "params": {"fast": 5}})])
    scanner = config.scanners[0]
    assert [(item.name, item.params) for item in scanner.shadow] == [("fast", {"fast": 5})]
    assert (scanner.shadow_bars, scanner.shadow_target_pct, scanner.shadow_stop_pct) == (
        60,
        1.0,
        0.5,
    )


# --- a scanner run -------------------------------------------------------------------------

VARIATIONS = [
    {"name": "slow-sma", "params": {"sma": 5}},  # its own indicator column: signals too
    {"name": "picky", "params": {"factor": 2.0}},  # never fires on these bars
    {"name": "boom", "params": {"explode": True}},  # fails: the live run must not care
]


def shadow_rows(engine: Engine) -> list[tuple]:
    return (
        engine.require_store()
        .cursor()
        .execute(
            "SELECT variation, instrument, side, params, run_id, horizon_bars, outcome"
            " FROM shadow_signals ORDER BY variation, instrument"
        )
        .fetchall()
    )


async def test_a_run_records_each_variations_signals_and_a_failing_one_only_its_step(
    make_engine,
) -> None:
    instruments = ["SIM:BTCUSD", "SIM:ETHUSD"]
    engine = make_engine(
        scanner_table(
            "above",
            "test_above_sma",
            instruments=instruments,
            shadow=VARIATIONS,
            shadow_bars=10,
            # Levels the bars (99-102) never reach, even if the entry minute closes
            # before the outcomes are looked at.
            shadow_target_pct=50.0,
            shadow_stop_pct=50.0,
            label_target_pct=50.0,  # the label step's too
            label_stop_pct=50.0,
        )
    )
    for name in instruments:
        store_bars(engine, name)
    service = ScannerService(engine.scanner_deps, engine.config.scanners[0])
    result = await service.run_now()
    assert result.status == "ok" and result.error is None
    assert [signal["instrument"] for signal in result.signals] == instruments
    rows = shadow_rows(engine)
    assert [(row[0], row[1], row[2]) for row in rows] == [
        ("live", "SIM:BTCUSD", "buy"),
        ("live", "SIM:ETHUSD", "buy"),
        ("slow-sma", "SIM:BTCUSD", "buy"),
        ("slow-sma", "SIM:ETHUSD", "buy"),
    ]
    assert json.loads(rows[2][3]) == {"sma": 5}
    assert {row[4] for row in rows} == {result.run_id} and {row[5] for row in rows} == {10}
    # The entry bar (the minute forming now) is not closed: every outcome is pending.
    assert {row[6] for row in rows} == {None}
    run, steps, signals = lineage.run_detail(engine.require_store(), result.run_id)
    assert run is not None and run["status"] == "ok" and signals.height == 2
    shadow_steps = steps.filter(pl.col("step") == "shadow")
    assert shadow_steps["input_summary"].to_list() == [
        "variation slow-sma: sma=5",
        "variation picky: factor=2.0",
        "variation boom: explode=True",
        "outcomes of the pending shadow signals",
    ]
    assert shadow_steps["output_summary"][0].startswith("2 signal(s) on the newest bar")
    assert shadow_steps["output_summary"][1] == "0 signal(s) on the newest bar"
    assert shadow_steps["error"][:2].to_list() == [None, None]
    assert "this variation explodes" in shadow_steps["error"][2]
    assert shadow_steps["output_summary"][3] == "0 resolved, 4 still open"
    # Then the outcome labels of the scanner's signals (none known yet: the entry
    # minutes are not closed).
    label_step = steps.filter(pl.col("step") == "label")
    assert label_step["output_summary"].to_list() == [
        "0 labelled, 2 still open; shadow: 0 labelled, 2 still open"
    ]
    # The shadow and label steps come after the run's own, numbered on.
    assert steps["step"].to_list()[: -len(shadow_steps) - 1] == [
        "load_bars",
        "indicators",
        "evaluate",
        "emit",
    ]
    assert steps["step_no"].to_list() == list(range(1, steps.height + 1))
    # Run again on the same bar: each signal is recorded once.
    again = await service.run_now()
    assert again.run_id == result.run_id + 1 and len(shadow_rows(engine)) == 4


async def test_a_variation_that_does_not_build_fails_its_step_only(make_engine) -> None:
    engine = make_engine(
        scanner_table("above", "test_above_sma", shadow=[{"name": "fine", "params": {"sma": 4}}])
    )
    store_bars(engine, "SIM:BTCUSD")
    config = engine.config.scanners[0]
    # A variation the config could not check (a user module's strategy, say).
    broken = msgspec.structs.replace(
        config,
        shadow=[
            *config.shadow,
            msgspec.convert({"name": "typo", "params": {"smaa": 1}}, type(config.shadow[0])),
        ],
    )
    result = await ScannerService(engine.scanner_deps, broken).run_now()
    assert result.status == "ok" and len(result.signals) == 1
    _, steps, _ = lineage.run_detail(engine.require_store(), result.run_id)
    typo = steps.filter(pl.col("input_summary") == "variation typo: smaa=1").row(0, named=True)
    assert typo["step"] == "shadow" and "bad params" in typo["error"]
    assert {row[0] for row in shadow_rows(engine)} == {"live", "fine"}


# --- the report ----------------------------------------------------------------------------


def store_crafted(engine: Engine, placed: dict[str, list[int]], old: int = 0) -> None:
    """Shadow signals of SIGNALS by variation (``placed``: variation -> keys), each on
    its own instrument SIM:Kn whose 1m bars are the crafted ones (a signal is one per
    bar and side); ``old`` more live signals 40 days before."""
    store = engine.require_store()
    bars = crafted_bars().with_columns(
        pl.col("ts").cast(pl.Datetime("us")), volume=pl.lit(1.0), trades=pl.lit(1)
    )
    for key, *_ in SIGNALS:
        store.upsert_bars(bars.with_columns(instrument=pl.lit(f"SIM:K{key}")))
    by_key = {row[0]: row for row in SIGNALS}
    with store.transaction() as cursor:
        for variation, keys in placed.items():
            for key in keys:
                _, side, minute, horizon, stop, target = by_key[key]
                cursor.execute(
                    "INSERT INTO shadow_signals (scanner, variation, params, instrument, ts,"
                    " side, timeframe, horizon_bars, target_pct, stop_pct, run_id, created,"
                    " stop, target) VALUES ('cross', ?, '{\"sma\": 9}', ?,"
                    " make_timestamp(?), ?, '1m', ?, 1.0, 0.5, 1, make_timestamp(?), ?, ?)",
                    [variation, f"SIM:K{key}", T0 + minute * M, side, horizon, T0, stop, target],
                )
        for index in range(old):
            cursor.execute(
                "INSERT INTO shadow_signals (scanner, variation, params, instrument, ts, side,"
                " timeframe, horizon_bars, target_pct, stop_pct, run_id, created, outcome,"
                " return_pct) VALUES ('cross', 'live', '{}', 'SIM:A', make_timestamp(?), 'buy',"
                " '1m', 5, 1.0, 0.5, 1, make_timestamp(?), 'target', 1.0)",
                [T0 - 40 * US_PER_DAY + index * M, T0],
            )


def report_engine(make_engine) -> Engine:
    return make_engine(
        scanner_table(
            "cross",
            "test_above_sma",
            instruments=["SIM:A"],
            shadow=[{"name": "wide", "params": {"sma": 9}}, {"name": "quiet"}],
        ),
        scanner_table("plain", "test_above_sma", instruments=["SIM:A"]),
    )


def test_the_report_figures_match_the_stored_rows(make_engine) -> None:
    engine = report_engine(make_engine)
    store_crafted(engine, {"live": [1, 2], "wide": [3, 4, 5], "gone": [7]}, old=3)
    store = engine.require_store()
    rows = shadow.report(store, engine.config.scanners, None, 30, now=NOW)
    assert [(row["scanner"], row["variation"]) for row in rows] == [
        ("cross", "live"),
        ("cross", "wide"),
        ("cross", "quiet"),  # configured, no signal yet
        ("cross", "gone"),  # no longer configured: what it ran with
    ]
    live, wide, quiet, gone = rows
    # By hand (EXPECTED): live 1 target +1 %, 2 stop -0.5 %; wide 3 stop -1 %, 4 timeout
    # -0.5 %, 5 pending; gone 7 target.
    assert (live["signals"], live["resolved"], live["wins"], live["losses"]) == (2, 2, 1, 1)
    assert live["hit_rate_pct"] == 50.0 and live["avg_return_pct"] == pytest.approx(0.25)
    assert live["total_return_pct"] == pytest.approx(0.5)
    assert live["vs_live_avg_return_pct"] is None and live["params"] == {}
    assert (wide["signals"], wide["resolved"], wide["pending"]) == (3, 2, 1)
    assert (wide["wins"], wide["losses"], wide["timeouts"]) == (0, 1, 1)
    assert wide["hit_rate_pct"] == 0.0 and wide["avg_return_pct"] == pytest.approx(-0.75)
    assert wide["params"] == {"sma": 9} and wide["changed"] == {"sma": 9}
    assert wide["vs_live_hit_rate_pct"] == -50.0
    assert wide["vs_live_avg_return_pct"] == pytest.approx(-1.0)
    assert wide["vs_live_total_return_pct"] == pytest.approx(-2.0)
    assert (quiet["signals"], quiet["hit_rate_pct"], quiet["vs_live_avg_return_pct"]) == (
        0,
        None,
        None,
    )
    assert not gone["configured"] and gone["params"] == {"sma": 9} and gone["wins"] == 1
    # The same figures from the stored rows (the report resolved them: outcomes stored).
    stored = (
        store.cursor()
        .sql(
            "SELECT variation, outcome, return_pct FROM shadow_signals"
            " WHERE ts >= make_timestamp($since)",
            params={"since": NOW - 30 * US_PER_DAY},
        )
        .pl()
    )
    for row in rows:
        mine = stored.filter(pl.col("variation") == row["variation"])
        done = mine.filter(pl.col("outcome").is_not_null())
        assert row["signals"] == mine.height and row["resolved"] == done.height
        assert row["wins"] == done.filter(pl.col("outcome") == "target").height
        if done.height:
            assert row["avg_return_pct"] == pytest.approx(done["return_pct"].mean())
            assert row["total_return_pct"] == pytest.approx(done["return_pct"].sum())
    # Over 60 days the old live signals count too; one scanner only; none for "plain".
    longer = shadow.report(store, engine.config.scanners, "cross", 60, now=NOW)
    assert longer[0]["signals"] == 5 and longer[0]["wins"] == 4
    assert shadow.report(store, engine.config.scanners, "plain", 30, now=NOW) == []


# --- the CLI -------------------------------------------------------------------------------

CLI_CONFIG = """
watchlist = ["SIM:EURUSD"]

[store]
seed_days = 0.05

[[scanners]]
name = "always"
strategy = "test_above_sma"
params = { factor = 0.0 }
instruments = ["SIM:BTCUSD"]
bars = 20

[[scanners.shadow]]
name = "picky"
params = { factor = 1e9 }

[[scanners.shadow]]
name = "slow-sma"
params = { sma = 5 }

[[scanners]]
name = "plain"
strategy = "test_above_sma"
instruments = ["SIM:BTCUSD"]
"""


def test_shadow_report_through_the_cli(run, cli_home) -> None:
    cli_home.mkdir(parents=True, exist_ok=True)
    (cli_home / "config.toml").write_text(CLI_CONFIG)
    before = [line.split() for line in run("shadow", "report").out.splitlines()[2:]]
    assert [(line[1], line[3]) for line in before] == [
        ("live", "0"),
        ("picky", "0"),
        ("slow-sma", "0"),
    ]
    scanned = run("scan", "always")
    assert scanned.code == 0, scanned.err
    table = run("shadow", "report")
    assert table.code == 0, table.err
    lines = [line.split() for line in table.out.splitlines()]
    assert lines[0][:2] == ["Shadow", "testing,"]
    assert lines[1][:4] == ["SCANNER", "VARIATION", "PARAMS", "SIGNALS"]
    # Signals on the newest bar: their entry (the minute forming now) is still open.
    assert lines[2] == ["always", "live", "factor=0.0", "1", "1", "0", "0", "0", "-", "-", "-", "-"]
    assert lines[3][:5] == ["always", "picky", "factor=1000000000.0", "0", "0"]
    assert lines[4][:5] == ["always", "slow-sma", "sma=5", "1", "1"]
    as_json = run("shadow", "report", "always", "--days", "7", "--format", "json")
    assert as_json.code == 0
    rows = json.loads(as_json.out)
    assert [row["variation"] for row in rows] == ["live", "picky", "slow-sma"]
    assert rows[2]["params"] == {"factor": 0.0, "sma": 5} and rows[2]["changed"] == {"sma": 5}
    assert (rows[0]["signals"], rows[0]["pending"], rows[0]["hit_rate_pct"]) == (1, 1, None)
    plain = run("shadow", "report", "plain")
    assert plain.code == 0 and "'plain' has no shadow variations" in plain.out
    unknown = run("shadow", "report", "nope")
    assert unknown.code == 2 and unknown.out == ""
    assert unknown.err.strip() == ("sptrader: unknown scanner 'nope' (scanners: always, plain)")
    bad_days = run("shadow", "report", "--days", "0")
    assert bad_days.code == 2 and "--days" in bad_days.err


# --- the Strategies screen -------------------------------------------------------------------


async def test_the_strategies_screen_shows_the_selected_scanners_variations(home) -> None:
    from textual.widgets import DataTable

    from sptrader.app import SptraderApp
    from sptrader.screens import StrategiesScreen

    settings = make_settings(
        home,
        watchlist=["SIM:EURUSD"],
        store={"seed_days": 0.05},
        scanners=[
            scanner_table(
                "cross",
                "test_above_sma",
                instruments=["SIM:EURUSD"],
                schedule="0 0 1 1 *",  # never by itself during the test
                params={"factor": 0.0},
                shadow=[
                    {"name": "slow-sma", "params": {"sma": 5}},
                    {"name": "picky", "params": {"factor": 9.0}},
                ],
            ),
            scanner_table(
                "plain", "test_above_sma", instruments=["SIM:EURUSD"], schedule="0 0 1 1 *"
            ),
        ],
    )
    # Outcomes of earlier runs: live +1 % and -0.5 %, slow-sma +1 %.
    store = Store(settings.store_path)
    store.migrate()
    now = now_us()
    with store.transaction() as cursor:
        for hours, (variation, outcome, returned) in enumerate(
            [("live", "target", 1.0), ("live", "stop", -0.5), ("slow-sma", "target", 1.0)], 2
        ):
            cursor.execute(
                "INSERT INTO shadow_signals (scanner, variation, params, instrument, ts, side,"
                " timeframe, horizon_bars, target_pct, stop_pct, run_id, created, outcome,"
                " return_pct) VALUES ('cross', ?, '{}', 'SIM:EURUSD', make_timestamp(?), 'buy',"
                " '1m', 60, 1.0, 0.5, 1, make_timestamp(?), ?, ?)",
                [variation, now - hours * 3_600_000_000, now, outcome, returned],
            )
    store.close()
    app = SptraderApp(settings)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: app.engine_ready, 20, "the engine")
        await pilot.press("S")
        await wait_for(pilot, lambda: isinstance(app.screen, StrategiesScreen), 10, "the screen")
        screen = app.screen
        assert isinstance(screen, StrategiesScreen)
        table = screen.query_one("#shadow-table", DataTable)
        await wait_for(pilot, lambda: len(screen.shadow_rows) == 3, 10, "the shadow table")
        cells = [[str(cell) for cell in table.get_row_at(index)] for index in range(3)]
        assert cells == [
            ["live", "factor=0.0", "2", "50.0", "+0.25", "-"],
            ["slow-sma", "sma=5", "1", "100.0", "+1.00", "+0.75"],
            ["picky", "factor=9.0", "0", "-", "-", "-"],
        ]
        assert table.display and table.border_title.startswith("Shadow variations")
        # Run it now: the run's signals join the table (their outcomes still open).
        await wait_for(
            pilot,
            lambda: bool(
                app.engine.require_store()
                .cursor()
                .execute("SELECT count(*) FROM bars_1m")
                .fetchall()[0][0]
            ),
            20,
            "the seeded history",
        )
        await pilot.press("r")
        await wait_for(
            pilot,
            lambda: screen.shadow_rows and screen.shadow_rows[0]["signals"] == 3,
            20,
            "the run",
        )
        assert str(table.get_row_at(0)[2]) == "3 (1 open)"
        assert str(table.get_row_at(1)[2]) == "2 (1 open)"
        # A scanner without variations: no table.
        await pilot.press("down")
        await wait_for(pilot, lambda: screen.selected_scanner() == "plain", 5, "plain selected")
        await wait_for(pilot, lambda: not table.display, 10, "the table hidden")
        assert screen.shadow_rows == []
        await pilot.press("q")


async def test_the_api_row_checks_its_parameters_and_answers_with_the_report(make_engine) -> None:
    from sptrader.api.methods import METHODS, check_params
    from sptrader.client.local import LocalEngineClient
    from sptrader.errors import UsageError

    engine = report_engine(make_engine)
    store_crafted(engine, {"live": [1, 2], "wide": [3]})
    client = LocalEngineClient(engine, run_services=False)
    values = check_params("shadow_report", {"scanner": "cross", "days": 3650})
    rows = await METHODS["shadow_report"].call(client, **values)
    assert [row["variation"] for row in rows] == ["live", "wide", "quiet"]
    assert rows == await client.shadow_report("cross", 3650)
    assert check_params("shadow_report", {})["days"] == 30
    with pytest.raises(UsageError, match="shadow_report: days must be"):
        check_params("shadow_report", {"days": 0})
    with pytest.raises(UsageError, match="unknown scanner 'nope'"):
        await client.shadow_report("nope", 30)
