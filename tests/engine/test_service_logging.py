"""How the supervisor reports what happens to its services: ordinary disconnects are one
INFO line and a ``disconnects`` count, real crashes are an ERROR with the traceback,
every state line names its service (pane and log file), and multi-line errors are one
line wherever a table or pane shows them."""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import polars as pl
import pytest
from conftest import wait_until
from fakes import free_port
from textual.app import App, ComposeResult
from textual.widgets import DataTable
from websockets.exceptions import (
    ConnectionClosedError,
    ConnectionClosedOK,
    InvalidStatus,
    InvalidURI,
)
from websockets.frames import Close
from websockets.http11 import Response

from sptrader.bus import Bus
from sptrader.commands.daemon_control import _print_services
from sptrader.config import SupervisorConfig
from sptrader.feeds.disconnects import StreamSilent, disconnect_reason, is_disconnect
from sptrader.formatting import one_line, service_notes
from sptrader.logs import BusLogHandler, setup_logging
from sptrader.models import (
    EngineLogged,
    QuoteReceived,
    ServiceState,
    ServiceStateChanged,
    ServiceStatus,
)
from sptrader.screens.services import ServicesPane
from sptrader.supervisor import Service, ServiceContext, Supervisor

CONFIG = SupervisorConfig(
    backoff_initial_s=1.2, backoff_max_s=30.0, backoff_factor=2.0, backoff_jitter=0.0
)


class FeedLike(Service):
    """A stand-in for a feed: its failures read as a FeedService's do."""

    kind = "feed"
    is_disconnect = staticmethod(is_disconnect)
    disconnect_reason = staticmethod(disconnect_reason)


class FailsThenRuns(FeedLike):
    """Raises each of ``errors`` in turn (one per run), then publishes and waits."""

    def __init__(self, name: str, errors: list[BaseException]) -> None:
        super().__init__(name)
        self.errors = list(errors)
        self.runs = 0

    async def run(self, context: ServiceContext) -> None:
        self.runs += 1
        if self.errors:
            raise self.errors.pop(0)
        await context.publish([QuoteReceived("SIM:EURUSD", 1, 1.0, 1.1, 1.0, 1.0)], 1)
        await asyncio.Event().wait()


async def no_wait(seconds: float) -> None:
    await asyncio.sleep(0)


@pytest.fixture
async def supervisor() -> AsyncIterator[Supervisor]:
    supervisor = Supervisor(Bus(), CONFIG, sleep=no_wait)
    yield supervisor
    await supervisor.stop_all()


def status_of(supervisor: Supervisor, name: str) -> ServiceStatus:
    return next(status for status in supervisor.status() if status.name == name)


async def run_until_running(supervisor: Supervisor, service: Service) -> ServiceStatus:
    supervisor.add(service)
    supervisor.start(service.name)
    await wait_until(lambda: status_of(supervisor, service.name).state is ServiceState.RUNNING)
    return status_of(supervisor, service.name)


def supervisor_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.name == "sptrader.supervisor"]


# --- 1. ordinary disconnects are not crashes -------------------------------------------

# (the error a feed's run ends with, the reason the log line gives)
DISCONNECTS = [
    (ConnectionClosedOK(Close(1000, ""), None), "server closed the connection: 1000 OK"),
    (
        ConnectionClosedOK(Close(1001, ""), None),
        "server closed the connection: 1001 going away",
    ),
    (
        ConnectionClosedOK(Close(1001, "maintenance"), None),
        "server closed the connection: 1001 going away, maintenance",
    ),
    (ConnectionClosedError(None, None), "connection lost without a close frame"),
    (
        ConnectionClosedError(Close(1011, "boom"), None),
        "server closed the connection: 1011 internal error, boom",
    ),
    (
        ConnectionResetError("Binance announced a server shutdown"),
        "Binance announced a server shutdown",
    ),
    (
        ConnectionResetError("reconnecting before the 24-hour connection limit"),
        "reconnecting before the 24-hour connection limit",
    ),
    (
        ConnectionResetError(errno.ECONNRESET, "Connection reset by peer"),
        "connection reset by peer",
    ),
    (
        ConnectionRefusedError(errno.ECONNREFUSED, "Connect call failed ('127.0.0.1', 9)"),
        "connection refused",
    ),
    (
        OSError(
            "Multiple exceptions: [Errno 111] Connect call failed ('::1', 9, 0, 0), "
            "[Errno 111] Connect call failed ('127.0.0.1', 9)"
        ),
        "connection refused",
    ),
    (StreamSilent("no message for 30s"), "no message for 30s"),
    (TimeoutError("timed out during opening handshake"), "timed out during opening handshake"),
    (TimeoutError(), "timed out"),
    (OSError(errno.ENETUNREACH, "Network is unreachable"), "network is unreachable"),
    (socket.gaierror(-2, "Name or service not known"), "name or service not known"),
    (
        httpx.ConnectError("[Errno 111] Connection refused"),
        "ConnectError: [Errno 111] Connection refused",
    ),
    (httpx.ReadTimeout(""), "ReadTimeout"),
    (
        httpx.RemoteProtocolError("peer closed connection without sending complete message body"),
        "RemoteProtocolError: peer closed connection without sending complete message body",
    ),
    (ConnectionError("OANDA price stream: HTTP 503"), "OANDA price stream: HTTP 503"),
    (InvalidStatus(Response(503, "Service Unavailable", None)), "server answered HTTP 503"),
    (ExceptionGroup("two", [TimeoutError(), ConnectionResetError("gone")]), "timed out"),
]


