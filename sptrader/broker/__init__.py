"""Paper trading: orders, fills, positions, risk limits (and the fill model the backtester
shares).

- ``orders``: the Order and Fill records and the validation of an order request.
- ``fill_model``: where a market, limit or stop order fills, from quotes (live) or from
  bars (backtests), with slippage and fees.
- ``ledger``: positions and P&L derived from fills (average cost, long and short).
- ``risk``: the configured limits every entry passes, and sizing from a stop distance.
- ``book``: the in-memory order book and account: matching quotes against open orders.
- ``records``: the orders and fills tables (migration 005), and reads for readers
  without an engine.
- ``service``: the PaperBroker Service on the bus, persisting to DuckDB.
"""
