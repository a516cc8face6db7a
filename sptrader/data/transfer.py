"""Bars out of the store into files, and files of bars into the store.

Export layout (Hive partitioning, as Spark, DuckDB and polars write and read it)::

    DIR/instrument=<escaped instrument>/date=<YYYY-MM-DD>/bars-<tf>.parquet   (or .csv)

- One file per instrument and UTC day (the day of each bar's open time). Its columns:
  ``ts`` (TIMESTAMP without time zone, microseconds, holding UTC; in CSV ISO 8601 with
  ``Z``), ``open high low close volume`` (DOUBLE; in CSV the shortest text that reads
  back to the same float), ``trades`` (BIGINT), ``buy_volume sell_volume`` (DOUBLE, the
  volume of trades whose taker bought / sold; null, in CSV an empty field, where the
  source does not say). ``instrument`` and ``date`` live only in the directory names.
- Partition values are escaped as Hive/Spark's ``escapePathName`` does: ``%XX`` for
  control characters and ``"#%'*/:=?\\{[]^`` (of the characters an instrument name may
  hold, ``:`` and ``/``), so ``KRAKEN:BTC/USD`` is the directory
  ``instrument=KRAKEN%3ABTC%2FUSD``. For instrument names, DuckDB's and polars' own
  partitioned writers produce the same names.
- What readers see: DuckDB ``read_parquet('DIR/**/*.parquet', hive_partitioning=true)``
  and polars ``pl.scan_parquet('DIR/**/*.parquet', hive_partitioning=True)`` (both
  tested) unescape the values: ``instrument`` is the exact name (``KRAKEN:BTC/USD``, a
  string) and ``date`` a DATE, after the data columns. Spark's ``spark.read.parquet('DIR')``
  unescapes with the inverse of the same rules (not tested here: no Spark in the test
  environment) and reads ``ts`` as TIMESTAMP_NTZ where it infers NTZ (the files say "not
  adjusted to UTC"; the values are UTC).
- A re-export of the same bars writes byte-identical files. The export of a range is
  whole UTC days: each written (instrument, day) directory replaces the one there
  before; days of an exported instrument inside the range that no longer have bars are
  removed. Files are first written into a temporary sibling of DIR and then renamed
  into place one day directory at a time, so an error never leaves a half-written file
  or day in DIR (a crash during the renames can leave some days new and some old).
- One DIR holds one timeframe in one format: an export refuses to replace a day
  directory holding any other file (another timeframe, format or tool).

Import (``load_bars``) reads a CSV or Parquet file, or a directory of them (an export:
``instrument`` and ``date`` come from ``key=value`` directory names), checks every row
and returns the bars, or the bad rows with their line numbers. See ``load_bars``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from itertools import accumulate
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import polars as pl

from sptrader.errors import SptraderError, UsageError
from sptrader.models import INSTRUMENT_RE, US_PER_DAY, US_PER_MINUTE
from sptrader.schema import (
    ORDER_FLOW_COLUMNS,
    ORDER_FLOW_SCHEMA,
    STORED_BAR_COLUMNS,
    STORED_BAR_SCHEMA,
    stored_bars,
)
from sptrader.store.database import Store

FORMATS = ("parquet", "csv")
DATA_COLUMNS = [name for name in STORED_BAR_COLUMNS if name != "instrument"]
DATA_SCHEMA = {name: STORED_BAR_SCHEMA[name] for name in DATA_COLUMNS}
CSV_TS_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
CHUNK_DAYS = 31  # bars read (from the store or the daemon) per instrument at a time

# --- partition names ---------------------------------------------------------------------

# Hive's / Spark's ExternalCatalogUtils.charToEscape.
_ESCAPED = frozenset([chr(code) for code in range(0x20)] + list("\"#%'*/:=?\\\x7f{[]^"))


def escape_partition_value(value: str) -> str:
    """A value as Hive and Spark write it in a ``key=value`` directory name."""
    return "".join(f"%{ord(char):02X}" if char in _ESCAPED else char for char in value)


def unescape_partition_value(text: str) -> str:
    return unquote(text)


def instrument_dir(root: Path, instrument: str) -> Path:
    return root / f"instrument={escape_partition_value(instrument)}"


def partition_dir(root: Path, instrument: str, day: date) -> Path:
    return instrument_dir(root, instrument) / f"date={day.isoformat()}"


def file_name(timeframe: str, output_format: str) -> str:
    return f"bars-{timeframe}.{output_format}"


# --- export ------------------------------------------------------------------------------

BarReader = Callable[[str, int, int], pl.DataFrame]
"""(instrument, start_us, end_us) -> bars with open time in [start, end): DATA_COLUMNS
(without order flow: written as nulls), ascending ts (``queries.bars_between`` or the
daemon's ``candles``)."""


@dataclass
class ExportSummary:
    rows: int = 0
    files: int = 0
    removed: int = 0  # stale day directories removed
    bars: dict[str, int] = field(default_factory=dict)  # per instrument
    first_us: int | None = None
    last_us: int | None = None


def day_range(start_us: int, end_us: int, days: int) -> Iterable[tuple[int, int]]:
    cursor = start_us
    while cursor < end_us:
        stop = min(end_us, cursor + days * US_PER_DAY)
        yield cursor, stop
        cursor = stop


def export_bars(
    read: BarReader,
    instruments: list[str],
    start_us: int,
    end_us: int,
    out_dir: Path,
    output_format: str,
    timeframe: str,
    *,
    workers: int | None = None,
) -> ExportSummary:
    """Write the bars of ``instruments`` in [start, end) (both on UTC midnight) under
    ``out_dir``; see the module docstring for the layout and the guarantees."""
    if output_format not in FORMATS:
        raise UsageError(f"unknown format {output_format!r}: use parquet or csv")
    if start_us % US_PER_DAY or end_us % US_PER_DAY:
        raise UsageError("an export covers whole UTC days: give --from and --to as dates")
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"--out {out_dir} is a file, not a directory")
    out_dir = out_dir.resolve()  # "." has no name and no parent to stage next to
    name = file_name(timeframe, output_format)
    first_day = _day_of(start_us)
    end_day = _day_of(end_us)
    _check_layout(out_dir, name)
    existing = {
        instrument: _existing_days(out_dir, instrument, name, first_day, end_day)
        for instrument in instruments
    }
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.export-", dir=out_dir.parent))
    summary = ExportSummary()
    written: dict[str, set[date]] = {}
    try:
        with ThreadPoolExecutor(max_workers=workers or min(4, os.cpu_count() or 1)) as pool:
            # The next chunk is read while the last one is written; at most two in memory.
            writing: list[Future[None]] = []
            for instrument in instruments:
                count = 0
                for chunk_start, chunk_end in day_range(start_us, end_us, CHUNK_DAYS):
                    # Bars that open in the chunk: with a timeframe that does not divide a
                    # day, the reader also returns the bar open at its start.
                    frame = (
                        _with_flow(read(instrument, chunk_start, chunk_end))
                        .select(DATA_COLUMNS)
                        .cast(DATA_SCHEMA)
                        .filter(pl.col("ts") >= pl.lit(chunk_start).cast(pl.Datetime("us")))
                    )
                    if frame.is_empty():
                        continue
                    days, jobs = _write_days(pool, frame, staging, instrument, name, output_format)
                    for job in writing:
                        job.result()
                    writing = jobs
                    written.setdefault(instrument, set()).update(days)
                    count += frame.height
                    epoch = frame["ts"].dt.epoch("us")
                    first, last = epoch.item(0), epoch.item(-1)
                    summary.first_us = (
                        first if summary.first_us is None else min(summary.first_us, first)
                    )
                    summary.last_us = (
                        last if summary.last_us is None else max(summary.last_us, last)
                    )
                summary.bars[instrument] = count
                summary.rows += count
            for job in writing:
                job.result()
        summary.files = sum(len(days) for days in written.values())
        if summary.rows:
            summary.removed = _move_into_place(staging, out_dir, written, existing)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return summary


