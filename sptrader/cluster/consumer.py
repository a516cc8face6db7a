"""The writer's side: a durable JetStream consumer per stream feeds the local bus, and
each message is acked only once what it carries is stored.

A writer that was down resumes where its durable consumer stopped, in order (its lag in
messages and seconds is a counter and part of its heartbeat). A writer killed before it
acked gets the same messages again: the store's upserts make that harmless. A message
this version cannot read is counted, logged once, and terminated (never redelivered).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import socket
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from sptrader.bus import Bus
from sptrader.clock import now_us
from sptrader.cluster import hosts, link, subjects, watchlist
from sptrader.cluster.codec import MalformedMessage, decode_message
from sptrader.config import NatsConfig
from sptrader.models import (
    Bar,
    BarClosed,
    BarUpdated,
    LiveCoverageRecorded,
    ServiceState,
    ServiceStateChanged,
)
from sptrader.supervisor import Service, ServiceContext

log = logging.getLogger(__name__)

#: Unacked messages the server lets one consumer have (a few fetches' worth).
ACK_PENDING_BATCHES = 4
#: Seconds before the server redelivers a message that was fetched but never acked.
ACK_WAIT_S = 60.0


def durable_name(home: Path) -> str:
    """One durable consumer per writer home (machine and path): it resumes where that
    home's writer stopped, and two writers, even on one machine, each get every message."""
    host = "".join(char if char.isalnum() else "-" for char in socket.gethostname())
    digest = hashlib.blake2b(str(home.resolve()).encode(), digest_size=4).hexdigest()
    return f"writer-{host}-{digest}"