@pytest.mark.parametrize(
    ("error", "reason"), DISCONNECTS, ids=[type(error).__name__ for error, _ in DISCONNECTS]
)
async def test_a_disconnect_is_one_info_line_naming_the_service_and_reason(
    supervisor: Supervisor, caplog: pytest.LogCaptureFixture, error: BaseException, reason: str
) -> None:
    caplog.set_level(logging.DEBUG, logger="sptrader")
    status = await run_until_running(supervisor, FailsThenRuns("binance", [error]))

    assert is_disconnect(error)
    assert disconnect_reason(error) == reason
    records = supervisor_records(caplog)
    assert [r for r in records if r.levelno >= logging.WARNING] == []
    assert [r for r in records if r.exc_info or r.exc_text] == []
    [line] = [r for r in records if "disconnected" in r.getMessage()]
    assert line.levelno == logging.INFO
    assert line.source == "binance"  # type: ignore[attr-defined]
    assert line.getMessage() == f"disconnected ({reason}); reconnecting in 1.2s"
    assert "\n" not in line.getMessage()
    # Counted as a disconnect, not as an error.
    assert status.errors == 0
    assert status.counters == {"disconnects": 1}
    assert status.restarts == 1
    assert status.last_error == f"disconnected ({reason})"


async def test_every_kind_of_disconnect_counts_and_none_is_an_error(
    supervisor: Supervisor, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="sptrader")
    errors = [error for error, _ in DISCONNECTS]
    status = await run_until_running(supervisor, FailsThenRuns("binance", errors))
    assert status.errors == 0
    assert status.counters["disconnects"] == len(errors)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_a_disconnect_shows_as_reconnecting_with_the_reason(
    caplog: pytest.LogCaptureFixture,
) -> None:
    release = asyncio.Event()

    async def held_sleep(seconds: float) -> None:
        await release.wait()

    supervisor = Supervisor(Bus(), CONFIG, sleep=held_sleep)
    supervisor.add(FailsThenRuns("binance", [ConnectionClosedOK(Close(1001, ""), None)]))
    supervisor.start("binance")
    try:
        await wait_until(lambda: status_of(supervisor, "binance").state is ServiceState.BACKOFF)
        status = status_of(supervisor, "binance")
        assert status.errors == 0
        notes = service_notes(status.counters, status.last_error)
        assert notes == (
            "disconnected (server closed the connection: 1001 going away) · disconnects 1"
        )
        release.set()
        await wait_until(lambda: status_of(supervisor, "binance").state is ServiceState.RUNNING)
    finally:
        await supervisor.stop_all()


async def test_a_source_unreachable_for_many_attempts_is_a_warning(
    supervisor: Supervisor, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="sptrader")
    refusals = [ConnectionRefusedError(errno.ECONNREFUSED, "refused") for _ in range(6)]
    status = await run_until_running(supervisor, FailsThenRuns("oanda", refusals))
    lines = [r for r in supervisor_records(caplog) if "disconnected" in r.getMessage()]
    assert [r.levelname for r in lines] == ["INFO"] * 4 + ["WARNING"] * 2
    assert lines[4].getMessage() == (
        "disconnected (connection refused); reconnecting in 19.2s (5 attempts without data)"
    )
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert status.errors == 0 and status.counters == {"disconnects": 6}


