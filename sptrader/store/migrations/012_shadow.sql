-- Shadow testing (sptrader.scanners.shadow): the hypothetical signals of a scanner's
-- parameter variations ([[scanners.shadow]]) and of its live parameters (variation
-- 'live'), evaluated on the same bars at each run, and each one's outcome once known.
-- `sptrader shadow report` and the Strategies screen compare them.
CREATE TABLE shadow_signals (
    scanner VARCHAR NOT NULL,
    variation VARCHAR NOT NULL, -- 'live': the scanner's own params
    params VARCHAR NOT NULL, -- the params evaluated (the variation's over the scanner's), JSON
    instrument VARCHAR NOT NULL,
    ts TIMESTAMP NOT NULL, -- the closed bar the signal was computed on (its open time)
    side VARCHAR NOT NULL, -- buy | sell
    timeframe VARCHAR NOT NULL, -- the scanner's, which the horizon counts in
    horizon_bars INTEGER NOT NULL, -- timeout after this many bars (the entry bar first)
    target_pct DOUBLE NOT NULL, -- for a signal without its own target / stop
    stop_pct DOUBLE NOT NULL,
    run_id BIGINT NOT NULL, -- the run that raised it first
    created TIMESTAMP NOT NULL,
    -- Filled in once the next bar is stored: its open is the entry (as the backtester
    -- fills), and the signal's own stop / target, else the percentages from the entry.
    entry_ts TIMESTAMP,
    entry_price DOUBLE,
    stop DOUBLE,
    target DOUBLE,
    -- NULL while pending: target | stop (reached first; both in one 1m bar: stop) |
    -- timeout (the horizon closed with neither: out at its last close).
    outcome VARCHAR,
    exit_ts TIMESTAMP,
    exit_price DOUBLE,
    bars_held INTEGER,
    return_pct DOUBLE,
    -- A later run on the same bar (run now after a scheduled run) records it once.
    PRIMARY KEY (scanner, variation, instrument, ts, side)
);
