"""Where a notice goes: the TUI (an AlertRaised event on the bus), the webhooks (the
scanners' Alerter thread, with its retries), the desktop (``notify-send`` where it
exists). Telegram's channel is the bot itself (sptrader.alerting.telegram). Every
``send`` only queues or publishes: nothing here waits on a network."""

from __future__ import annotations

import logging
import shutil
import subprocess
import threading
from collections.abc import Iterable

from sptrader.alerting.notice import Channel, Notice
from sptrader.alerting.webhooks import Alerter
from sptrader.bus import Bus
from sptrader.models import AlertRaised

log = logging.getLogger(__name__)


class TuiChannel:
    name = "tui"

    def __init__(self, bus: Bus) -> None:
        self.bus = bus

    def send(self, notice: Notice) -> None:
        self.bus.publish_nowait(
            [AlertRaised(notice.ts_us, notice.rule, notice.kind, notice.title, notice.text)]
        )


class WebhookChannel:
    name = "webhooks"

    def __init__(self, alerter: Alerter) -> None:
        self.alerter = alerter
        #: alerts_sent / alerts_failed / alerts_retried / alerts_dropped (the services pane).
        self.counts: dict[str, int] = {}

    def send(self, notice: Notice) -> None:
        self.alerter.submit(notice, self._count)

    def _count(self, name: str) -> None:  # on the alerter's thread: one dict update
        key = "webhook_" + name.removeprefix("alerts_")
        self.counts[key] = self.counts.get(key, 0) + 1


class DesktopChannel:
    """``notify-send TITLE TEXT`` on a thread (absent on this machine: logged once)."""

    name = "desktop"

    def __init__(self) -> None:
        self.command = shutil.which("notify-send")
        self._warned = False

    def send(self, notice: Notice) -> None:
        if self.command is None:
            if not self._warned:
                self._warned = True
                log.warning("desktop alerts need notify-send, which is not installed here")
            return
        threading.Thread(target=self._show, args=(notice,), daemon=True).start()

    def _show(self, notice: Notice) -> None:
        try:
            subprocess.run(
                [self.command, "--app-name=SPtrader", notice.title, notice.text],
                timeout=10,
                check=False,
                capture_output=True,
            )
        except (OSError, subprocess.SubprocessError) as error:
            log.warning("desktop alert not shown: %s", error)


class Dispatcher:
    """The channels by name; a notice goes to those its rule names that exist here."""

    def __init__(self, channels: Iterable[Channel] = ()) -> None:
        self.channels: dict[str, Channel] = {channel.name: channel for channel in channels}

    def add(self, channel: Channel) -> None:
        self.channels[channel.name] = channel

    def counters(self) -> dict[str, int]:
        """Every channel's delivery counts (webhook_sent, webhook_failed, ...)."""
        counts: dict[str, int] = {}
        for channel in self.channels.values():
            counts.update(getattr(channel, "counts", {}))
        return counts

    def deliver(self, notice: Notice, names: Iterable[str]) -> list[str]:
        """Send ``notice`` to each named channel; the names it went to."""
        sent = []
        for name in names:
            channel = self.channels.get(name)
            if channel is None:
                continue  # e.g. telegram named but not enabled here
            try:
                channel.send(notice)
            except Exception:  # a channel's bug must not stop the others
                log.exception("alert channel %s failed", name)
                continue
            sent.append(name)
        return sent
