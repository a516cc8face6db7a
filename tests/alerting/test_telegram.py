"""The Telegram bot against a fake Bot API: commands only from the configured chats,
changes only after a confirmation's Yes (through the client, as the TUI's), alerts to
every chat with retries, and a token that never shows (in logs, errors or status)."""

from __future__ import annotations

import contextlib
import io
import logging
import time
import traceback
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from conftest import make_settings, wait_until
from fake_telegram import FakeTelegram, buttons
from PIL import Image

from sptrader.alerting import telegram
from sptrader.alerting.notice import Notice
from sptrader.alerting.telegram import TelegramBot, text_chart
from sptrader.bus import Bus
from sptrader.client.local import LocalEngineClient
from sptrader.clock import now_us
from sptrader.config import SupervisorConfig, TelegramConfig
from sptrader.engine import Engine
from sptrader.errors import SptraderError
from sptrader.models import ServiceState
from sptrader.supervisor import ServiceContext, Supervisor

TOKEN = "7000001:AAH-secret-token-for-tests-only"
ENV = "SPTRADER_TEST_TELEGRAM_TOKEN"
CHAT = 4242
STRANGER = 9999
EUR = "SIM:EURUSD"


class StubClient:
    """The few EngineClient methods the bot uses, recording the changes asked of it."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.held = [
            {
                "venue": "paper",
                "instrument": EUR,
                "side": "long",
                "qty": 1000.0,
                "avg_price": 1.085,
                "mark": 1.086,
                "unrealized": 1.0,
            }
        ]

    async def status(self) -> dict:
        services = [
            {"name": "sim", "state": "running", "last_error": ""},
            {"name": "binance", "state": "failed", "last_error": "no API key"},
        ]
        return {"home": "/tmp/x", "store": {}, "services": services}

    async def trading_venues(self) -> list[dict]:
        return [{"venue": "paper", "live": False, "enabled": True, "connected": True}]

    async def positions(self, venue: str | None = None) -> list[dict]:
        return [row for row in self.held if venue in (None, row["venue"])]

    async def close_position(self, instrument: str, venue: str = "paper") -> dict:
        self.calls.append(("close_position", (instrument, venue)))
        self.held = []
        fill = {"qty": 1000.0, "price": 1.0861}
        return {"order": {"order_id": 7, "status": "filled"}, "fills": [fill], "rejected": None}

    async def price_decimals(self, instruments: list[str]) -> dict[str, int]:
        return {name: 5 for name in instruments}

    async def cancel_order(self, order_id: int) -> dict:
        self.calls.append(("cancel_order", (order_id,)))
        return {"order_id": order_id, "status": "cancelled"}

    async def candles(self, instrument: str, timeframe: str, *, last: int | None = None):
        closes = [1.08 + i / 1000 for i in range(12)]
        start = datetime(2026, 12, 2, 9, 0)
        return pl.DataFrame(
            {
                "ts": [start + timedelta(minutes=5 * i) for i in range(12)],
                "open": closes,
                "high": [c + 0.0005 for c in closes],
                "low": [c - 0.0005 for c in closes],
                "close": closes,
            }
        )


def bot_config(url: str, chats: list[int], poll_s: float = 0.5) -> TelegramConfig:
    return TelegramConfig(
        enabled=True, api_url=url, token_env=ENV, chat_ids=chats, poll_timeout_s=poll_s
    )


@contextlib.asynccontextmanager
async def running(
    client: Any, fake: FakeTelegram, chats: tuple[int, ...] = (CHAT,), **options: Any
) -> AsyncIterator[tuple[TelegramBot, Supervisor]]:
    """The bot as a supervised service, running until the block ends."""
    bot = TelegramBot(
        bot_config(fake.url, list(chats)), client, env={ENV: TOKEN}, retry_initial_s=0.05, **options
    )
    supervisor = Supervisor(Bus(), SupervisorConfig())
    supervisor.add(bot)
    supervisor.start(bot.name)
    try:
        await wait_until(lambda: state(supervisor) is ServiceState.RUNNING)
        yield bot, supervisor
    finally:
        await supervisor.stop_all()


def state(supervisor: Supervisor) -> ServiceState:
    return supervisor.status()[0].state


def sent_to(fake: FakeTelegram, chat_id: int) -> list[dict]:
    return [message for message in fake.sent if message["chat_id"] == chat_id]


async def answer(fake: FakeTelegram, text: str, chat_id: int = CHAT) -> dict:
    """Send ``text`` from ``chat_id`` and wait for the bot's next message there."""
    before = len(sent_to(fake, chat_id))
    fake.push_message(chat_id, text)
    await wait_until(lambda: len(sent_to(fake, chat_id)) > before)
    return sent_to(fake, chat_id)[before]


