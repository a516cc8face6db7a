"""Argument types shared by every command, and the bounds the API checks too.

A bad value is refused while the command line is parsed, before anything runs, as one
sentence naming the option (``Refused``; ``cli.Parser`` prints it as the one line a
user's mistake gets, exit 2). Numbers are bounded so that no later arithmetic, thread
timeout or SQL LIMIT can overflow; a directory to write into is checked to be one.
Only the standard library (and the plain constants of ``sptrader.limits``) is imported
here: the parser is built on every run.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from sptrader.limits import MAX_COUNT, MAX_ID, MAX_WAIT_S


class Refused(argparse.ArgumentTypeError):
    """A value the command refuses, said as a whole sentence naming the argument."""


def count(name: str, maximum: int = MAX_COUNT) -> Callable[[str], int]:
    """A whole number from 1 to ``maximum``."""
    return _whole(name, maximum, f"{name} must be a whole number from 1 to {maximum:,}")


def _whole(name: str, maximum: int, problem: str) -> Callable[[str], int]:
    """A whole number from 1 to ``maximum``, else ``problem`` (with the text given)."""

    def parse(text: str) -> int:
        with contextlib.suppress(ValueError):
            value = int(text)
            if 1 <= value <= maximum:
                return value
        raise Refused(f"{problem}, not {text!r}")

    parse.__name__ = name
    return parse


def seconds(
    name: str, *, zero: bool = False, maximum: float = MAX_WAIT_S
) -> Callable[[str], float]:
    """A finite number of seconds up to ``maximum``: above 0, or 0 too when ``zero``."""

    def parse(text: str) -> float:
        with contextlib.suppress(ValueError):
            value = float(text)
            if math.isfinite(value) and (value > 0 or (zero and value == 0)) and value <= maximum:
                return value
        if zero:
            raise Refused(f"{name} must be 0 to {maximum:,.0f} seconds, not {text!r}")
        raise Refused(
            f"{name} must be a positive number of seconds up to {maximum:,.0f}, not {text!r}"
        )

    parse.__name__ = name
    return parse


def whole_id(what: str) -> Callable[[str], int]:
    """A stored row's id: a whole number from 1 to 2**63-1."""
    return _whole(what, MAX_ID, f"{what} is a positive whole number")


def output_dir(name: str) -> Callable[[str], str]:
    """A directory that is (or can be created and) written into: refused when it, or the
    nearest existing directory above it, is a file, or nothing can be created there."""

    def parse(text: str) -> str:
        path = Path(text).expanduser()
        if path.exists():
            if not path.is_dir():
                raise Refused(f"{name} {path} is not a directory")
            writable_in(path, name)
            return text
        ancestor = path.absolute().parent
        while not ancestor.exists():
            ancestor = ancestor.parent
        if not ancestor.is_dir():
            raise Refused(f"{name} {path}: {ancestor} is not a directory")
        writable_in(ancestor, name, path)
        return text

    parse.__name__ = name
    return parse


def writable_in(directory: Path, name: str, target: Path | None = None) -> None:
    """Refused unless a directory can be created in ``directory`` (tried, then removed:
    a permission bit says nothing to root, or on a read-only or virtual file system)."""
    try:
        probe = tempfile.mkdtemp(prefix=".sptrader-probe-", dir=directory)
    except OSError as error:
        where = f"{target} (in {directory})" if target is not None else str(directory)
        raise Refused(f"{name} {where} cannot be written: {error.strerror}") from None
    os.rmdir(probe)
