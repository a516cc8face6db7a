"""Strategies: typed parameters and one vectorised method from bars to signals, shared
by scanners, paper trading and backtests."""
