"""The account through signals alone, in numpy: the common case of a strategy whose
signals carry no stop, no target and no trail, run without a daily loss limit, a volume
cap or partial fills (an SMA cross, most sweeps). There the event loop of
:class:`~sptrader.backtest.simulation.Simulation` has nothing to decide bar by bar: after
each signal the position is simply the signal's side (``buy`` long, ``sell`` short,
``exit`` flat), every entry is sized from ``broker.signal_notional``, and each change of
side is an exit (the old side) and an entry (the new one) at the next open.

What still could refuse an entry is a risk limit (max_qty, notional, leverage), checked
here for every entry at once against the equity the trades before it left. If any entry
would be refused, or sits so close to a limit that the rounding of the running equity
could decide it, this returns False and the event loop runs instead: it is the reference
(same prices, fees and P&L to the bit: the arithmetic below is the loop's, in its order;
``tests/backtest/test_signals_only.py`` holds them equal on random cases).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from sptrader.broker.ledger import QTY_EPSILON

__all__ = ["SignalsOnly", "run_signals_only"]

# Entries whose checked figure is within this fraction of its limit go to the loop.
_NEAR = 1e-9


def run_signals_only(
    sim: Any, events: tuple[list[int], list[int], list[float], list[float], list[str]]
) -> bool:
    """Set ``sim.vectorised`` to the trades and fills ``Simulation.run`` would make, or
    return False (nothing changed) when this case is not the simple one."""
    bars_list, sides_list, stops, targets, reasons_list = events
    if not bars_list or sim.share > 0 or sim.watch_day or sim.direction:
        return False
    if not (np.isnan(stops).all() and np.isnan(targets).all()):
        return False
    sides = np.asarray(sides_list, dtype=np.int64)
    bars = np.asarray(bars_list, dtype=np.int64)
    previous = np.concatenate(([0], sides[:-1]))
    acting = sides != previous
    entry_events = np.flatnonzero(acting & (sides != 0))
    if entry_events.size == 0:
        return True  # only exits while flat: nothing happens
    exit_events = np.flatnonzero(acting & (previous != 0))
    count = entry_events.size
    # The k-th exit closes the k-th entry (sides alternate through flat); the last entry
    # may be still open at the end of the bars.
    closed = exit_events.size
    direction = sides[entry_events]
    entry_bar = bars[entry_events] + 1
    broker, model = sim.broker, sim.model
    move = model.slippage_bps / 10_000
    up, down = 1 + move, 1 - move
    opens = sim.open
    entry_price = np.where(direction > 0, opens[entry_bar] * up, opens[entry_bar] * down)
    if not (entry_price > 0).all():
        return False  # the loop names the "no size" rejection
    qty = broker.signal_notional / entry_price
    if not (qty > 0).all():
        return False
    last = sim.count - 1
    exit_bar = np.empty(count, dtype=np.int64)
    exit_bar[:closed] = bars[exit_events] + 1
    exit_bar[closed:] = last
    exit_open = opens[exit_bar]
    exit_base = np.where(np.arange(count) < closed, exit_open, sim.close[exit_bar])
    # The closing side is the opposite of the position's.
    exit_price = np.where(direction > 0, exit_base * down, exit_base * up)
    entry_fee = np.abs(qty) * (np.abs(entry_price) * model.fee_bps / 10_000 + model.fee_per_unit)
    exit_fee = np.abs(qty) * (np.abs(exit_price) * model.fee_bps / 10_000 + model.fee_per_unit)
    gross = (exit_price - entry_price) * qty * direction
    pnl = gross - entry_fee - exit_fee
    if not _limits_pass(sim, qty, entry_price, pnl):
        return False

    why = np.full(count, "end", dtype=object)
    if closed:
        why[:closed] = np.where(sides[exit_events] != 0, "reverse", "signal")
    ts = sim.ts
    entry_ts, exit_ts = ts[entry_bar], ts[exit_bar]
    long = direction > 0
    trades = pl.DataFrame(
        [
            pl.repeat(sim.instrument, count, dtype=pl.String, eager=True).alias("instrument"),
            pl.Series("side", np.where(long, "long", "short"), dtype=pl.String),
            pl.Series("qty", qty, dtype=pl.Float64),
            pl.Series("entry_time_us", entry_ts, dtype=pl.Int64),
            pl.Series("entry_price", entry_price, dtype=pl.Float64),
            pl.Series("exit_time_us", exit_ts, dtype=pl.Int64),
            pl.Series("exit_price", exit_price, dtype=pl.Float64),
            pl.Series("pnl", pnl, dtype=pl.Float64),
            pl.Series("fees", entry_fee + exit_fee, dtype=pl.Float64),
            pl.Series("exit_reason", why.tolist(), dtype=pl.String),
            pl.Series("stop", [None] * count, dtype=pl.Float64),
            pl.Series("target", [None] * count, dtype=pl.Float64),
            pl.Series("bars", exit_bar - entry_bar, dtype=pl.Int64),
            pl.Series("reason", [reasons_list[i] for i in entry_events.tolist()], dtype=pl.String),
        ]
    )
    # Fills in time order: each trade's entry, then its exit (an exit and the next
    # entry at one open: the exit first, as the loop fills them).
    order = np.empty(2 * count, dtype=np.int64)
    order[0::2], order[1::2] = np.arange(count), np.arange(count)
    is_exit = np.tile([False, True], count)
    buys = np.where(is_exit, ~long[order], long[order])
    ids = np.arange(1, 2 * count + 1, dtype=np.int64)
    fills = pl.DataFrame(
        [
            pl.Series("fill_id", ids, dtype=pl.Int64),
            pl.Series("order_id", ids, dtype=pl.Int64),
            pl.repeat(sim.instrument, 2 * count, dtype=pl.String, eager=True).alias("instrument"),
            pl.Series("side", np.where(buys, "buy", "sell"), dtype=pl.String),
            pl.Series("qty", qty[order], dtype=pl.Float64),
            pl.Series(
                "price", np.where(is_exit, exit_price[order], entry_price[order]), dtype=pl.Float64
            ),
            pl.Series(
                "fee", np.where(is_exit, exit_fee[order], entry_fee[order]), dtype=pl.Float64
            ),
            pl.Series("ts_us", np.where(is_exit, exit_ts[order], entry_ts[order]), dtype=pl.Int64),
            pl.repeat("paper", 2 * count, dtype=pl.String, eager=True).alias("venue"),
            pl.repeat(None, 2 * count, dtype=pl.String, eager=True).alias("venue_fill_id"),
        ]
    )
    sim.vectorised = SignalsOnly(
        trades=trades,
        fills=fills,
        signed=np.where(long, 1.0, -1.0) * qty,
        entry_price=entry_price,
        exit_price=exit_price,
        fees=entry_fee + exit_fee,
        entry_bar=entry_bar,
        exit_bar=exit_bar,
        entry_fee=entry_fee,
    )
    sim.next_id = 2 * count + 1
    return True


@dataclass
class SignalsOnly:
    """The run's trades (the first columns of TRADE_SCHEMA) and fills (FILL_SCHEMA) as
    frames, and the arrays the equity curve is built from."""

    trades: pl.DataFrame
    fills: pl.DataFrame
    signed: np.ndarray  # +qty long, -qty short
    entry_price: np.ndarray
    exit_price: np.ndarray
    fees: np.ndarray
    entry_bar: np.ndarray
    exit_bar: np.ndarray
    entry_fee: np.ndarray


def _limits_pass(sim: Any, qty: np.ndarray, price: np.ndarray, pnl: np.ndarray) -> bool:
    """Every entry passes the flat-account limits (``risk.check_flat_entry``) with room
    to spare, at the equity of the trades closed before it."""
    limits = sim.limits
    equity = sim.broker.starting_cash + np.concatenate(([0.0], np.cumsum(pnl[:-1])))
    notional = np.abs(qty) * price
    checks: list[tuple[np.ndarray, np.ndarray]] = []
    max_qty = limits.max_qty.get(sim.instrument)
    if max_qty is not None:
        checks.append((np.abs(qty), np.full(qty.size, max_qty + QTY_EPSILON)))
    if limits.max_position_notional > 0:
        checks.append((notional, np.full(qty.size, limits.max_position_notional)))
    if limits.max_leverage > 0:
        checks.append((notional, limits.max_leverage * np.maximum(equity, 0.0)))
    if limits.max_total_notional > 0:
        checks.append((notional, np.full(qty.size, limits.max_total_notional)))
    return all((value < limit * (1 - _NEAR)).all() for value, limit in checks)
