"""Alert rules (``[[alerts.rules]]``, sptrader.config.AlertRuleConfig) judged on the bus.

Each rule kind turns what happens into findings: (key, title, text, data). The key says
what the finding is about (an instrument, an order and its event, a feed's episode): one
notice per rule and key per ``cooldown_s``, so a price flapping around a level sends one
message, not fifty, while two different orders filling are two notices.

The work per quote is a dict lookup (only instruments some price rule watches go
further); everything else is rare (orders, signals, service changes) or polled once a
second (P&L, halts, feeds still down).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from sptrader.config import AlertRuleConfig
from sptrader.formatting import format_price

# (key, title, text, data)
Finding = tuple[str, str, str, dict[str, Any]]

FEED_BAD_STATES = ("stale", "backoff", "failed", "reconnecting")


@dataclass
class RuleState:
    last_sent_us: dict[str, int] = field(default_factory=dict)  # key -> last notice
    side: dict[str, int] = field(default_factory=dict)  # key -> -1 below / +1 above
    window: deque[tuple[int, float]] = field(default_factory=deque)  # price_move
    bad_since: dict[str, int] = field(default_factory=dict)  # feed -> since (µs)
    fired: int = 0


class Rule:
    """One configured rule and its state; ``kind`` decides which ``on_*`` find things."""

    def __init__(self, config: AlertRuleConfig, decimals: Callable[[str], int | None]) -> None:
        self.config = config
        self.state = RuleState()
        self.decimals = decimals
        self.paused = False  # by the trader (CLI, Alerts screen), kept in the store

    @property
    def name(self) -> str:
        return self.config.name

    def due(self, key: str, now_us: int) -> bool:
        """Whether a finding about ``key`` may be sent now (its cooldown has passed)."""
        last = self.state.last_sent_us.get(key)
        return last is None or now_us - last >= self.config.cooldown_s * 1e6

    def sent(self, key: str, now_us: int) -> None:
        self.state.last_sent_us[key] = now_us
        self.state.fired += 1

    def _price(self, instrument: str, value: float) -> str:
        return format_price(value, self.decimals(instrument))

    # --- prices -----------------------------------------------------------------------

    def on_price(self, instrument: str, ts_us: int, price: float) -> list[Finding]:
        config = self.config
        if config.kind == "price_cross":
            side = 1 if price >= config.level else -1
            before = self.state.side.get(instrument)
            self.state.side[instrument] = side
            if before is None or before == side:
                return []  # the first price only says which side we are on
            way = "above" if side > 0 else "below"
            level = self._price(instrument, config.level)
            return [
                (
                    instrument,
                    f"{instrument} crossed {level}",
                    f"{instrument} is {way} {level}: {self._price(instrument, price)}",
                    {"instrument": instrument, "price": price, "level": config.level},
                )
            ]
        if config.kind == "price_move":
            window = self.state.window
            window.append((ts_us, price))
            horizon = ts_us - int(config.window_s * 1e6)
            while window and window[0][0] < horizon:
                window.popleft()
            first = window[0][1]
            if first <= 0:
                return []
            move = (price - first) / first * 100
            if abs(move) < config.pct:
                return []
            window.clear()  # the next move is measured from here
            window.append((ts_us, price))
            minutes = config.window_s / 60
            pct = _percent(move)
            return [
                (
                    instrument,
                    f"{instrument} moved {pct}",
                    f"{instrument} {pct} in {minutes:g} min:"
                    f" {self._price(instrument, first)} -> {self._price(instrument, price)}",
                    {"instrument": instrument, "price": price, "from": first, "pct": move},
                )
            ]
        return []

    # --- P&L (polled) -----------------------------------------------------------------

    def on_pnl(self, key: str, what: str, value: float) -> list[Finding]:
        """``value`` (a venue's day P&L, or a position's P&L) against the threshold:
        found when it crosses to the threshold's side."""
        threshold = self.config.threshold
        beyond = value <= threshold if threshold < 0 else value >= threshold
        side = 1 if beyond else -1
        before = self.state.side.get(key)
        self.state.side[key] = side
        if not beyond or before == 1:
            return []
        return [
            (
                key,
                f"{what} {value:+,.2f}",
                f"{what} is {value:+,.2f}, past the alert at {threshold:+,.2f}",
                {"key": key, "value": value, "threshold": threshold},
            )
        ]

    # --- orders, signals, halts, feeds ------------------------------------------------

    def on_order(self, order: dict[str, Any]) -> list[Finding]:
        config = self.config
        if config.venue and order.get("venue", "paper") != config.venue:
            return []
        if config.instrument and order["instrument"] != config.instrument:
            return []
        status, role = order["status"], order.get("role", "entry")
        event = {"filled": "filled", "rejected": "rejected"}.get(status)
        if status == "filled" and role == "sl":
            event = "stop"
        elif status == "filled" and role == "tp":
            event = "target"
        if event is None or event not in config.events:
            return []
        venue = order.get("venue", "paper")
        where = "" if venue == "paper" else f" at {venue.upper()}"
        price = order.get("avg_price")
        at = f" at {self._price(order['instrument'], price)}" if price else ""
        words = {"filled": "filled", "rejected": "rejected", "stop": "stop-loss hit",
                 "target": "take-profit hit"}[event]  # fmt: skip
        title = f"{order['side']} {order['qty']:g} {order['instrument']}{where}: {words}"
        text = f"order {order['order_id']} {title}{at}"
        if event == "rejected" and order.get("reason"):
            text += f" ({order['reason']})"
        return [(f"{order['order_id']}:{event}", title, text, {"order": order, "event": event})]

    def on_signal(self, signal: Any) -> list[Finding]:
        if self.config.scanner and signal.scanner != self.config.scanner:
            return []
        if self.config.instrument and signal.instrument != self.config.instrument:
            return []
        title = f"{signal.side.upper()} {signal.instrument} ({signal.scanner})"
        text = title + (f": {signal.reason}" if signal.reason else "")
        key = f"{signal.scanner}:{signal.instrument}:{signal.bar_ts_us}:{signal.side}"
        data = {"scanner": signal.scanner, "instrument": signal.instrument, "side": signal.side}
        return [(key, title, text, data)]

    def on_gap(self, instrument: str, start_us: int, end_us: int, why: str) -> list[Finding]:
        if self.config.instrument and instrument != self.config.instrument:
            return []
        minutes = max(1, (end_us - start_us) // 60_000_000)
        return [
            (
                f"{instrument}:{start_us}",
                f"data gap in {instrument}",
                f"{instrument}: {minutes} min of data missing ({why}); it is re-fetched"
                " from history",
                {"instrument": instrument, "start_us": start_us, "end_us": end_us, "why": why},
            )
        ]

    def on_halts(self, halted: dict[str, tuple[int, str]]) -> list[Finding]:
        found = []
        for venue, (since, reason) in halted.items():
            if self.config.venue and venue != self.config.venue:
                continue
            label = venue if venue == "paper" else venue.upper()
            found.append(
                (
                    f"{venue}:{since}",
                    f"{label} HALTED",
                    f"{label} halted ({reason}): working orders cancelled, entries refused"
                    " until `sptrader resume`",
                    {"venue": venue, "reason": reason},
                )
            )
        return found

    def on_feed_state(self, feed: str, state: str, ts_us: int) -> None:
        if state in FEED_BAD_STATES:
            self.state.bad_since.setdefault(feed, ts_us)
        else:
            self.state.bad_since.pop(feed, None)

    def on_feeds_down(self, now_us: int, states: dict[str, str]) -> list[Finding]:
        found = []
        for feed, since in self.state.bad_since.items():
            if (now_us - since) / 1e6 < self.config.after_s:
                continue
            seconds = (now_us - since) / 1e6
            found.append(
                (
                    f"{feed}:{since}",
                    f"feed {feed} is {states.get(feed, 'down')}",
                    f"feed {feed} has been {states.get(feed, 'down')} for {seconds:.0f}s",
                    {"feed": feed, "since_us": since},
                )
            )
        return found


def _percent(move: float) -> str:
    """+1.08% · -0.0042% (a small threshold's move is not shown as 0.00%)."""
    return f"{move:+.2f}%" if abs(move) >= 0.1 else f"{move:+.2g}%"


def rules_by_kind(rules: Iterable[Rule]) -> dict[str, list[Rule]]:
    grouped: dict[str, list[Rule]] = {}
    for rule in rules:
        if rule.config.enabled and not rule.paused:
            grouped.setdefault(rule.config.kind, []).append(rule)
    return grouped
