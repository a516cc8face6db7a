"""Trade ids as proof of delivery.

Binance (``t``), Coinbase (``trade_id``) and Kraken (``trade_id``) number each symbol's
trades sequentially. So a trade whose id is not above the last one seen is a repeat (a
re-delivered message, a snapshot replayed after a reconnect) and is dropped, and an id
more than one above the last one proves that trades were lost in between: the minutes
from the last trade seen to this one are reported, to be fetched again from the
venue's history, and are not covered until they are.
"""

from __future__ import annotations

from collections.abc import Callable

from sptrader.models import NO_TRADE_ID, US_PER_MINUTE, TradeReceived

#: ``(instrument, start_us, end_us, missing)``: trades were lost in [start, end).
LostTrades = Callable[[str, int, int, int], None]


class TradeSequence:
    """Per-instrument last trade id (and its time), kept across reconnects."""

    def __init__(self) -> None:
        self._last: dict[str, tuple[int, int]] = {}
        self.duplicates = 0
        self.lost = 0

    def check(self, events: list[object], on_lost: LostTrades | None) -> list[object]:
        """``events`` without repeated trades; holes are reported to ``on_lost``."""
        last = self._last
        kept: list[object] | None = None
        for index, event in enumerate(events):
            if type(event) is not TradeReceived or event.trade_id == NO_TRADE_ID:
                if kept is not None:
                    kept.append(event)
                continue
            instrument = event.instrument
            previous = last.get(instrument)
            if previous is not None and event.trade_id <= previous[0]:
                self.duplicates += 1
                if kept is None:
                    kept = events[:index]
                continue
            if previous is not None and event.trade_id > previous[0] + 1:
                self._report(instrument, previous, event, on_lost)
            last[instrument] = (event.trade_id, event.ts_us)
            if kept is not None:
                kept.append(event)
        return events if kept is None else kept

    def _report(
        self,
        instrument: str,
        previous: tuple[int, int],
        event: TradeReceived,
        on_lost: LostTrades | None,
    ) -> None:
        missing = event.trade_id - previous[0] - 1
        self.lost += missing
        # Across a reconnect this repeats part of the reconnect backfill: one more
        # fetch, and no hole whichever minute the stream came back in.
        start = previous[1] - previous[1] % US_PER_MINUTE
        end = event.ts_us - event.ts_us % US_PER_MINUTE + US_PER_MINUTE
        if on_lost is not None and start < end:
            on_lost(instrument, start, end, missing)
