"""DuckDB storage: the file, migrations, the batched writer and the queries. The
column layouts it stores are sptrader.schema's."""

from sptrader.store.database import Store

__all__ = ["Store"]
