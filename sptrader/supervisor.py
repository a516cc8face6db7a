"""Services and their supervisor.

Every feed (and later every scanner) is a Service: a coroutine with a state, counters
and restart-with-backoff. A service that raises is restarted after an exponentially
growing, jittered delay; a run that delivered data (or ran long enough without failing)
proves the service working again, and the next failure starts from the initial delay.

How a run ended decides how it is reported (the service's ``is_disconnect``): an
ordinary disconnect (a reset, a refusal, a time-out; for feeds also the server closing
the websocket and the watchdog) is one INFO line naming the reason and is counted in
the ``disconnects`` counter; anything else is a crash, a bug, logged as an ERROR with
its traceback and counted in ``errors``. The supervisor knows the standard library's
network errors only; a service adds its client library's (``sptrader.feeds.disconnects``
for websockets and httpx), so this module imports no feed and no client library.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import random
import socket
import ssl
import time
import traceback
from collections.abc import Awaitable, Callable

from sptrader.bus import Bus
from sptrader.clock import now_us
from sptrader.config import SupervisorConfig
from sptrader.errors import SptraderError
from sptrader.formatting import disconnect_note, one_line
from sptrader.models import ServiceState, ServiceStateChanged, ServiceStatus

log = logging.getLogger(__name__)

#: Failures in a row without data after which a disconnect is a WARNING, not INFO: the
#: source has been unreachable for a while (about 15 s with the default backoff).
WARN_AFTER_ATTEMPTS = 5
#: The same crash again logs its traceback only once this long after the last one.
TRACEBACK_AGAIN_AFTER_S = 3600.0

# OS errors that mean the network or the other end let the connection go.
_NETWORK_ERRNOS = frozenset(
    getattr(errno, name)
    for name in (
        "ECONNREFUSED",
        "ECONNRESET",
        "ECONNABORTED",
        "EPIPE",
        "ENETUNREACH",
        "ENETDOWN",
        "ENETRESET",
        "EHOSTUNREACH",
        "EHOSTDOWN",
        "ETIMEDOUT",
        "ENOTCONN",
        "ESHUTDOWN",
    )
    if hasattr(errno, name)
)


def is_disconnect(error: BaseException) -> bool:
    """Whether a service's run ended in an ordinary disconnect (reconnect and say so in
    one line) rather than a crash (a bug: log the traceback), in the standard library's
    terms: ``ConnectionError`` and its resets and refusals, time-outs, a stream cut off
    mid-read, and network ``OSError``s (unreachable, DNS, a TLS connection closed).
    Not a disconnect: a certificate that does not verify, a full disk, everything else.

    What a service's client library raises is the service's to add (``Service``): the
    feeds' websocket and httpx errors are in ``sptrader.feeds.disconnects``.
    """
    if isinstance(error, BaseExceptionGroup):
        return all(is_disconnect(inner) for inner in error.exceptions)
    if isinstance(
        error,
        (
            ConnectionError,
            TimeoutError,
            asyncio.IncompleteReadError,
            socket.gaierror,
            ssl.SSLEOFError,
            ssl.SSLZeroReturnError,
        ),
    ):
        return True
    if isinstance(error, OSError):
        # asyncio joins the failures of every address it tried (::1 and 127.0.0.1) into
        # one OSError without an errno.
        return error.errno in _NETWORK_ERRNOS or (
            error.errno is None and str(error).startswith("Multiple exceptions: ")
        )
    return False


def disconnect_reason(error: BaseException) -> str:
    """A disconnect in a few words, for the log line and the services pane:
    ``connection refused``, ``connection reset by peer``, ``timed out``."""
    if isinstance(error, BaseExceptionGroup) and error.exceptions:
        return disconnect_reason(error.exceptions[0])
    text = one_line(str(error), 200)
    if isinstance(error, ConnectionRefusedError):
        return "connection refused"
    if isinstance(error, OSError):
        if error.errno is None and text.startswith("Multiple exceptions: "):
            if f"[Errno {errno.ECONNREFUSED}]" in text:
                return "connection refused"
            return f"cannot connect: {text.removeprefix('Multiple exceptions: ')}"
        if error.strerror:
            # "[Errno 104] Connection reset by peer" -> "connection reset by peer"
            return error.strerror[:1].lower() + error.strerror[1:]
    if isinstance(error, TimeoutError) and not text:
        return "timed out"
    return text or type(error).__name__


class ServiceContext:
    """What a running service uses to publish and to report its health."""

    def __init__(self, name: str, bus: Bus) -> None:
        self.name = name
        self.bus = bus
        self.events = 0
        self.last_event_us: int | None = None
        self.counters: dict[str, int] = {}
        # Any message (heartbeats too) proves the connection alive; the stale check uses it.
        self.last_message_us: int | None = None
        # A problem the service lives with (unknown symbols), shown until it starts again.
        self.problem = ""
        self.running = False
        # Whether this run published anything: a run that delivered resets the backoff.
        self.delivered = False
        self._on_running: Callable[[], None] | None = None

    def mark_running(self) -> None:
        """Say the service is up (connected, subscribed); the first publish also does."""
        if not self.running:
            self.running = True
            if self._on_running is not None:
                self._on_running()

    async def publish(self, events: list[object], last_event_us: int | None = None) -> None:
        if not events:
            return
        if not self.running:
            self.mark_running()
        self.delivered = True
        self.events += len(events)
        self.last_event_us = last_event_us if last_event_us is not None else now_us()
        await self.bus.publish(events)

    def count(self, counter: str, amount: int = 1) -> None:
        self.counters[counter] = self.counters.get(counter, 0) + amount

    def touch(self) -> None:
        """A message arrived (even one carrying no data, like a heartbeat)."""
        self.last_message_us = now_us()

    def skipped(self, counter: str, what: str) -> None:
        """Count a message that was skipped (malformed, unexpected, out of order) and
        log it at a limited rate: the first ten, then every thousandth."""
        self.count(counter)
        seen = self.counters[counter]
        if seen <= 10 or seen % 1000 == 0:
            log.warning(
                "skipped %s (%d %s so far)", what, seen, counter, extra={"source": self.name}
            )

    @property
    def last_seen_us(self) -> int | None:
        """The newest of the last event and the last message."""
        times = [t for t in (self.last_event_us, self.last_message_us) if t is not None]
        return max(times) if times else None


class Service:
    """Subclasses implement ``run``; returning means finished, raising means crashed."""

    kind = "service"
    stoppable = True
    #: A running service silent this long is shown ``stale`` (None: never).
    stale_after_s: float | None = None
    #: Which failures of a run are ordinary disconnects, and their reason in a few words:
    #: the standard library's network errors. A service whose client library raises its
    #: own replaces both (FeedService: sptrader.feeds.disconnects).
    is_disconnect = staticmethod(is_disconnect)
    disconnect_reason = staticmethod(disconnect_reason)

    def __init__(self, name: str) -> None:
        self.name = name

    async def run(self, context: ServiceContext) -> None:
        raise NotImplementedError


#: States in which a service does nothing (no task, no events).
NOT_RUNNING = (ServiceState.STOPPED, ServiceState.FAILED)


class _Supervised:
    def __init__(self, service: Service, context: ServiceContext) -> None:
        self.service = service
        self.context = context
        self.state = ServiceState.STOPPED
        self.task: asyncio.Task[None] | None = None
        self.errors = 0
        self.restarts = 0
        self.last_error = ""
        self.rate = 0.0
        self._rate_events = 0
        self._rate_time = time.monotonic()
        self.running_since_us = 0
        # Which crash last logged its traceback, and when (the same one is not repeated).
        self.traceback_key: tuple[object, ...] | None = None
        self.traceback_at = 0.0


class Supervisor:
    def __init__(
        self,
        bus: Bus,
        config: SupervisorConfig,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.bus = bus
        self.config = config
        # How a restart waits out its backoff, and the clock of stable runs (tests fake them).
        self._sleep = sleep
        self._monotonic = monotonic
        self._services: dict[str, _Supervised] = {}
        self._stats_task: asyncio.Task[None] | None = None

    # --- registry ---------------------------------------------------------------------

    def add(self, service: Service) -> ServiceContext:
        if service.name in self._services:
            raise SptraderError(f"service {service.name!r} is already registered")
        context = ServiceContext(service.name, self.bus)
        self._services[service.name] = _Supervised(service, context)
        return context

    def names(self) -> list[str]:
        return list(self._services)

    def service(self, name: str) -> Service:
        return self._get(name).service

    def _get(self, name: str) -> _Supervised:
        try:
            return self._services[name]
        except KeyError:
            raise SptraderError(
                f"unknown service {name!r} (services: {', '.join(self._services) or 'none'})"
            ) from None

    def status(self) -> list[ServiceStatus]:
        return [
            ServiceStatus(
                name=name,
                kind=entry.service.kind,
                state=entry.state,
                # A service that is not running has no rate (not its last one).
                events_per_s=entry.rate if entry.state not in NOT_RUNNING else 0.0,
                last_event_us=entry.context.last_event_us,
                errors=entry.errors,
                restarts=entry.restarts,
                last_error=entry.context.problem or entry.last_error,
                stoppable=entry.service.stoppable,
                counters=dict(entry.context.counters),
            )
            for name, entry in self._services.items()
        ]

    # --- control ----------------------------------------------------------------------

    def start(self, name: str) -> None:
        entry = self._get(name)
        if entry.task is not None and not entry.task.done():
            return
        entry.task = asyncio.get_running_loop().create_task(
            self._keep_running(entry), name=f"service:{name}"
        )
        if self._stats_task is None:
            self._stats_task = asyncio.get_running_loop().create_task(self._sample_rates())

    async def stop(self, name: str, *, force: bool = False) -> None:
        entry = self._get(name)
        if not entry.service.stoppable and not force:
            raise SptraderError(f"service {name!r} is part of the engine and cannot be stopped")
        task, entry.task = entry.task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if entry.state != ServiceState.STOPPED:
            self._set_state(entry, ServiceState.STOPPED, "stopped")

    async def restart(self, name: str) -> None:
        await self.stop(name)
        self.start(name)

    async def stop_all(self) -> None:
        for name in reversed(list(self._services)):
            await self.stop(name, force=True)
        if self._stats_task is not None:
            self._stats_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._stats_task
            self._stats_task = None

    # --- internals --------------------------------------------------------------------

    def backoff_delay(self, attempt: int) -> float:
        """Seconds to wait before restart number ``attempt`` (1-based), with jitter."""
        config = self.config
        # The exponent is capped: a service crashing for hours must not overflow a float.
        exponent = min(attempt - 1, 64)
        base = min(config.backoff_max_s, config.backoff_initial_s * config.backoff_factor**exponent)
        jitter = base * config.backoff_jitter
        return max(0.0, base + random.uniform(-jitter, jitter))

    async def _keep_running(self, entry: _Supervised) -> None:
        attempt = 0
        context = entry.context
        while True:
            # After a backoff the line that announced the restart said it all.
            level = "DEBUG" if entry.state is ServiceState.BACKOFF else "INFO"
            self._set_state(entry, ServiceState.STARTING, "", level=level)
            started = self._monotonic()
            context.running = False
            context.delivered = False
            context._on_running = lambda: self._mark_running(entry)
            try:
                await entry.service.run(context)
            except asyncio.CancelledError:
                raise
            except SptraderError as error:
                # A user's problem (nothing to replay, a bad setting): restarting will
                # not fix it, so the service fails and says why.
                entry.errors += 1
                entry.last_error = str(error)
                self._set_state(entry, ServiceState.FAILED, str(error), level="ERROR")
                return
            except Exception as error:  # a crashed service must never take the engine down
                # A run that delivered data (or stayed up a while) was a working
                # connection: this failure is a first one again. A source that never
                # delivers is retried ever more slowly.
                if context.delivered or self._monotonic() - started >= self.config.stable_after_s:
                    attempt = 0
                attempt += 1
                delay = self.backoff_delay(attempt)
                if entry.service.is_disconnect(error):
                    self._disconnected(entry, error, attempt, delay)
                else:
                    self._crashed(entry, error, delay)
                await self._sleep(delay)
                entry.restarts += 1
                continue
            self._set_state(entry, ServiceState.STOPPED, "finished")
            return

    def _disconnected(
        self, entry: _Supervised, error: BaseException, attempt: int, delay: float
    ) -> None:
        """An ordinary disconnect: one line with the reason, counted apart from errors."""
        entry.context.count("disconnects")
        entry.last_error = disconnect_note(entry.service.disconnect_reason(error))
        message = f"{entry.last_error}; reconnecting in {delay:.1f}s"
        level = "INFO"
        if attempt >= WARN_AFTER_ATTEMPTS:
            message += f" ({attempt} attempts without data)"
            level = "WARNING"
        self._set_state(entry, ServiceState.BACKOFF, message, level=level, plain=True)

    def _crashed(self, entry: _Supervised, error: BaseException, delay: float) -> None:
        """A bug: an ERROR with the traceback (once for the same crash again and again;
        the headline stays one line, the traceback carries the full text)."""
        entry.errors += 1
        entry.last_error = one_line(f"{type(error).__name__}: {error}", 500)
        message = f"crashed ({one_line(entry.last_error)}); restart in {delay:.1f}s"
        # The same crash: the same exception type from the same code path.
        path = tuple(
            (frame.filename, frame.lineno) for frame in traceback.extract_tb(error.__traceback__)
        )
        key = (type(error), path)
        now = self._monotonic()
        repeated = key == entry.traceback_key and now - entry.traceback_at < TRACEBACK_AGAIN_AFTER_S
        if repeated:
            message += " (same traceback as before)"
        else:
            entry.traceback_key, entry.traceback_at = key, now
        self._set_state(
            entry,
            ServiceState.BACKOFF,
            message,
            level="ERROR",
            exc_info=None if repeated else error,
            plain=True,
        )

    def _mark_running(self, entry: _Supervised) -> None:
        entry.running_since_us = now_us()
        self._set_state(entry, ServiceState.RUNNING, "")

    def _check_stale(self, entry: _Supervised, now: int) -> None:
        """RUNNING <-> STALE as the service's last message ages past its limit."""
        limit = entry.service.stale_after_s
        if limit is None or entry.state not in (ServiceState.RUNNING, ServiceState.STALE):
            return
        seen = max(entry.context.last_seen_us or 0, entry.running_since_us)
        age_s = (now - seen) / 1e6
        if entry.state == ServiceState.RUNNING and age_s > limit:
            self._set_state(entry, ServiceState.STALE, f"no data for {age_s:.0f}s", level="WARNING")
        elif entry.state == ServiceState.STALE and age_s <= limit:
            self._set_state(entry, ServiceState.RUNNING, "data again")

    def _set_state(
        self,
        entry: _Supervised,
        state: ServiceState,
        message: str,
        level: str = "INFO",
        exc_info: BaseException | None = None,
        plain: bool = False,
    ) -> None:
        """Change a service's state, tell the bus, and log one line. The record carries
        the service's name as ``source``: the log pane and the log file name it (see
        sptrader.logs). ``plain``: the line is ``message`` alone, without the arrow."""
        previous = entry.state
        if previous == state and not message:
            return
        entry.state = state
        # State changes are rare: never wait for a full queue here.
        self.bus.publish_nowait(
            [ServiceStateChanged(entry.service.name, now_us(), state, previous, message)]
        )
        if plain:
            text = message
        else:
            text = f"{previous.value} → {state.value}" + (f" ({message})" if message else "")
        # The log record reaches the log pane and the store through BusLogHandler.
        log.log(
            logging.getLevelName(level),
            "%s",
            text,
            extra={"source": entry.service.name},
            exc_info=exc_info,
        )

    async def _sample_rates(self) -> None:
        """Once a second: events/s of each service from its event counter, and which
        services went stale."""
        while True:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            wall = now_us()
            for entry in self._services.values():
                self._check_stale(entry, wall)
                elapsed = now - entry._rate_time
                if elapsed > 0:
                    entry.rate = (entry.context.events - entry._rate_events) / elapsed
                entry._rate_events = entry.context.events
                entry._rate_time = now
