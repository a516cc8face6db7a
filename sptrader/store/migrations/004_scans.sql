-- Scanner lineage: every run of a scanner, the steps it took per instrument (with
-- durations, what went in and out, and errors with their traceback), and the signals
-- it raised. `sptrader runs` and `sptrader runs show ID` read these.
CREATE TABLE scan_runs (
    -- max + 1 under the store's write lock (a sequence would not survive `db compact`)
    run_id BIGINT PRIMARY KEY,
    scanner VARCHAR NOT NULL,
    -- schedule (a cron fire time), catchup (missed fire times coalesced), manual
    trigger VARCHAR NOT NULL,
    -- the fire time this run stands for (the newest one for a catch-up run)
    scheduled TIMESTAMP,
    started TIMESTAMP NOT NULL,
    duration_ms DOUBLE NOT NULL,
    status VARCHAR NOT NULL, -- ok | partial | failed
    error VARCHAR,
    instruments INTEGER NOT NULL DEFAULT 0,
    skipped INTEGER NOT NULL DEFAULT 0,
    signals INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE scan_steps (
    run_id BIGINT NOT NULL,
    step_no INTEGER NOT NULL,
    instrument VARCHAR,
    step VARCHAR NOT NULL, -- load_bars | indicators | evaluate | emit | skip
    started TIMESTAMP NOT NULL,
    duration_ms DOUBLE NOT NULL,
    input_summary VARCHAR,
    output_summary VARCHAR,
    error VARCHAR
);

CREATE TABLE signals (
    run_id BIGINT NOT NULL,
    scanner VARCHAR NOT NULL,
    instrument VARCHAR NOT NULL,
    ts TIMESTAMP NOT NULL, -- the closed bar the signal was computed on (its open time)
    side VARCHAR NOT NULL,
    strength DOUBLE,
    reason VARCHAR,
    stop DOUBLE,
    target DOUBLE,
    created TIMESTAMP NOT NULL
);
