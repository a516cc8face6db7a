"""DuckDB storage: the file, migrations, the batched writer and the queries."""

from sptrader.store.database import BAR_COLUMNS, BAR_SCHEMA, TICK_COLUMNS, Store

__all__ = ["BAR_COLUMNS", "BAR_SCHEMA", "TICK_COLUMNS", "Store"]
