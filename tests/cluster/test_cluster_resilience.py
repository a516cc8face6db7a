"""What keeps a host going while a NATS node is lost and a stream elects a new leader
(seen under load in the 3-node test): a publish that is never acked does not stall the
collector for ever, and a heartbeat that cannot be put does not stop the beating."""

from __future__ import annotations

import asyncio
import logging

import pytest

from sptrader.bus import Bus
from sptrader.cluster import hosts, publisher
from sptrader.cluster.codec import Outgoing
from sptrader.cluster.publisher import NatsPublisher
from sptrader.config import NatsConfig


class NeverAcks:
    """A JetStream context whose publishes are sent but never acked."""

    def __init__(self) -> None:
        self.futures: list[asyncio.Future] = []

    async def publish_async(self, subject, payload, headers, wait_stall):
        future = asyncio.get_running_loop().create_future()
        self.futures.append(future)
        return future


async def test_a_batch_never_acked_is_a_disconnect_and_stays_to_be_resent(monkeypatch):
    monkeypatch.setattr(publisher, "ACK_WITHIN_S", 0.1)
    out = NatsPublisher(Bus(), NatsConfig(enabled=True), 100)
    js = NeverAcks()
    batch = [Outgoing("S.bars.1m.SIM.EURUSD", b"x", f"id{i}", "S_BARS") for i in range(3)]
    out._unacked = list(batch)
    with pytest.raises(ConnectionError, match=r"acked no batch within 0\.1s"):
        await asyncio.wait_for(out._send(js, out._unacked), 5)
    assert all(future.cancelled() for future in js.futures)  # their slots are free
    assert out._unacked == batch  # the next connection sends them again


class FlakyBucket:
    """A hosts bucket whose puts fail a while (no stream leader), then work."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.puts = 0

    async def put(self, key, value):
        if self.failures:
            self.failures -= 1
            raise TimeoutError("nats: timeout")
        self.puts += 1

    async def keys(self):
        return []


async def test_a_heartbeat_that_cannot_be_put_keeps_beating(caplog):
    bucket = FlakyBucket(failures=3)
    seen: list[list] = []
    with caplog.at_level(logging.INFO, "sptrader.cluster.hosts"):
        beating = asyncio.create_task(
            hosts.keep_beating(bucket, "collector", 0, 0.01, dict, seen.append)
        )
        while bucket.puts < 2:
            await asyncio.sleep(0.01)
        beating.cancel()
        await asyncio.gather(beating, return_exceptions=True)
    said = [record.getMessage() for record in caplog.records]
    # Said once when it starts failing, once when it works again.
    assert said == [
        "nats: collector heartbeat not sent (nats: timeout); still trying",
        "nats: collector heartbeat sent again",
    ]
    assert seen  # the hosts are read again once beats go out
