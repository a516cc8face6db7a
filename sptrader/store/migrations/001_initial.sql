-- 1m bars are the only stored timeframe; 5m..1d are rolled up from them in SQL.
-- No PRIMARY KEY: it costs 5-7x on ingest and 6x the file size. Idempotency comes from
-- the writer's delete-then-insert of each batch's keys, in one transaction.
CREATE TABLE bars_1m (
    instrument VARCHAR NOT NULL,
    ts TIMESTAMP NOT NULL,
    open DOUBLE NOT NULL,
    high DOUBLE NOT NULL,
    low DOUBLE NOT NULL,
    close DOUBLE NOT NULL,
    volume DOUBLE NOT NULL,
    trades BIGINT NOT NULL
);

-- Raw quotes and trades, kept only for the instruments store.keep_ticks names.
-- A quote has bid/ask (price/size NULL); a trade has price/size (bid/ask NULL).
CREATE TABLE ticks (
    instrument VARCHAR NOT NULL,
    ts TIMESTAMP NOT NULL,
    bid DOUBLE,
    ask DOUBLE,
    bid_size DOUBLE,
    ask_size DOUBLE,
    price DOUBLE,
    size DOUBLE
);

-- What the engine reported: service state changes, errors, drops.
CREATE TABLE service_events (
    ts TIMESTAMP NOT NULL,
    source VARCHAR NOT NULL,
    level VARCHAR NOT NULL,
    message VARCHAR NOT NULL
);
