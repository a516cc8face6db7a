"""The process hosting a home's engine, a daemon or a TUI: its pid file and API server.

DuckDB lets one process write the store, so whichever process runs the engine claims
the home's pid file and serves the API on its socket; every other client (a command,
another TUI) finds it through ``connect()`` and goes through that API. A pid file whose
process is gone (a killed host) is stale: it and the socket are replaced.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sptrader.client import paths
from sptrader.client.paths import host_name, host_of
from sptrader.errors import SptraderError

if TYPE_CHECKING:
    from sptrader.engine import Engine


def claim_pid_file(home: Path, host: str) -> None:
    """Say in the home that this process hosts its engine (again: harmless); refused
    while another live process does."""
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    other = host_of(home)
    if other is not None and other[0] != os.getpid():
        pid, kind = other
        raise SptraderError(f"a {host_name(kind)} already hosts the engine for {home} (pid {pid})")
    descriptor = os.open(paths.pid_path(home), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        # A daemon's holds its pid alone (as scripts and `kill $(cat ...)` expect).
        handle.write(f"{os.getpid()}\n" if host == paths.DAEMON else f"{os.getpid()}\n{host}\n")


def release_pid_file(home: Path) -> None:
    """Remove the pid file if it is this process's."""
    path = paths.pid_path(home)
    with contextlib.suppress(FileNotFoundError, ValueError, IndexError):
        if int(path.read_text().split()[0]) == os.getpid():
            path.unlink()


def start_away_services(engine: Engine, client: Any) -> None:
    """What reaches a trader away from the terminal, run by whichever process hosts the
    engine (the daemon, or a TUI): the Telegram bot (also the "telegram" alert channel)
    and the scheduled reports. Both go through ``client``, as every caller does."""
    config = engine.config
    if config.telegram.enabled:
        from sptrader.alerting.telegram import TelegramBot

        bot = TelegramBot(config.telegram, client)
        engine.alert_channels.add(bot)
        engine.supervisor.add(bot)
        engine.supervisor.start(bot.name)
    if any(report.enabled for report in config.reports):
        from sptrader.alerting.reports import ReportScheduler

        scheduler = ReportScheduler(config.reports, client, engine.deliver_notice, llm=config.llm)
        engine.supervisor.add(scheduler)
        engine.supervisor.start(scheduler.name)


class EngineHost:
    """The pid file and the API server of an engine in this process (``host``: the
    daemon or a TUI), started once the engine runs and closed before it stops."""

    def __init__(self, engine: Engine, host: str) -> None:
        # Here, not at the top: `sptrader status` and `stop` import this module (through
        # sptrader.daemon) and need no server, which pulls in websockets and the engine.
        from sptrader.api.server import ApiServer

        self.engine = engine
        self.home = engine.settings.home
        self.host = host
        self.server = ApiServer(engine, host=host)

    async def start(self) -> None:
        claim_pid_file(self.home, self.host)
        try:
            await self.server.start()
        except BaseException:
            release_pid_file(self.home)
            raise
        start_away_services(self.engine, self.server.client)

    async def close_server(self) -> None:
        """Stop answering (the socket goes); the pid file stays until the engine is
        stopped, so no command tries to open the store while it is still held."""
        await self.server.close()

    async def close(self) -> None:
        await self.close_server()
        release_pid_file(self.home)
