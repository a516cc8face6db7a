"""The headless daemon: ``sptrader start`` / ``stop`` / ``status``.

The daemon is the same Engine the TUI hosts, run by ``start --foreground`` in a new
session (so closing the terminal does not stop it), with the API server beside it. A
pid file in the home says which process it is; a pid file whose process is gone is
stale and replaced.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from sptrader.api.host import EngineHost, claim_pid_file, release_pid_file
from sptrader.client import paths
from sptrader.client.paths import alive, host_name, host_of
from sptrader.config import Settings
from sptrader.errors import SptraderError
from sptrader.wording import live_venues_line

if TYPE_CHECKING:
    from sptrader.engine import Engine

log = logging.getLogger(__name__)


# --- the daemon process ------------------------------------------------------------------


def run_foreground(settings: Settings, role: str = "all") -> int:
    """Run the engine and the API until SIGTERM or SIGINT."""
    # The store, its WAL, the log and the socket: the owner's only (as cli.main does;
    # also when this is called without it).
    umask = os.umask(0o077)
    try:
        return _run_foreground(settings, role)
    finally:
        os.umask(umask)


def _run_foreground(settings: Settings, role: str) -> int:
    from sptrader.logs import setup_logging

    config = settings.config
    setup_logging(
        settings.log_path,
        config.log.level,
        max_bytes=config.log.max_bytes,
        backups=config.log.backups,
        stderr=sys.stderr.isatty(),
    )
    # Claimed before the engine starts (again by EngineHost once it serves): a command
    # run meanwhile waits for this daemon instead of opening the store itself.
    from sptrader.engine import Engine

    # A role the config cannot run is an error before the pid file is claimed. ``all``
    # with [nats] enabled runs a collector beside the writer (Engine.companion).
    engine = Engine(settings, role=role)
    claim_pid_file(settings.home, paths.DAEMON)
    try:
        asyncio.run(_serve(engine))
    finally:
        release_pid_file(settings.home)
    return 0


async def _serve(engine: Engine) -> None:
    settings = engine.settings
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    metrics = None
    host = EngineHost(engine, paths.DAEMON)
    try:
        await engine.start()
        await host.start()
        if settings.config.daemon.metrics_port:
            from sptrader.metrics import serve_metrics

            metrics = serve_metrics(engine, host.server, settings.config.daemon)
        log.info("daemon ready: pid %d", os.getpid())
        await stop.wait()
        log.info("daemon stopping (signal)")
    finally:
        await host.close_server()
        await engine.stop()
        if metrics is not None:
            metrics.shutdown()
        log.info("daemon stopped")


# --- the controlling commands ------------------------------------------------------------


def start_background(settings: Settings, config_path: Path | None, role: str = "all") -> int:
    """Spawn the daemon detached and return once its API answers (or say why not)."""
    home = settings.home
    host = host_of(home)
    if host is not None:
        pid, kind = host
        if kind == paths.TUI:
            raise SptraderError(
                f"a TUI (pid {pid}) hosts the engine for {home}: every command goes through"
                " it; quit it (q) to start the daemon instead"
            )
        print(f"sptrader daemon already running (pid {pid})")
        return 0
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    command = [sys.executable, "-m", "sptrader.cli", "--home", str(home)]
    if config_path is not None:
        command += ["--config", str(config_path)]
    command += ["start", "--foreground", "--role", role]
    started = time.monotonic()
    process = subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,  # its own session: the terminal closing does not reach it
        cwd=str(home),
    )
    deadline = started + settings.config.daemon.start_timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            reason = (
                process.stderr.read().decode(errors="replace").strip().splitlines()
                if process.stderr
                else []
            )
            last = reason[-1] if reason else _last_log_line(settings)
            raise SptraderError(f"the daemon exited during start: {last}")
        if _healthy(home):
            if process.stderr is not None:
                process.stderr.close()
            print(
                f"sptrader daemon started (pid {process.pid}) in {time.monotonic() - started:.1f}s; log: {settings.log_path}"
            )
            print(live_venues_line(settings.config))  # sptrader.wording
            return 0
        time.sleep(0.05)
    # Read before the signal: the daemon's "stopping" line would otherwise be the last.
    last = _last_log_line(settings)
    process.terminate()
    raise SptraderError(
        f"the daemon was not healthy after {settings.config.daemon.start_timeout_s:.0f}s: {last}"
    )


def _healthy(home: Path) -> bool:
    from sptrader.client.connection import call_daemon

    if not paths.socket_path(home).exists():
        return False
    try:
        status = asyncio.run(call_daemon(home, "status"))
    except SptraderError:
        return False
    return all(service["state"] in ("running", "stopped") for service in status["services"])


def _last_log_line(settings: Settings) -> str:
    try:
        lines = settings.log_path.read_text(errors="replace").strip().splitlines()
    except FileNotFoundError:
        return "no log written"
    errors = [line for line in lines if " ERROR " in line]
    return (errors or lines or ["no log written"])[-1]


def stop_daemon(settings: Settings) -> int:
    """SIGTERM, wait, then SIGKILL after ``daemon.stop_timeout_s``."""
    home = settings.home
    host = host_of(home)
    if host is None:
        print("sptrader daemon is not running")
        with contextlib.suppress(FileNotFoundError):
            paths.pid_path(home).unlink()
        return 0
    pid, kind = host
    if kind == paths.TUI:
        # Its terminal is the user's: stopping it is their keystroke, not a signal.
        raise SptraderError(
            f"no daemon runs for {home}: a {host_name(kind)} (pid {pid}) hosts the engine;"
            " quit it there (q)"
        )
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + settings.config.daemon.stop_timeout_s
    while time.monotonic() < deadline:
        if not alive(pid):
            print(f"sptrader daemon stopped (pid {pid})")
            return 0
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    while alive(pid):
        time.sleep(0.05)
    with contextlib.suppress(FileNotFoundError):
        paths.pid_path(home).unlink()
    print(
        f"sptrader daemon did not stop within {settings.config.daemon.stop_timeout_s:.0f}s and was killed (pid {pid})"
    )
    return 0
