"""Local fake servers for feed tests: a threaded HTTP server with pluggable routes
(plain, JSON or chunked-streaming answers) and a deterministic market of 1m bars that
every fake history endpoint serves, so tests can check stored bars exactly."""

from __future__ import annotations

import json
import os
import random
import socket
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from sptrader.models import US_PER_MINUTE

# Ports for the tests' servers come from a block of this process's own, below the
# kernel's ephemeral range (32768 and up): a port bound to 0 and let go could be handed
# to another test worker's bind(0), or to a client socket, before its server took it.
_PORT_BLOCK = 1000
_FIRST_PORT = 20000


def _port_block() -> int:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    return _FIRST_PORT + (int(worker) if worker.isdigit() else 0) % 12 * _PORT_BLOCK


# Where this process starts in its block: at random, so two test runs at once rarely meet.
_next_port = [random.randrange(_PORT_BLOCK)]


def free_port() -> int:
    """A loopback port nothing is bound to now, and that no other worker hands out."""
    base = _port_block()
    for _ in range(_PORT_BLOCK):
        port = base + _next_port[0] % _PORT_BLOCK
        _next_port[0] += 1
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue  # in use (or a closed server's connections still linger)
        return port
    raise RuntimeError(f"no free port in {base}-{base + _PORT_BLOCK - 1}")


# --- a deterministic market -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MinuteBar:
    ts_us: int
    open: float
    high: float
    low: float
    close: float
    volume: float
    trades: int


def minute_bar(symbol: str, ts_us: int, base: float = 100.0) -> MinuteBar:
    """The fake market's bar for the minute opening at ``ts_us`` (any symbol, any time):
    prices on a 0.01 grid, so every wire format represents them exactly."""
    minute = ts_us // US_PER_MINUTE
    seed = (minute * 7919 + sum(map(ord, symbol)) * 104729) % 1000
    open_ = round(base + seed / 100, 2)
    close = round(open_ + ((seed % 7) - 3) / 100, 2)
    high = round(max(open_, close) + 0.05, 2)
    low = round(min(open_, close) - 0.05, 2)
    return MinuteBar(
        minute * US_PER_MINUTE, open_, high, low, close, float(1 + seed % 13), 1 + seed % 5
    )


def minute_bars(symbol: str, start_us: int, end_us: int, base: float = 100.0) -> list[MinuteBar]:
    """Bars of every minute opening in [start, end)."""
    first = -(-start_us // US_PER_MINUTE) * US_PER_MINUTE
    return [minute_bar(symbol, ts, base) for ts in range(first, end_us, US_PER_MINUTE)]


# --- HTTP -----------------------------------------------------------------------------


@dataclass(slots=True)
class FakeRequest:
    method: str
    path: str
    query: dict[str, str]  # first value of each parameter
    headers: dict[str, str]
    body: bytes = b""


@dataclass(slots=True)
class FakeResponse:
    status: int = 200
    body: bytes | str | Any = b""  # bytes, text, or a JSON-able object
    headers: dict[str, str] = field(default_factory=dict)
    #: When set, sent chunked, one chunk per item, flushed (a streaming API).
    stream: Iterable[bytes] | None = None


Route = Callable[[FakeRequest], FakeResponse | None]


class FakeHttpServer:
    """``with FakeHttpServer(route) as server: server.url``. The route returns a
    FakeResponse, or None for a 404. Every request is recorded in ``requests``."""

    def __init__(self, route: Route) -> None:
        self.route = route
        self.requests: list[FakeRequest] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body go out as separate writes: with Nagle's algorithm on, the
            # client's delayed ACK holds the body back ~40 ms per request.
            disable_nagle_algorithm = True

            def do_GET(self) -> None:
                self._handle("GET", b"")

            def do_POST(self) -> None:
                self._handle("POST", self._body())

            def do_PUT(self) -> None:
                self._handle("PUT", self._body())

            def do_PATCH(self) -> None:
                self._handle("PATCH", self._body())

            def do_DELETE(self) -> None:
                self._handle("DELETE", self._body())

            def _body(self) -> bytes:
                return self.rfile.read(int(self.headers.get("Content-Length", 0)))

            def _handle(self, method: str, body: bytes) -> None:
                parts = urlsplit(self.path)
                request = FakeRequest(
                    method,
                    parts.path,
                    {key: values[0] for key, values in parse_qs(parts.query).items()},
                    {key.lower(): value for key, value in self.headers.items()},
                    body,
                )
                fake.requests.append(request)
                response = fake.route(request) or FakeResponse(404, "not found")
                self._answer(response)

            def _answer(self, response: FakeResponse) -> None:
                self.send_response(response.status)
                for key, value in response.headers.items():
                    self.send_header(key, value)
                if response.stream is not None:
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    try:
                        for chunk in response.stream:
                            self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                            self.wfile.flush()
                        self.wfile.write(b"0\r\n\r\n")
                    except (BrokenPipeError, ConnectionResetError):
                        pass
                    self.close_connection = True
                    return
                body = response.body
                if not isinstance(body, bytes | str):
                    body = json.dumps(body)
                    self.send_header("Content-Type", "application/json")
                data = body.encode() if isinstance(body, str) else body
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        # A short poll interval: shutdown waits for one poll (0.5 s by default).
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    def __enter__(self) -> FakeHttpServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


def json_lines(objects: Iterable[Any]) -> Iterator[bytes]:
    """Chunks of newline-terminated JSON, as streaming APIs (OANDA) send them."""
    for item in objects:
        yield (json.dumps(item) + "\n").encode()
