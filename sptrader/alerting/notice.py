"""One message for a trader away from the terminal, and what every channel offers.

A ``Notice`` is made once (by an alert rule, a report, the daemon) and handed to each
channel the rule names. ``Channel.send`` only queues: delivery (with retries and backoff)
happens on the channel's own task or thread, so no channel ever slows the engine; its
outcomes are counted for the services pane.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class Notice:
    kind: str  # the rule kind or "report", "daemon": price_cross, order, halt, ...
    title: str  # one short line: "BINANCE:BTCUSDT crossed 50,000"
    text: str  # the message a trader reads on a phone (a few lines at most)
    ts_us: int
    rule: str = ""  # the rule's name ("" for reports and system notices)
    data: dict[str, Any] = field(default_factory=dict)  # JSON-able details

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Channel(Protocol):
    #: As named in a rule's ``channels``: "tui", "webhooks", "telegram", "desktop".
    name: str

    def send(self, notice: Notice) -> None:
        """Queue the notice for delivery; never blocks, never raises for a delivery
        problem (those are retried, then counted and logged)."""
        ...