async def press(fake: FakeTelegram, data: str, chat_id: int = CHAT) -> dict:
    before = len(sent_to(fake, chat_id))
    fake.push_callback(chat_id, data)
    await wait_until(lambda: len(sent_to(fake, chat_id)) > before)
    return sent_to(fake, chat_id)[before]


async def test_a_command_from_an_unknown_chat_gets_nothing_and_is_logged(caplog) -> None:
    caplog.set_level(logging.INFO)
    with FakeTelegram(TOKEN) as fake:
        async with running(StubClient(), fake):
            fake.push_message(STRANGER, "/status")
            help_text = await answer(fake, "/help")
    assert sent_to(fake, STRANGER) == []
    assert "/close INSTRUMENT" in help_text["text"]
    assert "ignored a message from chat 9999" in caplog.text


async def test_status_and_positions_are_answered() -> None:
    with FakeTelegram(TOKEN) as fake:
        async with running(StubClient(), fake):
            status = (await answer(fake, "/status"))["text"]
            positions = (await answer(fake, "/positions@sptrader_test_bot"))["text"]
    assert "1 failed, 1 running" in status
    assert "binance: failed (no API key)" in status
    assert "paper: paper, connected" in status
    assert "paper SIM:EURUSD long 1,000 @ 1.085" in positions


async def test_close_asks_first_and_acts_only_on_yes_from_an_allowed_chat() -> None:
    client = StubClient()
    with FakeTelegram(TOKEN) as fake:
        async with running(client, fake, chats=(CHAT, 77)):
            question = await answer(fake, "/close sim:eurusd")
            assert question["text"] == "Close paper SIM:EURUSD (long 1,000)?"
            choices = buttons(question)
            assert set(choices) == {"Yes", "No"}
            assert "Cancelled" in (await press(fake, choices["No"]))["text"]
            assert client.calls == []

            choices = buttons(await answer(fake, "/close SIM:EURUSD"))
            fake.push_callback(STRANGER, choices["Yes"])  # not an allowed chat: nothing
            # Another allowed chat cannot press this chat's button either.
            assert "expired" in (await press(fake, choices["Yes"], chat_id=77))["text"]
            done = await press(fake, choices["Yes"])
            # Pressed twice: the second press changes nothing.
            again = await press(fake, choices["Yes"])
    assert client.calls == [("close_position", (EUR, "paper"))]
    assert done["text"] == "Close paper SIM:EURUSD: filled 1,000 @ 1.08610"
    assert "expired" in again["text"]
    assert sent_to(fake, STRANGER) == []
    assert [a["text"] for a in fake.answered].count("Done") == 1


async def test_a_confirmation_expires() -> None:
    client = StubClient()
    with FakeTelegram(TOKEN) as fake:
        async with running(client, fake, confirm_ttl_s=0.0):
            choices = buttons(await answer(fake, "/cancel 12"))
            assert "expired" in (await press(fake, choices["Yes"]))["text"]
    assert client.calls == []


async def test_chart_is_a_png_photo_with_a_caption() -> None:
    with FakeTelegram(TOKEN) as fake:
        async with running(StubClient(), fake):
            fake.push_message(STRANGER, "/chart SIM:EURUSD 5m")  # not allowed: nothing
            fake.push_message(CHAT, "/chart sim:eurusd 5m")
            await wait_until(lambda: len(fake.photos) == 1)
    photo = fake.photos[0]
    assert photo["chat_id"] == CHAT
    assert photo["caption"] == "SIM:EURUSD 5m, last 12 bars: close 1.09100 (+1.02%)"
    assert photo["photo"].startswith(b"\x89PNG\r\n\x1a\n")
    assert Image.open(io.BytesIO(photo["photo"])).size == (800, 450)
    assert fake.sent == []


