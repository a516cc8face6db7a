"""History backfill: planning resumable pieces, fetching them a few at a time with
retries, storing bars (and Dukascopy ticks) exactly once, and the engine's background
backfill."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest
from conftest import make_settings, wait_until
from fake_dukascopy import Tick, route
from fakes import FakeHttpServer
from hypothesis import given
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from sptrader import backfill as backfill_module
from sptrader.backfill import LIVE_EDGE_US, Backfill, plan_pieces
from sptrader.config import DukascopyFeedConfig, SimFeedConfig
from sptrader.engine import Engine
from sptrader.errors import UsageError
from sptrader.feeds.base import Feed
from sptrader.feeds.dukascopy import US_PER_HOUR, DukascopyFeed, ticks_to_bars
from sptrader.feeds.sim import SimFeed
from sptrader.intervals import clip, merge, subtract, total
from sptrader.models import US_PER_DAY, US_PER_MINUTE, BackfillProgressed, HistoryStored
from sptrader.schema import ORDER_FLOW_COLUMNS, STORED_BAR_COLUMNS
from sptrader.schema import stored_bars as in_stored_layout
from sptrader.store import Store


def utc_us(*parts: int) -> int:
    return int(datetime(*parts, tzinfo=UTC).timestamp()) * 1_000_000


DAY0 = utc_us(2024, 3, 4)  # a Monday: the simulator is open around the clock anyway
START = DAY0 + 6 * US_PER_HOUR  # not on a chunk boundary
END = DAY0 + 2 * US_PER_DAY + 30 * US_PER_MINUTE
PIECES = [
    (START, DAY0 + US_PER_DAY),
    (DAY0 + US_PER_DAY, DAY0 + 2 * US_PER_DAY),
    (DAY0 + 2 * US_PER_DAY, END),
]
INSTRUMENTS = ["SIM:EURUSD", "SIM:BTCUSD"]


class WrappedFeed(Feed):
    """A history source around another feed's ``history``: records every call, can fail
    chosen calls, sleep in each, and says how many calls were in flight at most."""

    def __init__(
        self,
        inner: Feed,
        *,
        name: str | None = None,
        fail: Callable[[str, int, int, int], bool] = lambda instrument, start, end, attempt: False,
        delay_s: float = 0.0,
        max_concurrency: int = 4,
        chunk_us: int = US_PER_DAY,
        history_delay_us: int = 0,
    ) -> None:
        super().__init__([])
        self.inner = inner
        self.prefix = inner.prefix
        self.name = name or inner.name
        self.fail = fail
        self.delay_s = delay_s
        self.max_concurrency = max_concurrency
        self.history_chunk_us = chunk_us
        self.history_delay_us = history_delay_us
        self.calls: list[tuple[str, int, int]] = []
        self.in_flight = 0
        self.peak = 0
        self._lock = threading.Lock()

    async def stream(self, context) -> None:  # pragma: no cover - never streamed
        raise NotImplementedError

    def history(self, instrument: str, start_us: int, end_us: int) -> pl.DataFrame | None:
        with self._lock:
            self.calls.append((instrument, start_us, end_us))
            attempt = self.calls.count((instrument, start_us, end_us))
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)
        try:
            if self.delay_s:
                time.sleep(self.delay_s)
            if self.fail(instrument, start_us, end_us, attempt):
                raise RuntimeError(f"source down at {start_us}")
            return self.inner.history(instrument, start_us, end_us)
        finally:
            with self._lock:
                self.in_flight -= 1


def sim() -> SimFeed:
    return SimFeed([], SimFeedConfig())


@pytest.fixture
def store(tmp_path: Path):
    store = Store(tmp_path / "backfill.duckdb")
    store.migrate()
    yield store
    store.close()


def make_backfill(store: Store, feed: Feed | Callable[[str], Feed | None], **options):
    """A Backfill recording its progress events and the delays it slept."""
    events: list[BackfillProgressed] = []
    sleeps: list[float] = []
    feed_for = feed if callable(feed) and not isinstance(feed, Feed) else lambda name: feed
    backfill = Backfill(store, feed_for, on_progress=events.append, sleep=sleeps.append, **options)
    return backfill, events, sleeps


def stored_bars(store: Store, instrument: str) -> pl.DataFrame:
    return (
        store.cursor()
        .sql(
            "SELECT * FROM bars_1m WHERE instrument = $instrument ORDER BY ts",
            params={"instrument": instrument},
        )
        .pl()
    )


def expected_bars(instrument: str, ranges: list[tuple[int, int]]) -> pl.DataFrame:
    """The feed's history in the stored layout: SIM history gives no taker side (not even
    for instruments that trade), so buy_volume/sell_volume must be stored NULL."""
    frames = [sim().history(instrument, start, end) for start, end in ranges]
    history = pl.concat([frame for frame in frames if frame is not None]).sort("ts")
    assert not set(ORDER_FLOW_COLUMNS) & set(history.columns)
    return in_stored_layout(history)


def coverage_rows(store: Store, instrument: str) -> list[tuple[str, int, int]]:
    """The coverage table's rows of ``instrument``: (source, start, end)."""
    return (
        store.cursor()
        .execute(
            "SELECT source, epoch_us(start_ts), epoch_us(end_ts) FROM coverage"
            " WHERE instrument = ? AND timeframe = '1m' ORDER BY 2",
            [instrument],
        )
        .fetchall()
    )


