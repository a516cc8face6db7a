"""Where the process hosting a home's engine (a daemon or a TUI) keeps its pid file,
socket and token, and whether one runs."""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import tempfile
from pathlib import Path

# sun_path holds 108 bytes on Linux (104 on macOS): longer homes get a socket in the
# temp dir whose name is derived from the home, so every client finds the same one.
_MAX_SOCKET_PATH = 100


def pid_path(home: Path) -> Path:
    return home / "sptrader.pid"


def socket_path(home: Path) -> Path:
    path = home / "sptrader.sock"
    if len(str(path)) <= _MAX_SOCKET_PATH:
        return path
    digest = hashlib.sha256(str(home.resolve()).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"sptrader-{digest}.sock"


def token_path(home: Path) -> Path:
    return home / "api.token"


def read_or_create_token(home: Path) -> str:
    """The TCP API token, generated once into the home with mode 0600."""
    path = token_path(home)
    if path.exists():
        return path.read_text().strip()
    home.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(token + "\n")
    return token


#: Who hosts the engine: the pid file's second line (a pid file of one line is a daemon's).
DAEMON = "daemon"
TUI = "tui"


def host_of(home: Path) -> tuple[int, str] | None:
    """(pid, "daemon" or "tui") of the live process hosting this home's engine, else
    None (no pid file, or a stale one whose process is gone)."""
    try:
        lines = pid_path(home).read_text().split()
        pid = int(lines[0])
    except (FileNotFoundError, ValueError, IndexError):
        return None
    if not alive(pid):
        return None
    return pid, (lines[1] if len(lines) > 1 else DAEMON)


def running_pid(home: Path) -> int | None:
    """The pid of the live process hosting this home's engine (a daemon or a TUI)."""
    host = host_of(home)
    return None if host is None else host[0]


def host_name(host: str) -> str:
    """How a user is told who hosts the engine: "daemon" or "TUI"."""
    return "TUI" if host == TUI else "daemon"


def alive(pid: int) -> bool:
    """True for a live process; a zombie (killed, not yet reaped) counts as dead."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, someone else's
    # A zombie child of ours is dead for our purposes.
    with contextlib.suppress(ChildProcessError):
        finished, _ = os.waitpid(pid, os.WNOHANG)
        if finished == pid:
            return False
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split()[2] != "Z"
    except OSError:
        return True
