"""Logging: a rotating file in the home, and (while an engine runs) the engine's own
messages as EngineLogged events on the bus, for the log pane and the store.

The TUI owns the terminal, so nothing here writes to stdout or stderr unless asked
(``--foreground`` daemons and CLI debugging).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import logging.handlers
import os
import stat
import sys
from pathlib import Path

from sptrader.bus import Bus
from sptrader.models import EngineLogged

_FORMAT = "%(asctime)s %(levelname)s %(who)s: %(message)s"


class _Formatter(logging.Formatter):
    """Names what a line is about as the log pane does: the ``source`` a record carries
    (the service, ``extra={"source": "binance"}``), else the logger's name."""

    def format(self, record: logging.LogRecord) -> str:
        record.who = getattr(record, "source", None) or record.name
        return super().format(record)


def setup_logging(
    log_path: Path, level: str, *, max_bytes: int, backups: int, stderr: bool = False
) -> None:
    root = logging.getLogger("sptrader")
    root.setLevel(level)
    for handler in list(root.handlers):
        if getattr(handler, "_sptrader_owned", False):
            root.removeHandler(handler)
            handler.close()
    log_path.parent.mkdir(parents=True, exist_ok=True)
    file_handler = PrivateRotatingFileHandler(
        log_path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8"
    )
    file_handler.setFormatter(_Formatter(_FORMAT))
    file_handler._sptrader_owned = True  # type: ignore[attr-defined]
    root.addHandler(file_handler)
    if stderr:
        stream = logging.StreamHandler(sys.stderr)
        stream.setFormatter(_Formatter(_FORMAT))
        stream._sptrader_owned = True  # type: ignore[attr-defined]
        root.addHandler(stream)
    root.propagate = False


class PrivateRotatingFileHandler(logging.handlers.RotatingFileHandler):
    """A rotating log whose files are the owner's only (0600), whatever the umask: the
    log names instruments, orders and fills. Rotated files keep the mode (renamed)."""

    def _open(self):  # type: ignore[no-untyped-def]
        descriptor = os.open(self.baseFilename, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            mode = stat.S_IMODE(os.fstat(descriptor).st_mode)
            if mode & 0o077:  # an older log, written under a looser umask
                with contextlib.suppress(OSError):  # someone else's: left as it is
                    os.fchmod(descriptor, mode & 0o700)
            return open(descriptor, "a", encoding=self.encoding, errors=self.errors)
        except BaseException:
            os.close(descriptor)
            raise


class BusLogHandler(logging.Handler):
    """Publishes sptrader log records (INFO and up) as EngineLogged events.

    Records from worker threads are handed to the loop thread: the bus is not
    thread-safe.
    """

    def __init__(self, bus: Bus, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(logging.INFO)
        self.bus = bus
        self.loop = loop

    def emit(self, record: logging.LogRecord) -> None:
        try:
            source = getattr(record, "source", None) or record.name.removeprefix("sptrader.")
            event = EngineLogged(
                int(record.created * 1_000_000), record.levelname, source, record.getMessage()
            )
            try:
                running = asyncio.get_running_loop()
            except RuntimeError:
                running = None
            if running is self.loop:
                self.bus.publish_nowait([event])
            elif not self.loop.is_closed():
                self.loop.call_soon_threadsafe(self.bus.publish_nowait, [event])
        except Exception:
            self.handleError(record)
