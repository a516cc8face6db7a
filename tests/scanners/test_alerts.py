"""Webhook alerts: bodies per format, retries with backoff against a local HTTP server,
and a failing or hanging webhook never blocking the caller."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable

import httpx
import pytest
from fakes import FakeHttpServer, FakeRequest, FakeResponse

from sptrader.alerting.webhooks import Alerter, webhook_request
from sptrader.config import AlertsConfig, WebhookConfig

SIGNAL = {
    "scanner": "momo",
    "run_id": 7,
    "instrument": "SIM:EURUSD",
    "ts": "2026-01-05T10:00:00Z",
    "side": "buy",
    "strength": 0.8,
    "reason": "close above open",
    "stop": 1.05,
    "target": None,
}


def post_server(answers: list[int], gate: threading.Event | None = None) -> FakeHttpServer:
    """A local HTTP server answering POSTs with the statuses of ``answers`` in turn
    (the last one repeats); ``gate``, when given, holds every answer until set."""
    served: list[FakeRequest] = []

    def route(request: FakeRequest) -> FakeResponse:
        served.append(request)
        if gate is not None:
            gate.wait(10)
        return FakeResponse(answers[min(len(served), len(answers)) - 1])

    return FakeHttpServer(route)


def alerts(*hooks: tuple[str, str], retries: int = 3) -> AlertsConfig:
    return AlertsConfig(
        webhooks=[WebhookConfig(url=url, format=fmt) for url, fmt in hooks],  # type: ignore[arg-type]
        retries=retries,
        timeout_s=5.0,
    )


def collect() -> tuple[list[str], Callable[[str], None]]:
    counted: list[str] = []
    return counted, counted.append


@pytest.mark.parametrize(
    ("fmt", "check"),
    [
        ("slack", lambda r: set(json.loads(r.content)) == {"text"}),
        ("discord", lambda r: set(json.loads(r.content)) == {"content"}),
        ("json", lambda r: json.loads(r.content) == SIGNAL),
        (
            "ntfy",
            lambda r: (
                r.headers["title"] == "SPtrader buy SIM:EURUSD"
                and r.headers["tags"] == "chart_with_upwards_trend"
                and r.content.decode().startswith("BUY SIM:EURUSD")
            ),
        ),
    ],
)
def test_bodies_per_format(fmt: str, check: Callable[[httpx.Request], bool]) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200)

    alerter = Alerter(
        alerts(("https://hooks.example/x", fmt)), transport=httpx.MockTransport(handler)
    )
    counted, report = collect()
    alerter.submit(SIGNAL, report)
    assert alerter.wait_idle()
    assert len(seen) == 1 and seen[0].method == "POST" and check(seen[0])
    assert counted == ["alerts_sent"]
    text = webhook_request(WebhookConfig(url="http://x", format="slack"), SIGNAL)["json"]["text"]
    assert "BUY SIM:EURUSD" in text and "close above open" in text and "stop 1.05" in text


def test_retries_with_exponential_backoff_then_succeeds() -> None:
    delays: list[float] = []
    with post_server([500, 429, 200]) as server:
        alerter = Alerter(
            alerts((server.url + "/hook", "slack")), sleep=delays.append, retry_delay_s=0.5
        )
        counted, report = collect()
        alerter.submit(SIGNAL, report)
        assert alerter.wait_idle()
    assert len(server.requests) == 3
    assert delays == [0.5, 1.0]
    assert counted == ["alerts_retried", "alerts_retried", "alerts_sent"]


def test_gives_up_after_the_retries_and_a_refusal_is_not_retried(caplog) -> None:
    delays: list[float] = []
    with post_server([503]) as failing, post_server([400]) as refusing:
        alerter = Alerter(
            alerts((failing.url + "/a?secret=1", "json"), (refusing.url, "discord"), retries=2),
            sleep=delays.append,
        )
        counted, report = collect()
        alerter.submit(SIGNAL, report)
        assert alerter.wait_idle()
    assert len(failing.requests) == 3 and len(refusing.requests) == 1
    assert delays == [1.0, 2.0]
    assert counted.count("alerts_failed") == 2
    assert "HTTP 503" in caplog.text and "secret" not in caplog.text


def test_a_hanging_webhook_never_blocks_the_caller() -> None:
    gate = threading.Event()
    with post_server([200], gate=gate) as server:
        alerter = Alerter(alerts((server.url, "json")))
        counted, report = collect()
        for _ in range(3):
            alerter.submit(SIGNAL, report)  # returns while the server holds the answer
        assert counted == []
        assert not alerter.wait_idle(timeout=0.1)
        gate.set()
        assert alerter.wait_idle()
    assert counted == ["alerts_sent"] * 3


def test_nothing_is_sent_when_notify_is_off() -> None:
    calls: list[httpx.Request] = []
    config = alerts(("https://hooks.example/x", "json"))
    config.notify = False
    alerter = Alerter(
        config, transport=httpx.MockTransport(lambda r: calls.append(r) or httpx.Response(200))
    )
    alerter.submit(SIGNAL)
    assert alerter.wait_idle() and calls == []


async def test_a_hanging_webhook_does_not_hold_up_a_scan(home) -> None:
    from conftest import make_settings, wait_until
    from test_scanners import scanner_table, store_bars

    from sptrader.engine import Engine
    from sptrader.scanners.service import ScannerService

    gate = threading.Event()
    with post_server([200], gate=gate) as server:
        settings = make_settings(
            home,
            watchlist=["SIM:EURUSD"],
            scanners=[scanner_table(strategy="test_every_bar")],
            alerts={"webhooks": [{"url": server.url, "format": "slack"}]},
        )
        engine = Engine(settings)
        engine.open_store()
        try:
            store_bars(engine, "SIM:BTCUSD")
            service = ScannerService(
                engine.scanner_deps, settings.config.scanners[0], Alerter(settings.config.alerts)
            )
            context = engine.supervisor.add(service)
            service.context = context
            result = await service.run_now()  # returns while the webhook hangs
            assert len(result.signals) == 1
            await wait_until(lambda: len(server.requests) == 1)
            assert "alerts_sent" not in context.counters
            gate.set()
            await wait_until(lambda: context.counters.get("alerts_sent") == 1)
            assert json.loads(server.requests[0].body)["text"].startswith("BUY SIM:BTCUSD")
        finally:
            gate.set()
            engine.require_store().close()
