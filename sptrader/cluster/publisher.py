"""The collector's side: what the local feeds and bar builder publish on the bus goes to
JetStream, every message acked by the stream before it counts as sent.

A batch taken from the bus is kept until all its acks are in: if the connection drops,
the service restarts (with the supervisor's backoff) and sends the batch again, and
JetStream drops the messages it already has (their ids are the bars', see
``subjects``). Forming bars are coalesced to at most one a second per instrument (the
closed bar follows anyway); a held forming bar older than a closed one is dropped.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from sptrader.bus import Bus
from sptrader.clock import now_us
from sptrader.cluster import codec, hosts, link, watchlist
from sptrader.cluster.codec import Outgoing
from sptrader.config import NatsConfig
from sptrader.models import (
    Bar,
    BarClosed,
    BarUpdated,
    HistoryBarsReady,
    LiveCoverageRecorded,
    QuoteReceived,
    TradeReceived,
)
from sptrader.supervisor import Service, ServiceContext

log = logging.getLogger(__name__)

PUBLISHED_TYPES = (
    QuoteReceived,
    TradeReceived,
    BarClosed,
    BarUpdated,
    HistoryBarsReady,
    LiveCoverageRecorded,
)
#: A forming bar goes out at most this often per instrument.
FORMING_EVERY_S = 1.0
#: Publishes in flight at once (each one an ack awaited).
MAX_IN_FLIGHT = 4096
#: Seconds a batch's acks may take. A publish whose stream leader was lost mid-flight is
#: never acked (nats-py's futures wait for ever): the batch is sent again, on a new
#: connection, and JetStream drops what it already had.
ACK_WITHIN_S = 10.0


class NatsPublisher(Service):
    kind = "nats"
    stoppable = False

    def __init__(
        self,
        bus: Bus,
        config: NatsConfig,
        queue: int,
        *,
        describe: Any = None,
        follow_watchlist: Callable[[list[str]], Awaitable[None]] | None = None,
    ) -> None:
        super().__init__("nats-out")
        self.config = config
        self.subscription = bus.subscribe(
            "nats-out", maxsize=queue, policy="block", types=PUBLISHED_TYPES
        )
        # What the heartbeat says of this collector: {"instruments": [...], "stale": [...]}.
        self.describe = describe or (lambda: {})
        # Called with the cluster's watchlist now and on every change (the writers').
        self.follow_watchlist = follow_watchlist
        self.started_us = now_us()
        self._unacked: list[Outgoing] = []
        self._held_forming: dict[str, Bar] = {}
        self._forming_sent_at: dict[str, float] = {}
        # Every host's last heartbeat, read back each beat (for status).
        self.hosts: list[dict[str, Any]] = []
        self.published = 0
        self.resent = 0
        self.duplicates = 0

    def _encode(self, events: list[object]) -> list[Outgoing]:
        now = time.monotonic()
        outgoing_events: list[object] = []
        held = self._held_forming
        for event in events:
            kind = type(event)
            if kind is BarUpdated:
                held[event.bar.instrument] = event.bar
                continue
            if kind is BarClosed:
                forming = held.get(event.bar.instrument)
                if forming is not None and forming.ts_us <= event.bar.ts_us:
                    del held[event.bar.instrument]
            outgoing_events.append(event)
        for instrument in list(held):
            if now - self._forming_sent_at.get(instrument, 0.0) >= FORMING_EVERY_S:
                outgoing_events.append(BarUpdated(held.pop(instrument)))
                self._forming_sent_at[instrument] = now
        return codec.encode_events(self.config.stream_prefix, outgoing_events)

    async def run(self, context: ServiceContext) -> None:
        client = await link.connect(
            self.config, f"sptrader collector {hosts.host_key('collector')}"
        )
        try:
            js = client.jetstream(publish_async_max_pending=MAX_IN_FLIGHT)
            await link.ensure_streams(js, self.config)
            bucket = await link.hosts_bucket(js, self.config)
            beat = asyncio.create_task(self._beat(bucket))
            helpers = [beat]
            if self.follow_watchlist is not None:
                shared = await link.watchlist_bucket(js, self.config)
                follow = asyncio.create_task(watchlist.follow(shared, self.follow_watchlist))
                follow.add_done_callback(_log_failure)
                helpers.append(follow)
            try:
                context.mark_running()
                if self._unacked:
                    self.resent += len(self._unacked)
                while True:
                    if not self._unacked:
                        events = await self.subscription.get_within(FORMING_EVERY_S)
                        self._unacked = self._encode(events)
                        if not self._unacked:
                            continue
                    await self._send(js, self._unacked)
                    context.events += len(self._unacked)
                    context.last_event_us = now_us()
                    self.published += len(self._unacked)
                    self._unacked = []
                    context.counters["published"] = self.published
                    context.counters["duplicates"] = self.duplicates
                    context.counters["resent"] = self.resent
            finally:
                for helper in helpers:
                    helper.cancel()
        finally:
            await client.close()

    async def _send(self, js: Any, messages: list[Outgoing]) -> None:
        futures = [
            await js.publish_async(
                message.subject,
                message.payload,
                headers={"Nats-Msg-Id": message.message_id},
                wait_stall=30.0,
            )
            for message in messages
        ]
        try:
            async with asyncio.timeout(ACK_WITHIN_S):
                acks = await asyncio.gather(*futures)
        except TimeoutError:
            for future in futures:
                future.cancel()  # frees its slot of MAX_IN_FLIGHT
            raise ConnectionError(
                f"JetStream acked no batch within {ACK_WITHIN_S:g}s; sending it again"
            ) from None
        for ack in acks:
            if ack.duplicate:
                self.duplicates += 1

    async def _beat(self, bucket: Any) -> None:
        def figures() -> dict[str, Any]:
            return {
                "published": self.published,
                "queued": len(self.subscription),
                "unacked": len(self._unacked),
                **self.describe(),
            }

        def take(read: list[dict[str, Any]]) -> None:
            self.hosts = read

        await hosts.keep_beating(
            bucket, "collector", self.started_us, self.config.heartbeat_s, figures, take
        )

    async def drain(self, timeout_s: float = 5.0) -> None:
        """On shutdown: send what is queued (best effort; unsent bars are re-fetched from
        the venue's history by the next start's gap fill)."""
        events = self.subscription.get_nowait()
        self._unacked += self._encode(events)
        if not self._unacked:
            return
        client = await link.connect(self.config, "sptrader collector (draining)")
        try:
            js = client.jetstream(publish_async_max_pending=MAX_IN_FLIGHT)
            async with asyncio.timeout(timeout_s):
                await self._send(js, self._unacked)
            self._unacked = []
        finally:
            await client.close()


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("nats: stopped following the shared watchlist: %s", task.exception())
