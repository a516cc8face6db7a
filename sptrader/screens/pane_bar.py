"""The pane bar of a medium or narrow terminal: which of the panes that take turns under
the watchlist and chart is shown, each a click (or its key) away.

From 160 columns every pane has its own place and the bar is hidden (app.tcss).
"""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text
from textual.events import Click
from textual.message import Message
from textual.widgets import Static

#: The panes that take turns, the id of the widget a key focuses in each, and its key
#: in the main screen's bindings (the label shows the key the keymap gives it).
TURN_PANES: dict[str, str] = {
    "positions": "positions-table",
    "orders": "orders-table",
    "events": "events",
    "services": "services-table",
}
PANE_LABELS = {
    "positions": "Positions",
    "orders": "Orders",
    "events": "Events",
    "services": "Services",
}


class PaneBar(Static):
    """One line of tabs: ``p Positions │ o Orders │ e Events │ v Services``."""

    @dataclass
    class PaneChosen(Message):
        pane: str

    def __init__(self, keys: dict[str, str], **kwargs) -> None:
        super().__init__("", **kwargs)
        #: pane -> the key shown beside its label.
        self.keys = keys
        self.current = "positions"
        #: pane -> its (start, end) cell columns in the bar, for clicks.
        self._spans: dict[str, tuple[int, int]] = {}

    def on_mount(self) -> None:
        self._paint()

    def show_pane(self, pane: str) -> None:
        if pane != self.current:
            self.current = pane
            self._paint()

    def _paint(self) -> None:
        text = Text(no_wrap=True, overflow="crop")
        self._spans.clear()
        for index, pane in enumerate(TURN_PANES):
            if index:
                text.append(" │ ", style="dim")
            start = text.cell_len
            current = pane == self.current
            text.append(f" {self.keys.get(pane, '')} ", style="bold" if current else "dim")
            text.append(
                f"{PANE_LABELS[pane]} ", style="bold reverse" if current else "underline"
            )
            self._spans[pane] = (start, text.cell_len)
        self.update(text)

    def pane_at(self, x: int) -> str | None:
        for pane, (start, end) in self._spans.items():
            if start <= x < end:
                return pane
        return None

    def on_click(self, event: Click) -> None:
        pane = self.pane_at(event.x)
        if pane is not None:
            event.stop()
            self.post_message(self.PaneChosen(pane))
