"""The supervisor: crashed services come back with exponential, jittered backoff."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator

import pytest
from conftest import wait_until

from sptrader.bus import Bus, Subscription
from sptrader.config import SupervisorConfig
from sptrader.errors import SptraderError
from sptrader.models import QuoteReceived, ServiceState, ServiceStateChanged
from sptrader.supervisor import Service, ServiceContext, Supervisor

FAST = SupervisorConfig(
    backoff_initial_s=0.01,
    backoff_max_s=0.04,
    backoff_factor=2.0,
    backoff_jitter=0.0,
    stable_after_s=30.0,
)


class CrashingService(Service):
    """Crashes ``crashes`` times, then publishes one quote and runs until cancelled."""

    kind = "feed"

    def __init__(self, name: str, crashes: int, run_before_crash_s: float = 0.0) -> None:
        super().__init__(name)
        self.crashes = crashes
        self.run_before_crash_s = run_before_crash_s
        self.runs = 0

    async def run(self, context: ServiceContext) -> None:
        self.runs += 1
        if self.runs <= self.crashes:
            if self.run_before_crash_s:
                await asyncio.sleep(self.run_before_crash_s)
            raise RuntimeError(f"boom {self.runs}")
        context.count("connects")
        await context.publish([QuoteReceived("SIM:EURUSD", 1, 1.0, 1.1, 1.0, 1.0)], 1)
        await asyncio.Event().wait()


class ForeverService(Service):
    def __init__(self, name: str, stoppable: bool = True) -> None:
        super().__init__(name)
        self.stoppable = stoppable
        self.cancelled = 0

    async def run(self, context: ServiceContext) -> None:
        context.mark_running()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise


class FinishingService(Service):
    async def run(self, context: ServiceContext) -> None:
        context.mark_running()


@pytest.fixture
async def bus() -> Bus:
    return Bus()


@pytest.fixture
async def states(bus: Bus) -> Subscription:
    return bus.subscribe("states", maxsize=1000, types=ServiceStateChanged)


@pytest.fixture
async def supervisor(bus: Bus) -> AsyncIterator[Supervisor]:
    supervisor = Supervisor(bus, FAST)
    yield supervisor
    await supervisor.stop_all()


def status_of(supervisor: Supervisor, name: str):
    return next(status for status in supervisor.status() if status.name == name)


def transitions(subscription: Subscription, name: str) -> list[tuple[ServiceState, ServiceState]]:
    return [
        (event.previous, event.state)
        for event in subscription.get_nowait()
        if isinstance(event, ServiceStateChanged) and event.service == name
    ]


async def test_crashing_service_is_restarted_with_backoff(
    supervisor: Supervisor, states: Subscription
) -> None:
    service = CrashingService("flaky", crashes=2)
    supervisor.add(service)
    supervisor.start("flaky")

    await wait_until(lambda: status_of(supervisor, "flaky").state is ServiceState.RUNNING)

    status = status_of(supervisor, "flaky")
    assert service.runs == 3
    assert status.errors == 2
    assert status.restarts == 2
    assert status.last_error == "RuntimeError: boom 2"
    assert status.counters == {"connects": 1}
    assert status.kind == "feed"
    assert status.last_event_us == 1
    S = ServiceState
    assert transitions(states, "flaky") == [
        (S.STOPPED, S.STARTING),
        (S.STARTING, S.BACKOFF),
        (S.BACKOFF, S.STARTING),
        (S.STARTING, S.BACKOFF),
        (S.BACKOFF, S.STARTING),
        (S.STARTING, S.RUNNING),
    ]


class MisconfiguredService(Service):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.runs = 0

    async def run(self, context: ServiceContext) -> None:
        self.runs += 1
        raise SptraderError("nothing stored to replay for REPLAY:SIM:EURUSD")


async def test_a_user_error_fails_the_service_without_restarts(
    supervisor: Supervisor, states: Subscription
) -> None:
    service = MisconfiguredService("replay")
    supervisor.add(service)
    supervisor.start("replay")

    await wait_until(lambda: status_of(supervisor, "replay").state is ServiceState.FAILED)
    await asyncio.sleep(0.05)
    status = status_of(supervisor, "replay")
    assert service.runs == 1
    assert status.restarts == 0
    assert status.errors == 1
    assert status.last_error == "nothing stored to replay for REPLAY:SIM:EURUSD"
    # It can be started again by hand once the user has fixed the cause.
    supervisor.start("replay")
    await wait_until(lambda: service.runs == 2)


async def test_backoff_messages_name_the_error_and_delay(
    supervisor: Supervisor, states: Subscription
) -> None:
    supervisor.add(CrashingService("flaky", crashes=1))
    supervisor.start("flaky")
    await wait_until(lambda: status_of(supervisor, "flaky").state is ServiceState.RUNNING)
    backoff = [event for event in states.get_nowait() if event.state is ServiceState.BACKOFF]
    assert len(backoff) == 1
    assert "RuntimeError: boom 1" in backoff[0].message
    assert "restart in 0.0s" in backoff[0].message


async def test_restart_attempts_grow_then_reset_after_a_stable_run(
    bus: Bus, monkeypatch: pytest.MonkeyPatch
) -> None:
    attempts: list[int] = []

    def record(attempt: int) -> float:
        attempts.append(attempt)
        return 0.001

    quick = Supervisor(bus, FAST)
    monkeypatch.setattr(quick, "backoff_delay", record)
    quick.add(CrashingService("flaky", crashes=3))
    quick.start("flaky")
    await wait_until(lambda: status_of(quick, "flaky").state is ServiceState.RUNNING)
    await quick.stop_all()
    assert attempts == [1, 2, 3]

    attempts.clear()
    stable = Supervisor(
        bus,
        SupervisorConfig(backoff_initial_s=0.01, backoff_jitter=0.0, stable_after_s=0.01),
    )
    monkeypatch.setattr(stable, "backoff_delay", record)
    # Each run lasts longer than stable_after_s before crashing: every crash is a first.
    stable.add(CrashingService("slow", crashes=3, run_before_crash_s=0.02))
    stable.start("slow")
    await wait_until(lambda: status_of(stable, "slow").state is ServiceState.RUNNING)
    await stable.stop_all()
    assert attempts == [1, 1, 1]


async def test_waits_for_the_backoff_delay_before_restarting(bus: Bus) -> None:
    supervisor = Supervisor(
        bus, SupervisorConfig(backoff_initial_s=0.05, backoff_jitter=0.0, stable_after_s=30.0)
    )
    service = CrashingService("flaky", crashes=1)
    supervisor.add(service)
    started = time.monotonic()
    supervisor.start("flaky")
    await wait_until(lambda: status_of(supervisor, "flaky").state is ServiceState.BACKOFF)
    assert service.runs == 1
    await wait_until(lambda: status_of(supervisor, "flaky").state is ServiceState.RUNNING)
    assert time.monotonic() - started >= 0.05
    assert service.runs == 2
    await supervisor.stop_all()


def test_backoff_delay_grows_exponentially_and_is_capped() -> None:
    supervisor = Supervisor(
        Bus(),
        SupervisorConfig(
            backoff_initial_s=0.5, backoff_max_s=30.0, backoff_factor=2.0, backoff_jitter=0.0
        ),
    )
    delays = [supervisor.backoff_delay(attempt) for attempt in range(1, 10)]
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]


def test_backoff_jitter_stays_within_bounds() -> None:
    config = SupervisorConfig(
        backoff_initial_s=1.0, backoff_max_s=8.0, backoff_factor=3.0, backoff_jitter=0.2
    )
    supervisor = Supervisor(Bus(), config)
    random.seed(1234)
    for attempt, base in ((1, 1.0), (2, 3.0), (3, 8.0), (10, 8.0)):
        samples = [supervisor.backoff_delay(attempt) for _ in range(200)]
        assert all(base * 0.8 <= delay <= base * 1.2 for delay in samples)
        assert len(set(samples)) > 100, "jitter should spread the delays"
        # Both sides of the base are used.
        assert min(samples) < base < max(samples)


def test_backoff_delay_survives_many_attempts() -> None:
    # A service crashing at once for hours reaches thousands of attempts.
    supervisor = Supervisor(Bus(), SupervisorConfig(backoff_jitter=0.0))
    assert supervisor.backoff_delay(2000) == supervisor.config.backoff_max_s
    assert supervisor.backoff_delay(10**6) == supervisor.config.backoff_max_s


async def test_stop_and_start_one_service(supervisor: Supervisor, states: Subscription) -> None:
    first, second = ForeverService("first"), ForeverService("second")
    supervisor.add(first)
    supervisor.add(second)
    supervisor.start("first")
    supervisor.start("second")
    await wait_until(
        lambda: all(status.state is ServiceState.RUNNING for status in supervisor.status())
    )

    await supervisor.stop("first")
    assert status_of(supervisor, "first").state is ServiceState.STOPPED
    assert status_of(supervisor, "second").state is ServiceState.RUNNING
    assert first.cancelled == 1
    assert second.cancelled == 0

    supervisor.start("first")
    await wait_until(lambda: status_of(supervisor, "first").state is ServiceState.RUNNING)
    supervisor.start("first")  # already running: a no-op
    await asyncio.sleep(0.005)
    assert first.cancelled == 1

    await supervisor.restart("first")
    await wait_until(lambda: status_of(supervisor, "first").state is ServiceState.RUNNING)
    assert first.cancelled == 2

    S = ServiceState
    assert transitions(states, "first") == [
        (S.STOPPED, S.STARTING),
        (S.STARTING, S.RUNNING),
        (S.RUNNING, S.STOPPED),
        (S.STOPPED, S.STARTING),
        (S.STARTING, S.RUNNING),
        (S.RUNNING, S.STOPPED),
        (S.STOPPED, S.STARTING),
        (S.STARTING, S.RUNNING),
    ]


async def test_non_stoppable_service_refuses_stop(supervisor: Supervisor) -> None:
    core = ForeverService("store", stoppable=False)
    supervisor.add(core)
    supervisor.start("store")
    await wait_until(lambda: status_of(supervisor, "store").state is ServiceState.RUNNING)

    with pytest.raises(SptraderError, match="cannot be stopped"):
        await supervisor.stop("store")
    assert status_of(supervisor, "store").state is ServiceState.RUNNING
    assert status_of(supervisor, "store").stoppable is False
    assert core.cancelled == 0

    await supervisor.stop("store", force=True)
    assert status_of(supervisor, "store").state is ServiceState.STOPPED
    assert core.cancelled == 1


async def test_stop_all_stops_every_service(supervisor: Supervisor) -> None:
    services = [ForeverService("a"), ForeverService("b", stoppable=False)]
    for service in services:
        supervisor.add(service)
        supervisor.start(service.name)
    await wait_until(
        lambda: all(status.state is ServiceState.RUNNING for status in supervisor.status())
    )
    await supervisor.stop_all()
    assert [status.state for status in supervisor.status()] == [ServiceState.STOPPED] * 2
    assert [service.cancelled for service in services] == [1, 1]


async def test_finished_service_is_stopped_not_restarted(
    supervisor: Supervisor, states: Subscription
) -> None:
    supervisor.add(FinishingService("once"))
    supervisor.start("once")
    events: list[ServiceStateChanged] = []

    def finished() -> bool:
        events.extend(event for event in states.get_nowait() if event.service == "once")
        return any(event.message == "finished" for event in events)

    await wait_until(finished)
    assert [event.state for event in events] == [
        ServiceState.STARTING,
        ServiceState.RUNNING,
        ServiceState.STOPPED,
    ]
    assert events[-1].message == "finished"
    assert status_of(supervisor, "once").restarts == 0


async def test_unknown_and_duplicate_services_are_errors(supervisor: Supervisor) -> None:
    supervisor.add(ForeverService("feed"))
    with pytest.raises(SptraderError, match="already registered"):
        supervisor.add(ForeverService("feed"))
    with pytest.raises(SptraderError, match=r"unknown service 'nope' \(services: feed\)"):
        supervisor.start("nope")
    with pytest.raises(SptraderError, match="unknown service"):
        await supervisor.stop("nope")
    assert supervisor.names() == ["feed"]


class FakeTime:
    """The supervisor's clock and sleep: sleeping records the delay and moves the clock,
    without waiting."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.delays: list[float] = []

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.delays.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