def test_bugs_are_not_disconnects() -> None:
    for error in [
        RuntimeError("boom"),
        KeyError("price"),
        ValueError("could not convert string to float"),
        TypeError("unsupported operand"),
        AttributeError("'NoneType' object has no attribute 'send'"),
        ZeroDivisionError(),
        FileNotFoundError(errno.ENOENT, "No such file or directory"),
        PermissionError(errno.EACCES, "Permission denied"),
        OSError(errno.ENOSPC, "No space left on device"),
        OSError("something else"),
        ssl.SSLCertVerificationError("certificate verify failed"),
        httpx.UnsupportedProtocol("Request URL is missing an 'http://' or 'https://' protocol."),
        httpx.LocalProtocolError("bad header"),
        InvalidURI("htp://x", "scheme isn't ws or wss"),
        InvalidStatus(Response(404, "Not Found", None)),
        pl.exceptions.ComputeError("bad"),
        ExceptionGroup("mixed", [TimeoutError(), RuntimeError("bug")]),
    ]:
        assert not is_disconnect(error), error


def test_the_supervisor_knows_the_standard_library_and_feeds_add_their_libraries() -> None:
    from sptrader import supervisor
    from sptrader.feeds.base import FeedService

    close = ConnectionClosedOK(Close(1001, ""), None)
    assert supervisor.is_disconnect(ConnectionResetError("gone"))
    assert Service.is_disconnect(TimeoutError())
    # The supervisor names no client library: a websocket close is a feed's to classify.
    assert not Service.is_disconnect(close)
    assert FeedService.is_disconnect(close)
    assert FeedService.disconnect_reason(close) == "server closed the connection: 1001 going away"


# --- 1b. real crashes stay errors, with the traceback once -----------------------------


async def test_a_crash_is_an_error_with_its_traceback(
    supervisor: Supervisor, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="sptrader")
    status = await run_until_running(supervisor, FailsThenRuns("sim", [RuntimeError("boom")]))

    [error] = [r for r in supervisor_records(caplog) if r.levelno >= logging.WARNING]
    assert error.levelno == logging.ERROR
    assert error.source == "sim"  # type: ignore[attr-defined]
    assert error.getMessage() == "crashed (RuntimeError: boom); restart in 1.2s"
    assert error.exc_info is not None and error.exc_info[1] is not None
    assert "Traceback" in caplog.text and "RuntimeError: boom" in caplog.text
    assert status.errors == 1
    assert "disconnects" not in status.counters
    assert status.last_error == "RuntimeError: boom"


async def test_the_same_crash_again_logs_its_traceback_once(
    supervisor: Supervisor, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="sptrader")

    class SameBug(Service):
        def __init__(self) -> None:
            super().__init__("scanner")
            self.runs = 0

        async def run(self, context: ServiceContext) -> None:
            self.runs += 1
            if self.runs <= 3:
                raise KeyError(f"column {self.runs}")
            if self.runs == 4:
                raise ValueError("another bug")
            context.mark_running()
            await asyncio.Event().wait()

    status = await run_until_running(supervisor, SameBug())
    errors = [r for r in supervisor_records(caplog) if r.levelno >= logging.ERROR]
    assert len(errors) == 4
    assert [r.exc_info is not None for r in errors] == [True, False, False, True]
    assert "same traceback as before" in errors[1].getMessage()
    assert caplog.text.count("Traceback") == 2
    assert status.errors == 4


async def test_the_same_crash_an_hour_later_logs_its_traceback_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="sptrader")
    now = [0.0]

    async def sleep(seconds: float) -> None:
        now[0] += 1800.0  # each wait stands for half an hour
        await asyncio.sleep(0)

    def crash() -> BaseException:
        try:
            raise RuntimeError("same bug")
        except RuntimeError as error:
            return error

    supervisor = Supervisor(Bus(), CONFIG, sleep=sleep, monotonic=lambda: now[0])
    try:
        await run_until_running(supervisor, FailsThenRuns("sim", [crash() for _ in range(4)]))
    finally:
        await supervisor.stop_all()
    errors = [r for r in supervisor_records(caplog) if r.levelno >= logging.ERROR]
    assert [r.exc_info is not None for r in errors] == [True, False, True, False]


