"""The paper account's mark-to-market equity curve, from the fills and the stored bars.

One row per bucket of ``timeframe`` (multiples of its width since the Unix epoch, as
every rollup) that opens in [start, end), valued at the bucket's end:

- ``cash``: starting cash + realized P&L - fees of the fills before the bucket's end
  (``Ledger`` semantics: average cost, long and short);
- ``unrealized``: each open position marked at its instrument's last stored 1m close
  before the bucket's end (the close of the last 1m bar that opened in the bucket or
  before it); a position with no stored close is marked at its average price (0);
- ``exposure``: the open positions' gross notional at those marks;
- ``equity`` = cash + unrealized.

The fills are replayed once through a ``Ledger`` (fills are few: a row of state per
fill), then joined as of each bucket with polars ``join_asof``; the marks come from one
rollup of the 1m bars to the curve's timeframe (its close is the bucket's last 1m close)
plus each instrument's last close before the first bucket.

Blocking DuckDB work: from async code call these through a thread.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import polars as pl

from sptrader.broker import records
from sptrader.broker.ledger import Ledger
from sptrader.broker.orders import Fill
from sptrader.clock import now_us
from sptrader.errors import UsageError
from sptrader.models import US_PER_MINUTE, timeframe_minutes
from sptrader.store import Store
from sptrader.store.queries import bars_between_many

#: A curve longer than this many buckets is refused (ask for a wider timeframe).
MAX_BUCKETS = 200_000

COLUMNS = ("ts", "equity", "cash", "unrealized", "exposure")
SCHEMA = {
    "ts": pl.Datetime("us"),
    "equity": pl.Float64,
    "cash": pl.Float64,
    "unrealized": pl.Float64,
    "exposure": pl.Float64,
}


def empty_curve() -> pl.DataFrame:
    return pl.DataFrame(schema=SCHEMA)


def equity_curve(
    store: Store,
    starting_cash: float,
    start_us: int,
    end_us: int,
    timeframe: str = "1h",
    fills: Sequence[Fill] | None = None,
) -> pl.DataFrame:
    """The equity curve of the buckets opening in [start_us, end_us) (columns
    ``COLUMNS``; ``ts`` is the bucket's open). ``fills`` default to every stored fill
    (in time order)."""
    width = timeframe_minutes(timeframe) * US_PER_MINUTE
    first = start_us - start_us % width
    if end_us <= first:
        return empty_curve()
    count = -(-(end_us - first) // width)
    if count > MAX_BUCKETS:
        raise UsageError(
            f"{count:,} buckets of {timeframe} is too many (at most {MAX_BUCKETS:,}):"
            " use a wider timeframe or a shorter range"
        )
    if fills is None:
        fills = records.all_fills(store)
    grid = pl.DataFrame({"bucket": pl.int_range(first, first + count * width, width, eager=True)})

    # The ledger after each fill: the account's cash, and the touched position.
    ledger = Ledger(starting_cash)
    cash_rows: list[tuple[int, float]] = []
    position_rows: list[tuple[str, int, float, float]] = []
    for fill in sorted(fills, key=lambda fill: (fill.ts_us, fill.fill_id)):
        ledger.apply(fill)
        bucket = fill.ts_us - fill.ts_us % width
        position = ledger.positions[fill.instrument]
        qty = 0.0 if position.is_flat else position.qty
        cash_rows.append((bucket, ledger.cash()))
        position_rows.append((fill.instrument, bucket, qty, position.avg_price))

    cash = pl.DataFrame(cash_rows, schema={"bucket": pl.Int64, "cash": pl.Float64}, orient="row")
    # The state after a bucket's last fill is the one its end sees.
    cash = cash.unique("bucket", keep="last", maintain_order=True).sort("bucket")
    curve = grid.join_asof(cash, on="bucket", strategy="backward").with_columns(
        pl.col("cash").fill_null(float(starting_cash))
    )

    states = pl.DataFrame(
        position_rows,
        schema={"instrument": pl.String, "bucket": pl.Int64, "qty": pl.Float64, "avg": pl.Float64},
        orient="row",
    ).unique(["instrument", "bucket"], keep="last", maintain_order=True)
    instruments = sorted(states["instrument"].unique().to_list())
    if instruments:
        held = (
            grid.join(pl.DataFrame({"instrument": instruments}), how="cross")
            .sort("instrument", "bucket")
            .join_asof(
                states.sort("instrument", "bucket"),
                on="bucket",
                by="instrument",
                strategy="backward",
                check_sortedness=False,  # sorted by (instrument, bucket) above
            )
            .filter(pl.col("qty").is_not_null() & (pl.col("qty") != 0.0))
        )
        marks = _marks(store, instruments, timeframe, first, first + count * width)
        valued = (
            held.sort("instrument", "bucket")
            .join_asof(
                marks, on="bucket", by="instrument", strategy="backward", check_sortedness=False
            )
            .with_columns(pl.col("mark").fill_null(pl.col("avg")))
            .group_by("bucket")
            .agg(
                ((pl.col("mark") - pl.col("avg")) * pl.col("qty")).sum().alias("unrealized"),
                (pl.col("qty").abs() * pl.col("mark")).sum().alias("exposure"),
            )
        )
        curve = curve.join(valued, on="bucket", how="left")
    else:
        curve = curve.with_columns(
            pl.lit(None, pl.Float64).alias("unrealized"), pl.lit(None, pl.Float64).alias("exposure")
        )
    return (
        curve.with_columns(pl.col("unrealized", "exposure").fill_null(0.0))
        .with_columns(
            pl.col("bucket").cast(pl.Datetime("us")).alias("ts"),
            (pl.col("cash") + pl.col("unrealized")).alias("equity"),
        )
        .select(COLUMNS)
        .cast(SCHEMA)  # type: ignore[arg-type]
    )


def _marks(
    store: Store, instruments: list[str], timeframe: str, start_us: int, end_us: int
) -> pl.DataFrame:
    """(instrument, bucket, mark): each bucket's last 1m close, plus each instrument's last
    close before ``start_us`` as of the bucket before the first; sorted for join_asof."""
    bars = bars_between_many(store, instruments, timeframe, start_us, end_us)
    rolled = bars.select(
        pl.col("instrument"),
        pl.col("ts").cast(pl.Datetime("us")).cast(pl.Int64).alias("bucket"),
        pl.col("close").cast(pl.Float64).alias("mark"),
    )
    before = records.last_closes(store, instruments, start_us)
    seeds = pl.DataFrame(
        {
            "instrument": list(before),
            "bucket": [start_us - 1] * len(before),
            "mark": list(before.values()),
        },
        schema={"instrument": pl.String, "bucket": pl.Int64, "mark": pl.Float64},
    )
    return pl.concat([seeds, rolled]).sort("instrument", "bucket")


def curve_points(
    store: Store,
    starting_cash: float,
    start_us: int | None = None,
    end_us: int | None = None,
    timeframe: str = "1h",
    fills: Sequence[Fill] | None = None,
    *,
    now: int | None = None,
) -> list[dict[str, Any]]:
    """``equity_curve`` as plain JSON-able rows (``ts_us`` the bucket's open); the range
    defaults to the first fill's bucket up to now. No fills and no start: no rows."""
    timeframe_minutes(timeframe)  # a bad timeframe is an error even with no fills
    if fills is None:
        fills = records.all_fills(store)
    if start_us is None:
        if not fills:
            return []
        start_us = min(fill.ts_us for fill in fills)
    if end_us is None:
        end_us = (now_us() if now is None else now) + 1
    frame = equity_curve(store, starting_cash, start_us, end_us, timeframe, fills)
    return [
        {
            "ts_us": int(row["ts"]),
            "equity": row["equity"],
            "cash": row["cash"],
            "unrealized": row["unrealized"],
            "exposure": row["exposure"],
        }
        for row in frame.with_columns(pl.col("ts").cast(pl.Int64)).iter_rows(named=True)
    ]
