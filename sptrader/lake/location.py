"""Where a lake lives and how to reach it.

A lake is a directory (local, ``file://`` or ``s3://bucket/prefix``) holding one Delta
table per kind: ``bars_1m`` and ``ticks``. A relative local path is relative to the
home when one is given. S3 options come from ``[lake]``: ``endpoint`` becomes
``AWS_ENDPOINT_URL``, ``region`` ``AWS_REGION``, the keys are read from the environment
variables ``access_key_env`` / ``secret_key_env`` name (never from the config, never
logged), ``allow_http`` ``AWS_ALLOW_HTTP``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from sptrader.config import LakeConfig
from sptrader.errors import SptraderError, UsageError

BARS_TABLE = "bars_1m"
TICKS_TABLE = "ticks"
_S3_SCHEMES = ("s3", "s3a")


class LakeError(SptraderError):
    """The lake could not be read or written (unreachable, refused, not a Delta table):
    one line naming the lake, never its keys."""


@dataclass(frozen=True)
class Lake:
    """A lake's root URI and the storage options every call passes to deltalake."""

    uri: str
    storage_options: dict[str, str] = field(default_factory=dict, repr=False)

    @property
    def is_local(self) -> bool:
        return not self.uri.startswith(tuple(f"{scheme}://" for scheme in _S3_SCHEMES))

    def table(self, name: str) -> str:
        return f"{self.uri.rstrip('/')}/{name}"

    @property
    def bars_uri(self) -> str:
        return self.table(BARS_TABLE)

    @property
    def ticks_uri(self) -> str:
        return self.table(TICKS_TABLE)

    def __str__(self) -> str:  # what messages show: never the options (keys)
        return self.uri


def lake_of(config_or_uri: LakeConfig | Lake | str, home: Path | None = None) -> Lake:
    """The lake a ``[lake]`` section, a URI or a path names; a UsageError (one line)
    for an empty or unsupported URI."""
    if isinstance(config_or_uri, Lake):
        return config_or_uri
    config = (
        config_or_uri if isinstance(config_or_uri, LakeConfig) else LakeConfig(uri=config_or_uri)
    )
    text = config.uri.strip()
    if not text:
        raise UsageError("no lake: set [lake] uri (a directory or s3://bucket/prefix)")
    scheme = urlsplit(text).scheme.lower()
    if scheme in _S3_SCHEMES:
        parts = urlsplit(text)
        if not parts.netloc:
            raise UsageError(f"lake URI {text!r} names no bucket: use s3://bucket/prefix")
        return Lake(f"s3://{parts.netloc}{parts.path}".rstrip("/"), s3_options(config))
    if scheme == "file":
        parts = urlsplit(text)
        if parts.netloc not in ("", "localhost"):
            raise UsageError(f"lake URI {text!r}: a file:// URI names a local path (file:///dir)")
        path = Path(parts.path)
    elif scheme and len(scheme) > 1:  # (a one-letter scheme is a Windows drive)
        raise UsageError(
            f"lake URI {text!r}: unsupported scheme {scheme}://; use a directory, file:// or s3://"
        )
    else:
        path = Path(text).expanduser()
        if not path.is_absolute() and home is not None:
            path = home / path
    path = path.absolute()
    if path.exists() and not path.is_dir():
        raise UsageError(f"lake {path} is a file, not a directory")
    return Lake(str(path))


def s3_options(config: LakeConfig) -> dict[str, str]:
    """deltalake's storage options for an S3-compatible store, from ``config``."""
    options: dict[str, str] = {}
    if config.endpoint:
        options["AWS_ENDPOINT_URL"] = config.endpoint
    if config.region:
        options["AWS_REGION"] = config.region
    access_key = os.environ.get(config.access_key_env, "") if config.access_key_env else ""
    secret_key = os.environ.get(config.secret_key_env, "") if config.secret_key_env else ""
    if access_key:
        options["AWS_ACCESS_KEY_ID"] = access_key
    if secret_key:
        options["AWS_SECRET_ACCESS_KEY"] = secret_key
    if config.allow_http:
        options["AWS_ALLOW_HTTP"] = "true"
    # Commits are put-if-absent (AWS S3, MinIO and R2 support it), so two
    # writers never overwrite each other's commit without a lock service.
    options["aws_conditional_put"] = "etag"
    return options
