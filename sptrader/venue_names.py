"""Where an order can go: the paper broker, then each ``[brokers.NAME]`` venue (in the
order of ``sptrader.config.BrokersConfig``, which is checked against this at import).
Its own module so the CLI's parser knows the names without importing the config."""

VENUES = ("paper", "binance", "oanda", "ibkr", "alpaca")
