"""The chart's view persists in the home (``chart.json``): the overlays switched on and
the timeframe chosen come back at the next start. The file is the TUI's own, also when
it is attached to a daemon (the daemon has no chart)."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from sptrader.charting import OVERLAYS

log = logging.getLogger(__name__)

FILE_NAME = "chart.json"


@dataclass(frozen=True, slots=True)
class ChartPrefs:
    overlays: list[str] = field(default_factory=list)  # names of charting.OVERLAYS
    timeframe: str | None = None  # None: the config's default (the app checks it is
    # one of the chart's timeframes)


def chart_prefs_path(home: Path) -> Path:
    return home / FILE_NAME


def load_chart_prefs(home: Path) -> ChartPrefs:
    """The saved view; the defaults when nothing is saved or the file is unreadable
    (logged). Unknown overlays are dropped."""
    path = chart_prefs_path(home)
    try:
        saved = json.loads(path.read_text("utf-8"))
        if not isinstance(saved, dict):
            raise TypeError(f"a {type(saved).__name__}, not an object")
        overlays = saved.get("overlays", [])
        if not isinstance(overlays, list):
            raise TypeError(f"overlays is a {type(overlays).__name__}, not a list")
        timeframe = saved.get("timeframe")
        if timeframe is not None and not isinstance(timeframe, str):
            raise TypeError(f"timeframe is a {type(timeframe).__name__}, not a string")
    except FileNotFoundError:
        return ChartPrefs()
    except (OSError, ValueError, TypeError) as error:
        log.warning("ignoring %s (%s); the chart starts with its defaults", path, error)
        return ChartPrefs()
    unknown = [name for name in overlays if not isinstance(name, str) or name not in OVERLAYS]
    if unknown:
        log.warning("%s: skipping unknown overlays %s", path, unknown)
    return ChartPrefs([name for name in OVERLAYS if name in overlays], timeframe)


def save_chart_prefs(home: Path, prefs: ChartPrefs) -> None:
    """Write atomically: a crash mid-write leaves the previous file."""
    path = chart_prefs_path(home)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    document = {"overlays": list(prefs.overlays), "timeframe": prefs.timeframe}
    temporary.write_text(json.dumps(document, indent=2) + "\n", "utf-8")
    os.replace(temporary, path)
