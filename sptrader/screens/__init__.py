"""The control center's panes and screens, one per module; styles in app.tcss."""

from sptrader.screens.backfills import BackfillsPane
from sptrader.screens.chart import ChartPane
from sptrader.screens.data import CoverageTable, DataScreen
from sptrader.screens.error import ErrorScreen
from sptrader.screens.event_log import EventLogPane
from sptrader.screens.help import HelpScreen
from sptrader.screens.services import ServicesPane
from sptrader.screens.strategies import StrategiesScreen
from sptrader.screens.symbol_search import SymbolSearchScreen
from sptrader.screens.watchlist import WatchlistPane

__all__ = [
    "BackfillsPane",
    "ChartPane",
    "CoverageTable",
    "DataScreen",
    "ErrorScreen",
    "EventLogPane",
    "HelpScreen",
    "ServicesPane",
    "StrategiesScreen",
    "SymbolSearchScreen",
    "WatchlistPane",
]
