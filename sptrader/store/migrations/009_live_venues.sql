-- Live order routing (sptrader.broker.live, sptrader.venues): orders and fills of every
-- venue share the paper broker's tables, told apart by `venue` ('paper', 'binance',
-- 'oanda', 'ibkr', 'alpaca'). Every order has a client order id (recorded before a live
-- order is sent: the key the venue is asked about after a time-out); the venue's own ids
-- come back with its answer or its stream. A venue fill's `venue_fill_id` (its trade or
-- transaction id) is unique per venue: a fill seen twice (stream and reconciliation) is
-- stored once.
ALTER TABLE orders ADD COLUMN venue VARCHAR DEFAULT 'paper';
ALTER TABLE orders ADD COLUMN client_order_id VARCHAR DEFAULT '';
ALTER TABLE orders ADD COLUMN venue_order_id VARCHAR;
UPDATE orders SET client_order_id = 'paper-' || order_id;
ALTER TABLE fills ADD COLUMN venue VARCHAR DEFAULT 'paper';
ALTER TABLE fills ADD COLUMN venue_fill_id VARCHAR;

-- `sptrader halt [VENUE]` (or the daily loss limit, or stale data): new entries refused
-- and working orders cancelled until `sptrader resume`; a row per halted venue.
CREATE TABLE trading_halts (
    venue VARCHAR PRIMARY KEY,
    since TIMESTAMP NOT NULL,
    reason VARCHAR NOT NULL
);

-- Venue ids of instruments (IBKR's conids), looked up once and kept.
CREATE TABLE venue_symbols (
    venue VARCHAR NOT NULL,
    instrument VARCHAR NOT NULL,
    venue_id VARCHAR NOT NULL,
    PRIMARY KEY (venue, instrument)
);

-- What each reconciliation found: one row per difference (adopted, changed, mismatch).
CREATE TABLE reconciliations (
    venue VARCHAR NOT NULL,
    ts TIMESTAMP NOT NULL,
    kind VARCHAR NOT NULL, -- adopted_order | adopted_fill | order_changed | position_mismatch | order_missing
    detail VARCHAR NOT NULL
);
