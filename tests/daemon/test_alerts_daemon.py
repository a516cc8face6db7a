"""Away from the terminal, through a real daemon (``sptrader start``): the Telegram bot
answers an allowed chat and ignores another, an order rule's alert reaches Telegram when
a paper order fills from the shell, and ``sptrader alerts history`` lists it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fake_telegram import FakeTelegram
from test_daemon import daemon_home, describe, poll

TOKEN = "123456:fake-token-for-tests"
CHAT = 4242
CONFIG = """\
watchlist = ["SIM:EURUSD"]

[store]
seed_days = 0.01
flush_interval_ms = 50

[feeds.sim]
tick_rate = 5.0

[telegram]
enabled = true
api_url = "{url}"
token_env = "SPTRADER_TEST_TELEGRAM_TOKEN"
chat_ids = [{chat}]
poll_timeout_s = 1.0

[[alerts.rules]]
name = "fills"
kind = "order"
events = ["filled"]
channels = ["telegram"]
"""


def texts(telegram: FakeTelegram, chat: int) -> list[str]:
    return [str(sent["text"]) for sent in telegram.sent if int(sent["chat_id"]) == chat]


def as_json(result: Any) -> Any:
    assert result.returncode == 0, describe(result)
    return json.loads(result.stdout)


def test_telegram_and_alerts_through_the_daemon(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SPTRADER_TEST_TELEGRAM_TOKEN", TOKEN)
    with FakeTelegram(TOKEN) as telegram:
        config = CONFIG.format(url=telegram.url, chat=CHAT)
        with daemon_home(tmp_path, config) as daemon:
            started = daemon.run("start")
            assert started.returncode == 0, describe(started)
            services = {s["name"]: s["state"] for s in daemon.status()["services"]}
            assert {"telegram", "alerts"} <= set(services)
            telegram.push_message(999, "/status")  # not an allowed chat
            telegram.push_message(CHAT, "/help")
            poll(lambda: texts(telegram, CHAT), 20, "the bot's answer to /help")
            assert texts(telegram, 999) == []
            placed = daemon.run("order", "buy", "SIM:EURUSD", "1000")
            assert placed.returncode == 0, describe(placed)
            poll(
                lambda: any("filled" in text for text in texts(telegram, CHAT)),
                20,
                "the fill's alert on Telegram",
            )
            history = as_json(daemon.run("alerts", "history", "--json"))
            assert [row["rule"] for row in history] == ["fills"]
            assert history[0]["channels"] == ["telegram"]
            status = daemon.run("status", "--json")
            log_text = (daemon.home / "sptrader.log").read_text()
            assert TOKEN not in status.stdout and TOKEN not in log_text
            assert daemon.run("stop").returncode == 0
