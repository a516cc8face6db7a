"""Running backfills, one line each under the services pane (hidden when none)."""

from __future__ import annotations

import time

from rich.text import Text
from textual.widgets import Static

from sptrader.models import BackfillProgressed

BAR_WIDTH = 16
# A finished backfill's line stays this long, so its outcome can be read.
LINGER_S = 15.0


class BackfillsPane(Static):
    def __init__(self, **kwargs) -> None:
        super().__init__("", **kwargs)
        self.progress: dict[str, BackfillProgressed] = {}
        self._finished_at: dict[str, float] = {}
        self.border_title = "Backfills"
        self.display = False

    def apply(self, events: list[BackfillProgressed]) -> None:
        now = time.monotonic()
        for event in events:
            self.progress[event.instrument] = event
            if event.state != "running":
                self._finished_at[event.instrument] = now
            else:
                self._finished_at.pop(event.instrument, None)
        self.refresh_lines()

    def refresh_lines(self) -> None:
        now = time.monotonic()
        for name, finished in list(self._finished_at.items()):
            if now - finished > LINGER_S:
                del self._finished_at[name]
                del self.progress[name]
        self.display = bool(self.progress)
        text = Text()
        for index, event in enumerate(self.progress.values()):
            if index:
                text.append("\n")
            text.append_text(_line(event))
        self.update(text)


def _line(event: BackfillProgressed) -> Text:
    share = event.done / event.total if event.total else 1.0
    filled = round(share * BAR_WIDTH)
    line = Text(f"⇣ {event.instrument:<18} ")
    line.append("█" * filled, style="green" if event.state != "failed" else "red")
    line.append("░" * (BAR_WIDTH - filled), style="dim")
    line.append(f" {event.done}/{event.total} · {event.rows:,} bars")
    if event.state == "running" and event.done > event.skipped:
        per_range = event.elapsed_s / (event.done - event.skipped)
        line.append(f" · ETA {per_range * (event.total - event.done):.0f}s", style="dim")
    elif event.state == "done":
        line.append(" · done", style="green")
    elif event.state == "failed":
        line.append(f" · failed: {event.message}", style="red")
    return line
