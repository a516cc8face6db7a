"""One error family: a user's mistake is one clear line and a non-zero exit code."""

from __future__ import annotations


class SptraderError(Exception):
    """A problem the user can fix; shown as one line, never as a traceback."""

    exit_code = 1


class ConfigError(SptraderError):
    """Bad configuration: names the file and the key path."""

    exit_code = 2


class UsageError(SptraderError):
    """A bad argument on the command line (unknown instrument, bad date, ...)."""

    exit_code = 2


class StoreLockedError(SptraderError):
    """The DuckDB file is held by another process (DuckDB allows one writer)."""

    exit_code = 3
