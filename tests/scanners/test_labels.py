"""Outcome labels against a hand-computed table on crafted 1m bars: a target, a stop, a
timeout, a bar that touches both (the stop), and no label before its horizon closes."""

from __future__ import annotations

import polars as pl
import pytest

from sptrader.models import US_PER_MINUTE
from sptrader.scanners.labels import label_outcomes, summary

T0 = 1_767_225_600_000_000  # 2026-01-01T00:00Z
M = US_PER_MINUTE

# minute -> (open, high, low, close); minutes not listed are flat at 100.
CRAFTED = {
    # A: long at bar 1's open 100, target 101 reached in bar 2.
    1: (100.0, 100.5, 99.8, 100.2),
    2: (100.2, 101.2, 100.0, 101.0),
    # B: short at bar 11's open 100, stop 100.5 reached in bar 12.
    11: (100.0, 100.2, 99.5, 99.8),
    12: (99.8, 100.6, 99.7, 100.4),
    # C: long at bar 21's open 100, neither level in 3 bars: out at bar 23's close.
    21: (100.0, 100.4, 99.7, 100.1),
    22: (100.1, 100.9, 99.9, 100.5),
    23: (100.5, 100.8, 99.6, 100.3),
    # D: long at bar 31's open 100, whose range reaches the stop and the target.
    31: (100.0, 101.5, 99.0, 100.0),
}


def crafted_bars(last_minute: int) -> pl.DataFrame:
    minutes = range(last_minute + 1)
    rows = [CRAFTED.get(minute, (100.0, 100.0, 100.0, 100.0)) for minute in minutes]
    return pl.DataFrame(
        {
            "instrument": "SIM:X",
            "ts": [T0 + minute * M for minute in minutes],
            "open": [row[0] for row in rows],
            "high": [row[1] for row in rows],
            "low": [row[2] for row in rows],
            "close": [row[3] for row in rows],
        }
    )


def pending(signals: list[tuple[int, int, str]], horizon: int = 3) -> pl.DataFrame:
    """(key, signal minute, side) on 1m bars, target 1% and stop 0.5% from the entry."""
    return pl.DataFrame(
        {
            "key": [key for key, _, _ in signals],
            "instrument": "SIM:X",
            "side": [side for _, _, side in signals],
            "ts": [T0 + minute * M for _, minute, _ in signals],
            "width": M,
            "horizon_bars": horizon,
            "stop": None,
            "target": None,
            "stop_pct": 0.5,
            "target_pct": 1.0,
        }
    )


def test_labels_match_the_hand_computed_table() -> None:
    signals = [(0, 0, "buy"), (1, 10, "sell"), (2, 20, "buy"), (3, 30, "buy")]
    got = label_outcomes(pending(signals), crafted_bars(40), now=T0 + 41 * M)
    table = {
        row["key"]: (
            row["label"],
            row["bars"],
            round(row["exit_price"], 9),
            round(row["return_pct"], 9),
            round(row["mfe_pct"], 9),
            round(row["mae_pct"], 9),
        )
        for row in got.to_dicts()
    }
    assert table == {
        # label, bars, exit, return %, MFE %, MAE %
        0: ("target", 2, 101.0, 1.0, 1.0, 0.2),
        1: ("stop", 2, 100.5, -0.5, 0.5, 0.5),
        2: ("timeout", 3, 100.3, 0.3, 0.9, 0.4),  # bar 23's low is held: out at its close
        3: ("stop", 1, 99.5, -0.5, 0.0, 0.5),  # both in one bar: the stop
    }
    entries = {row["key"]: (row["entry_ts"], row["entry_price"]) for row in got.to_dicts()}
    assert entries[0] == (T0 + 1 * M, 100.0)  # the next bar's open


def test_no_label_before_its_horizon_has_closed() -> None:
    signals = [(0, 20, "buy")]
    # Bars 21 and 22 stored, the horizon (21..23) still open: nothing yet.
    assert label_outcomes(pending(signals), crafted_bars(22), now=T0 + 23 * M).is_empty()
    # Bar 23 stored but not closed at `now`: still nothing.
    assert label_outcomes(pending(signals), crafted_bars(23), now=T0 + 23 * M + 1).is_empty()
    done = label_outcomes(pending(signals), crafted_bars(23), now=T0 + 24 * M)
    assert done["label"].to_list() == ["timeout"]


def test_a_future_bar_does_not_change_a_label() -> None:
    """Bars after the exit (a spike that would reach the target later) change nothing."""
    signals = [(0, 10, "sell")]
    before = label_outcomes(pending(signals), crafted_bars(13), now=T0 + 14 * M)
    later = crafted_bars(40).with_columns(
        pl.when(pl.col("ts") == T0 + 14 * M).then(90.0).otherwise(pl.col("low")).alias("low")
    )
    after = label_outcomes(pending(signals), later, now=T0 + 41 * M)
    assert before.equals(after)


