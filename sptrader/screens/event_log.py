"""Events pane: what the engine reports (service state changes, errors, drops).

Lines wrap at the pane's width (a narrow terminal cuts nothing off), continued under the
message rather than under the clock."""

from __future__ import annotations

from datetime import UTC, datetime

from rich.text import Text
from textual.widgets import RichLog

from sptrader.models import EngineLogged, EventsDropped

LEVEL_STYLES = {
    "DEBUG": "dim",
    "INFO": "",
    "WARNING": "yellow",
    "ERROR": "bold red",
    "CRITICAL": "bold red",
}


class EventLogPane(RichLog):
    def __init__(self, **kwargs) -> None:
        # min_width: RichLog renders at least this wide, and would cut a narrow pane's
        # lines instead of wrapping them.
        super().__init__(
            max_lines=2000, wrap=True, min_width=20, markup=False, highlight=False, **kwargs
        )
        self.border_title = "Events"
        self.lines_written = 0

    def add(self, events: list[EngineLogged | EventsDropped]) -> None:
        for event in events:
            clock = datetime.fromtimestamp(event.ts_us / 1e6, tz=UTC).strftime("%H:%M:%S")
            if isinstance(event, EventsDropped):
                continue  # the engine also logs drops as a warning; show it once
            line = Text.assemble(
                (clock + " ", "dim"),
                (f"{event.level:<7} ", LEVEL_STYLES.get(event.level, "")),
                (f"{event.source}: ", "bold"),
                event.message,
            )
            self.write(line)
            self.lines_written += 1
