"""Shadow testing: outcomes against a hand-computed table, a scanner run recording its
variations' signals (a failing one fails only its lineage step), the report's figures
against the stored rows, `sptrader shadow report`, config errors and the Strategies
screen's shadow table."""

from __future__ import annotations

import polars as pl
import pytest
from conftest import make_config
from test_scanners import scanner_table

from sptrader.errors import ConfigError
from sptrader.models import US_PER_MINUTE
from sptrader.scanners.shadow import resolve_outcomes

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
