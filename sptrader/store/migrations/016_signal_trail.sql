-- A signal's trailing stop (strategies' optional `trail` / `trail_pct` columns): the paper
-- broker trails the entry's stop-loss by it, as the backtester does. NULL: a fixed stop.
ALTER TABLE signals ADD COLUMN trail DOUBLE;
ALTER TABLE signals ADD COLUMN trail_pct DOUBLE;
