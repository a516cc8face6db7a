"""A model in front of the orders: a scanner's signals scored by its model, the score
stored with the signal and in the run's lineage, only those at min_probability or more
sent on; a missing model stops the service with a clear error, an incompatible one lets
no signal through."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from test_scanners import make_engine, scanner_table, store_bars
from test_shadow import AboveSma  # registers the test strategy

from sptrader.errors import SptraderError
from sptrader.models import SignalRaised
from sptrader.scanners import lineage, models
from sptrader.scanners.models import Trained
from sptrader.scanners.service import ScannerService

__all__ = ["AboveSma", "make_engine"]  # the fixture, imported from test_scanners


class Constant:
    """A stand-in estimator: the same probability for every row (checks the width of
    what it is given)."""

    def __init__(self, probability: float, features: int) -> None:
        self.probability = probability
        self.features = features

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        assert x.shape[1] == self.features
        return np.column_stack(
            [1 - np.full(len(x), self.probability), np.full(len(x), self.probability)]
        )


FEATURES = ["side_sign", "sma3", "ret_1", "ret_5", "rsi14", "hour"]


def save_model(home, probability: float, features: list[str] = FEATURES) -> None:
    trained = Trained(Constant(probability, len(features)), [], {})
    models.save(home, "above", trained, {"kind": "test", "features": features})


def scanner(**overrides) -> dict:
    return scanner_table(
        "above",
        "test_above_sma",
        instruments=["SIM:BTCUSD", "SIM:ETHUSD"],
        model="above",
        min_probability=0.6,
        **overrides,
    )


async def run_once(engine) -> tuple:
    for name in ("SIM:BTCUSD", "SIM:ETHUSD"):
        store_bars(engine, name)
    heard = engine.bus.subscribe("test", maxsize=100)
    service = ScannerService(engine.scanner_deps, engine.config.scanners[0])
    result = await service.run_now()
    raised = [event for event in heard.get_nowait() if isinstance(event, SignalRaised)]
    _, steps, _ = lineage.run_detail(engine.require_store(), result.run_id)
    stored = (
        engine.require_store()
        .cursor()
        .sql("SELECT instrument, probability, taken FROM signals ORDER BY instrument")
        .fetchall()
    )
    return result, raised, steps, stored


async def test_signals_the_model_scores_high_go_on(make_engine, home) -> None:
    engine = make_engine(scanner())
    save_model(home, 0.8)
    result, raised, steps, stored = await run_once(engine)
    assert result.status == "ok" and len(result.signals) == 2
    assert sorted(event.instrument for event in raised) == ["SIM:BTCUSD", "SIM:ETHUSD"]
    assert stored == [
        ("SIM:BTCUSD", pytest.approx(0.8), True),
        ("SIM:ETHUSD", pytest.approx(0.8), True),
    ]
    model_step = steps.filter(pl.col("step") == "model").row(0, named=True)
    assert model_step["input_summary"] == "above (v1): p >= 0.6"
    assert model_step["output_summary"].startswith("2 of 2 at p >= 0.6: SIM:BTCUSD buy 0.80")


async def test_signals_the_model_scores_low_are_stored_but_held_back(make_engine, home) -> None:
    engine = make_engine(scanner())
    save_model(home, 0.3)
    result, raised, _, stored = await run_once(engine)
    assert result.status == "ok" and len(result.signals) == 2
    assert raised == []  # neither the broker nor the alerts hear of them
    assert stored == [
        ("SIM:BTCUSD", pytest.approx(0.3), False),
        ("SIM:ETHUSD", pytest.approx(0.3), False),
    ]


async def test_an_incompatible_model_lets_no_signal_through(make_engine, home) -> None:
    engine = make_engine(scanner())
    save_model(home, 0.9, [*FEATURES, "made_up_feature"])
    result, raised, steps, stored = await run_once(engine)
    assert raised == []
    assert result.status == "partial" and "incompatible" in (result.error or "")
    assert "made_up_feature" in steps.filter(pl.col("step") == "model")["error"][0]
    assert [row[1:] for row in stored] == [(None, False), (None, False)]


async def test_a_missing_model_is_a_service_error(make_engine) -> None:
    engine = make_engine(scanner())
    service = ScannerService(engine.scanner_deps, engine.config.scanners[0])
    with pytest.raises(SptraderError, match=r"no model 'above' .*sptrader ml train above"):
        await service.load()


@pytest.mark.parametrize(("probability", "alerted"), [(0.3, 0), (0.8, 2)])
async def test_a_one_shot_scan_alerts_only_what_its_model_lets_through(
    home, probability: float, alerted: int
) -> None:
    """`sptrader scan` without a daemon runs the scanner here: its alerts are of the
    signals the model let through, as a scheduled run's are (it alerted them all)."""
    from conftest import make_settings
    from fakes import FakeHttpServer, FakeResponse

    from sptrader.client.local import LocalEngineClient
    from sptrader.engine import Engine

    posted: list[object] = []

    def route(request: object) -> FakeResponse:
        posted.append(request)
        return FakeResponse(200)

    with FakeHttpServer(route) as server:
        settings = make_settings(
            home,
            watchlist=["SIM:EURUSD"],
            scanners=[scanner()],
            alerts={"webhooks": [{"url": server.url, "format": "json"}], "timeout_s": 5.0},
        )
        save_model(home, probability)
        engine = Engine(settings)
        engine.open_store()
        try:
            for name in ("SIM:BTCUSD", "SIM:ETHUSD"):
                store_bars(engine, name)
            result = await LocalEngineClient(engine, run_services=False).scan("above")
        finally:
            engine.require_store().close()
    assert len(result["signals"]) == 2
    assert len(posted) == alerted


def test_a_one_shot_scan_with_a_missing_model_says_so(run, cli_home) -> None:
    cli_home.mkdir(parents=True, exist_ok=True)
    (cli_home / "config.toml").write_text(
        '[[scanners]]\nname = "cross"\nstrategy = "sma_cross"\ninstruments = ["SIM:EURUSD"]\n'
        'model = "cross"\n'
    )
    done = run("scan", "cross")
    assert done.code != 0
    said = done.out + done.err
    assert "no model 'cross'" in said and "sptrader ml train cross" in said
    assert "Traceback" not in said
