-- Order realism (sptrader.broker.realism): a trailing stop-loss trails by a price distance
-- (`trail`) or a percentage (`trail_pct`) of the best price since it was placed; its
-- `price` is the current level. An entry's pair is what its stop-loss gets. NULL: fixed.
ALTER TABLE orders ADD COLUMN trail DOUBLE;
ALTER TABLE orders ADD COLUMN trail_pct DOUBLE;
