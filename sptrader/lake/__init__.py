"""Delta Lake history: 1m bars (and kept ticks) in Delta tables that DuckDB, polars and
Spark read, on a local path or S3-compatible storage.

- :mod:`.location`: where the lake is (a path, ``file://`` or ``s3://`` URI) and the
  storage options built from ``[lake]``;
- :mod:`.layout`: the tables' columns and partitioning;
- :mod:`.append`: idempotent, atomic appends (a merge on instrument and ts);
- :mod:`.read`: bars of a range in the store's layout, and per-instrument coverage;
- :mod:`.maintain`: compaction and vacuum;
- :mod:`.sink`: the engine service that appends closed bars as they come.
"""
