"""How stored-data coverage is drawn, shared by ``sptrader data status`` and the Data
screen (a screen may not import a CLI command, which reaches the engine)."""

from __future__ import annotations

from typing import Any

HEAT = " ░▒▓█"
# A day counts as complete from this share of its open time.
COMPLETE = 0.999


def heat_text(shares: list[float], text_type: Any) -> Any:
    """One cell per day: closed dim, complete full, holes in a warning colour."""
    text = text_type()
    for share in shares:
        if share < 0:
            text.append("·", style="dim")
        elif share >= COMPLETE:
            text.append("█", style="green")
        else:
            text.append(
                HEAT[min(3, int(share * 4))] if share > 0 else "░",
                style="bold red" if share < 0.5 else "yellow",
            )
    return text
