"""What the benchmarks share: the 20-instrument SIM watchlist (the simulator's known
symbols plus three made-up equities, which get stable generated specs)."""

from __future__ import annotations

SYMBOLS = [
    "EURUSD", "GBPUSD", "USDJPY", "AUDUSD", "USDCHF", "USDCAD", "XAUUSD", "XAGUSD",
    "BTCUSD", "ETHUSD", "SOLUSD", "SPY", "QQQ", "AAPL", "MSFT", "NVDA", "TSLA",
    "AMZN", "META", "GOOG",
]  # fmt: skip
INSTRUMENTS = [f"SIM:{symbol}" for symbol in SYMBOLS]
