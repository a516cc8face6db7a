"""The watchlist persists in the home (``watchlist.json``): the config's watchlist is
only the starting set; instruments added or removed in the TUI stay that way."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from sptrader.config import LIVE_FEEDS, Settings, feed_config
from sptrader.models import INSTRUMENT_RE

log = logging.getLogger(__name__)

FILE_NAME = "watchlist.json"


def watchlist_path(settings: Settings) -> Path:
    return settings.home / FILE_NAME


def load_watchlist(settings: Settings) -> list[str]:
    """The saved watchlist, without instruments whose feed is no longer enabled; the
    config's when nothing (usable) is saved."""
    path = watchlist_path(settings)
    try:
        saved = json.loads(path.read_text("utf-8"))["instruments"]
        if not isinstance(saved, list):
            raise TypeError(f"instruments is a {type(saved).__name__}, not a list")
    except FileNotFoundError:
        return list(settings.config.watchlist)
    except (OSError, ValueError, KeyError, TypeError) as error:
        log.warning("ignoring %s (%s); using the config's watchlist", path, error)
        return list(settings.config.watchlist)
    usable = []
    for name in saved:
        match = INSTRUMENT_RE.match(name) if isinstance(name, str) else None
        if (
            match
            and match.group(1) in LIVE_FEEDS
            and feed_config(settings.config, match.group(1)).enabled
            and name not in usable
        ):
            usable.append(name)
            continue
        log.warning("%s: skipping %r (its feed is not enabled)", path, name)
    return usable or list(settings.config.watchlist)


def save_watchlist(settings: Settings, instruments: list[str]) -> None:
    """Write atomically: a crash mid-write must not lose the list."""
    path = watchlist_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps({"instruments": instruments}, indent=2) + "\n", "utf-8")
    os.replace(temporary, path)