async def test_chart_falls_back_to_text_when_drawing_fails(monkeypatch, caplog) -> None:
    def broken(*args: Any) -> bytes:
        raise OSError("no font")

    monkeypatch.setattr(telegram, "candles_png", broken)
    with FakeTelegram(TOKEN) as fake:
        async with running(StubClient(), fake):
            chart = await answer(fake, "/chart SIM:EURUSD 5m")
    assert fake.photos == []
    assert "could not draw the SIM:EURUSD 5m chart; sending it as text" in caplog.text
    assert chart["parse_mode"] == "MarkdownV2"
    assert chart["text"].startswith("```\nSIM:EURUSD 5m, last 12 bars")
    assert "●" in chart["text"] and chart["text"].endswith("\n```")


def test_text_chart_puts_each_close_in_its_row() -> None:
    closes = (1.105, 1.205, 1.305)
    bars = [{"open": c, "high": c + 0.01, "low": c - 0.01, "close": c} for c in closes]
    lines = text_chart("SIM:X", "1h", bars).splitlines()
    assert lines[0] == "SIM:X 1h, last 3 bars: close 1.305 (+18.10%)"
    assert lines[1].startswith("1.315 ")
    rows = [line.split(" ", 1)[1] for line in lines[1:-1]]
    assert rows[0][2] == "●" and rows[-1][0] == "●"  # highest close on top, lowest below
    assert all(len(row) == 3 for row in rows)


async def test_a_notice_goes_to_every_chat_even_when_queued_before_start() -> None:
    notice = Notice("halt", "Risk halt: paper", "Day loss limit hit (-500.00).", now_us())
    with FakeTelegram(TOKEN) as fake:
        bot = TelegramBot(bot_config(fake.url, [CHAT, 77]), StubClient(), env={ENV: TOKEN})
        bot.send(notice)
        supervisor = Supervisor(Bus(), SupervisorConfig())
        supervisor.add(bot)
        supervisor.start(bot.name)
        try:
            await wait_until(lambda: len(fake.sent) == 2)
            await wait_until(lambda: supervisor.status()[0].counters.get("sent") == 2)
        finally:
            await supervisor.stop_all()
    assert sorted(message["chat_id"] for message in fake.sent) == [77, CHAT]
    assert {m["text"] for m in fake.sent} == {"Risk halt: paper\nDay loss limit hit (-500.00)."}
    assert all("parse_mode" not in message for message in fake.sent)


async def test_429_waits_its_retry_after_then_sends() -> None:
    too_many = {
        "ok": False,
        "error_code": 429,
        "description": "Too Many Requests: retry after 1",
        "parameters": {"retry_after": 1},
    }
    with FakeTelegram(TOKEN) as fake:
        async with running(StubClient(), fake) as (bot, supervisor):
            fake.fail_next("sendMessage", 429, too_many)
            started = time.monotonic()
            bot.send(Notice("fill", "Filled SIM:EURUSD", "", now_us()))
            await wait_until(lambda: len(fake.sent) == 1, timeout=5)
            elapsed = time.monotonic() - started
            await wait_until(lambda: supervisor.status()[0].counters["sent"] == 1)
            counters = supervisor.status()[0].counters
    # retry_initial_s is 0.05: the second try waited for Telegram's retry_after.
    assert elapsed >= 0.95
    assert counters["retried"] == 1 and counters["sent"] == 1 and counters["failed"] == 0
    assert fake.sent[0]["text"] == "Filled SIM:EURUSD"


async def test_a_rejected_token_fails_once_with_one_line_and_never_shows(caplog) -> None:
    caplog.set_level(logging.DEBUG)
    with FakeTelegram("7000001:the-token-telegram-knows") as fake:
        bot = TelegramBot(bot_config(fake.url, [CHAT]), StubClient(), env={ENV: TOKEN})
        supervisor = Supervisor(Bus(), SupervisorConfig(backoff_initial_s=0.01))
        supervisor.add(bot)
        supervisor.start(bot.name)
        await wait_until(lambda: state(supervisor) is ServiceState.FAILED)
        status = supervisor.status()[0]
        await supervisor.stop_all()

        # The same run by hand, to look at the exception itself.
        with pytest.raises(SptraderError) as raised:
            await bot.run(ServiceContext("telegram", Bus()))
        requests = len(fake.requests)

    expected = f"Telegram rejected the bot token in ${ENV} (401 Unauthorized)"
    assert status.last_error == expected and status.restarts == 0
    assert str(raised.value) == expected
    assert requests == 2  # one getMe per run: no retry loop
    chain = "".join(traceback.format_exception(raised.value))
    assert raised.value.__context__ is None and raised.value.__cause__ is None
    for text in (caplog.text, status.last_error, chain, repr(raised.value)):
        assert TOKEN not in text and "secret" not in text


