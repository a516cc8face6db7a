"""``sptrader alerts`` as a user runs it without a daemon: rules from the config file
and rules added from the shell (kept in the store), pause and resume, a test send that
reaches a webhook receiver, the history, removal; bad rules are one line, exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fakes import FakeHttpServer, FakeRequest, FakeResponse

CONFIG = """\
watchlist = ["SIM:EURUSD"]

[store]
seed_days = 0.01

[alerts]
webhooks = [{{ url = "{url}", format = "json" }}]

[[alerts.rules]]
name = "fills"
kind = "order"
channels = ["webhooks"]
"""


@pytest.fixture
def received(cli_home: Path):
    bodies: list[dict] = []

    def route(request: FakeRequest) -> FakeResponse:
        bodies.append(json.loads(request.body))
        return FakeResponse(200, "ok")

    with FakeHttpServer(route) as server:
        cli_home.mkdir(parents=True)
        (cli_home / "config.toml").write_text(CONFIG.format(url=server.url + "/hook"))
        yield bodies


def ok(result) -> str:
    assert result.code == 0, result.err
    return result.out


def test_rules_added_paused_tested_and_removed(run, received: list[dict]) -> None:
    assert "fills  order" in ok(run("alerts", "list"))
    ok(
        run(
            "alerts",
            "add",
            "eur-high",
            "price_cross",
            "--instrument",
            "sim:eurusd",
            "--level",
            "1.2",
            "--channels",
            "webhooks,tui",
            "--cooldown",
            "60",
        )
    )
    rules = {r["name"]: r for r in json.loads(ok(run("alerts", "list", "--json")))}
    assert rules["eur-high"]["source"] == "stored" and rules["fills"]["source"] == "config"
    assert rules["eur-high"]["rule"]["instrument"] == "SIM:EURUSD"
    assert ok(run("alerts", "pause", "eur-high")) == "alert rule eur-high paused\n"
    listed = {r["name"]: r for r in json.loads(ok(run("alerts", "list", "--json")))}
    assert listed["eur-high"]["paused"] and not listed["eur-high"]["enabled"]
    assert ok(run("alerts", "test", "eur-high")) == "test notice of eur-high sent to webhooks\n"
    assert [body["rule"] for body in received] == ["eur-high"]
    assert received[0]["data"] == {"test": True}
    (sent,) = json.loads(ok(run("alerts", "history", "--json")))
    assert sent["rule"] == "eur-high" and sent["channels"] == ["webhooks"]
    ok(run("alerts", "resume", "eur-high"))
    assert ok(run("alerts", "remove", "eur-high")) == "alert rule eur-high removed\n"
    assert "eur-high" not in ok(run("alerts", "list"))


def test_bad_rules_and_config_rules_are_one_clear_line(run, received: list[dict]) -> None:
    bad = run("alerts", "add", "x", "price_cross", "--instrument", "SIM:EURUSD")
    assert bad.code == 2
    assert bad.err == "sptrader: rule x.level: the price level must be greater than 0, got 0.0\n"
    unknown = run("alerts", "add", "x", "order", "--channels", "pager")
    assert unknown.code == 2 and "unknown channel 'pager'" in unknown.err
    refused = run("alerts", "remove", "fills")
    assert refused.code == 2 and "defined in the config file" in refused.err
    clash = run("alerts", "add", "fills", "halt")
    assert clash.code == 2 and "defined in the config file: edit it there" in clash.err
    assert run("alerts", "test", "nope").code == 2
