"""Backtesting: a strategy over stored bars with the paper broker's fill model and risk
limits (``engine``), the report (``report``) and parameter sweeps (``sweep``).
``sptrader backtest`` (sptrader.commands.backtest) loads the bars and runs them."""

from sptrader.backtest.engine import TRADE_COLUMNS, BacktestResult, run_backtest

__all__ = ["TRADE_COLUMNS", "BacktestResult", "run_backtest"]
