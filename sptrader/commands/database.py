"""``sptrader db migrate``."""

from __future__ import annotations

from sptrader.config import Settings
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