class NatsConsumer(Service):
    kind = "nats"
    stoppable = False

    def __init__(
        self,
        bus: Bus,
        config: NatsConfig,
        *,
        store_queued: Callable[[], Awaitable[object]],
        apply_coverage: Callable[[LiveCoverageRecorded], Awaitable[None]],
        home: Path,
        durable: str | None = None,
        watched: Callable[[], list[str]] = list,
        adopt_watchlist: Callable[[list[str]], Awaitable[None]] | None = None,
    ) -> None:
        super().__init__("nats-in")
        self.bus = bus
        # The writer's watchlist, and what to do with the cluster's when it changes.
        self.watched = watched
        self.adopt_watchlist = adopt_watchlist
        # The shared watchlist's bucket while connected; a list changed while not
        # connected, shared once connected again; the list as last shared or adopted,
        # at first the one this writer started with (what a change is reckoned from:
        # what it added and removed; a change made before the first connection is one).
        self._watchlist_bucket: Any = None
        self._unshared: list[str] | None = None
        self._shared: list[str] = list(watched())
        self.config = config
        self.store_queued = store_queued
        self.apply_coverage = apply_coverage
        self.durable = durable or durable_name(home)
        self.started_us = now_us()
        # The latest forming bar per instrument (the writer builds none itself).
        self.forming: dict[str, Bar] = {}
        # Every host's last heartbeat, read back each beat (status, stale instruments).
        self.hosts: list[dict[str, Any]] = []
        self._collectors: dict[str, str] | None = None
        self._delivering: list[tuple[Any, ...]] | None = None
        self.consumed = 0
        self.malformed = 0
        self.lag_messages: dict[str, int] = {}
        self.lag_s: dict[str, float] = {}
        self._malformed_logged = False

    @property
    def lag(self) -> tuple[int, float]:
        """Messages not yet delivered, and the age of the last one handled (0 when none
        is waiting)."""
        return sum(self.lag_messages.values()), max(self.lag_s.values(), default=0.0)

    async def run(self, context: ServiceContext) -> None:
        client = await link.connect(self.config, f"sptrader writer {self.durable}")
        tasks: list[asyncio.Task[None]] = []
        try:
            js = client.jetstream()
            await link.ensure_streams(js, self.config)
            bucket = await link.hosts_bucket(js, self.config)
            prefix = self.config.stream_prefix
            pending = self.config.fetch_batch * ACK_PENDING_BATCHES
            bars = await js.pull_subscribe(
                "",
                durable=f"{self.durable}_bars",
                stream=subjects.BARS_STREAM.format(prefix=prefix),
                config=ConsumerConfig(
                    filter_subjects=subjects.bar_stream_subjects(prefix),
                    ack_policy=AckPolicy.EXPLICIT,
                    deliver_policy=DeliverPolicy.ALL,
                    ack_wait=ACK_WAIT_S,
                    max_ack_pending=pending,
                    # A home gone for longer than the stream keeps bars has nothing to
                    # resume: its consumer goes too.
                    inactive_threshold=self.config.bars_max_age_days * 86400,
                ),
            )
            # Ticks are for now: a new writer does not replay hours of them.
            ticks = await js.pull_subscribe(
                "",
                durable=f"{self.durable}_ticks",
                stream=subjects.TICKS_STREAM.format(prefix=prefix),
                config=ConsumerConfig(
                    filter_subjects=subjects.tick_stream_subjects(prefix),
                    ack_policy=AckPolicy.EXPLICIT,
                    deliver_policy=DeliverPolicy.NEW,
                    ack_wait=ACK_WAIT_S,
                    max_ack_pending=pending,
                    inactive_threshold=self.config.ticks_max_age_hours * 3600,
                ),
            )
            shared = await link.watchlist_bucket(js, self.config)
            await self._share_on_connect(shared)
            context.mark_running()
            tasks = [
                asyncio.create_task(self._pump(bars, "bars", context)),
                asyncio.create_task(self._pump(ticks, "ticks", context)),
                asyncio.create_task(self._beat(bucket)),
            ]
            if self.adopt_watchlist is not None:
                tasks.append(asyncio.create_task(watchlist.follow(shared, self._adopt)))
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                task.result()  # the first failure ends the run (and restarts it)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._watchlist_bucket = None
            await client.close()

    async def _share_on_connect(self, bucket: Any) -> None:
        """A change made while away goes out now; a cluster with no list yet gets this
        writer's; otherwise the cluster's is adopted (``follow`` hands it over)."""
        mine = list(self.watched())
        if self._unshared is not None:
            await self._change(bucket, self._unshared)
        elif await watchlist.create(bucket, mine, "writer"):
            self._shared = mine
        self._watchlist_bucket = bucket

    async def _adopt(self, instruments: list[str]) -> None:
        self._shared = list(instruments)
        if self.adopt_watchlist is not None:
            await self.adopt_watchlist(instruments)

    async def _change(self, bucket: Any, instruments: list[str]) -> None:
        """This writer's list is now ``instruments``: what it added and removed since it
        last shared or adopted one goes into the shared list."""
        before = self._shared
        added = [name for name in instruments if name not in before]
        removed = [name for name in before if name not in instruments]
        self._shared = await watchlist.change(bucket, added, removed, instruments, "writer")
        self._unshared = None

    async def share_watchlist(self, instruments: list[str]) -> None:
        """Tell the collectors (and other writers) this writer's new watchlist; if NATS
        is not reachable now, it goes out when the consumer connects again."""
        self._unshared = list(instruments)
        if self._watchlist_bucket is None:
            log.warning("nats: not connected; the watchlist change goes out on reconnect")
            return
        try:
            async with asyncio.timeout(5.0):
                await self._change(self._watchlist_bucket, self._unshared)
        except Exception as error:
            log.warning("nats: the watchlist change goes out on reconnect (%s)", error)

    async def _pump(self, subscription: Any, stream: str, context: ServiceContext) -> None:
        batch = self.config.fetch_batch
        while True:
            try:
                messages = await subscription.fetch(batch, timeout=1.0)
            except TimeoutError:  # nothing waiting (nats.errors.TimeoutError is one)
                self.lag_messages[stream] = 0
                self.lag_s[stream] = 0.0
                continue
            if messages:
                await self._handle(messages, stream, context)

    async def _handle(self, messages: list[Any], stream: str, context: ServiceContext) -> None:
        events: list[object] = []
        coverage: list[LiveCoverageRecorded] = []
        for message in messages:
            try:
                decoded = decode_message(message.data)
            except MalformedMessage as error:
                self.malformed += 1
                context.counters["malformed"] = self.malformed
                if not self._malformed_logged:
                    log.warning("nats: skipped a message on %s: %s", message.subject, error)
                    self._malformed_logged = True
                await message.term()
                continue
            for event in decoded:
                kind = type(event)
                if kind is LiveCoverageRecorded:
                    coverage.append(event)
                    continue
                if kind is BarUpdated:
                    self.forming[event.bar.instrument] = event.bar
                elif kind is BarClosed:
                    forming = self.forming.get(event.bar.instrument)
                    if forming is not None and forming.ts_us <= event.bar.ts_us:
                        del self.forming[event.bar.instrument]
                events.append(event)
        if events:
            await self.bus.publish(events)
        # Stored (and coverage recorded) before any ack: a crash here means redelivery.
        await self.store_queued()
        for entry in coverage:
            await self.apply_coverage(entry)
        for message in messages:
            if not message.is_acked:
                await message.ack()
        self.consumed += len(messages)
        last = messages[-1].metadata
        self.lag_messages[stream] = last.num_pending
        self.lag_s[stream] = (
            max(0.0, time.time() - last.timestamp.timestamp()) if last.num_pending else 0.0
        )
        context.events += len(messages)
        context.last_event_us = now_us()
        context.counters["consumed"] = self.consumed
        lag_messages, lag_s = self.lag
        context.counters["lag_messages"] = lag_messages
        context.counters["lag_ms"] = int(lag_s * 1000)

    def _note_collectors(self) -> None:
        """Say when a collector goes (its instruments stale) or comes back, and tell the
        screens to look again at what is stale whenever a collector's state, its
        instruments or its stale ones change."""
        collectors = [beat for beat in self.hosts if beat.get("role") == "collector"]
        states = {f"{beat['host']}:{beat['pid']}": beat.get("state", "?") for beat in collectors}
        delivering = [
            (beat["pid"], beat.get("state"), beat.get("instruments"), beat.get("stale"))
            for beat in collectors
        ]
        previous, self._collectors = self._collectors, states
        seen_before, self._delivering = self._delivering, delivering
        if previous is not None:  # the first reading is not news: gone hosts are history
            for name, state in states.items():
                was = previous.get(name)
                if state == "gone" and was != "gone":
                    log.warning("nats: collector %s is gone: its instruments are stale", name)
                elif state != "gone" and was in (None, "gone"):
                    log.info("nats: collector %s is delivering", name)
        if delivering == seen_before:
            return
        running = ServiceState.RUNNING
        self.bus.publish_nowait(
            [ServiceStateChanged(self.name, now_us(), running, running, "collectors changed")]
        )

    async def _beat(self, bucket: Any) -> None:
        def figures() -> dict[str, Any]:
            lag_messages, lag_s = self.lag
            return {
                "durable": self.durable,
                "consumed": self.consumed,
                "malformed": self.malformed,
                "lag_messages": lag_messages,
                "lag_s": round(lag_s, 3),
            }

        def take(read: list[dict[str, Any]]) -> None:
            self.hosts = read
            self._note_collectors()

        await hosts.keep_beating(
            bucket, "writer", self.started_us, self.config.heartbeat_s, figures, take
        )