def test_the_summary_counts_labels_and_hit_rates_per_strategy() -> None:
    rows = [
        {"scanner": "a", "label": "target", "return": 1.0},
        {"scanner": "a", "label": "stop", "return": -0.5},
        {"scanner": "b", "label": "timeout", "return": 0.25},
        {"scanner": "a2", "label": "target", "return": 1.0},
    ]
    got = summary(rows, {"a": "sma_cross", "a2": "sma_cross", "b": "rsi"})
    assert got == [
        {
            "strategy": "rsi",
            "signals": 1,
            "target": 0,
            "stop": 0,
            "timeout": 1,
            "hit_rate_pct": None,
            "avg_return_pct": 0.25,
        },
        {
            "strategy": "sma_cross",
            "signals": 3,
            "target": 2,
            "stop": 1,
            "timeout": 0,
            "hit_rate_pct": pytest.approx(200 / 3),
            "avg_return_pct": pytest.approx(0.5),
        },
    ]


SCANNER_TOML = """
[[scanners]]
name = "cross"
strategy = "sma_cross"
instruments = ["SIM:EURUSD"]
label_bars = 3
label_target_pct = 1.0
label_stop_pct = 0.5
"""


def store_crafted_signals(cli_home) -> None:
    """The crafted bars as SIM:EURUSD, and signals of scanner "cross" at minutes 0
    (twice), 10, 20, 30 and 38."""
    from datetime import UTC, datetime

    from sptrader.store import Store

    cli_home.mkdir(parents=True, exist_ok=True)
    (cli_home / "config.toml").write_text(SCANNER_TOML)
    bars = crafted_bars(40).with_columns(
        pl.lit("SIM:EURUSD").alias("instrument"),
        pl.col("ts").cast(pl.Datetime("us")),
        pl.lit(1.0).alias("volume"),
        pl.lit(1).alias("trades"),
    )
    store = Store(cli_home / "sptrader.duckdb")
    store.migrate()
    store.upsert_bars(bars)
    at = [
        datetime.fromtimestamp((T0 + minute * M) / 1e6, UTC).replace(tzinfo=None)
        for minute in (0, 10, 20, 30, 38)
    ]
    with store.transaction() as cursor:
        for run_id, (when, side) in enumerate(
            zip(at, ["buy", "sell", "buy", "buy", "buy"], strict=True), 1
        ):
            cursor.execute(
                "INSERT INTO signals (run_id, scanner, instrument, ts, side, strength, reason, stop, target, created) VALUES (?, 'cross', 'SIM:EURUSD', ?, ?, 1.0, 'x', NULL, NULL, ?)",
                [run_id, when, side, when],
            )
        # A later run on the same bar: one signal, labelled once.
        cursor.execute(
            "INSERT INTO signals (run_id, scanner, instrument, ts, side, strength, reason, stop, target, created) VALUES (9, 'cross', 'SIM:EURUSD', ?, 'buy', 1.0, 'x', NULL, NULL, ?)",
            [at[0], at[0]],
        )
    store.close()


def test_ml_labels_labels_stored_signals_once_and_lists_them(run, cli_home) -> None:
    import json

    store_crafted_signals(cli_home)
    listed = run("ml", "labels", "--format", "json")
    assert listed.code == 0, listed.err
    rows = json.loads(listed.out)
    # The signal at minute 38 has no closed horizon (bars end at minute 40): no label.
    assert [(row["side"], row["label"], row["bars"]) for row in rows] == [
        ("buy", "target", 2),
        ("sell", "stop", 2),
        ("buy", "timeout", 3),
        ("buy", "stop", 1),
    ]
    assert rows[0]["ts"] == "2026-01-01T00:00:00Z" and rows[0]["run_id"] == 1
    assert rows[2]["mae"] == pytest.approx(0.4)
    again = run("ml", "labels", "cross", "--from", "2026-01-01T00:15Z", "--format", "csv")
    assert again.code == 0, again.err
    lines = again.out.strip().splitlines()
    assert lines[0] == "scanner,source,instrument,ts,side,label,bars,mfe,mae,return"
    assert len(lines) == 3  # minutes 20 and 30
    table = run("ml", "labels")
    assert "sma_cross" in table.out and "33.3" in table.out  # 1 target of 3 decided
    unknown = run("ml", "labels", "nope")
    assert unknown.code == 2 and "unknown scanner 'nope'" in unknown.err


