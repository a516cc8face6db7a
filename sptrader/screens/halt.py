"""The kill switch's confirmation (``ctrl+k``): halt every venue, or lift a halt.

A modal asks before anything happens: Halt (focused, so ``enter`` confirms) cancels the
working orders of every venue and refuses new entries until resumed; Resume (offered
while a venue is halted) lifts every halt; Cancel or ``escape`` does nothing. It is
dismissed with "halt", "resume" or None; the app then asks the client.
"""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Label

from sptrader.screens.account import LIVE_STYLE, venue_name

QUESTION = "Halt every venue?"
CONSEQUENCE = "Working orders are cancelled, new entries refused until resume."


def trading_here(venues: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The venues the kill switch acts on: paper when enabled, and each live one."""
    return [
        row
        for row in venues
        if (row.get("venue") == "paper" and row.get("enabled", True)) or row.get("live")
    ]


def venue_list(rows: list[dict[str, Any]]) -> Text:
    """ "paper, LIVE BINANCE" (live venues in red)."""
    text = Text()
    for index, row in enumerate(rows):
        venue = str(row["venue"])
        text.append(", " if index else "")
        text.append(venue_name(venue), "" if venue == "paper" else LIVE_STYLE)
    return text


class HaltScreen(ModalScreen[str | None]):
    """``venues``: the client's trading_venues rows."""

    BINDINGS = [Binding("escape", "cancel", "Cancel", key_display="esc", id="halt-cancel")]

    def __init__(self, venues: list[dict[str, Any]]) -> None:
        super().__init__()
        self.venues = trading_here(venues)
        self.halted = [row for row in venues if row.get("halted")]

    def compose(self) -> ComposeResult:
        with Vertical(id="halt-body"):
            yield Label(QUESTION, id="halt-question")
            yield Label(CONSEQUENCE, id="halt-consequence")
            if self.venues:
                yield Label(
                    Text.assemble(("Venues: ", "dim"), venue_list(self.venues)), id="halt-venues"
                )
            if self.halted:
                now = Text("Halted now: ", style="bold red")
                for index, row in enumerate(self.halted):
                    now.append("; " if index else "")
                    now.append(f"{venue_name(str(row['venue']))} ({row['halted']})")
                yield Label(now, id="halt-now")
            with Horizontal(id="halt-buttons"):
                yield Button("Halt", id="halt-confirm", variant="error", compact=True)
                if self.halted:
                    yield Button("Resume", id="halt-resume", variant="success", compact=True)
                yield Button("Cancel", id="halt-dismiss", compact=True)

    def on_mount(self) -> None:
        self.query_one("#halt-body").border_title = "Kill switch"
        self.query_one("#halt-confirm", Button).focus()

    @on(Button.Pressed, "#halt-confirm")
    def _halt(self, event: Button.Pressed) -> None:
        event.stop()
        self.dismiss("halt")

    @on(Button.Pressed, "#halt-resume")
    def _resume(self, event: Button.Pressed) -> None:
        event.stop()
        self.dismiss("resume")

    @on(Button.Pressed, "#halt-dismiss")
    def _dismiss(self, event: Button.Pressed) -> None:
        event.stop()
        self.dismiss(None)

    def action_cancel(self) -> None:
        self.dismiss(None)
