"""Live market data straight from NATS for a client attached to a writer (the TUI on
another machine): quotes, trades and bars as the collectors publish them, without a
round trip through the writer. A plain NATS subscription, not a durable consumer: a
screen wants now, not what it missed (the writer's API serves the history).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from sptrader.cluster import link
from sptrader.cluster.codec import MalformedMessage, decode_message
from sptrader.config import NatsConfig

log = logging.getLogger(__name__)


class NatsMarketData:
    """Subscribes to the collectors' subjects and hands each message's events on."""

    def __init__(self, config: NatsConfig, on_events: Callable[[list[object]], None]) -> None:
        self.config = config
        self.on_events = on_events
        self.client: Any = None
        self.received = 0
        self.malformed = 0

    async def start(self) -> None:
        """Connect and subscribe (the client reconnects by itself from here on)."""
        self.client = await link.connect(self.config, "sptrader tui")
        prefix = self.config.stream_prefix
        for kind in ("ticks", "bars", "forming"):
            await self.client.subscribe(f"{prefix}.{kind}.>", cb=self._take)

    async def _take(self, message: Any) -> None:
        try:
            events = decode_message(message.data)
        except MalformedMessage as error:
            self.malformed += 1
            if self.malformed == 1:
                log.warning("nats: skipped a message on %s: %s", message.subject, error)
            return
        self.received += len(events)
        self.on_events(events)

    async def close(self) -> None:
        if self.client is not None:
            await self.client.close()
            self.client = None