async def test_a_multi_line_error_logs_a_one_line_headline(
    supervisor: Supervisor, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="sptrader")
    states = supervisor.bus.subscribe("states", maxsize=100, types=ServiceStateChanged)
    error = polars_error()
    assert "\n" in str(error)
    await run_until_running(supervisor, FailsThenRuns("scanner", [error]))

    [record] = [r for r in supervisor_records(caplog) if r.levelno >= logging.ERROR]
    assert "\n" not in record.getMessage()
    assert record.getMessage().startswith(f"crashed ({type(error).__name__}: ")
    # The full text stays in the log, in the traceback.
    assert str(error) in caplog.text
    assert all("\n" not in event.message for event in states.get_nowait())


# --- 2. every state line names its service, in the pane and in the log file -------------


async def test_state_lines_name_the_service_in_the_log_file_and_pane(tmp_path: Path) -> None:
    log_path = tmp_path / "sptrader.log"
    setup_logging(log_path, "INFO", max_bytes=1_000_000, backups=1)
    bus = Bus()
    logged = bus.subscribe("log", maxsize=100, types=EngineLogged)
    handler = BusLogHandler(bus, asyncio.get_running_loop())
    logging.getLogger("sptrader").addHandler(handler)
    supervisor = Supervisor(bus, CONFIG, sleep=no_wait)
    try:
        await run_until_running(
            supervisor,
            FailsThenRuns("kraken", [ConnectionClosedOK(Close(1001, ""), None)]),
        )
        await supervisor.stop("kraken")
    finally:
        await supervisor.stop_all()
        logging.getLogger("sptrader").removeHandler(handler)
    for owned in logging.getLogger("sptrader").handlers:
        owned.flush()

    lines = [line for line in log_path.read_text().splitlines() if line]
    assert len(lines) >= 4
    assert all(" kraken: " in line for line in lines), lines
    assert any(
        line.endswith(
            "INFO kraken: disconnected (server closed the connection: 1001 going away); "
            "reconnecting in 1.2s"
        )
        for line in lines
    ), lines
    assert any(line.endswith("INFO kraken: starting → running") for line in lines), lines
    assert any(line.endswith("INFO kraken: running → stopped (stopped)") for line in lines)
    events = logged.get_nowait()
    assert events and all(event.source == "kraken" for event in events)


async def test_lines_without_a_source_keep_the_logger_name(tmp_path: Path) -> None:
    log_path = tmp_path / "sptrader.log"
    setup_logging(log_path, "INFO", max_bytes=1_000_000, backups=1)
    logging.getLogger("sptrader.engine").info("engine started")
    for owned in logging.getLogger("sptrader").handlers:
        owned.flush()
    assert log_path.read_text().rstrip().endswith("INFO sptrader.engine: engine started")


# --- 3. one line per error in tables and panes -----------------------------------------


def polars_error() -> Exception:
    try:
        pl.DataFrame({"a": [1]}).lazy().select(pl.col("b")).collect()
    except pl.exceptions.PolarsError as error:
        return error
    raise AssertionError("polars did not fail")


def test_one_line_keeps_the_first_line_and_truncates() -> None:
    assert one_line("ColumnNotFoundError: b\n\nResolved plan until failure:\n\t---> here") == (
        "ColumnNotFoundError: b …"
    )
    assert one_line("\n  \nKeyError: x\nmore") == "KeyError: x …"
    assert one_line("short") == "short"
    long = "x" * 300
    assert one_line(long, 100) == "x" * 99 + "…"
    assert len(one_line(long + "\nmore", 100)) == 100


def test_status_prints_one_line_per_service(capsys: pytest.CaptureFixture[str]) -> None:
    error = polars_error()
    services = [
        {
            "name": "scan:mine",
            "state": "backoff",
            "events_per_s": 0.0,
            "last_event_us": None,
            "errors": 3,
            "restarts": 3,
            "last_error": f"{type(error).__name__}: {error}",
            "counters": {},
        },
        {
            "name": "binance",
            "state": "running",
            "events_per_s": 12.0,
            "last_event_us": None,
            "errors": 0,
            "restarts": 2,
            "last_error": "disconnected (server closed the connection: 1001 going away)",
            "counters": {"disconnects": 2},
        },
    ]
    _print_services(services)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3
    assert lines[1].startswith("scan:mine ") and type(error).__name__ in lines[1]
    assert lines[2].startswith("binance ") and lines[2].endswith("· disconnects 2")


