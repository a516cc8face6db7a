-- Outcome labels (sptrader.scanners.labels): for every signal a scanner emitted, once
-- its horizon has closed, whether it reached its target, its stop or timed out, with
-- the bars it took, its excursions and its return. Keyed like the signal (a signal
-- raised again by a later run on the same bar is labelled once).
CREATE TABLE signal_labels (
    scanner VARCHAR NOT NULL,
    instrument VARCHAR NOT NULL,
    ts TIMESTAMP NOT NULL, -- the signal's bar (its open time)
    side VARCHAR NOT NULL, -- buy | sell
    run_id BIGINT NOT NULL, -- the run that raised it first
    label VARCHAR NOT NULL, -- target | stop (both in one 1m bar: stop) | timeout
    bars INTEGER NOT NULL, -- bars of the scanner's timeframe held, the entry's first
    mfe_pct DOUBLE NOT NULL, -- the most it was in profit while held, % of the entry
    mae_pct DOUBLE NOT NULL, -- the most it was in loss while held, % of the entry
    return_pct DOUBLE NOT NULL,
    entry_ts TIMESTAMP NOT NULL, -- the next 1m bar's open, as the backtester fills
    entry_price DOUBLE NOT NULL,
    stop DOUBLE NOT NULL,
    target DOUBLE NOT NULL,
    exit_ts TIMESTAMP NOT NULL,
    exit_price DOUBLE NOT NULL,
    labelled TIMESTAMP NOT NULL,
    PRIMARY KEY (scanner, instrument, ts, side)
);
