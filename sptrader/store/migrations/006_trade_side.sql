-- Order flow (issue 12): the taker side of stored trades, and per bar the volume of
-- trades whose taker bought / sold. NULL where the source does not say (candles of
-- Coinbase, Kraken OHLC and OANDA, bars built from quotes, and everything stored
-- before this migration): adding a column with no default rewrites no stored row.
ALTER TABLE bars_1m ADD COLUMN buy_volume DOUBLE;
ALTER TABLE bars_1m ADD COLUMN sell_volume DOUBLE;

-- 1 the taker bought, -1 the taker sold; NULL unknown (and for quotes).
ALTER TABLE ticks ADD COLUMN side TINYINT;
