-- Outcome labels of shadow variations' signals (sptrader.scanners.labels): the scanner's
-- label settings (label_bars, label_target_pct, label_stop_pct) applied to each
-- variation's signal as to its live ones, stored once the horizon has closed. Keyed like
-- the shadow signal (the 'live' variation is the scanner's own: signal_labels).
CREATE TABLE shadow_labels (
    scanner VARCHAR NOT NULL,
    variation VARCHAR NOT NULL,
    instrument VARCHAR NOT NULL,
    ts TIMESTAMP NOT NULL, -- the signal's bar (its open time)
    side VARCHAR NOT NULL, -- buy | sell
    run_id BIGINT NOT NULL, -- the run that raised it first
    label VARCHAR NOT NULL, -- target | stop (both in one 1m bar: stop) | timeout
    bars INTEGER NOT NULL,
    mfe_pct DOUBLE NOT NULL,
    mae_pct DOUBLE NOT NULL,
    return_pct DOUBLE NOT NULL,
    entry_ts TIMESTAMP NOT NULL,
    entry_price DOUBLE NOT NULL,
    stop DOUBLE NOT NULL,
    target DOUBLE NOT NULL,
    exit_ts TIMESTAMP NOT NULL,
    exit_price DOUBLE NOT NULL,
    labelled TIMESTAMP NOT NULL,
    PRIMARY KEY (scanner, variation, instrument, ts, side)
);
