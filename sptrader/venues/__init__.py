"""Live order routing, one module per venue behind ``base.Venue``: ``binance`` (spot,
signed REST + the WebSocket API's user data stream), ``oanda`` (v20), ``ibkr`` (the Client
Portal Web API gateway), ``alpaca`` (the trading API). ``registry`` maps a
``[brokers.NAME]`` section to its class. The live broker (``sptrader.broker.live``) keeps
the account: venues only speak their wire protocol."""
