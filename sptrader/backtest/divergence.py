"""Paper (or live) trading against the backtest of the same window (``sptrader
divergence SCANNER --from --to``): which trades both made, which only the backtest made
(missed), which only the account made (extra), the slippage of each matched entry and
exit, the P&L difference, and the causes the store can name.

Matching, per instrument, in time order: a backtest trade and an account trade match
when they are on the same side and the account's entry fill came between one bar before
and ``tolerance`` bars after the backtest's entry (the open after the signal bar; the
scanner runs when a bar has closed, and its order fills at the next quote). Each trade
matches at most once, the nearest in time first.

Slippage is in basis points of the backtest's price, positive when the account did worse
(bought higher or sold lower on entry; sold lower or bought higher on exit).

Causes, from the scanner's stored activity (:mod:`sptrader.scanners.activity`) and the
window's coverage:

- missed: a gap in the stored bars near the signal; the instrument skipped by the
  scanner (stale quotes, a gap: the skip's reason); the order rejected (the limit and
  its numbers); the account still in an earlier position; no scanner run at that time
  (the daemon was stopped or the scanner paused); or a run that raised no signal on that
  bar (the bars it saw then differ from those stored now, or its window was too short
  for the strategy's warm-up);
- extra: the scanner's signal is not in the backtest (the same two data reasons), or
  no scanner signal explains it;
- matched: another exit (a stop live, a signal in the backtest...), exits far apart,
  a different size, an order only partly filled (a fill cap).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from sptrader.broker.performance import round_trips
from sptrader.clock import format_us

__all__ = ["Pair", "account_trades", "compare", "totals"]

_ROLE_EXIT = {"sl": "stop", "tp": "target", "close": "signal", "entry": "reverse"}
_TRADE_KEYS = ("qty", "entry_time_us", "entry_price", "exit_time_us", "exit_price", "pnl")


@dataclass
class Pair:
    """One trade of the backtest, of the account, or both."""

    instrument: str
    side: str  # long / short
    status: str  # matched / missed / extra
    backtest: dict[str, Any] | None = None
    account: dict[str, Any] | None = None
    entry_slippage_bps: float | None = None
    exit_slippage_bps: float | None = None
    causes: list[str] = field(default_factory=list)

    @property
    def time_us(self) -> int:
        trade = self.backtest or self.account or {}
        return int(trade.get("entry_time_us") or 0)

    @property
    def pnl_difference(self) -> float:
        """The account's P&L less the backtest's (a missing side counts 0)."""
        return float((self.account or {}).get("pnl") or 0.0) - float(
            (self.backtest or {}).get("pnl") or 0.0
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "instrument": self.instrument,
            "side": self.side,
            "status": self.status,
            "backtest": self.backtest,
            "account": self.account,
            "entry_slippage_bps": self.entry_slippage_bps,
            "exit_slippage_bps": self.exit_slippage_bps,
            "pnl_difference": self.pnl_difference,
            "causes": self.causes,
        }


def account_trades(orders: Sequence[dict[str, Any]], instrument: str) -> list[dict[str, Any]]:
    """The account's trades (flat to flat) on ``instrument`` from the scanner's orders'
    fills, each with its ``exit_reason`` (from the role of the order that closed it; a
    trade still open is ``open``) and ``partial`` (an order in it only partly filled)."""
    mine = [order for order in orders if order["instrument"] == instrument]
    fills = [fill for order in mine for fill in order["fills"]]
    if not fills:
        return []
    order_of = {order["order_id"]: order for order in mine}
    frame = pl.DataFrame(
        {
            "instrument": [f["instrument"] for f in fills],
            "side": [f["side"] for f in fills],
            "qty": [float(f["qty"]) for f in fills],
            "price": [float(f["price"]) for f in fills],
            "fee": [float(f["fee"] or 0.0) for f in fills],
            "ts_us": [int(f["ts_us"]) for f in fills],
        }
    )
    trades = round_trips(frame, include_open=True).to_dicts()
    by_time = sorted(fills, key=lambda f: (f["ts_us"], f["fill_id"]))
    out = []
    for trade in trades:
        last = trade["exit_time_us"] if trade["exit_time_us"] is not None else by_time[-1]["ts_us"]
        inside = [f for f in by_time if trade["entry_time_us"] <= f["ts_us"] <= last]

        closing = [f for f in inside if f["ts_us"] == trade["exit_time_us"]]
        role = order_of[closing[-1]["order_id"]]["role"] if closing else "entry"
        partial = any(
            0 < float(order_of[f["order_id"]]["filled_qty"]) < float(order_of[f["order_id"]]["qty"])
            for f in inside
        )
        out.append(
            {
                **{key: trade[key] for key in _TRADE_KEYS},
                "side": trade["side"],
                "exit_reason": "open" if trade["open"] else _ROLE_EXIT.get(role, role),
                "partial": partial,
            }
        )
    return out


def _backtest_dicts(trades: pl.DataFrame) -> list[dict[str, Any]]:
    return [
        {
            **{key: row[key] for key in _TRADE_KEYS},
            "side": row["side"],
            "exit_reason": row["exit_reason"],
        }
        for row in trades.to_dicts()
    ]


def compare(
    instrument: str,
    backtest: pl.DataFrame,
    activity: dict[str, Any],
    *,
    bar_us: int,
    tolerance: int = 3,
    gaps: Sequence[tuple[int, int]] = (),
) -> list[Pair]:
    """The backtest's trades (``BacktestResult.trades``) and the account's on
    ``instrument``, matched and explained, in time order."""
    ours = _backtest_dicts(backtest)
    theirs = account_trades(activity["orders"], instrument)
    taken: set[int] = set()
    pairs: list[Pair] = []
    for trade in ours:
        entry = trade["entry_time_us"]
        candidates = [
            (abs(other["entry_time_us"] - entry), i)
            for i, other in enumerate(theirs)
            if i not in taken
            and other["side"] == trade["side"]
            and entry - bar_us <= other["entry_time_us"] <= entry + tolerance * bar_us
        ]
        if not candidates:
            pair = Pair(instrument, trade["side"], "missed", backtest=trade)
            pair.causes = _missed_causes(
                instrument, trade, theirs, activity, bar_us, tolerance, gaps
            )
            pairs.append(pair)
            continue
        _, index = min(candidates)
        taken.add(index)
        pairs.append(_matched(instrument, trade, theirs[index], bar_us, tolerance))
    for i, other in enumerate(theirs):
        if i not in taken:
            pair = Pair(instrument, other["side"], "extra", account=other)
            pair.causes = _extra_causes(instrument, other, activity, bar_us, tolerance)
            pairs.append(pair)
    return sorted(pairs, key=lambda pair: pair.time_us)


def _bps(worse: float, reference: float) -> float | None:
    return worse / reference * 10_000 if reference else None


def _matched(
    instrument: str, ours: dict[str, Any], theirs: dict[str, Any], bar_us: int, tolerance: int
) -> Pair:
    sign = 1.0 if ours["side"] == "long" else -1.0
    pair = Pair(instrument, ours["side"], "matched", backtest=ours, account=theirs)
    pair.entry_slippage_bps = _bps(
        sign * (theirs["entry_price"] - ours["entry_price"]), ours["entry_price"]
    )
    if theirs["exit_reason"] != "open":
        pair.exit_slippage_bps = _bps(
            sign * (ours["exit_price"] - theirs["exit_price"]), ours["exit_price"]
        )
    causes = pair.causes
    if theirs["exit_reason"] == "open":
        causes.append("still open in the account")
    elif theirs["exit_reason"] != ours["exit_reason"]:
        causes.append(
            f"exited by {theirs['exit_reason']} in the account, by {ours['exit_reason']} in"
            " the backtest"
        )
    elif abs(theirs["exit_time_us"] - ours["exit_time_us"]) > tolerance * bar_us:
        bars = abs(theirs["exit_time_us"] - ours["exit_time_us"]) / bar_us
        causes.append(f"exits {bars:.0f} bars apart")
    if ours["qty"] and abs(theirs["qty"] / ours["qty"] - 1) > 0.01:
        causes.append(
            f"size {theirs['qty']:g} in the account, {ours['qty']:g} in the backtest (each"
            " sized from its own equity)"
        )
    if theirs.get("partial"):
        causes.append("an order only partly filled (a fill cap)")
    return pair


def _near(items: Sequence[dict[str, Any]], key: str, start: int, end: int) -> list[dict[str, Any]]:
    return [item for item in items if start <= item[key] <= end]


def _missed_causes(
    instrument: str,
    trade: dict[str, Any],
    theirs: list[dict[str, Any]],
    activity: dict[str, Any],
    bar_us: int,
    tolerance: int,
    gaps: Sequence[tuple[int, int]],
) -> list[str]:
    entry = trade["entry_time_us"]
    signal_bar = entry - bar_us
    start, end = signal_bar, entry + tolerance * bar_us
    causes = []
    for gap_start, gap_end in gaps:
        if gap_start < entry and gap_end > signal_bar - 5 * bar_us:
            causes.append(
                f"a gap in the stored bars ({format_us(gap_start)} → {format_us(gap_end)})"
            )
            break
    skips = [
        s
        for s in _near(activity["skips"], "started_us", start, end)
        if s["instrument"] == instrument
    ]
    causes.extend(f"skipped by the scanner: {skip['reason']}" for skip in skips[:1])
    rejected = [
        order
        for order in activity["orders"]
        if order["instrument"] == instrument
        and order["status"] == "rejected"
        and start <= order["created_us"] <= end
    ]
    causes.extend(f"the order was rejected: {order['reason']}" for order in rejected[:1])
    held = [
        other
        for other in theirs
        if other["entry_time_us"] < entry
        and (other["exit_reason"] == "open" or other["exit_time_us"] > entry)
    ]
    if held:
        causes.append(
            f"the account was still {held[-1]['side']} from {format_us(held[-1]['entry_time_us'])}"
        )
    if causes:
        return causes
    runs = _near(activity["runs"], "started_us", start, end)
    if not runs:
        return ["no scanner run then (the daemon was stopped or the scanner paused)"]
    raised = [
        s for s in activity["signals"] if s["instrument"] == instrument and s["ts_us"] == signal_bar
    ]
    if raised:
        return ["the scanner raised the signal but no order was placed"]
    return [
        "the scanner raised no signal on that bar (the bars it saw then differ from those"
        " stored now, or its window is shorter than the strategy's warm-up)"
    ]


def _extra_causes(
    instrument: str, trade: dict[str, Any], activity: dict[str, Any], bar_us: int, tolerance: int
) -> list[str]:
    entry = trade["entry_time_us"]
    signals = [
        s
        for s in activity["signals"]
        if s["instrument"] == instrument and entry - (tolerance + 1) * bar_us <= s["ts_us"] <= entry
    ]
    causes = []
    if signals:
        causes.append(
            f"the scanner's signal on the {format_us(signals[-1]['ts_us'])} bar is not in a"
            " backtest of the stored bars (they differ from what it saw then, or the warm-up"
            " does)"
        )
    else:
        causes.append("no scanner signal explains it")
    if trade.get("partial"):
        causes.append("an order only partly filled (a fill cap)")
    return causes


def totals(pairs: Sequence[Pair]) -> dict[str, Any]:
    """Counts, both P&Ls, and where the difference comes from."""

    def pnl(side: str, status: str | None = None) -> float:
        return math.fsum(
            float((getattr(p, side) or {}).get("pnl") or 0.0)
            for p in pairs
            if status is None or p.status == status
        )

    matched = [p for p in pairs if p.status == "matched"]
    entry_slips = [p.entry_slippage_bps for p in matched if p.entry_slippage_bps is not None]
    exit_slips = [p.exit_slippage_bps for p in matched if p.exit_slippage_bps is not None]
    return {
        "matched": len(matched),
        "missed": sum(p.status == "missed" for p in pairs),
        "extra": sum(p.status == "extra" for p in pairs),
        "backtest_pnl": pnl("backtest"),
        "account_pnl": pnl("account"),
        "difference": pnl("account") - pnl("backtest"),
        "from_matched": pnl("account", "matched") - pnl("backtest", "matched"),
        "from_missed": -pnl("backtest", "missed"),
        "from_extra": pnl("account", "extra"),
        "mean_entry_slippage_bps": sum(entry_slips) / len(entry_slips) if entry_slips else None,
        "mean_exit_slippage_bps": sum(exit_slips) / len(exit_slips) if exit_slips else None,
    }
