-- Minutes whose stored bars are known to be short: trades were proven lost (a hole in
-- the venue's trade ids) or a stream joined mid-minute. Each row is owed work: the
-- range is fetched again from the venue's history until that succeeds, and is not
-- covered until then. Kept here so a restart (or kill -9) does not forget it.
CREATE TABLE owed_refetch (
    instrument VARCHAR NOT NULL,
    start_ts TIMESTAMP NOT NULL,
    end_ts TIMESTAMP NOT NULL,
    reason VARCHAR NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_try TIMESTAMP NOT NULL,
    last_error VARCHAR NOT NULL DEFAULT '',
    created TIMESTAMP NOT NULL
);