def _with_flow(frame: pl.DataFrame) -> pl.DataFrame:
    """``frame`` with null order-flow columns where it has none."""
    missing = [
        pl.lit(None, dtype=kind).alias(name)
        for name, kind in ORDER_FLOW_SCHEMA.items()
        if name not in frame.columns
    ]
    return frame.with_columns(missing) if missing else frame


def _day_of(ts_us: int) -> date:
    return datetime(1970, 1, 1, tzinfo=UTC).date() + timedelta(days=ts_us // US_PER_DAY)


def _write_days(
    pool: ThreadPoolExecutor,
    frame: pl.DataFrame,
    staging: Path,
    instrument: str,
    name: str,
    output_format: str,
) -> tuple[list[date], list[Future[None]]]:
    """Start writing one chunk (ascending ts) as one file per day, in the pool."""
    parts = frame.with_columns(pl.col("ts").dt.date().alias("date")).partition_by(
        "date", as_dict=True, maintain_order=True, include_key=False
    )
    jobs: list[Future[None]] = []
    days = []
    instrument_dir(staging, instrument).mkdir(exist_ok=True)
    for (day,), part in parts.items():
        days.append(day)
        path = partition_dir(staging, instrument, day) / name
        jobs.append(pool.submit(_write_file, part, path, output_format))
    return days, jobs


def _write_file(frame: pl.DataFrame, path: Path, output_format: str) -> None:
    # mkdir here too: it costs as much as the write, so it runs in the pool as well.
    path.parent.mkdir()
    if output_format == "parquet":
        frame.write_parquet(path, compression="zstd", statistics=True)
    else:
        frame.write_csv(path, datetime_format=CSV_TS_FORMAT)


def _check_day(day_dir: Path, name: str) -> None:
    others = sorted(child.name for child in day_dir.iterdir() if child.name != name)
    if others:
        raise UsageError(
            f"{day_dir} holds {others[0]}, not {name}: export {name} into another --out"
            " directory (one directory holds one timeframe in one format)"
        )


def _check_layout(out_dir: Path, name: str) -> None:
    """One day directory of each instrument already in ``out_dir`` must hold ``name``
    only (the days this export replaces are all checked by ``_existing_days``)."""
    if not out_dir.is_dir():
        return
    for directory in sorted(out_dir.glob("instrument=*")):
        day_dir = next(iter(sorted(directory.glob("date=*"))), None)
        if day_dir is not None and day_dir.is_dir():
            _check_day(day_dir, name)


def _existing_days(
    out_dir: Path, instrument: str, name: str, first_day: date, end_day: date
) -> set[date]:
    """Day directories of ``instrument`` already in ``out_dir`` within [first, end).
    Refuses (before anything is written) when one holds a file this export would not
    write: another timeframe, format or tool."""
    directory = instrument_dir(out_dir, instrument)
    found: set[date] = set()
    if not directory.is_dir():
        return found
    for entry in sorted(directory.iterdir()):
        if not entry.name.startswith("date=") or not entry.is_dir():
            continue
        _check_day(entry, name)
        try:
            day = date.fromisoformat(entry.name.removeprefix("date="))
        except ValueError:
            continue
        if first_day <= day < end_day:
            found.add(day)
    return found


def _move_into_place(
    staging: Path, out_dir: Path, written: dict[str, set[date]], existing: dict[str, set[date]]
) -> int:
    """Swap each written day directory in (the old one, if any, goes to the staging
    directory's trash); remove days of written instruments that have no bars now."""
    out_dir.mkdir(exist_ok=True)
    trash = staging / f"trash-{uuid.uuid4().hex}"
    trash.mkdir()
    moved = 0
    removed = 0
    for instrument, days in written.items():
        target_dir = instrument_dir(out_dir, instrument)
        if not target_dir.exists():  # all new: one rename
            os.rename(instrument_dir(staging, instrument), target_dir)
            continue
        for day in sorted(days):
            target = partition_dir(out_dir, instrument, day)
            if target.exists():
                os.rename(target, trash / str(moved))
                moved += 1
            os.rename(partition_dir(staging, instrument, day), target)
        for day in sorted(existing.get(instrument, set()) - days):
            os.rename(partition_dir(out_dir, instrument, day), trash / str(moved))
            moved += 1
            removed += 1
    return removed


def export_delta(
    read: BarReader,
    instruments: list[str],
    start_us: int,
    end_us: int,
    lake: Any,
) -> ExportSummary:
    """Append the 1m bars of ``instruments`` in [start, end) to the Delta lake ``lake``
    (its ``bars_1m`` table, see ``sptrader.lake.layout``): one idempotent commit per
    chunk of CHUNK_DAYS, so a re-export (or one cut short and run again) leaves each
    bar once, in its newest version. ``files`` counts the commits. (``lake``: a
    sptrader.lake.location.Lake; deltalake is imported only here, not by every import.)"""
    from sptrader.lake.append import append_bars

    summary = ExportSummary()
    for instrument in instruments:
        count = 0
        for chunk_start, chunk_end in day_range(start_us, end_us, CHUNK_DAYS):
            frame = _with_flow(read(instrument, chunk_start, chunk_end))
            if frame.is_empty():
                continue
            append_bars(lake, frame.with_columns(pl.lit(instrument).alias("instrument")))
            summary.files += 1
            count += frame.height
            epoch = frame["ts"].dt.epoch("us")
            first, last = epoch.min(), epoch.max()
            summary.first_us = first if summary.first_us is None else min(summary.first_us, first)
            summary.last_us = last if summary.last_us is None else max(summary.last_us, last)
        summary.bars[instrument] = count
        summary.rows += count
    return summary


# --- import ------------------------------------------------------------------------------

REQUIRED_COLUMNS = ["ts", "open", "high", "low", "close", "volume"]
OPTIONAL_COLUMNS = ["trades", "instrument", "date", *ORDER_FLOW_COLUMNS]
PRICE_COLUMNS = ["open", "high", "low", "close", "volume"]
# Order flow may be null (unknown) in any row, or absent from a file.
FLOW_COLUMNS = ORDER_FLOW_COLUMNS
MAX_LISTED = 20
_EXTENSIONS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
_TIME_UNIT_US = {"ns": 1 / 1000, "us": 1, "ms": 1000}


@dataclass
class BadRow:
    where: str  # "line 7", "row index 5", with the file's relative path in a directory
    reason: str


@dataclass
class LoadedBars:
    """Valid bars (STORED_BAR_COLUMNS, unique by instrument and ts), or the bad rows."""

    bars: pl.DataFrame
    bad: list[BadRow]  # at most MAX_LISTED, in file order
    bad_count: int
    duplicates: int  # identical repeated rows, kept once


def detect_format(path: Path, given: str | None) -> str:
    if given is not None:
        return given
    if path.is_dir():
        found = {_EXTENSIONS[p.suffix.lower()] for p in _data_files_any(path)}
        if len(found) == 1:
            return found.pop()
        if not found:
            raise UsageError(f"{path} holds no .csv or .parquet files")
        raise UsageError(f"{path} holds both .csv and .parquet files: choose one with --format")
    try:
        return _EXTENSIONS[path.suffix.lower()]
    except KeyError:
        raise UsageError(
            f"cannot tell the format of {path.name} from its extension: give --format csv or parquet"
        ) from None


def _visible(path: Path, root: Path) -> bool:
    """Spark's rule: names starting with ``_`` or ``.`` (metadata, temporary files) are
    not data."""
    return not any(part.startswith(("_", ".")) for part in path.relative_to(root).parts)


def _data_files_any(root: Path) -> list[Path]:
    return sorted(
        path
        for path in root.rglob("*")
        if path.is_file() and path.suffix.lower() in _EXTENSIONS and _visible(path, root)
    )


def _data_files(root: Path, input_format: str) -> list[Path]:
    return [
        path for path in _data_files_any(root) if _EXTENSIONS[path.suffix.lower()] == input_format
    ]


def _hive_values(path: Path, root: Path | None) -> dict[str, str]:
    """``key=value`` directory names above ``path``, unescaped: those below ``root``, or
    for a single file the run of them directly above it."""
    if root is not None:
        parents = list(path.parent.relative_to(root).parts)
    else:
        parents = []
        for parent in path.resolve().parents:
            if "=" not in parent.name:
                break
            parents.insert(0, parent.name)
    values: dict[str, str] = {}
    for part in parents:
        key, sep, value = part.partition("=")
        if sep and key:
            values[key.strip().lower()] = unescape_partition_value(value)
    return values


def load_bars(path: Path, input_format: str | None, instrument: str | None) -> LoadedBars:
    """Read and check the bars in ``path`` (a file, or a directory of files).

    Columns (names case-insensitive): ``ts open high low close volume`` required;
    ``trades`` optional (0 when absent); ``buy_volume sell_volume`` optional (null when
    absent or empty: unknown); ``instrument`` optional when ``instrument`` is given
    (which then overrides it; a file of several instruments cannot be renamed to one)
    or when the path has an ``instrument=`` directory; ``date`` optional (a partition
    column: each row's ts must fall on that UTC date). Any other column is an error
    naming it.

    ``ts``: ISO 8601 (``2026-01-02T03:04:00Z``, ``2026-01-02 03:04``, ``...+01:00``, a
    date; without an offset it is UTC) or an epoch integer whose unit follows from its
    size (below 1e11 seconds, below 1e14 milliseconds, below 1e17 microseconds, else
    nanoseconds); in Parquet also timestamps (naive = UTC) and dates. It must be on a
    minute boundary (1m bars, labelled by their open time).

    Each row is checked: ts as above, open..volume finite numbers, low <= min(open,
    close), high >= max(open, close), volume >= 0, trades a whole number >= 0,
    buy_volume and sell_volume null or finite >= 0 with buy + sell <= volume,
    instrument ``FEED:SYMBOL`` (upper-cased). Rows repeating an (instrument, ts) with
    identical values are kept once; with different values they are bad rows (there is
    no telling which is right). Bad rows are located by CSV line (the header is line 1;
    a quoted value spanning lines would shift the count) or Parquet row index (0-based),
    prefixed by the file's path in a directory.
    """
    if not path.exists():
        raise UsageError(f"no such file: {path}")
    input_format = detect_format(path, input_format)
    if path.is_dir():
        root: Path | None = path
        files = _data_files(path, input_format)
        if not files:
            raise UsageError(f"{path} holds no .{input_format} files")
    else:
        root, files = None, [path]
    override = instrument
    goods, bads = [], []
    for group in _group_by_columns(files, input_format, root, override is not None).values():
        good, bad = _read_group(group, input_format, root, override)
        goods.append(good)
        bads.append(bad)
    good = pl.concat(goods, how="vertical")
    bad = pl.concat(bads, how="vertical")
    if good.is_empty() and bad.is_empty():
        raise UsageError(f"{path} holds no rows; nothing to import")
    if override is not None:
        _check_single_instrument(good, path)
    return _finish(good, bad, files, root, input_format)


@dataclass
class _FileGroup:
    files: list[Path]
    ids: list[int]  # index of each file in the sorted list of all files
    hive: list[dict[str, str]]  # each file's key=value directories
    columns: dict[str, str]  # normalized name -> name in the file
    dtypes: dict[str, pl.DataType]


def _group_by_columns(
    files: list[Path], input_format: str, root: Path | None, has_instrument: bool
) -> dict[tuple, _FileGroup]:
    """Files with the same header (names, order and types) are read together."""
    groups: dict[tuple, _FileGroup] = {}
    for index, file in enumerate(files):
        try:
            if input_format == "csv":
                schema = dict(pl.read_csv(file, n_rows=0, infer_schema=False).schema)
            else:
                schema = dict(pl.read_parquet_schema(file))
        except (pl.exceptions.PolarsError, OSError) as error:
            raise UsageError(
                f"cannot read {file} as {input_format}: {_first_line(error)}"
            ) from None
        columns: dict[str, str] = {}
        for original in schema:
            normalized = original.strip().lower()
            if normalized in columns:
                raise UsageError(f"{file}: column {normalized!r} appears twice")
            columns[normalized] = original
        hive = _hive_values(file, root)
        _check_columns(file, columns, hive, has_instrument)
        key = tuple((name, str(kind)) for name, kind in schema.items())
        group = groups.setdefault(
            key,
            _FileGroup([], [], [], columns, {name: schema[columns[name]] for name in columns}),
        )
        group.files.append(file)
        group.ids.append(index)
        group.hive.append(hive)
    return groups


def _check_columns(
    file: Path, columns: dict[str, str], hive: dict[str, str], has_instrument: bool
) -> None:
    missing = [name for name in REQUIRED_COLUMNS if name not in columns]
    unknown = [columns[name] for name in columns if name not in REQUIRED_COLUMNS + OPTIONAL_COLUMNS]
    unknown += [f"{key}= (directory)" for key in hive if key not in ("instrument", "date")]
    problems = []
    if missing:
        problems.append(f"missing column{'s' if len(missing) > 1 else ''} {', '.join(missing)}")
    if unknown:
        problems.append(
            f"unknown column{'s' if len(unknown) > 1 else ''} {', '.join(repr(name) for name in unknown)}"
        )
    if problems:
        raise UsageError(
            f"{file}: {'; '.join(problems)} (expected ts, open, high, low, close, volume;"
            " optional trades, buy_volume, sell_volume, instrument, date)"
        )
    if not has_instrument and "instrument" not in columns and "instrument" not in hive:
        raise UsageError(f"{file} has no instrument column: give --instrument NAME")
    # Directory values hold for the whole file: a bad one is the file's problem.
    if "instrument" in hive and not INSTRUMENT_RE.match(hive["instrument"].strip().upper()):
        raise UsageError(f"{file}: directory instrument={hive['instrument']} is not FEED:SYMBOL")
    if "date" in hive:
        try:
            date.fromisoformat(hive["date"].strip())
        except ValueError:
            raise UsageError(f"{file}: directory date={hive['date']} is not YYYY-MM-DD") from None


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


Check = tuple[pl.Expr, "pl.Expr | str"]
"""(true when the row is bad, why): the reason is only built for bad rows."""


def _read_group(
    group: _FileGroup, input_format: str, root: Path | None, override: str | None
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The group's good rows (``__file``, ``__row``, STORED_BAR_COLUMNS, ``__original``) and
    bad rows (``__file``, ``__row``, ``__reason``)."""
    paths = [str(file) for file in group.files]
    try:
        if input_format == "csv":
            raw = pl.scan_csv(paths, infer_schema=False, include_file_paths="__path").collect()
        else:
            raw = pl.scan_parquet(
                paths, include_file_paths="__path", hive_partitioning=False
            ).collect()
    except (pl.exceptions.PolarsError, OSError) as error:
        raise UsageError(f"cannot read {input_format}: {_first_line(error)}") from None
    raw = raw.rename({original: name for name, original in group.columns.items()})
    raw = _with_file_columns(raw, group, paths)
    first = group.files[0]
    dtypes = group.dtypes
    # Text is parsed up front, with a fast path for the common forms.
    if dtypes["ts"] == pl.String:
        value, off = _parse_ts_text(raw["ts"])
        raw = raw.with_columns(value.alias("__ts"), off.alias("__ts_off"))
    for name in PRICE_COLUMNS + [name for name in FLOW_COLUMNS if name in dtypes]:
        if dtypes[name] == pl.String:
            raw = raw.with_columns(_text_to_float(raw[name]).alias(f"__{name}"))
    if dtypes.get("trades") == pl.String:
        raw = raw.with_columns(_text_to_int(raw["trades"]).alias("__trades"))

    values: dict[str, pl.Expr] = {}
    checks: list[Check] = []
    values["__ts"], column_checks = _ts_expr(dtypes["ts"], first)
    checks += column_checks
    for name in PRICE_COLUMNS:
        values[f"__{name}"], column_checks = _number_expr(name, dtypes[name], first)
        checks += column_checks
    if "trades" in dtypes:
        values["__trades"], column_checks = _trades_expr(dtypes["trades"], first)
        checks += column_checks
    else:
        values["__trades"] = pl.lit(0, dtype=pl.Int64)
    for name in FLOW_COLUMNS:
        if name in dtypes:
            values[f"__{name}"], column_checks = _flow_expr(name, dtypes[name], first)
            checks += column_checks
        else:
            values[f"__{name}"] = pl.lit(None, dtype=pl.Float64)
    values["__instrument"] = _instrument_expr("instrument" in dtypes, override)
    staged = raw.with_columns(**values)
    checks += _instrument_checks(staged, "instrument" in dtypes, override)
    checks += [*_bar_checks(), *_date_checks("date" in dtypes)]
    staged = staged.with_columns(
        pl.any_horizontal([condition.fill_null(False) for condition, _ in checks]).alias("__bad")
    )
    bad = staged.filter(pl.col("__bad")).select(
        "__file",
        "__row",
        pl.concat_str(
            [_when(condition, message) for condition, message in checks],
            separator="; ",
            ignore_nulls=True,
        ).alias("__reason"),
    )
    original = (
        pl.col("__instrument") if override is None else _file_instrument("instrument" in dtypes)
    )
    good = staged.filter(~pl.col("__bad")).select(
        "__file",
        "__row",
        pl.col("__instrument").alias("instrument"),
        pl.col("__ts").cast(pl.Datetime("us")).alias("ts"),
        *[pl.col(f"__{name}").alias(name) for name in PRICE_COLUMNS],
        pl.col("__trades").alias("trades"),
        *[pl.col(f"__{name}").alias(name) for name in FLOW_COLUMNS],
        original.alias("__original"),
    )
    return good, bad


def _with_file_columns(raw: pl.DataFrame, group: _FileGroup, paths: list[str]) -> pl.DataFrame:
    """Replace ``__path`` by ``__file`` (index in all files), ``__row`` (0-based in its
    file) and the file's directory values: a file's rows are one run of ``__path``."""
    runs = raw["__path"].rle()
    lengths = runs.struct.field("len").to_list()
    where = {path: index for index, path in enumerate(paths)}
    positions = [where[path] for path in runs.struct.field("value").to_list()]
    run_id = raw["__path"].rle_id()
    starts = [total - length for total, length in zip(accumulate(lengths), lengths, strict=True)]
    hive = [group.hive[position] for position in positions]
    per_run = pl.DataFrame(
        {
            "__file": [group.ids[position] for position in positions],
            "__start": starts,
            "__hive_instrument": [values.get("instrument") for values in hive],
            "__hive_day": [
                date.fromisoformat(values["date"].strip()) if "date" in values else None
                for values in hive
            ],
        },
        schema={
            "__file": pl.Int64,
            "__start": pl.Int64,
            "__hive_instrument": pl.String,
            "__hive_day": pl.Date,
        },
    )
    gathered = per_run.select(pl.all().gather(run_id))
    return pl.concat([raw.drop("__path"), gathered], how="horizontal").with_columns(
        (pl.int_range(pl.len(), dtype=pl.Int64) - pl.col("__start")).alias("__row")
    )


def _when(condition: pl.Expr, message: pl.Expr | str) -> pl.Expr:
    text = pl.lit(message) if isinstance(message, str) else message
    return pl.when(condition).then(text).otherwise(pl.lit(None, dtype=pl.String))


def _shown(expr: pl.Expr) -> pl.Expr:
    return expr.cast(pl.String)


def _ts_expr(dtype: pl.DataType, file: Path) -> tuple[pl.Expr, list[Check]]:
    """ts as epoch microseconds (Int64, null when unusable) and its checks. Text was
    parsed into ``__ts`` and ``__ts_off`` already (``_parse_ts_text``)."""
    column = pl.col("ts")
    missing = column.is_null()
    if dtype == pl.String:
        value = pl.col("__ts")
        text = column.str.strip_chars()
        return value, [
            (missing, "ts missing"),
            (
                ~missing & value.is_null(),
                pl.format("ts '{}' is not ISO 8601 or an epoch number", text),
            ),
            (pl.col("__ts_off"), pl.format("ts {} is not on a minute boundary", text)),
        ]
    if isinstance(dtype, pl.Datetime):
        utc = (
            column.dt.convert_time_zone("UTC").dt.replace_time_zone(None)
            if dtype.time_zone
            else column
        )
        unit = dtype.time_unit or "us"
        value = utc.dt.cast_time_unit("us").dt.epoch("us")
        per_minute = int(US_PER_MINUTE / _TIME_UNIT_US[unit])
        off = utc.dt.epoch(unit) % per_minute != 0
    elif dtype == pl.Date:
        value = column.cast(pl.Datetime("us")).dt.epoch("us")
        off = pl.lit(False)
    elif dtype.is_integer():
        value, sub_us = _epoch_to_us(column.cast(pl.Int64))
        off = (value % US_PER_MINUTE != 0) | sub_us
    else:
        raise UsageError(
            f"{file}: column ts is {dtype}; expected timestamps, ISO 8601 text or epoch numbers"
        )
    return value, [
        (missing, "ts missing"),
        (~missing & off, pl.format("ts {} is not on a minute boundary", _shown(column))),
    ]


def _epoch_to_us(number: pl.Expr) -> tuple[pl.Expr, pl.Expr]:
    """Epoch integer -> microseconds, its unit by size; and "has sub-µs digits"."""
    size = number.abs()
    value = (
        pl.when(size < 10**11)
        .then(number * 1_000_000)
        .when(size < 10**14)
        .then(number * 1000)
        .when(size < 10**17)
        .then(number)
        .otherwise(number // 1000)
    )
    return value, (size >= 10**17) & (number % 1000 != 0)


_ISO_FORMATS = [
    ("%Y-%m-%d %H:%M:%S%.f%z", True),
    ("%Y-%m-%d %H:%M:%S%.f", False),
    ("%Y-%m-%d %H:%M%z", True),
    ("%Y-%m-%d %H:%M", False),
    ("%Y-%m-%d", False),
]


def _parse_ts_text(raw: pl.Series) -> tuple[pl.Series, pl.Series]:
    """ISO 8601 or epoch text -> epoch microseconds (null where neither), and whether
    each is off a minute boundary. The export's own form is parsed in one pass; only
    the other rows try the other forms."""
    value = raw.str.to_datetime(CSV_TS_FORMAT, strict=False, time_unit="us").dt.epoch("us")
    todo = value.is_null() & raw.is_not_null()
    off = (value % US_PER_MINUTE != 0).fill_null(False)
    if not todo.any():
        return value, off
    column = pl.col("text")
    is_epoch = column.str.contains(r"^[+-]?\d+$")
    epoch_us, sub_us = _epoch_to_us(column.cast(pl.Int64, strict=False))
    normal = (
        column.str.to_uppercase()
        .str.replace(r"Z$", "+00:00")
        .str.replace(r"^(\d{4}-\d\d-\d\d)T", "${1} ")
    )
    parsed = []
    for fmt, has_offset in _ISO_FORMATS:
        moment = normal.str.to_datetime(
            fmt, strict=False, time_unit="us", time_zone="UTC" if has_offset else None
        )
        if has_offset:
            moment = moment.dt.replace_time_zone(None)
        parsed.append(moment.dt.epoch("us"))
    found = (
        raw.filter(todo)
        .str.strip_chars()
        .to_frame("text")
        .with_columns(value=pl.when(is_epoch).then(epoch_us).otherwise(pl.coalesce(parsed)))
        .select(
            "value",
            # Sub-microsecond digits are cut by the parsers: they must not pass as whole
            # minutes.
            off=(pl.col("value") % US_PER_MINUTE != 0)
            | pl.when(is_epoch).then(sub_us).otherwise(column.str.contains(r"[.,]\d{6}\d*[1-9]")),
        )
    )
    positions = todo.arg_true()
    return (
        value.scatter(positions, found["value"]),
        off.scatter(positions, found["off"].fill_null(False)),
    )


def _text_to_float(raw: pl.Series) -> pl.Series:
    value = raw.cast(pl.Float64, strict=False)
    if value.null_count() > raw.null_count():  # maybe only padded: " 1.5"
        value = raw.str.strip_chars().cast(pl.Float64, strict=False)
    return value


def _text_to_int(raw: pl.Series) -> pl.Series:
    value = raw.cast(pl.Int64, strict=False)
    if value.null_count() > raw.null_count():  # maybe " 3" or "3.0"
        text = pl.col("text").str.strip_chars()
        value = (
            raw.to_frame("text")
            .select(
                pl.coalesce(
                    text.cast(pl.Int64, strict=False), _whole(text.cast(pl.Float64, strict=False))
                )
            )
            .to_series()
        )
    return value


def _whole(number: pl.Expr) -> pl.Expr:
    """A float that is a whole number (exactly representable), as Int64; else null."""
    fits = number.is_finite() & (number == number.floor()) & (number.abs() < 2.0**53)
    return pl.when(fits).then(number).cast(pl.Int64)


def _number_expr(name: str, dtype: pl.DataType, file: Path) -> tuple[pl.Expr, list[Check]]:
    column = pl.col(name)
    missing = column.is_null()
    checks: list[Check] = [(missing, f"{name} missing")]
    parsed = pl.col(f"__{name}")  # the value, once computed: checks run after
    if dtype == pl.String:
        value = parsed  # parsed up front
        checks.append(
            (
                ~missing & parsed.is_null(),
                pl.format(f"{name} '{{}}' is not a number", column.str.strip_chars()),
            )
        )
    elif dtype.is_numeric():
        value = column.cast(pl.Float64)
    else:
        raise UsageError(f"{file}: column {name} is {dtype}; expected numbers")
    checks.append((~parsed.is_finite(), pl.format(f"{name} {{}} is not finite", _shown(parsed))))
    return value, checks


def _flow_expr(name: str, dtype: pl.DataType, file: Path) -> tuple[pl.Expr, list[Check]]:
    """buy_volume / sell_volume: null (unknown) allowed, else a finite number >= 0."""
    column = pl.col(name)
    parsed = pl.col(f"__{name}")
    if dtype == pl.String:
        value = parsed  # parsed up front
        text = column.str.strip_chars()
        unreadable = (text != "") & parsed.is_null()
        checks: list[Check] = [(unreadable, pl.format(f"{name} '{{}}' is not a number", text))]
    elif dtype.is_numeric() or dtype == pl.Null:
        value = column.cast(pl.Float64)
        checks = []
    else:
        raise UsageError(f"{file}: column {name} is {dtype}; expected numbers")
    checks += [
        (~parsed.is_finite(), pl.format(f"{name} {{}} is not finite", _shown(parsed))),
        (parsed < 0, pl.format(f"{name} {{}} < 0", parsed)),
    ]
    return value, checks


def _trades_expr(dtype: pl.DataType, file: Path) -> tuple[pl.Expr, list[Check]]:
    column = pl.col("trades")
    missing = column.is_null()
    parsed = pl.col("__trades")
    if dtype == pl.String:
        value = parsed  # parsed up front
        shown = column.str.strip_chars()
    elif dtype.is_integer():
        value = column.cast(pl.Int64, strict=False)
        shown = column.cast(pl.String)
    elif dtype.is_float():
        value = _whole(column)
        shown = column.cast(pl.String)
    else:
        raise UsageError(f"{file}: column trades is {dtype}; expected whole numbers")
    return value, [
        (missing, "trades missing"),
        (~missing & parsed.is_null(), pl.format("trades '{}' is not a whole number", shown)),
        (parsed < 0, pl.format("trades {} < 0", parsed)),
    ]


def _file_instrument(in_file: bool) -> pl.Expr:
    """The instrument a row names: its ``instrument`` column, else its directory's."""
    if in_file:
        return pl.col("instrument").cast(pl.String).str.strip_chars().str.to_uppercase()
    return pl.col("__hive_instrument").str.strip_chars().str.to_uppercase()


def _instrument_expr(in_file: bool, override: str | None) -> pl.Expr:
    if override is not None:
        return pl.lit(override, dtype=pl.String)
    return _file_instrument(in_file)


def _instrument_checks(staged: pl.DataFrame, in_file: bool, override: str | None) -> list[Check]:
    """Directory values were checked per file; a column's values are checked once each."""
    if override is not None or not in_file:
        return []
    parsed = pl.col("__instrument")
    names = staged["__instrument"].drop_nulls().unique().to_list()
    invalid = [name for name in names if not INSTRUMENT_RE.match(name)]
    hive = pl.col("__hive_instrument")
    return [
        (pl.col("instrument").is_null(), "instrument missing"),
        (
            parsed.is_in(pl.lit(invalid, dtype=pl.List(pl.String)).first()),
            pl.format("instrument '{}' is not FEED:SYMBOL", pl.col("instrument")),
        ),
        (
            hive.is_not_null() & (parsed != hive.str.strip_chars().str.to_uppercase()),
            pl.format("instrument {} is not its directory's instrument={}", parsed, hive),
        ),
    ]


def _bar_checks() -> list[Check]:
    open_, high, low, close, volume = (pl.col(f"__{name}") for name in PRICE_COLUMNS)
    lowest = pl.min_horizontal(open_, close)
    highest = pl.max_horizontal(open_, close)
    # Known sides are part of the volume (a little float slack: they are sums too).
    sided = pl.sum_horizontal(*(pl.col(f"__{name}") for name in FLOW_COLUMNS))
    return [
        (low > lowest, pl.format("low {} > min(open, close) {}", low, lowest)),
        (high < highest, pl.format("high {} < max(open, close) {}", high, highest)),
        (volume < 0, pl.format("volume {} < 0", volume)),
        (
            sided > volume * (1 + 1e-9) + 1e-12,
            pl.format("buy_volume + sell_volume {} > volume {}", sided, volume),
        ),
    ]


def _date_checks(in_file: bool) -> list[Check]:
    """A ``date`` column (or directory): each row's ts must be on that UTC day."""
    ts_day = (pl.col("__ts") // US_PER_DAY).cast(pl.Int32).cast(pl.Date)
    checks: list[Check] = []
    if in_file:
        text = pl.col("date").cast(pl.String).str.strip_chars()
        day = text.str.slice(0, 10).str.to_date("%Y-%m-%d", strict=False)
        checks.append(
            (text.is_not_null() & day.is_null(), pl.format("date '{}' is not YYYY-MM-DD", text))
        )
    else:
        day = pl.col("__hive_day")
    checks.append((ts_day != day, pl.format("ts is on {}, not on its date {}", ts_day, day)))
    return checks


def _check_single_instrument(rows: pl.DataFrame, path: Path) -> None:
    """``--instrument`` renames the file's one instrument; it cannot merge several."""
    found = rows["__original"].drop_nulls().unique().sort().to_list()
    if len(found) > 1:
        shown = ", ".join(found[:3]) + (", ..." if len(found) > 3 else "")
        raise UsageError(
            f"{path} holds {len(found)} instruments ({shown}): --instrument would merge them"
            " into one; import without it"
        )


def _finish(
    good: pl.DataFrame,
    bad_rows: pl.DataFrame,
    files: list[Path],
    root: Path | None,
    input_format: str,
) -> LoadedBars:
    keys = ["instrument", "ts"]
    per_instrument = good.group_by("instrument").agg(pl.col("ts").n_unique(), pl.len())
    repeated = (per_instrument["ts"] != per_instrument["len"]).any()  # cheaper than unique()
    bars = good.unique(subset=keys, keep="first", maintain_order=True) if repeated else good
    conflicts = good.clear().with_columns(
        pl.lit(None, dtype=pl.Int64).alias("__first_file"),
        pl.lit(None, dtype=pl.Int64).alias("__first_row"),
    )
    if repeated:  # the same (instrument, ts) more than once: are they the same bar?
        conflicts = good.with_columns(
            pl.col("__file").first().over(keys).alias("__first_file"),
            pl.col("__row").first().over(keys).alias("__first_row"),
            pl.any_horizontal(
                *[
                    pl.col(name).first().over(keys).ne_missing(pl.col(name))
                    for name in [*PRICE_COLUMNS, "trades", *FLOW_COLUMNS]
                ]
            ).alias("__conflict"),
        ).filter(pl.col("__conflict"))
    bad = pl.concat(
        [
            bad_rows.with_columns(
                pl.lit(None, dtype=pl.Int64).alias("__first_file"),
                pl.lit(None, dtype=pl.Int64).alias("__first_row"),
            ),
            conflicts.select(
                "__file",
                "__row",
                pl.lit("", dtype=pl.String).alias("__reason"),
                "__first_file",
                "__first_row",
            ),
        ]
    ).sort("__file", "__row")
    if not bad.is_empty():
        listed = []
        for file_id, row, reason, first_file, first_row in bad.head(MAX_LISTED).iter_rows():
            if first_file is not None:
                reason = (
                    "same instrument and ts as"
                    f" {_where(files, root, input_format, first_file, first_row)}"
                    " but different values"
                )
            listed.append(BadRow(_where(files, root, input_format, file_id, row), reason))
        return LoadedBars(pl.DataFrame(schema=STORED_BAR_SCHEMA), listed, bad.height, 0)
    return LoadedBars(stored_bars(bars), [], 0, good.height - bars.height)


def _where(files: list[Path], root: Path | None, input_format: str, file_id: int, row: int) -> str:
    place = f"line {row + 2}" if input_format == "csv" else f"row index {row}"
    if root is None:
        return place
    return f"{files[file_id].relative_to(root)} {place}"


# --- import into the store ---------------------------------------------------------------


@dataclass
class ImportSummary:
    rows: int
    instruments: int
    first_us: int
    last_us: int
    coverage_recorded: bool


def import_bars(store: Store, bars: pl.DataFrame) -> ImportSummary:
    """Write ``bars`` (checked by ``load_bars``) in one transaction, then record each
    instrument's [first, last + 1 minute) as covered by "import" (if the store keeps
    coverage)."""
    if bars.is_empty():
        raise SptraderError("no bars to import")
    spans = (
        bars.group_by("instrument")
        .agg(
            pl.col("ts").min().dt.epoch("us").alias("first"),
            pl.col("ts").max().dt.epoch("us").alias("last"),
        )
        .sort("instrument")
    )
    store.upsert_bars(bars)
    add_coverage = getattr(store, "add_coverage", None)
    if add_coverage is not None:
        for instrument, first, last in spans.iter_rows():
            add_coverage(instrument, "1m", "import", first, last + US_PER_MINUTE)
    return ImportSummary(
        rows=bars.height,
        instruments=spans.height,
        first_us=int(spans["first"].min()),  # type: ignore[arg-type]
        last_us=int(spans["last"].max()),  # type: ignore[arg-type]
        coverage_recorded=add_coverage is not None,
    )


def iso(ts_us: int) -> str:
    return (datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=ts_us)).strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )
