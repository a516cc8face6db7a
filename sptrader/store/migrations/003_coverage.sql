-- What is stored, as merged time ranges per instrument, timeframe and source (a feed's
-- name, or "import"): "complete from A to B" even where a quiet market left no bar.
-- Gaps are the market's open hours that no range covers.
CREATE TABLE coverage (
    instrument VARCHAR NOT NULL,
    timeframe VARCHAR NOT NULL,
    source VARCHAR NOT NULL,
    start_ts TIMESTAMP NOT NULL,
    end_ts TIMESTAMP NOT NULL
);

-- Stores from before coverage: every run of consecutive stored minutes is covered...
INSERT INTO coverage
SELECT instrument, '1m', lower(split_part(instrument, ':', 1)), min(ts), max(ts) + INTERVAL 1 MINUTE
FROM (
    SELECT instrument, ts,
           ts - to_minutes(row_number() OVER (PARTITION BY instrument ORDER BY ts)) AS run
    FROM bars_1m
)
GROUP BY instrument, run;

-- ... and so is every range a backfill finished (closed hours included).
INSERT INTO coverage
SELECT instrument, '1m', lower(split_part(instrument, ':', 1)), start_ts, end_ts
FROM backfill_ranges;

DROP TABLE backfill_ranges;
