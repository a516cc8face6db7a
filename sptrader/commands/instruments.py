"""Instruments a user names on the command line, checked against their feed's list
before anything is read or traded: SIM's too (the simulator would make up prices for
any name, so a typo like SIM:EURUDS would chart and trade an invented market)."""

from __future__ import annotations

import difflib

from sptrader.client.protocol import EngineClient
from sptrader.errors import UsageError

#: SIM's list is built in and short; this is more than all of it.
_SIM_LIST_LIMIT = 1_000


async def unknown_instruments(client: EngineClient, instruments: list[str]) -> list[str]:
    """Those of ``instruments`` missing from their feed's list (SIM's included); feeds
    whose list cannot be fetched now validate nothing."""
    unknown, _ = await client.unknown_symbols(instruments)
    simulated = [name for name in instruments if name.startswith("SIM:") and name not in unknown]
    if simulated:
        known = await known_simulated(client)
        if known:
            unknown = [*unknown, *(name for name in simulated if name not in known)]
    return [name for name in instruments if name in unknown]


async def known_simulated(client: EngineClient) -> list[str]:
    """SIM's instruments, or none when SIM is not enabled."""
    try:
        found = await client.search_symbols("", "sim", _SIM_LIST_LIMIT)
    except UsageError:
        return []
    return [item.instrument for item in found]


async def suggestion(client: EngineClient, name: str) -> str:
    """``did you mean SIM:EURUSD?``, else where to search."""
    feed = name.split(":", 1)[0].lower()
    candidates = await known_simulated(client) if name.startswith("SIM:") else []
    close = difflib.get_close_matches(name, candidates, n=1, cutoff=0.6)
    if close:
        return f"did you mean {close[0]}?"
    return f"search with `sptrader symbols --feed {feed}`"


async def refuse_unknown(client: EngineClient, instruments: list[str]) -> None:
    """A UsageError (one line, exit 2) for the first unknown instrument."""
    unknown = await unknown_instruments(client, instruments)
    if unknown:
        feed = unknown[0].split(":", 1)[0].lower()
        raise UsageError(
            f"unknown symbol {unknown[0]} (not in {feed}'s instrument list);"
            f" {await suggestion(client, unknown[0])}"
        )