async def test_an_unreachable_api_is_a_disconnect_without_the_token() -> None:
    with FakeTelegram(TOKEN) as fake:
        url = fake.url
    bot = TelegramBot(bot_config(url, [CHAT]), StubClient(), env={ENV: TOKEN})
    supervisor = Supervisor(Bus(), SupervisorConfig(backoff_initial_s=5.0))
    supervisor.add(bot)
    supervisor.start(bot.name)
    try:
        await wait_until(lambda: state(supervisor) is ServiceState.BACKOFF)
        status = supervisor.status()[0]
    finally:
        await supervisor.stop_all()
    assert "Telegram getMe: All connection attempts failed" in status.last_error
    assert TOKEN not in status.last_error and url not in status.last_error


async def test_a_missing_token_names_its_env_var() -> None:
    bot = TelegramBot(bot_config("http://127.0.0.1:9", [CHAT]), StubClient(), env={})
    with pytest.raises(SptraderError, match=ENV):
        await bot.run(ServiceContext("telegram", Bus()))


# --- through a real engine ----------------------------------------------------------------


async def test_positions_close_halt_and_resume_through_a_local_engine(home: Path) -> None:
    settings = make_settings(
        home,
        watchlist=[EUR],
        store={"seed_days": 0.01, "flush_interval_ms": 20},
        feeds={"sim": {"publish_interval_ms": 10, "tick_rate": 5.0}},
        broker={"slippage_bps": 0.0},
    )
    engine = Engine(settings)
    await engine.start()
    client = LocalEngineClient(engine)
    try:
        assert engine.broker is not None
        assert await engine.broker.wait_for_quote(EUR, timeout=10)
        result = await client.place_order({"instrument": EUR, "side": "buy", "qty": 1000})
        assert result["rejected"] is None
        with FakeTelegram(TOKEN) as fake:
            async with running(client, fake):
                positions = (await answer(fake, "/positions"))["text"]
                assert f"paper {EUR} long 1,000 @ " in positions
                status = (await answer(fake, "/status"))["text"]
                assert "sim: running" in status

                done = await press(fake, buttons(await answer(fake, f"/close {EUR}"))["Yes"])
                assert done["text"].startswith(f"Close paper {EUR}: filled 1,000 @ ")
                assert await client.positions() == []

                halted = await press(fake, buttons(await answer(fake, "/halt paper"))["Yes"])
                assert halted["text"] == "Halted: paper (0 order(s) cancelled)"
                assert engine.halts.reason("paper") == "halted from Telegram"
                refused = await client.place_order({"instrument": EUR, "side": "buy", "qty": 1})
                assert refused["rejected"] is not None

                resumed = await press(fake, buttons(await answer(fake, "/resume"))["Yes"])
                assert resumed["text"] == "Resumed: paper"
                assert engine.halts.reason("paper") is None

                pnl = (await answer(fake, "/pnl day"))["text"]
                assert "from 1 trade(s)" in pnl and "paper: equity " in pnl

                working = await client.place_order(
                    {"instrument": EUR, "side": "buy", "qty": 1000, "type": "limit", "price": 0.5}
                )
                order_id = working["order"]["order_id"]
                orders = (await answer(fake, "/orders"))["text"]
                assert f"#{order_id} paper {EUR} buy limit 1,000 @ 0.5" in orders
                question = await answer(fake, f"/cancel {order_id}")
                assert question["text"] == f"Cancel order #{order_id}?"
                cancelled = await press(fake, buttons(question)["Yes"])
                assert cancelled["text"] == f"Order #{order_id}: cancelled"
                assert await client.open_orders() == []
    finally:
        await client.close()
