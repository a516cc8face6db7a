"""Half-open time intervals [start, end) in integer microseconds: merge and subtract.

A pure helper of the base layer (it imports nothing of SPtrader's): the store's
coverage, the data manager, the backfill and the sessions all use it.
"""

from __future__ import annotations

from collections.abc import Iterable

Interval = tuple[int, int]


def merge(intervals: Iterable[Interval]) -> list[Interval]:
    """Sorted, non-overlapping intervals; touching ones ([a, b) and [b, c)) join."""
    merged: list[Interval] = []
    for start, end in sorted(interval for interval in intervals if interval[0] < interval[1]):
        if merged and start <= merged[-1][1]:
            if end > merged[-1][1]:
                merged[-1] = (merged[-1][0], end)
        else:
            merged.append((start, end))
    return merged


def subtract(intervals: Iterable[Interval], remove: Iterable[Interval]) -> list[Interval]:
    """What of ``intervals`` no interval of ``remove`` covers."""
    cuts = merge(remove)
    result: list[Interval] = []
    for start, end in merge(intervals):
        cursor = start
        for cut_start, cut_end in cuts:
            if cut_end <= cursor:
                continue
            if cut_start >= end:
                break
            if cut_start > cursor:
                result.append((cursor, cut_start))
            cursor = max(cursor, cut_end)
            if cursor >= end:
                break
        if cursor < end:
            result.append((cursor, end))
    return result


def clip(intervals: Iterable[Interval], start: int, end: int) -> list[Interval]:
    """The non-empty parts of ``intervals`` within [start, end)."""
    return [(max(s, start), min(e, end)) for s, e in intervals if max(s, start) < min(e, end)]


def total(intervals: Iterable[Interval]) -> int:
    return sum(end - start for start, end in intervals)


def split(intervals: Iterable[Interval], chunk: int) -> list[Interval]:
    """Cut each interval at multiples of ``chunk`` (pieces aligned to a day grid)."""
    pieces: list[Interval] = []
    for start, end in intervals:
        cursor = start
        while cursor < end:
            boundary = min(end, cursor - cursor % chunk + chunk)
            pieces.append((cursor, boundary))
            cursor = boundary
    return pieces