class PaneApp(App[None]):
    def compose(self) -> ComposeResult:
        yield ServicesPane()


async def test_services_pane_notes_are_one_line_and_a_disconnect_is_not_red() -> None:
    error = polars_error()
    statuses = [
        ServiceStatus(
            "scan:mine", "scanner", ServiceState.BACKOFF, 0.0, None, 2, 2,
            f"{type(error).__name__}: {error}",
        ),
        ServiceStatus(
            "binance", "feed", ServiceState.BACKOFF, 0.0, None, 0, 1,
            "disconnected (server closed the connection: 1001 going away)",
            counters={"disconnects": 1},
        ),
    ]  # fmt: skip
    app = PaneApp()
    async with app.run_test() as pilot:
        pane = app.query_one(ServicesPane)
        pane.show(statuses)
        await pilot.pause()
        table = app.query_one(DataTable)
        crash = table.get_cell("scan:mine", "notes")
        assert "\n" not in crash.plain
        assert crash.plain.startswith(f"{type(error).__name__}: ")
        assert "red" in str(crash.style)
        disconnect = table.get_cell("binance", "notes")
        assert disconnect.plain.startswith("disconnected (")
        assert "red" not in str(disconnect.style)


# --- the real exceptions a websocket client sees ---------------------------------------


class WebsocketClient(FeedLike):
    """Connects, publishes what it receives, and ends with whatever the connection
    raises: the exceptions a real feed's run ends with."""

    def __init__(self, url: str) -> None:
        super().__init__("ws")
        self.url = url
        self.failures: list[BaseException] = []

    async def run(self, context: ServiceContext) -> None:
        from websockets.asyncio.client import connect

        try:
            async with connect(self.url, open_timeout=2) as websocket:
                context.mark_running()
                while True:
                    await websocket.recv()
                    await context.publish([QuoteReceived("SIM:EURUSD", 1, 1.0, 1.1, 1.0, 1.0)])
        except Exception as error:
            self.failures.append(error)
            raise


async def test_real_server_closes_and_drops_are_disconnects(
    supervisor: Supervisor, caplog: pytest.LogCaptureFixture
) -> None:
    from websockets.asyncio.server import ServerConnection, serve

    caplog.set_level(logging.INFO, logger="sptrader")
    connections = 0

    async def handler(websocket: ServerConnection) -> None:
        nonlocal connections
        connections += 1
        await websocket.send("{}")
        if connections == 1:
            await websocket.close(1001)  # going away, as a server restarting says
        elif connections == 2:
            websocket.transport.abort()  # the TCP connection is cut
        else:
            await websocket.wait_closed()

    port = free_port()
    async with serve(handler, "127.0.0.1", port):
        client = WebsocketClient(f"ws://127.0.0.1:{port}")
        supervisor.add(client)
        supervisor.start("ws")
        await wait_until(lambda: connections == 3)
        await wait_until(lambda: status_of(supervisor, "ws").state is ServiceState.RUNNING)
        status = status_of(supervisor, "ws")
        await supervisor.stop_all()

    assert [type(error) for error in client.failures] == [
        ConnectionClosedOK,
        ConnectionClosedError,
    ]
    assert status.errors == 0 and status.counters == {"disconnects": 2}
    lines = [r.getMessage() for r in supervisor_records(caplog) if "disconnected" in r.getMessage()]
    assert lines == [
        "disconnected (server closed the connection: 1001 going away); reconnecting in 1.2s",
        # Each run delivered a message before it dropped: the backoff starts over.
        "disconnected (connection lost without a close frame); reconnecting in 1.2s",
    ]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info]


async def test_a_refused_connection_is_a_disconnect(
    supervisor: Supervisor, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="sptrader")
    client = WebsocketClient(f"ws://localhost:{free_port()}")
    supervisor.add(client)
    supervisor.start("ws")
    await wait_until(lambda: len(client.failures) >= 2)
    await supervisor.stop_all()
    assert all(is_disconnect(error) for error in client.failures), client.failures
    assert [disconnect_reason(error) for error in client.failures[:2]] == ["connection refused"] * 2
    assert status_of(supervisor, "ws").errors == 0
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