class ScriptedService(Service):
    """Each run follows the next step of a script: ``refuse`` (fail at once), ``connect``
    (mark running, then drop without data) or ``deliver`` (publish, then drop); after the
    script it delivers and stays up."""

    def __init__(self, name: str, script: list[str]) -> None:
        super().__init__(name)
        self.script = list(script)
        self.runs = 0

    async def run(self, context: ServiceContext) -> None:
        self.runs += 1
        step = self.script.pop(0) if self.script else "stay"
        if step == "refuse":
            raise ConnectionRefusedError(111, "Connection refused")
        context.mark_running()
        if step == "connect":
            raise ConnectionResetError("server shut down")
        await context.publish([QuoteReceived("SIM:EURUSD", 1, 1.0, 1.1, 1.0, 1.0)], 1)
        if step == "deliver":
            raise ConnectionResetError("server shut down")
        await asyncio.Event().wait()


BACKOFF = SupervisorConfig(
    backoff_initial_s=1.0,
    backoff_max_s=30.0,
    backoff_factor=2.0,
    backoff_jitter=0.0,
    stable_after_s=30.0,
)


async def run_script(script: list[str]) -> list[float]:
    clock = FakeTime()
    supervisor = Supervisor(Bus(), BACKOFF, sleep=clock.sleep, monotonic=clock.monotonic)
    service = ScriptedService("binance", script)
    supervisor.add(service)
    supervisor.start("binance")
    try:
        await wait_until(
            lambda: (
                service.runs == len(script) + 1
                and supervisor.status()[0].state is ServiceState.RUNNING
            )
        )
    finally:
        await supervisor.stop_all()
    return clock.delays


