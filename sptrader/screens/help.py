"""The ``?`` help screen: keys and mouse use of every pane."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Markdown

HELP = """\
# SPtrader — keys and mouse

| Where | Key / mouse | Does |
|---|---|---|
| anywhere | `1` … `6` | chart timeframe 1m, 5m, 15m, 1h, 4h, 1d |
| anywhere | `w` `c` `v` `e` | focus watchlist, chart, services, events |
| anywhere | `/` | search the feeds' instruments; `enter` adds one to the watchlist |
| anywhere | `ctrl+p` | command palette (instruments, timeframes, services, backfills) |
| anywhere | `?` | this help |
| anywhere | `q` | quit: stops services, flushes the store |
| watchlist | click a row, arrows, `enter` | show the instrument in the chart |
| watchlist | `delete` | remove the selected instrument |
| chart | click a timeframe button | change the timeframe |
| services | click a row, then Start / Stop / Restart | control that service |
| services | `s` / `x` / `r` | start / stop / restart the selected service |

Prices flash green or red as they move. A dimmed row marked ⚠ is stale: its
feed is not delivering (reconnecting, silent or stopped), so its prices are old.
The watchlist is kept in the home (`watchlist.json`) across restarts. *Chg %* is since the first bar of the
UTC day. *Last* is the forming bar's close: trades for instruments that trade,
the bid for quote-only ones (FX, metals).

Keys can be remapped in the `[keymap]` table of `config.toml`
(binding id = keys, e.g. `timeframe-1h = "h"`).

Press `escape` or `?` to close.
"""


class HelpScreen(ModalScreen[None]):
    BINDINGS = [
        Binding("escape", "dismiss", "Close", id="help-close"),
        Binding("question_mark", "dismiss", "Close", show=False),
        Binding("q", "app.quit", "Quit", id="help-quit"),
    ]

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help-body"):
            yield Markdown(HELP)