def random_bars(count: int, instruments=("SIM:A", "SIM:B")) -> pl.DataFrame:
    import numpy as np

    rng = np.random.default_rng(3)
    frames = []
    for name in instruments:
        close = 100 * np.exp(np.cumsum(rng.normal(0, 0.002, count)))
        open_ = np.concatenate([[100.0], close[:-1]])
        frames.append(
            pl.DataFrame(
                {
                    "instrument": name,
                    "ts": pl.Series([T0 + i * M for i in range(count)]).cast(pl.Datetime("us")),
                    "open": open_,
                    "high": np.maximum(open_, close) * 1.001,
                    "low": np.minimum(open_, close) * 0.999,
                    "close": close,
                    "volume": rng.uniform(1, 10, count),
                    "trades": 1,
                }
            )
        )
    return pl.concat(frames)


def test_features_at_a_bar_use_no_later_bar() -> None:
    """Truncate the history at each signal's bar: its features are the same as with
    every later bar present (so no future bar leaks into a training row)."""
    from sptrader.scanners.features import feature_frame

    specs = ["sma10", "ema20", "macd", "bb20", "adx14"]
    bars = random_bars(300)
    full, names = feature_frame(bars, specs)
    assert {"sma10", "ema20", "macd", "bb20_upper", "ret_20", "atr14_pct", "hour"} <= set(names)
    for minute in (60, 150, 299):
        at = T0 + minute * M
        cut, _ = feature_frame(bars.filter(pl.col("ts").dt.epoch("us") <= at), specs)
        for name in ("SIM:A", "SIM:B"):
            row = pl.col("instrument") == name
            when = pl.col("ts").dt.epoch("us") == at
            assert (
                cut.filter(row & when).select(names).equals(full.filter(row & when).select(names))
            ), (name, minute)


def test_ml_features_writes_the_labelled_signals_training_set(run, cli_home, tmp_path) -> None:
    import json

    store_crafted_signals(cli_home)
    out = tmp_path / "train"
    done = run("ml", "features", "cross", "--out", str(out))
    assert done.code == 0, done.err
    assert "wrote 4 labelled signals (2 stop, 1 target, 1 timeout)" in done.out
    frame = pl.read_parquet(out / "cross.parquet")
    meta = json.loads((out / "cross.json").read_text())
    assert frame.height == 4 and meta["rows"] == 4
    assert meta["features"][0] == "side_sign" and "ret_5" in meta["features"]
    assert set(meta["features"]) <= set(frame.columns)
    assert frame["label"].to_list() == ["target", "stop", "timeout", "stop"]
    assert frame["side_sign"].to_list() == [1, -1, 1, 1]
    # The bar of the signal at minute 20: its 5-bar return is from bars 15..20 (flat).
    assert frame.filter(pl.col("label") == "timeout")["ret_5"].to_list() == [0.0]
    missing = run("ml", "features", "nope", "--out", str(out))
    assert missing.code == 2 and "unknown scanner 'nope'" in missing.err


def test_shadow_variations_signals_are_labelled_too(run, cli_home) -> None:
    import json
    from datetime import UTC, datetime

    from sptrader.store import Store

    store_crafted_signals(cli_home)
    store = Store(cli_home / "sptrader.duckdb")
    when = datetime.fromtimestamp(T0 / 1e6, UTC).replace(tzinfo=None)
    with store.transaction() as cursor:
        for variation, side in (("faster", "buy"), ("live", "buy"), ("slower", "sell")):
            cursor.execute(
                "INSERT INTO shadow_signals (scanner, variation, params, instrument, ts, side,"
                " timeframe, horizon_bars, target_pct, stop_pct, run_id, created)"
                " VALUES ('cross', ?, '{}', 'SIM:EURUSD', ?, ?, '1m', 3, 1.0, 0.5, 1, ?)",
                [variation, when, side, when],
            )
    store.close()
    done = run(
        "ml", "labels", "cross", "--source", "shadow", "--from", "2026-01-01", "--format", "json"
    )
    assert done.code == 0, done.err
    rows = json.loads(done.out)
    # The live variation is the scanner's own signals: those are --source live.
    assert [(row["source"], row["side"], row["label"]) for row in rows] == [
        ("shadow:faster", "buy", "target"),
        ("shadow:slower", "sell", "stop"),  # bar 1 rises to 100.5: a short's 0.5% stop
    ]
    # Stored, keyed to the shadow signal and its run, once: asked again, the same rows.
    assert {row["run_id"] for row in rows} == {1}
    again = run("ml", "labels", "cross", "--source", "shadow", "--format", "json")
    assert json.loads(again.out) == rows
    store = Store(cli_home / "sptrader.duckdb")
    try:
        stored = store.cursor().execute(
            "SELECT variation, side, label, run_id FROM shadow_labels ORDER BY variation"
        )
        assert stored.fetchall() == [("faster", "buy", "target", 1), ("slower", "sell", "stop", 1)]
    finally:
        store.close()