async def test_backoff_resets_once_a_connection_delivers_data() -> None:
    # Connections that drop after delivering, seconds apart (far less than stable_after_s),
    # reconnect after the initial delay every time: the fault test saw 19-25 s waits.
    assert await run_script(["deliver"] * 6) == [1.0] * 6


async def test_delay_grows_while_nothing_is_delivered_and_resets_after_data() -> None:
    delays = await run_script(["refuse", "refuse", "refuse", "deliver", "refuse", "refuse"])
    # The run that delivered then dropped is a first failure again; the refusals after
    # it grow from there.
    assert delays == [1.0, 2.0, 4.0, 1.0, 2.0, 4.0]


async def test_connecting_without_data_does_not_reset_the_backoff() -> None:
    # mark_running alone (a handshake, a subscription) proves nothing: a server that
    # accepts then drops at once is not hammered at the initial delay.
    assert await run_script(["connect"] * 5) == [1.0, 2.0, 4.0, 8.0, 16.0]


async def test_a_crash_without_data_keeps_growing_its_delay() -> None:
    clock = FakeTime()
    supervisor = Supervisor(Bus(), BACKOFF, sleep=clock.sleep, monotonic=clock.monotonic)
    service = CrashingService("flaky", crashes=6)
    supervisor.add(service)
    supervisor.start("flaky")
    try:
        await wait_until(lambda: supervisor.status()[0].state is ServiceState.RUNNING)
    finally:
        await supervisor.stop_all()
    assert clock.delays == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0]
