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
| anywhere | `w` `c` `v` `e` `p` `o` | focus watchlist, chart, services, events, positions, orders |
| anywhere | `b` / `s` | order ticket to buy / sell (the chart's instrument, or the selected position's or order's) |
| anywhere | `/` | search the feeds' instruments; `enter` adds one to the watchlist |
| anywhere | `d` | Data screen: stored coverage and gaps of every instrument |
| anywhere | `S` | Strategies screen: scanners, their signals and run lineage |
| anywhere | `J` | Journal screen: trades and notes per day, statistics, cumulative P&L |
| anywhere | `ctrl+p` | command palette (instruments, timeframes, services, backfills, data) |
| anywhere | `?` | this help |
| anywhere | `q` | quit: stops services, flushes the store |
| watchlist | click a row, arrows, `enter` | show the instrument in the chart |
| watchlist | `delete` | remove the selected instrument |
| chart | click a timeframe button | change the timeframe |
| chart | `←` / `→`, mouse wheel | pan back / forward in time (a quarter window; a wheel notch an eighth) |
| chart | `home` | oldest stored bar; again: a window further back (fetched from the feed) |
| chart | `end` | back to live |
| chart | `m` / `b` | toggle EMA20 + SMA50 / Bollinger(20, 2) over the candles |
| chart | `i` / `M` | toggle an RSI(14) panel (30/70 guides) / a MACD(12, 26, 9) panel |
| data | arrows, `f` | select an instrument; fill its gaps over the window |
| data | click a day of the heatmap | fill that day only (red / yellow: holes, · market closed) |
| data | `[` `]` (or `-` `+`) | fewer / more days (7 to 90) |
| data | `escape` or `d` | back to the main screen |
| strategies | `r` / `p` | run the selected scanner now / pause or resume it |
| strategies | `enter` or click on a signal | show its instrument in the chart |
| strategies | `escape` or `S` | back to the main screen |
| services | click a row, then Start / Stop / Restart | control that service |
| services | `s` / `x` / `r` | start / stop / restart the selected service |
| positions | click ✕ close, or `x` | flatten the position with a market order |
| orders | click ✕ cancel, or `x` | cancel the order |
| order ticket | `tab`, click; `enter` or Submit | move between fields; place the order (checked as you type) |
| order ticket | `escape` | close it without an order |
| journal | arrows, click a day | that day's notes, trades and statistics (*All days*: every one) |
| journal | `n`, then `enter` | write a note about the selected day (today for *All days*) |
| journal | `escape` or `J` | back to the main screen |

Prices flash green or red as they move. A dimmed row marked ⚠ is stale: its
feed is not delivering (reconnecting, silent or stopped), so its prices are old.
The watchlist is kept in the home (`watchlist.json`) across restarts. *Chg %* is since the first bar of the
UTC day. *Last* is the forming bar's close: trades for instruments that trade,
the bid for quote-only ones (FX, metals).

Paper trading: the strip above the positions shows equity, cash, exposure and the
day's P&L. The ticket sizes an order by quantity (`1000`, `10k`) or by the % of equity
lost at the stop-loss; a field's problem shows in red under it and keeps Submit
disabled. An order a risk limit refuses keeps the ticket open with the limit and its
numbers. Fills and rejections of orders placed elsewhere (scanners, stops, the CLI)
pop up as notifications. A focused pane's own keys come first: `s` starts a service
in the services pane.

History loads itself: when the chart shows (or is panned to) hours the store lacks,
it shows what is there, says *loading history…* and fetches the missing open market
hours from the instrument's feed in the background. A panned chart says so in its
title; live prices keep updating, and `end` brings the live window back.

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
