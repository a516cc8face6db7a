-- Alerts (sptrader.alerting): every notice an alert rule (or a report, or the daemon)
-- sent, with the channels it went to; the alerts screen and `sptrader alerts history`
-- read it.
CREATE TABLE alert_history (
    ts TIMESTAMP NOT NULL,
    rule VARCHAR NOT NULL, -- the rule's name ('' for reports and system notices)
    kind VARCHAR NOT NULL, -- price_cross, order, halt, report, daemon ...
    title VARCHAR NOT NULL,
    text VARCHAR NOT NULL,
    channels VARCHAR NOT NULL, -- comma-separated: tui,webhooks,telegram,desktop
    data VARCHAR NOT NULL DEFAULT '{}' -- JSON details
);