def duplicates(store: Store) -> int:
    return (
        store.cursor()
        .execute("SELECT count(*) - count(DISTINCT (instrument, ts)) FROM bars_1m")
        .fetchall()[0][0]
    )


# --- planning -------------------------------------------------------------------------


@st.composite
def plans(draw):
    chunk = draw(st.integers(1, 50))
    start = draw(st.integers(0, 500))
    end = start + draw(st.integers(1, 500))
    bounds = st.integers(-60, 1100)
    # What is missing, as a gaps function returns it: sorted, disjoint; it may reach
    # beyond the range.
    gaps = merge(
        (first, first + length)
        for first, length in draw(st.lists(st.tuples(bounds, st.integers(1, 300)), max_size=6))
    )
    return chunk, start, end, gaps


@given(plans())
def test_pieces_tile_the_missing_ranges_on_the_grid(plan) -> None:
    chunk, start, end, gaps = plan
    pieces, skipped = plan_pieces(gaps, start, end, chunk)
    # The grid: [start, end) cut at every multiple of chunk.
    grid = []
    cursor = start
    while cursor < end:
        boundary = min(end, (cursor // chunk + 1) * chunk)
        grid.append((cursor, boundary))
        cursor = boundary
    assert grid[0][0] == start and grid[-1][1] == end
    assert all(left[1] == right[0] for left, right in itertools.pairwise(grid))
    missing = clip(gaps, start, end)
    # Exactly the missing part of the range is fetched, cut at the grid: within each
    # grid chunk the pieces are what is missing of it.
    assert pieces == [piece for cell in grid for piece in clip(missing, *cell)]
    assert merge(pieces) == merge(missing)
    assert total(pieces) == total(missing)  # so no two pieces overlap
    for first, last in pieces:
        assert start <= first < last <= end
        assert first // chunk == (last - 1) // chunk  # within one chunk
        assert first % chunk == 0 or any(gap[0] == first for gap in missing)
        assert last % chunk == 0 or any(gap[1] == last for gap in missing)
    assert all(left[1] <= right[0] for left, right in itertools.pairwise(pieces))
    # Skipped: the grid chunks where nothing is missing.
    assert skipped == sum(1 for cell in grid if not clip(missing, *cell))
    assert skipped + len({first // chunk for first, _ in pieces}) == len(grid)
    # Resuming once those pieces are stored: nothing is left.
    assert plan_pieces(subtract(gaps, pieces), start, end, chunk) == ([], len(grid))


def test_plan_cuts_the_range_at_the_feeds_chunks(store: Store) -> None:
    backfill, _, _ = make_backfill(store, WrappedFeed(sim()))
    [job] = backfill.plan(["SIM:EURUSD"], START + 17_000_000, END + 59_000_000)
    assert job.pieces == PIECES  # start and end rounded down to whole minutes
    assert (job.skipped, job.done, job.total) == (0, 0, 3)


def test_the_live_edge_and_the_sources_delay_are_never_reached(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = DAY0 + 10 * US_PER_HOUR + 30 * US_PER_MINUTE + 42_000_000
    monkeypatch.setattr(backfill_module, "now_us", lambda: now)
    start = DAY0 + 8 * US_PER_HOUR
    immediate, delayed = WrappedFeed(sim()), WrappedFeed(sim(), history_delay_us=US_PER_HOUR)

    # An instrument nobody streams: history up to the last closed minute.
    backfill, _, _ = make_backfill(store, immediate)
    [job] = backfill.plan(["SIM:EURUSD"], start, now + US_PER_DAY)
    assert job.pieces == [(start, DAY0 + 10 * US_PER_HOUR + 30 * US_PER_MINUTE)]
    with pytest.raises(UsageError, match="nothing to backfill"):
        backfill.plan(["SIM:EURUSD"], now - 30_000_000, now)  # the current minute

    # A streaming one: its last minutes belong to the live feed.
    streaming = {"SIM:EURUSD"}
    backfill, _, _ = make_backfill(
        store,
        immediate,
        live_edge_us=lambda name: LIVE_EDGE_US if name in streaming else 0,
    )
    [job, other] = backfill.plan(["SIM:EURUSD", "SIM:GBPUSD"], start, now + US_PER_DAY)
    edge = now - LIVE_EDGE_US
    assert job.pieces == [(start, edge - edge % US_PER_MINUTE)]
    assert job.pieces[0][1] == DAY0 + 10 * US_PER_HOUR + 28 * US_PER_MINUTE
    assert other.pieces == [(start, DAY0 + 10 * US_PER_HOUR + 30 * US_PER_MINUTE)]
    with pytest.raises(UsageError, match="nothing to backfill"):
        backfill.plan(["SIM:EURUSD"], now - US_PER_MINUTE, now)

    # A source that publishes late: its delay is kept off, streaming or not.
    backfill, _, _ = make_backfill(store, delayed)
    [job] = backfill.plan(["SIM:EURUSD"], start, now + US_PER_DAY)
    assert job.pieces == [(start, DAY0 + 9 * US_PER_HOUR + 30 * US_PER_MINUTE)]
    # An end before the edge is kept as it is.
    [job] = backfill.plan(["SIM:EURUSD"], start, start + 5 * US_PER_MINUTE)
    assert job.pieces == [(start, start + 5 * US_PER_MINUTE)]
    # Nothing left once the source's delay is taken off.
    with pytest.raises(UsageError, match="nothing to backfill"):
        backfill.plan(["SIM:EURUSD"], now - 30 * US_PER_MINUTE, now)


def test_usage_errors(store: Store) -> None:
    backfill, _, _ = make_backfill(store, lambda name: None)
    with pytest.raises(UsageError, match=r"KRAKEN:BTC/USD: no enabled feed"):
        backfill.plan(["KRAKEN:BTC/USD"], START, END)
    backfill, _, _ = make_backfill(store, WrappedFeed(sim()))
    with pytest.raises(UsageError, match="nothing to backfill"):
        backfill.plan(["SIM:EURUSD"], START, START)  # an empty range
    with pytest.raises(UsageError, match="nothing to backfill"):
        backfill.plan(["SIM:EURUSD"], END, START)  # backwards
    with pytest.raises(UsageError, match="nothing to backfill"):
        backfill.plan(["SIM:EURUSD"], START, START + 30_000_000)  # within one minute


# --- running --------------------------------------------------------------------------


def test_a_backfill_stores_exactly_the_feeds_history_and_reports_progress(store: Store) -> None:
    feed = WrappedFeed(sim())
    backfill, events, sleeps = make_backfill(store, feed)
    jobs = backfill.run(backfill.plan(INSTRUMENTS, START, END))

    assert sleeps == [] and all(not job.failed for job in jobs)
    assert sorted(feed.calls) == sorted((name, *piece) for name in INSTRUMENTS for piece in PIECES)
    for instrument, job in zip(INSTRUMENTS, jobs, strict=True):
        expected = expected_bars(instrument, [(START, END)])
        assert expected.height == 2 * 1440 + 30 - 6 * 60
        stored = stored_bars(store, instrument)
        assert stored.columns == STORED_BAR_COLUMNS
        assert stored.select(ORDER_FLOW_COLUMNS).null_count().row(0) == (expected.height,) * 2
        assert_frame_equal(stored, expected)
        assert job.rows == expected.height
        # Coverage: the whole range, merged, recorded under the feed's name.
        assert store.coverage(instrument) == [(START, END)]
        assert coverage_rows(store, instrument) == [("sim", START, END)]
        # Progress: running from 0, one event per piece, then done with every row.
        mine = [event for event in events if event.instrument == instrument]
        assert (mine[0].state, mine[0].done, mine[0].total) == ("running", 0, 3)
        assert [event.done for event in mine[1:4]] == [1, 2, 3]
        assert all(event.state == "running" for event in mine[:4])
        assert [event.rows for event in mine] == sorted(event.rows for event in mine)
        assert (mine[-1].state, mine[-1].done, mine[-1].total) == ("done", 3, 3)
        assert (mine[-1].rows, mine[-1].message) == (expected.height, "")
        assert len(mine) == 5
    assert duplicates(store) == 0


def test_a_rerun_skips_what_is_covered_and_fetches_only_the_rest(store: Store) -> None:
    first = WrappedFeed(sim())
    backfill, _, _ = make_backfill(store, first)
    backfill.run(backfill.plan(INSTRUMENTS, START, END))
    before = {name: stored_bars(store, name) for name in INSTRUMENTS}

    again = WrappedFeed(sim())
    backfill, events, _ = make_backfill(store, again)
    jobs = backfill.plan(INSTRUMENTS, START, END)
    assert [(job.pieces, job.skipped, job.done, job.total) for job in jobs] == [([], 3, 3, 3)] * 2
    backfill.run(jobs)
    assert again.calls == []
    assert [(event.instrument, event.state, event.done, event.total) for event in events] == [
        (name, "done", 3, 3) for name in INSTRUMENTS
    ]
    for name in INSTRUMENTS:
        assert_frame_equal(stored_bars(store, name), before[name])

    # A wider range fetches exactly the minutes that are new, on either side, cut at
    # the day grid; the day in between has nothing missing and is skipped.
    wider = WrappedFeed(sim())
    backfill, events, _ = make_backfill(store, wider)
    end = DAY0 + 3 * US_PER_DAY + US_PER_HOUR
    [job] = backfill.plan(["SIM:EURUSD"], DAY0, end)
    new = [(DAY0, START), (END, DAY0 + 3 * US_PER_DAY), (DAY0 + 3 * US_PER_DAY, end)]
    assert (job.pieces, job.skipped, job.done, job.total) == (new, 1, 1, 4)
    backfill.run([job])
    assert sorted(wider.calls) == [("SIM:EURUSD", *piece) for piece in new]
    assert (events[-1].state, events[-1].done, events[-1].total) == ("done", 4, 4)
    assert job.rows == 6 * 60 + (24 * 60 - 30) + 60
    assert store.coverage("SIM:EURUSD") == [(DAY0, end)]
    assert_frame_equal(stored_bars(store, "SIM:EURUSD"), expected_bars("SIM:EURUSD", [(DAY0, end)]))
    assert_frame_equal(stored_bars(store, "SIM:BTCUSD"), before["SIM:BTCUSD"])
    assert duplicates(store) == 0


def test_an_interrupted_backfill_keeps_the_good_pieces_and_resumes(store: Store) -> None:
    bad = PIECES[1]
    # One request at a time: the pieces run in order, so the outcome is deterministic.
    broken = WrappedFeed(
        sim(), fail=lambda name, start, end, attempt: (start, end) == bad, max_concurrency=1
    )
    backfill, events, sleeps = make_backfill(store, broken)
    [job] = backfill.run(backfill.plan(["SIM:EURUSD"], START, END))

    # The bad piece was tried three times with backoff; after it failed for good the
    # rest were not requested at all.
    assert broken.calls == [("SIM:EURUSD", *PIECES[0])] + [("SIM:EURUSD", *bad)] * 3
    assert sleeps == [2.0, 4.0]
    assert job.failed == f"RuntimeError: source down at {bad[0]}"
    last = events[-1]
    assert (last.state, last.done, last.total) == ("failed", 1, 3)
    assert last.message == job.failed
    assert store.coverage("SIM:EURUSD") == [PIECES[0]]  # the failed piece is not covered
    assert_frame_equal(stored_bars(store, "SIM:EURUSD"), expected_bars("SIM:EURUSD", [PIECES[0]]))

    healthy = WrappedFeed(sim(), max_concurrency=1)
    backfill, events, sleeps = make_backfill(store, healthy)
    [job] = backfill.plan(["SIM:EURUSD"], START, END)
    assert (job.pieces, job.skipped) == (PIECES[1:], 1)
    backfill.run([job])
    assert healthy.calls == [("SIM:EURUSD", *piece) for piece in PIECES[1:]]
    assert (events[0].done, events[-1].state, events[-1].done) == (1, "done", 3)
    assert store.coverage("SIM:EURUSD") == [(START, END)]
    assert_frame_equal(
        stored_bars(store, "SIM:EURUSD"), expected_bars("SIM:EURUSD", [(START, END)])
    )
    assert duplicates(store) == 0


def test_a_failing_piece_is_retried_with_backoff_until_it_succeeds(store: Store) -> None:
    flaky = WrappedFeed(
        sim(), fail=lambda name, start, end, attempt: start == START and attempt <= 2
    )
    backfill, events, sleeps = make_backfill(store, flaky)
    [job] = backfill.run(backfill.plan(["SIM:EURUSD"], START, END))
    assert sleeps == [2.0, 4.0]
    assert flaky.calls.count(("SIM:EURUSD", *PIECES[0])) == 3
    assert job.failed == "" and (events[-1].state, events[-1].done) == ("done", 3)
    assert store.coverage("SIM:EURUSD") == [(START, END)]
    assert_frame_equal(
        stored_bars(store, "SIM:EURUSD"), expected_bars("SIM:EURUSD", [(START, END)])
    )


def test_requests_in_flight_stay_within_each_feeds_max_concurrency(store: Store) -> None:
    wide = WrappedFeed(sim(), name="wide", delay_s=0.03, max_concurrency=2, chunk_us=US_PER_HOUR)
    narrow = WrappedFeed(
        sim(), name="narrow", delay_s=0.03, max_concurrency=1, chunk_us=US_PER_HOUR
    )
    feeds = {"SIM:EURUSD": wide, "SIM:GBPUSD": wide, "SIM:USDJPY": narrow}
    backfill, events, _ = make_backfill(store, feeds.get)
    jobs = backfill.run(backfill.plan(list(feeds), DAY0, DAY0 + 4 * US_PER_HOUR))
    assert len(wide.calls) == 8 and len(narrow.calls) == 4
    assert wide.peak == 2  # both instruments of a feed share its limit
    assert narrow.peak == 1
    assert all(job.rows == 240 and not job.failed for job in jobs)
    assert {event.instrument for event in events if event.state == "done"} == set(feeds)


# --- Dukascopy: ticks kept --------------------------------------------------------------


JAN_2 = utc_us(2024, 1, 2)  # a Tuesday
DUKASCOPY_TICKS: dict[int, list[Tick]] = {
    JAN_2 + 13 * US_PER_HOUR: [
        (1_250, 1.10457, 1.10452, 1.25, 0.75),
        (30_000, 1.10461, 1.10455, 0.01, 3.37),
        (61_999, 1.10401, 1.10399, 1.12, 0.9),
        (3_599_999, 1.10999, 1.10990, 12.0, 0.19),
    ],
    JAN_2 + US_PER_DAY + 9 * US_PER_HOUR: [
        (0, 1.1102, 1.1101, 1.5, 2.5),
        (59_999, 1.1104, 1.1103, 0.5, 1.0),
        (60_000, 1.1100, 1.1099, 2.0, 0.5),
    ],
}


def stored_ticks(store: Store) -> pl.DataFrame:
    return store.cursor().sql("SELECT * FROM ticks ORDER BY instrument, ts").pl()


def test_dukascopy_ticks_are_stored_once_and_bars_are_their_aggregate(store: Store) -> None:
    instrument = "DUKASCOPY:EURUSD"
    with FakeHttpServer(route(DUKASCOPY_TICKS)) as server:
        feed = DukascopyFeed([], DukascopyFeedConfig(enabled=True, url=server.url))
        feed.sleep = lambda seconds: None
        backfill, events, _ = make_backfill(store, feed, keep_ticks=lambda name: True)
        backfill.run(backfill.plan([instrument], JAN_2, JAN_2 + 2 * US_PER_DAY))
        ticks = stored_ticks(store)
        bars = stored_bars(store, instrument)
        assert coverage_rows(store, instrument) == [("dukascopy", JAN_2, JAN_2 + 2 * US_PER_DAY)]

        # Forget the coverage: a second run fetches everything again, and replaces.
        store.cursor().execute("DELETE FROM coverage")
        backfill, events, _ = make_backfill(store, feed, keep_ticks=lambda name: True)
        [job] = backfill.run(backfill.plan([instrument], JAN_2, JAN_2 + 2 * US_PER_DAY))
    assert job.failed == "" and events[-1].state == "done"
    assert ticks.height == sum(len(rows) for rows in DUKASCOPY_TICKS.values()) == 7
    assert_frame_equal(stored_ticks(store), ticks)
    assert ticks["bid"].to_list() == [tick[2] for hour in DUKASCOPY_TICKS.values() for tick in hour]
    assert_frame_equal(stored_bars(store, instrument), bars)
    assert bars.height == 5 and duplicates(store) == 0
    # Quotes have no taker side: the bars built from them carry NULL order flow.
    assert ticks["side"].null_count() == ticks.height
    assert bars.select(ORDER_FLOW_COLUMNS).null_count().row(0) == (bars.height,) * 2
    assert_frame_equal(bars, in_stored_layout(ticks_to_bars(ticks, "bid", JAN_2 + 3 * US_PER_DAY)))


def test_dukascopy_without_keep_ticks_stores_bars_only(store: Store) -> None:
    instrument = "DUKASCOPY:EURUSD"
    with FakeHttpServer(route(DUKASCOPY_TICKS)) as server:
        feed = DukascopyFeed([], DukascopyFeedConfig(enabled=True, url=server.url))
        backfill, _, _ = make_backfill(store, feed)
        backfill.run(backfill.plan([instrument], JAN_2, JAN_2 + US_PER_DAY))
    assert stored_ticks(store).height == 0
    assert stored_bars(store, instrument).height == 3


# --- the engine -------------------------------------------------------------------------


async def test_engine_backfills_in_the_background(home: Path) -> None:
    settings = make_settings(
        home,
        watchlist=["SIM:EURUSD"],
        store={"seed_days": 0.01, "flush_interval_ms": 20},
        feeds={"sim": {"publish_interval_ms": 10}},
    )
    engine = Engine(settings)
    events = engine.subscribe("test", 100_000)
    seen: list[object] = []
    await engine.start()
    try:
        engine.start_backfill(["sim:gbpusd"], START, END)

        def finished() -> bool:
            seen.extend(
                event
                for event in events.get_nowait()
                # The watchlist's own gap fill also reports HistoryStored: not ours.
                if isinstance(event, BackfillProgressed | HistoryStored)
                and event.instrument == "SIM:GBPUSD"
            )
            return any(isinstance(event, HistoryStored) for event in seen)

        await wait_until(finished, timeout=10)
        progress = [event for event in seen if isinstance(event, BackfillProgressed)]
        assert all(event.instrument == "SIM:GBPUSD" for event in progress)
        assert progress[0].state == "running"
        assert (progress[-1].state, progress[-1].done, progress[-1].total) == ("done", 3, 3)
        [stored] = [event for event in seen if isinstance(event, HistoryStored)]
        expected = expected_bars("SIM:GBPUSD", [(START, END)])
        assert (stored.instrument, stored.rows) == ("SIM:GBPUSD", expected.height)
        assert seen.index(stored) > seen.index(progress[-1])
        assert_frame_equal(stored_bars(engine.require_store(), "SIM:GBPUSD"), expected)

        with pytest.raises(UsageError):
            engine.start_backfill(["KRAKEN:BTC/USD"], START, END)  # kraken is disabled
        with pytest.raises(UsageError, match="nothing to backfill"):
            engine.start_backfill(["SIM:GBPUSD"], END, START)
    finally:
        await engine.stop()
