"""Keeping the lake lean: small files (one per minute-batch and partition, as the sink
appends) are compacted into one per partition, and files no version needs any more are
vacuumed once they are older than the table's retention (Delta's default, 7 days:
readers of older versions and writers in flight keep what they use)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sptrader.config import LakeConfig
from sptrader.lake.append import lake_error, open_table
from sptrader.lake.location import Lake, lake_of


@dataclass(slots=True)
class Compacted:
    table: str
    files_removed: int
    files_added: int
    vacuumed: int


def compact(
    config_or_uri: LakeConfig | Lake | str,
    *,
    home: Path | None = None,
    retention_hours: int | None = None,
) -> list[Compacted]:
    """Compact and vacuum each of the lake's tables that exists. ``retention_hours``
    None keeps the table's retention; a shorter one than it is refused by deltalake."""
    lake = lake_of(config_or_uri, home)
    done = []
    for uri in (lake.bars_uri, lake.ticks_uri):
        table = open_table(lake, uri)
        if table is None:
            continue
        try:
            metrics = table.optimize.compact()
            vacuumed = table.vacuum(
                retention_hours=retention_hours, dry_run=False, enforce_retention_duration=True
            )
        except Exception as error:
            raise lake_error(lake, f"cannot compact {uri}", error) from error
        done.append(
            Compacted(
                uri,
                int(metrics.get("numFilesRemoved", 0)),
                int(metrics.get("numFilesAdded", 0)),
                len(vacuumed),
            )
        )
    return done
