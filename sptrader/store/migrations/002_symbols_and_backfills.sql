-- Each feed's instrument list, cached for search and validation (refreshed after a TTL).
CREATE TABLE symbols (
    feed VARCHAR NOT NULL,
    instrument VARCHAR NOT NULL,
    description VARCHAR NOT NULL,
    kind VARCHAR NOT NULL,
    base VARCHAR NOT NULL,
    quote VARCHAR NOT NULL
);

CREATE TABLE symbol_lists (
    feed VARCHAR NOT NULL,
    fetched_at TIMESTAMP NOT NULL,
    count BIGINT NOT NULL
);

-- History ranges a backfill finished, so a rerun skips them (markets closed in a range
-- leave no bars, so the bars themselves cannot say a range is done).
CREATE TABLE backfill_ranges (
    instrument VARCHAR NOT NULL,
    start_ts TIMESTAMP NOT NULL,
    end_ts TIMESTAMP NOT NULL,
    rows BIGINT NOT NULL,
    done_at TIMESTAMP NOT NULL
);
