"""Signals and alert notices to webhooks: Slack, Discord, ntfy or plain JSON.

Deliveries run on one background thread with a bounded queue, so a slow or failing
webhook never holds up a scan: ``submit`` only enqueues. Each delivery is retried with
exponential backoff (``retry_delay_s * 2**attempt``) on network errors, 429 and 5xx; any
other 4xx is the webhook refusing the message, and retrying would not help. Outcomes are
reported to a callback as counter names (``alerts_sent``, ``alerts_failed``,
``alerts_retried``, ``alerts_dropped``) for the scanner's services row, and failures are
logged (the URL's query is left out: webhook URLs often carry a secret).

Bodies per format:
- slack: ``{"text": "..."}``; discord: ``{"content": "..."}``;
- ntfy: the text POSTed to the topic URL, with ``Title`` and ``Tags`` headers;
- json: the signal itself (scanner, run_id, instrument, ts, side, strength, reason,
  stop, target).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import httpx

from sptrader.alerting.notice import Notice
from sptrader.config import AlertsConfig, WebhookConfig

log = logging.getLogger(__name__)

Report = Callable[[str], None]

TAGS = {"buy": "chart_with_upwards_trend", "sell": "chart_with_downwards_trend", "exit": "x"}
QUEUE_SIZE = 1000


def signal_text(signal: dict[str, Any]) -> str:
    """One line a trader reads on a phone."""
    parts = [
        f"{signal['side'].upper()} {signal['instrument']} ({signal.get('scanner', '')})",
        f"bar {signal['ts']}",
    ]
    if signal.get("strength") is not None:
        parts.append(f"strength {signal['strength']:.2f}")
    if signal.get("stop") is not None:
        parts.append(f"stop {signal['stop']:g}")
    if signal.get("target") is not None:
        parts.append(f"target {signal['target']:g}")
    text = ", ".join(parts)
    if signal.get("reason"):
        text += f": {signal['reason']}"
    return text


def notice_request(hook: WebhookConfig, notice: Notice) -> dict[str, Any]:
    """The keyword arguments of the POST for one alert rule's (or report's) notice."""
    text = notice.text if notice.text.startswith(notice.title) else f"{notice.title}\n{notice.text}"
    if hook.format == "slack":
        return {"json": {"text": text}}
    if hook.format == "discord":
        return {"json": {"content": text}}
    if hook.format == "ntfy":
        return {
            "content": notice.text.encode(),
            "headers": {
                "Title": f"SPtrader: {notice.title}",
                "Tags": "bell",
                "Content-Type": "text/plain; charset=utf-8",
            },
        }
    return {"json": notice.to_dict()}


def webhook_request(hook: WebhookConfig, signal: dict[str, Any] | Notice) -> dict[str, Any]:
    """The keyword arguments of the POST for one signal (or notice) to one webhook."""
    if isinstance(signal, Notice):
        return notice_request(hook, signal)
    if hook.format == "slack":
        return {"json": {"text": signal_text(signal)}}
    if hook.format == "discord":
        return {"json": {"content": signal_text(signal)}}
    if hook.format == "ntfy":
        title = f"SPtrader {signal['side']} {signal['instrument']}"
        return {
            "content": signal_text(signal).encode(),
            "headers": {
                "Title": title,
                "Tags": TAGS.get(signal["side"], "bell"),
                "Content-Type": "text/plain; charset=utf-8",
            },
        }
    return {"json": signal}


def safe_url(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


class Alerter:
    def __init__(
        self,
        config: AlertsConfig,
        *,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        retry_delay_s: float = 1.0,
    ) -> None:
        self.config = config
        self.sleep = sleep
        self.retry_delay_s = retry_delay_s
        self._transport = transport
        self._queue: queue.Queue[tuple[dict[str, Any], Report | None] | None] = queue.Queue(
            QUEUE_SIZE
        )
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        # Set when close() ran out of time: the thread drops what is left and stops,
        # rather than outliving its owner and logging failures long after shutdown.
        self._abandoned = threading.Event()

    @property
    def active(self) -> bool:
        return self.config.notify and bool(self.config.webhooks)

    def submit(self, signal: dict[str, Any] | Notice, report: Report | None = None) -> None:
        """Queue a signal (or an alert rule's notice) for every webhook; never blocks."""
        if not (self.active or (isinstance(signal, Notice) and self.config.webhooks)):
            return
        try:
            self._queue.put_nowait((signal, report))
        except queue.Full:
            log.warning("alert queue full: dropped the alert %s", _what(signal))
            if report is not None:
                report("alerts_dropped")
            return
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._work, name="alerts", daemon=True)
                self._thread.start()

    def close(self, timeout: float = 5.0) -> None:
        """Deliver what is queued (for up to ``timeout`` s), then stop the thread; past
        the timeout the rest is dropped (said once) and the alerter is done for good."""
        with self._lock:
            thread = self._thread
        if thread is None or not thread.is_alive():
            return
        deadline = time.monotonic() + timeout
        stop_queued = False
        with contextlib.suppress(queue.Full):
            self._queue.put(None, timeout=timeout)
            stop_queued = True
        thread.join(max(0.0, deadline - time.monotonic()))
        if thread.is_alive():
            self._abandoned.set()
            dropped = self._queue.qsize() - stop_queued
            log.warning(
                "alerts: closed with a delivery in flight and %d queued alert(s) dropped",
                dropped,
            )

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Block until every queued alert was handled (tests, the CLI)."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def _work(self) -> None:
        with httpx.Client(timeout=self.config.timeout_s, transport=self._transport) as client:
            while True:
                item = self._queue.get()
                try:
                    if item is None or self._abandoned.is_set():
                        return
                    signal, report = item
                    for hook in self.config.webhooks:
                        outcome = self.deliver(client, hook, signal, report)
                        if report is not None:
                            report("alerts_sent" if outcome else "alerts_failed")
                except Exception:  # the thread must survive anything one alert does
                    log.exception("alert delivery crashed")
                finally:
                    self._queue.task_done()

    def deliver(
        self,
        client: httpx.Client,
        hook: WebhookConfig,
        signal: dict[str, Any] | Notice,
        report: Report | None = None,
    ) -> bool:
        request = webhook_request(hook, signal)
        attempts = self.config.retries + 1
        problem = ""
        for attempt in range(attempts):
            if self._abandoned.is_set():
                return False  # closed: close() said what was left undelivered
            if attempt:
                if report is not None:
                    report("alerts_retried")
                self.sleep(self.retry_delay_s * 2 ** (attempt - 1))
            try:
                response = client.post(hook.url, **request)
            except httpx.HTTPError as error:
                problem = f"{type(error).__name__}: {error}"
                continue
            if response.is_success:
                return True
            problem = f"HTTP {response.status_code}"
            if response.status_code != 429 and response.status_code < 500:
                break  # refused: the same message will be refused again
        if self._abandoned.is_set():
            return False
        log.warning(
            "%s webhook %s failed for %s: %s",
            hook.format,
            safe_url(hook.url),
            _what(signal),
            problem,
        )
        return False


def _what(signal: dict[str, Any] | Notice) -> str:
    if isinstance(signal, Notice):
        return signal.title
    return f"{signal.get('side')} {signal.get('instrument')}"
