"""``sptrader db migrate`` and ``sptrader db compact``."""

from __future__ import annotations

import argparse

from sptrader.config import Settings
from sptrader.errors import StoreLockedError
from sptrader.store import Store


def run_migrate(settings: Settings) -> int:
    store = Store(settings.store_path)
    try:
        applied = store.migrate()
        version = store.schema_version()
    finally:
        store.close()
    if applied:
        print(f"applied {', '.join(applied)}; {settings.store_path} is at schema version {version}")
    else:
        print(f"{settings.store_path} is up to date (schema version {version})")
    return 0


def _mb(size: int) -> str:
    return f"{size / 1e6:,.1f} MB"


def _iso(moment) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def run_compact(settings: Settings, args: argparse.Namespace) -> int:
    """Delete ticks older than store.ticks_retention_days and rewrite the file smaller."""
    from sptrader.client.paths import running_pid
    from sptrader.store.retention import compact

    path = settings.store_path
    pid = running_pid(settings.home)
    if pid is not None:
        raise StoreLockedError(
            f"the daemon (pid {pid}) is using {path}; stop it with `sptrader stop`, compact, then `sptrader start`"
        )
    days = settings.config.store.ticks_retention_days
    result = compact(path, days, dry_run=args.dry_run)
    if result.cutoff is None:
        retention = f"keeping all {result.ticks_total:,} ticks (store.ticks_retention_days = 0)"
    else:
        verb = "would delete" if result.dry_run else "deleted"
        retention = (
            f"{verb} {result.ticks_deleted:,} of {result.ticks_total:,} ticks older than"
            f" {_iso(result.cutoff)} (store.ticks_retention_days = {days:g})"
        )
    if result.dry_run:
        print(f"dry run, nothing changed: {retention}; {path} is {_mb(result.size_before)}")
    else:
        print(
            f"compacted {path}: {retention}; {_mb(result.size_before)} -> "
            f"{_mb(result.size_after)} in {result.seconds:.1f} s"
        )
    return 0


def run_db(settings: Settings, args: argparse.Namespace) -> int:
    """``sptrader db compact`` or ``sptrader db migrate``."""
    if args.db_command == "compact":
        return run_compact(settings, args)
    return run_migrate(settings)
