"""The kill switch: which venues are halted, and why (the ``trading_halts`` table).

A halted venue refuses new entries (orders that only reduce a position still pass) and
has had its working orders cancelled; it stays halted, across restarts, until
``sptrader resume``. ``sptrader halt`` without a venue halts every venue. The daily loss
limit and stale data halt a live venue the same way (``sptrader.broker.live``).
"""

from __future__ import annotations

from sptrader.store import Store


class Halts:
    def __init__(self) -> None:
        #: venue -> (since µs, reason)
        self.halted: dict[str, tuple[int, str]] = {}

    def load(self, store: Store) -> None:
        rows = (
            store.cursor()
            .execute("SELECT venue, epoch_us(since), reason FROM trading_halts")
            .fetchall()
        )
        self.halted = {venue: (int(since), reason) for venue, since, reason in rows}

    def reason(self, venue: str) -> str | None:
        found = self.halted.get(venue)
        return None if found is None else found[1]

    def set(self, store: Store, venue: str, since_us: int, reason: str) -> None:
        """Halt ``venue`` (blocking: a thread's work); halting again keeps the first reason."""
        if venue in self.halted:
            return
        with store._write_lock:  # the store's one-writer-at-a-time lock
            store.cursor().execute(
                "INSERT OR REPLACE INTO trading_halts VALUES (?, make_timestamp(?), ?)",
                [venue, since_us, reason],
            )
        self.halted[venue] = (since_us, reason)

    def clear(self, store: Store, venue: str) -> bool:
        """Resume ``venue``; False when it was not halted."""
        if venue not in self.halted:
            return False
        with store._write_lock:
            store.cursor().execute("DELETE FROM trading_halts WHERE venue = ?", [venue])
        del self.halted[venue]
        return True
