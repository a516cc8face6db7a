"""Order and fill ids, one sequence for every venue: paper and live orders share the
orders and fills tables, so the paper book and each live broker take ids from one
``Ids`` (max + 1 of the tables when the engine opens the store)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class Ids:
    next_order_id: int = 1
    next_fill_id: int = 1

    def order(self) -> int:
        order_id = self.next_order_id
        self.next_order_id += 1
        return order_id

    def fill(self) -> int:
        fill_id = self.next_fill_id
        self.next_fill_id += 1
        return fill_id
