"""Column layouts of bars, ticks and fills: the one definition that feeds, the bar
builder, the store, the API, export/import, the paper broker and backtests share (it
imports nothing of SPtrader's, so a feed or a client can use it without importing the
store).

Bars:

- ``BAR_SCHEMA`` / ``BAR_COLUMNS``: the OHLCV bar every source gives (what a feed's
  ``history`` returns at least).
- ``ORDER_FLOW_SCHEMA`` / ``ORDER_FLOW_COLUMNS``: ``buy_volume`` and ``sell_volume``, the
  volume of trades whose taker bought / sold. NULL where the source does not say
  (Coinbase, Kraken OHLC and OANDA candles, bars built from quotes, bars stored before
  migration 006); known sides only are summed, so buy + sell <= volume.
- ``STORED_BAR_SCHEMA`` / ``STORED_BAR_COLUMNS``: both, the layout of ``bars_1m``;
  :func:`stored_bars` brings any bar frame into it (missing order-flow columns NULL).
- ``CANDLE_SCHEMA`` / ``CANDLE_COLUMNS``: one instrument's bars as the store's queries
  and the API's ``candles`` give them: the stored layout without ``instrument``.

Ticks: ``TICK_SCHEMA`` / ``TICK_COLUMNS`` are a quote's or trade's values (what
Dukascopy's tick history gives); ``STORED_TICK_SCHEMA`` adds ``side`` (1 taker bought,
-1 taker sold, NULL unknown or a quote), the layout of ``ticks``: see
:func:`stored_ticks`.

Fills: ``FILL_SCHEMA`` / ``FILL_COLUMNS`` are a paper fill's values in the order of
:class:`sptrader.broker.orders.Fill` (times as integer µs): the backtest's fills, the
journal's, and what :func:`sptrader.broker.performance.round_trips` reads. The ``fills`` table
holds the same values in its own column order (see sptrader.broker.records).
"""

from __future__ import annotations

from typing import Any

import polars as pl

BAR_SCHEMA: dict[str, Any] = {
    "instrument": pl.String,
    "ts": pl.Datetime("us"),
    "open": pl.Float64,
    "high": pl.Float64,
    "low": pl.Float64,
    "close": pl.Float64,
    "volume": pl.Float64,
    "trades": pl.Int64,
}
BAR_COLUMNS = list(BAR_SCHEMA)

ORDER_FLOW_SCHEMA: dict[str, Any] = {"buy_volume": pl.Float64, "sell_volume": pl.Float64}
ORDER_FLOW_COLUMNS = list(ORDER_FLOW_SCHEMA)

STORED_BAR_SCHEMA: dict[str, Any] = {**BAR_SCHEMA, **ORDER_FLOW_SCHEMA}
STORED_BAR_COLUMNS = list(STORED_BAR_SCHEMA)

CANDLE_SCHEMA: dict[str, Any] = {
    name: kind for name, kind in STORED_BAR_SCHEMA.items() if name != "instrument"
}
CANDLE_COLUMNS = list(CANDLE_SCHEMA)

TICK_SCHEMA: dict[str, Any] = {
    "instrument": pl.String,
    "ts": pl.Datetime("us"),
    "bid": pl.Float64,
    "ask": pl.Float64,
    "bid_size": pl.Float64,
    "ask_size": pl.Float64,
    "price": pl.Float64,
    "size": pl.Float64,
}
TICK_COLUMNS = list(TICK_SCHEMA)

STORED_TICK_SCHEMA: dict[str, Any] = {**TICK_SCHEMA, "side": pl.Int8}
STORED_TICK_COLUMNS = list(STORED_TICK_SCHEMA)

FILL_SCHEMA: dict[str, Any] = {
    "fill_id": pl.Int64,
    "order_id": pl.Int64,
    "instrument": pl.String,
    "side": pl.String,  # buy / sell
    "qty": pl.Float64,  # positive
    "price": pl.Float64,
    "fee": pl.Float64,
    "ts_us": pl.Int64,
    "venue": pl.String,  # paper (every backtest fill), or the live venue
    "venue_fill_id": pl.String,  # the venue's trade id (NULL for paper)
}
FILL_COLUMNS = list(FILL_SCHEMA)


def _with_nulls(frame: pl.DataFrame, schema: dict[str, Any]) -> pl.DataFrame:
    missing = [
        pl.lit(None, dtype=kind).alias(name)
        for name, kind in schema.items()
        if name not in frame.columns
    ]
    return frame.with_columns(missing) if missing else frame


def stored_bars(frame: pl.DataFrame) -> pl.DataFrame:
    """``frame`` (at least BAR_COLUMNS) in the ``bars_1m`` layout: STORED_BAR_COLUMNS in
    order and type, order-flow columns it lacks NULL, other columns dropped."""
    return _with_nulls(frame, ORDER_FLOW_SCHEMA).select(STORED_BAR_COLUMNS).cast(STORED_BAR_SCHEMA)


def stored_ticks(frame: pl.DataFrame) -> pl.DataFrame:
    """``frame`` (at least TICK_COLUMNS) in the ``ticks`` layout: ``side`` NULL if it
    has none (0, SIDE_UNKNOWN, is stored as NULL too)."""
    frame = _with_nulls(frame, {"side": pl.Int8})
    side = pl.col("side").cast(pl.Int8)
    return frame.select(*TICK_COLUMNS, pl.when(side != 0).then(side).alias("side")).cast(
        STORED_TICK_SCHEMA
    )
