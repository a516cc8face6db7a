"""SPtrader: a terminal control center for traders."""

__version__ = "0.1.0"
