-- Paper broker (sptrader.broker): every order with its latest state, every fill, and the
-- trader's journal notes. Positions and P&L are derived from `fills`; nothing else about
-- the account is stored. Ids are max + 1, taken when the broker loads its state (a
-- sequence would not survive `db compact`).
CREATE TABLE orders (
    order_id BIGINT PRIMARY KEY,
    instrument VARCHAR NOT NULL,
    side VARCHAR NOT NULL, -- buy | sell
    qty DOUBLE NOT NULL,
    type VARCHAR NOT NULL, -- market | limit | stop
    price DOUBLE, -- the limit price or the stop's trigger; NULL for market orders
    tif VARCHAR NOT NULL, -- gtc | day
    created TIMESTAMP NOT NULL,
    sl DOUBLE, -- attached stop-loss (entries)
    tp DOUBLE, -- attached take-profit (entries)
    role VARCHAR NOT NULL, -- entry | sl | tp | close
    parent_id BIGINT, -- the entry of a stop-loss or take-profit
    source VARCHAR NOT NULL, -- manual | close | scanner:NAME
    status VARCHAR NOT NULL, -- open | filled | cancelled | rejected | expired
    filled_qty DOUBLE NOT NULL DEFAULT 0,
    avg_price DOUBLE,
    updated TIMESTAMP NOT NULL,
    reason VARCHAR NOT NULL DEFAULT '', -- why it was rejected, cancelled or expired
    expires TIMESTAMP -- a day order's end (the next 00:00 UTC); NULL for gtc
);

CREATE TABLE fills (
    fill_id BIGINT PRIMARY KEY,
    order_id BIGINT NOT NULL,
    ts TIMESTAMP NOT NULL,
    instrument VARCHAR NOT NULL,
    side VARCHAR NOT NULL,
    qty DOUBLE NOT NULL,
    price DOUBLE NOT NULL,
    fee DOUBLE NOT NULL DEFAULT 0
);

CREATE TABLE journal_notes (
    note_id BIGINT PRIMARY KEY,
    day DATE NOT NULL, -- the UTC trading day the note is about
    created TIMESTAMP NOT NULL,
    text VARCHAR NOT NULL
);
