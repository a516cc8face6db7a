-- Alert rules added from the CLI or the TUI's Alerts screen (those in the config file
-- stay there), and which rules are paused (of either kind), kept across restarts.
CREATE TABLE alert_rules (
    name VARCHAR PRIMARY KEY,
    spec VARCHAR NOT NULL, -- the AlertRuleConfig fields, as JSON
    updated TIMESTAMP NOT NULL
);

CREATE TABLE alert_rules_paused (
    name VARCHAR PRIMARY KEY,
    since TIMESTAMP NOT NULL
);
