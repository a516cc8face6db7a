"""The API an engine's host serves (the daemon today): ``server`` (sockets, the hello,
subscriptions) and ``methods`` (the table of methods, each answered through an
EngineClient). What clients use to reach it is in sptrader.client."""
