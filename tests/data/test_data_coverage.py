"""The data manager: coverage (merged stored ranges, seeded by the migration), interval
arithmetic, market sessions (so closed hours are no gap), backfills that fetch exactly
what is missing (once, even when two run at the same time), and the status report."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import polars as pl
import pytest
from conftest import make_settings
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from sptrader.data import manager
from sptrader.engine import Engine
from sptrader.errors import ConfigError
from sptrader.feeds.base import Feed
from sptrader.intervals import clip, merge, split, subtract, total
from sptrader.models import US_PER_DAY, US_PER_MINUTE
from sptrader.schema import ORDER_FLOW_COLUMNS, STORED_BAR_COLUMNS, stored_bars
from sptrader.sessions import open_ranges, parse_week_time
from sptrader.store import Store, database

US_PER_HOUR = 60 * US_PER_MINUTE


def utc_us(*parts: int) -> int:
    return int(datetime(*parts, tzinfo=UTC).timestamp()) * 1_000_000


def points(ranges: list[tuple[int, int]]) -> set[int]:
    """The integers a list of half-open ranges holds (a small-domain model of a set)."""
    return {point for start, end in ranges for point in range(start, end)}


def sorted_disjoint(ranges: list[tuple[int, int]], *, touching: bool) -> bool:
    return all(start < end for start, end in ranges) and all(
        left[1] < right[0] or (touching and left[1] == right[0])
        for left, right in itertools.pairwise(ranges)
    )


# --- interval arithmetic ------------------------------------------------------------

ranges = st.lists(
    st.tuples(st.integers(0, 120), st.integers(0, 40)).map(lambda pair: (pair[0], sum(pair))),
    max_size=8,
)


@given(ranges)
def test_merge_is_the_sorted_disjoint_union(some: list[tuple[int, int]]) -> None:
    merged = merge(some)
    assert points(merged) == points(some)
    # Sorted, no overlap, and touching ranges joined (so never [a, b) [b, c)).
    assert sorted_disjoint(merged, touching=False)
    assert merge(merged) == merged
    assert merge(reversed(some)) == merged


@given(ranges, ranges)
def test_subtract_leaves_exactly_what_the_cuts_miss(
    some: list[tuple[int, int]], cuts: list[tuple[int, int]]
) -> None:
    rest = subtract(some, cuts)
    assert points(rest) == points(some) - points(cuts)
    assert sorted_disjoint(rest, touching=False)
    # What was taken away is the intersection: together they give back the whole.
    taken = [piece for start, end in merge(cuts) for piece in clip(merge(some), start, end)]
    assert points(taken) == points(some) & points(cuts)
    assert merge(rest + taken) == merge(some)
    assert subtract(some, []) == merge(some)
    assert subtract(some, some) == []


@given(ranges, st.integers(0, 120), st.integers(0, 60), st.integers(1, 30))
def test_clip_and_split(some: list[tuple[int, int]], start: int, length: int, chunk: int) -> None:
    merged = merge(some)
    clipped = clip(merged, start, start + length)
    assert points(clipped) == points(merged) & set(range(start, start + length))
    assert sorted_disjoint(clipped, touching=False)
    pieces = split(merged, chunk)
    assert merge(pieces) == merged and total(pieces) == total(merged)
    assert sorted_disjoint(pieces, touching=True)
    assert all(first // chunk == (last - 1) // chunk for first, last in pieces)


# --- the coverage table ---------------------------------------------------------------


@pytest.fixture(scope="module")
def shared_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    store = Store(tmp_path_factory.mktemp("coverage") / "coverage.duckdb")
    store.migrate()
    yield store
    store.close()


BASE = utc_us(2024, 3, 4)
SOURCES = ["sim", "oanda", "import"]


@st.composite
def insertions(draw):
    """Minute ranges with a source each, in some order, cut into batches."""
    added = draw(
        st.lists(
            st.tuples(
                st.sampled_from(SOURCES),
                st.integers(0, 200),
                st.integers(1, 30),
            ).map(
                lambda row: (
                    row[0],
                    BASE + row[1] * US_PER_MINUTE,
                    BASE + (row[1] + row[2]) * US_PER_MINUTE,
                )
            ),
            max_size=10,
        )
    )
    order = draw(st.permutations(added))
    cuts = sorted(draw(st.lists(st.integers(0, len(order)), max_size=4)))
    batches = [order[first:last] for first, last in itertools.pairwise([0, *cuts, len(order)])]
    return added, batches


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(insertions(), st.booleans())
def test_coverage_is_the_merge_of_every_range_in_any_order(
    shared_store: Store, inserted, one_by_one: bool
) -> None:
    store = shared_store
    added, batches = inserted
    store.cursor().execute("DELETE FROM coverage")
    # Another instrument and another timeframe: never mixed in.
    store.add_coverage("SIM:GBPUSD", "1m", "sim", BASE, BASE + US_PER_DAY)
    store.add_coverage("SIM:EURUSD", "1h", "sim", BASE - US_PER_DAY, BASE)
    for batch in batches:
        rows = [("SIM:EURUSD", "1m", source, start, end) for source, start, end in batch]
        if one_by_one:
            for row in rows:
                store.add_coverage(*row)
        else:
            store.add_coverage_many(rows)

    expected = merge((start, end) for _, start, end in added)
    assert store.coverage("SIM:EURUSD") == expected
    assert store.coverage("SIM:GBPUSD") == [(BASE, BASE + US_PER_DAY)]
    assert store.coverage("SIM:EURUSD", "1h") == [(BASE - US_PER_DAY, BASE)]
    # Each source's rows are kept merged: sorted, disjoint, not touching.
    for source in SOURCES:
        rows = (
            store.cursor()
            .execute(
                "SELECT epoch_us(start_ts), epoch_us(end_ts) FROM coverage"
                " WHERE instrument = 'SIM:EURUSD' AND timeframe = '1m' AND source = ?"
                " ORDER BY 1",
                [source],
            )
            .fetchall()
        )
        assert rows == merge((start, end) for name, start, end in added if name == source)


def test_adding_an_empty_or_known_range_changes_nothing(shared_store: Store) -> None:
    store = shared_store
    store.cursor().execute("DELETE FROM coverage")
    store.add_coverage("SIM:EURUSD", "1m", "sim", BASE, BASE + US_PER_HOUR)
    store.add_coverage("SIM:EURUSD", "1m", "sim", BASE + US_PER_MINUTE, BASE + 2 * US_PER_MINUTE)
    store.add_coverage("SIM:EURUSD", "1m", "sim", BASE + US_PER_DAY, BASE + US_PER_DAY)
    store.add_coverage_many([])
    assert store.coverage("SIM:EURUSD") == [(BASE, BASE + US_PER_HOUR)]
    assert store.cursor().execute("SELECT count(*) FROM coverage").fetchall() == [(1,)]


# --- the migration seeds coverage from an older store ---------------------------------


def bars_frame(instrument: str, stamps: list[int]) -> pl.DataFrame:
    """Flat 1m bars of ``instrument`` at the given timestamps."""
    return pl.DataFrame(
        {
            "instrument": [instrument] * len(stamps),
            "ts": pl.Series(stamps, dtype=pl.Int64).cast(pl.Datetime("us")),
            "open": [1.0] * len(stamps),
            "high": [1.0] * len(stamps),
            "low": [1.0] * len(stamps),
            "close": [1.0] * len(stamps),
            "volume": [1.0] * len(stamps),
            "trades": [1] * len(stamps),
        }
    )


def at_minutes(*minutes: int) -> list[int]:
    return [BASE + minute * US_PER_MINUTE for minute in minutes]


def test_the_coverage_migration_seeds_runs_of_bars_and_finished_backfills(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    every = database.available_migrations()
    assert [name for _, name, _ in every][:3] == [
        "001_initial.sql",
        "002_symbols_and_backfills.sql",
        "003_coverage.sql",
    ]
    monkeypatch.setattr(database, "available_migrations", lambda: every[:2])
    store = Store(tmp_path / "old.duckdb")
    assert store.migrate() == ["001_initial.sql", "002_symbols_and_backfills.sql"]
    # SIM:EURUSD: minutes 0-4 and 7-9 stored (5 and 6 missing), then 100 alone. Written
    # as a store at 002 holds them (no order-flow columns yet: upsert_bars writes today's).
    old_bars = pl.concat(
        [
            bars_frame("SIM:EURUSD", at_minutes(0, 1, 2, 3, 4, 7, 8, 9, 100)),
            bars_frame("OANDA:EUR_USD", at_minutes(30, 31)),
        ]
    )
    cursor = store.cursor()
    cursor.register("old_bars", old_bars)
    cursor.execute("INSERT INTO bars_1m SELECT * FROM old_bars")
    cursor.unregister("old_bars")
    # A finished backfill of a day before (a quiet market may have left no bars),
    # and one overlapping the first run of bars.
    store.cursor().executemany(
        "INSERT INTO backfill_ranges VALUES (?, make_timestamp(?), make_timestamp(?), ?,"
        " current_localtimestamp())",
        [
            ["SIM:EURUSD", BASE - US_PER_DAY, BASE - US_PER_HOUR, 0],
            ["SIM:EURUSD", BASE + 3 * US_PER_MINUTE, BASE + 6 * US_PER_MINUTE, 3],
        ],
    )
    monkeypatch.setattr(database, "available_migrations", lambda: every)
    assert store.migrate() == [name for _, name, _ in every[2:]]
    assert store.schema_version() == every[-1][0]

    def minutes(first: int, last: int) -> tuple[int, int]:
        return BASE + first * US_PER_MINUTE, BASE + last * US_PER_MINUTE

    assert store.coverage("SIM:EURUSD") == [
        (BASE - US_PER_DAY, BASE - US_PER_HOUR),
        minutes(0, 6),  # bars 0-4 and the backfill 3-6 together
        minutes(7, 10),
        minutes(100, 101),
    ]
    assert store.coverage("OANDA:EUR_USD") == [minutes(30, 32)]
    # Recorded under the feed's name, as the feeds record coverage from now on.
    sources = store.cursor().execute("SELECT DISTINCT source FROM coverage ORDER BY 1").fetchall()
    assert sources == [("oanda",), ("sim",)]
    tables = {
        row[0]
        for row in store.cursor()
        .execute("SELECT table_name FROM information_schema.tables")
        .fetchall()
    }
    assert "backfill_ranges" not in tables
    # The old bars survive the later migrations as they were, order flow NULL.
    upgraded = store.cursor().sql("SELECT * FROM bars_1m ORDER BY instrument DESC, ts").pl()
    assert upgraded.columns == STORED_BAR_COLUMNS
    assert_frame_equal(upgraded, stored_bars(old_bars))
    assert upgraded.select(ORDER_FLOW_COLUMNS).null_count().row(0) == (old_bars.height,) * 2
    # New coverage merges with what the migration seeded.
    store.add_coverage("SIM:EURUSD", "1m", "sim", *minutes(6, 7))
    assert store.coverage("SIM:EURUSD")[1] == minutes(0, 10)
    store.close()


# --- sessions and gaps ------------------------------------------------------------------

FRI = utc_us(2024, 3, 8)  # Friday 2024-03-08 00:00 UTC
MON = FRI - 4 * US_PER_DAY
SAT, SUN, NEXT_MON, TUE, WED = (FRI + days * US_PER_DAY for days in (1, 2, 3, 4, 5))


@pytest.fixture
def engine(home: Path) -> Iterator[Engine]:
    engine = make_engine(home)
    yield engine
    engine.require_store().close()


def make_engine(home: Path, **config) -> Engine:
    engine = Engine(make_settings(home, watchlist=["SIM:EURUSD"], **config))
    engine.open_store()
    return engine


@pytest.mark.parametrize("instrument", ["OANDA:EUR_USD", "DUKASCOPY:EURUSD"])
def test_the_fx_weekend_is_no_gap_and_a_missing_hour_is(engine: Engine, instrument: str) -> None:
    data, store = engine.data, engine.require_store()
    assert engine.data.kind_of(instrument) == "fx" and data.session_of(instrument) == "fx"
    # Nothing stored: everything but Friday 22:00 to Sunday 22:00 is missing.
    assert data.gaps(instrument, MON, WED) == [
        (MON, FRI + 22 * US_PER_HOUR),
        (SUN + 22 * US_PER_HOUR, WED),
    ]
    store.add_coverage(instrument, "1m", "import", MON, FRI + 22 * US_PER_HOUR)
    store.add_coverage(instrument, "1m", "import", SUN + 22 * US_PER_HOUR, TUE + 10 * US_PER_HOUR)
    store.add_coverage(instrument, "1m", "import", TUE + 11 * US_PER_HOUR, WED)
    assert data.gaps(instrument, MON, WED) == [(TUE + 10 * US_PER_HOUR, TUE + 11 * US_PER_HOUR)]
    assert data.gaps(instrument, FRI, TUE) == []  # the weekend is closed, not missing
    assert data.gaps(instrument, SAT, SUN) == []
    # A range starting inside the hole: clipped to the range.
    start = TUE + 10 * US_PER_HOUR + 20 * US_PER_MINUTE
    assert data.gaps(instrument, start, WED) == [(start, TUE + 11 * US_PER_HOUR)]


def test_the_fx_week_times_come_from_the_config(home: Path) -> None:
    engine = make_engine(home, data={"fx_week_close": "Fri 21:00", "fx_week_open": "sun 23:30"})
    try:
        assert engine.data.gaps("OANDA:EUR_USD", FRI, TUE) == [
            (FRI, FRI + 21 * US_PER_HOUR),
            (SUN + 23 * US_PER_HOUR + 30 * US_PER_MINUTE, TUE),
        ]
    finally:
        engine.require_store().close()
    assert parse_week_time("Fri 22:00", "k") == 4 * US_PER_DAY + 22 * US_PER_HOUR
    assert parse_week_time(" mon 0:05 ", "k") == 5 * US_PER_MINUTE
    for bad in ("Friday 22:00", "Fri 24:00", "Fri 22:60", "22:00"):
        with pytest.raises(ConfigError, match=r"data\.fx_week_close"):
            parse_week_time(bad, "data.fx_week_close")


def test_a_closing_window_inside_the_week() -> None:
    """A close and open that do not wrap the week (Wednesday 10:00 to 12:00)."""
    close, opens = parse_week_time("Wed 10:00", "k"), parse_week_time("Wed 12:00", "k")
    fortnight = [(MON, NEXT_MON + 7 * US_PER_DAY)]
    opened = open_ranges("fx", *fortnight[0], fx_close_us=close, fx_open_us=opens)
    wed = MON + 2 * US_PER_DAY
    closed = [(wed + 10 * US_PER_HOUR, wed + 12 * US_PER_HOUR)]
    closed.append((closed[0][0] + 7 * US_PER_DAY, closed[0][1] + 7 * US_PER_DAY))
    assert opened == subtract(fortnight, closed)


def reference_open(session: str, moment_us: int) -> bool:
    """Whether a session is open at a moment, worked out from the calendar alone."""
    moment = datetime.fromtimestamp(moment_us / 1e6, UTC)
    if session == "fx":  # closed from Friday 22:00 to Sunday 22:00 UTC
        day, hour = moment.weekday(), moment.hour
        return not (day == 5 or (day == 4 and hour >= 22) or (day == 6 and hour < 22))
    zone, opens, closes = {
        "nyse": ("America/New_York", (9, 30), (16, 0)),
        "lse": ("Europe/London", (8, 0), (16, 30)),
        "xetra": ("Europe/Berlin", (9, 0), (17, 30)),
        "tse": ("Asia/Tokyo", (9, 0), (15, 0)),
    }[session]
    local = moment.astimezone(ZoneInfo(zone))
    return local.weekday() < 5 and opens <= (local.hour, local.minute) < closes


@settings(max_examples=60, deadline=None)
@given(
    st.sampled_from(["fx", "nyse", "lse", "xetra", "tse"]),
    st.integers(utc_us(2000, 1, 1) // US_PER_MINUTE, utc_us(2030, 1, 1) // US_PER_MINUTE),
    st.integers(1, 12 * 24 * 60),
    st.lists(st.floats(0, 1, exclude_max=True), min_size=1, max_size=40),
)
def test_open_ranges_agree_with_the_calendar(
    session: str, start_minute: int, minutes: int, samples: list[float]
) -> None:
    start = start_minute * US_PER_MINUTE
    end = start + minutes * US_PER_MINUTE
    fx = {
        "fx_close_us": parse_week_time("Fri 22:00", "k"),
        "fx_open_us": parse_week_time("Sun 22:00", "k"),
    }
    opened = open_ranges(session, start, end, **fx)
    assert sorted_disjoint(opened, touching=False)
    assert all(start <= first < last <= end for first, last in opened)
    # Every sampled minute (and the first and last) is open exactly when the calendar
    # says so.
    moments = {start, end - US_PER_MINUTE}
    moments |= {start + int(sample * minutes) * US_PER_MINUTE for sample in samples}
    for moment in moments:
        inside = any(first <= moment < last for first, last in opened)
        assert inside == reference_open(session, moment), datetime.fromtimestamp(moment / 1e6, UTC)
    # Edges of open ranges are real openings and closings (or the range's own ends).
    for first, last in opened:
        assert first == start or not reference_open(session, first - US_PER_MINUTE)
        assert last == end or not reference_open(session, last)


def test_crypto_is_open_around_the_clock(engine: Engine) -> None:
    data, store = engine.data, engine.require_store()
    instrument = "BINANCE:BTCUSDT"
    assert (data.kind_of(instrument), data.session_of(instrument)) == ("crypto", "24x7")
    store.add_coverage(instrument, "1m", "binance", FRI, SAT + 3 * US_PER_HOUR)
    store.add_coverage(instrument, "1m", "binance", SAT + 4 * US_PER_HOUR, NEXT_MON)
    assert data.gaps(instrument, FRI, NEXT_MON) == [(SAT + 3 * US_PER_HOUR, SAT + 4 * US_PER_HOUR)]


def test_the_simulator_never_closes(engine: Engine) -> None:
    assert engine.data.session_of("SIM:SPY") == "24x7"
    assert engine.data.gaps("SIM:EURUSD", FRI, NEXT_MON) == [(FRI, NEXT_MON)]


def hours(day: int, *bounds: tuple[int, int]) -> list[tuple[int, int]]:
    """[(day + h1:m1, day + h2:m2)] from ((h1, m1), (h2, m2))."""
    first, last = bounds
    return [
        (
            day + first[0] * US_PER_HOUR + first[1] * US_PER_MINUTE,
            day + last[0] * US_PER_HOUR + last[1] * US_PER_MINUTE,
        )
    ]


def exchange_day(session: str, *day: int) -> list[tuple[int, int]]:
    start = utc_us(*day)
    return open_ranges(session, start, start + US_PER_DAY, fx_close_us=0, fx_open_us=0)


def test_exchange_sessions_follow_their_daylight_saving_time() -> None:
    # New York moved to summer time on 2026-03-08; London and Frankfurt on 03-29.
    friday, monday = utc_us(2026, 3, 6), utc_us(2026, 3, 9)
    assert exchange_day("nyse", 2026, 3, 6) == hours(friday, (14, 30), (21, 0))
    assert exchange_day("nyse", 2026, 3, 9) == hours(monday, (13, 30), (20, 0))
    assert exchange_day("nasdaq", 2026, 3, 9) == hours(monday, (13, 30), (20, 0))
    assert exchange_day("nyse", 2026, 3, 7) == []  # Saturday
    assert exchange_day("nyse", 2026, 3, 8) == []  # Sunday
    # The weeks the US is on summer time and Europe is not yet (and in the autumn,
    # no longer): European sessions keep their winter hours in UTC.
    for day in ((2026, 3, 16), (2026, 3, 27), (2026, 10, 26), (2026, 10, 30)):
        start = utc_us(*day)
        assert exchange_day("nyse", *day) == hours(start, (13, 30), (20, 0))
        assert exchange_day("lse", *day) == hours(start, (8, 0), (16, 30))
        assert exchange_day("xetra", *day) == hours(start, (8, 0), (16, 30))
    for day in ((2026, 3, 30), (2026, 10, 23)):  # all on summer time
        start = utc_us(*day)
        assert exchange_day("nyse", *day) == hours(start, (13, 30), (20, 0))
        assert exchange_day("lse", *day) == hours(start, (7, 0), (15, 30))
        assert exchange_day("xetra", *day) == hours(start, (7, 0), (15, 30))
    november = utc_us(2026, 11, 2)  # all on winter time again
    assert exchange_day("nyse", 2026, 11, 2) == hours(november, (14, 30), (21, 0))
    assert exchange_day("lse", 2026, 11, 2) == hours(november, (8, 0), (16, 30))
    # Tokyo has no daylight saving time; its Monday starts on Monday 00:00 UTC.
    assert exchange_day("tse", 2026, 3, 9) == hours(monday, (0, 0), (6, 0))
    with pytest.raises(ConfigError, match="unknown session 'moon'"):
        open_ranges("moon", friday, monday, fx_close_us=0, fx_open_us=0)


def test_equities_are_missing_only_in_exchange_hours(engine: Engine) -> None:
    store = engine.require_store()
    symbols = pl.DataFrame(
        {
            "feed": ["oanda"],
            "instrument": ["OANDA:US_AAPL"],
            "description": ["Apple"],
            "kind": ["equity"],
            "base": ["AAPL"],
            "quote": ["USD"],
        }
    )
    store.replace_symbols("oanda", symbols, 0)
    data = engine.data
    assert (data.kind_of("OANDA:US_AAPL"), data.session_of("OANDA:US_AAPL")) == ("equity", "nyse")
    friday, monday = utc_us(2026, 3, 6), utc_us(2026, 3, 9)
    gaps = data.gaps("OANDA:US_AAPL", friday, monday + US_PER_DAY)
    assert gaps == hours(friday, (14, 30), (21, 0)) + hours(monday, (13, 30), (20, 0))
    store.add_coverage("OANDA:US_AAPL", "1m", "oanda", friday + 15 * US_PER_HOUR, monday)
    assert data.gaps("OANDA:US_AAPL", friday, monday + US_PER_DAY) == (
        hours(friday, (14, 30), (15, 0)) + hours(monday, (13, 30), (20, 0))
    )


def test_the_config_sets_sessions_per_instrument_and_kind(home: Path) -> None:
    sessions = {"OANDA:SPX500_USD": "nyse", "crypto": "fx", "BINANCE:ETHUSDT": "24x7"}
    engine = make_engine(home, data={"sessions": sessions})
    try:
        data = engine.data
        assert data.session_of("OANDA:SPX500_USD") == "nyse"
        assert data.session_of("OANDA:EUR_USD") == "fx"
        assert data.session_of("BINANCE:BTCUSDT") == "fx"  # by its kind
        assert data.session_of("BINANCE:ETHUSDT") == "24x7"  # the instrument wins
        day = utc_us(2026, 3, 9)
        assert data.gaps("OANDA:SPX500_USD", day, day + US_PER_DAY) == hours(day, (13, 30), (20, 0))
        assert data.gaps("BINANCE:BTCUSDT", FRI, NEXT_MON) == [
            (FRI, FRI + 22 * US_PER_HOUR),
            (SUN + 22 * US_PER_HOUR, NEXT_MON),
        ]
        assert data.gaps("BINANCE:ETHUSDT", FRI, NEXT_MON) == [(FRI, NEXT_MON)]
    finally:
        engine.require_store().close()


def test_the_current_minute_and_the_future_are_never_gaps(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = TUE + 10 * US_PER_HOUR + 30 * US_PER_MINUTE + 42_000_000
    monkeypatch.setattr(manager, "now_us", lambda: now)
    minute = now - now % US_PER_MINUTE
    assert engine.data.gaps("OANDA:EUR_USD", TUE, WED) == [(TUE, minute)]
    assert engine.data.gaps("BINANCE:BTCUSDT", minute, WED) == []
    assert engine.data.gaps("BINANCE:BTCUSDT", WED, WED + US_PER_DAY) == []
    status = engine.data.status("OANDA:EUR_USD", TUE, WED)
    assert status.gaps == [(TUE, minute)] and status.days == [0.0]


# --- fetching exactly what is missing, once -------------------------------------------


class CountingFeed(Feed):
    """History with a bar every minute; records each request, a little slow."""

    prefix = "OANDA"
    name = "oanda"
    realtime = False

    def __init__(self, delay_s: float = 0.0) -> None:
        super().__init__([])
        self.delay_s = delay_s
        self.calls: list[tuple[int, int]] = []
        self._lock = threading.Lock()

    async def stream(self, context) -> None:  # pragma: no cover - never streamed
        raise NotImplementedError

    def history(self, instrument: str, start_us: int, end_us: int) -> pl.DataFrame:
        with self._lock:
            self.calls.append((start_us, end_us))
        time.sleep(self.delay_s)
        return bars_frame(instrument, list(range(start_us, end_us, US_PER_MINUTE)))


THU = FRI - US_PER_DAY
INSTRUMENT = "OANDA:EUR_USD"
# Thursday to Tuesday with Thursday 06:00-18:00 and Monday morning already stored:
# what is missing is cut at midnights; Saturday is closed and skipped.
PRE_COVERED = [
    (THU + 6 * US_PER_HOUR, THU + 18 * US_PER_HOUR),
    (NEXT_MON, NEXT_MON + 12 * US_PER_HOUR),
]
MISSING = [
    (THU, THU + 6 * US_PER_HOUR),
    (THU + 18 * US_PER_HOUR, FRI),
    (FRI, FRI + 22 * US_PER_HOUR),
    (SUN + 22 * US_PER_HOUR, NEXT_MON),
    (NEXT_MON + 12 * US_PER_HOUR, TUE),
]


def counting_engine(home: Path, feed: CountingFeed) -> Engine:
    engine = make_engine(home)
    engine.history_feed = lambda instrument: feed  # type: ignore[method-assign]
    store = engine.require_store()
    store.add_coverage(INSTRUMENT, "1m", "import", *PRE_COVERED[0])
    store.add_coverage(INSTRUMENT, "1m", "oanda", *PRE_COVERED[1])
    return engine


def stored_minutes(store: Store) -> list[int]:
    rows = store.cursor().execute(
        "SELECT epoch_us(ts) FROM bars_1m WHERE instrument = ? ORDER BY ts", [INSTRUMENT]
    )
    return [row[0] for row in rows.fetchall()]


def test_a_backfill_fetches_exactly_the_missing_open_hours(home: Path) -> None:
    feed = CountingFeed()
    engine = counting_engine(home, feed)
    store = engine.require_store()
    try:
        backfill = engine.make_backfill()
        [job] = backfill.plan([INSTRUMENT], THU, TUE)
        assert (job.pieces, job.skipped, job.total) == (MISSING, 1, 6)
        [job] = backfill.run([job])
        assert job.failed == "" and job.done == job.total
        assert sorted(feed.calls) == MISSING
        assert job.rows == total(MISSING) // US_PER_MINUTE
        assert stored_minutes(store) == [
            minute for start, end in MISSING for minute in range(start, end, US_PER_MINUTE)
        ]
        # Covered now: the open hours of the range (the weekend stays uncovered, and
        # is no gap).
        assert store.coverage(INSTRUMENT) == merge(MISSING + PRE_COVERED)
        assert engine.data.gaps(INSTRUMENT, THU, TUE) == []
        # Nothing left to do: the five days of the range are skipped as stored.
        again = engine.make_backfill()
        [job] = again.plan([INSTRUMENT], THU, TUE)
        assert (job.pieces, job.skipped, job.total) == ([], 5, 5)
        again.run([job])
        assert len(feed.calls) == len(MISSING)
    finally:
        store.close()


def test_concurrent_backfills_of_a_range_fetch_each_piece_once(home: Path) -> None:
    feed = CountingFeed(delay_s=0.05)
    engine = counting_engine(home, feed)
    store = engine.require_store()
    try:
        # The same range twice, and an overlapping one starting inside a piece.
        overlapping = THU + 20 * US_PER_HOUR
        plans = [
            (engine.make_backfill(), THU),
            (engine.make_backfill(), THU),
            (engine.make_backfill(), overlapping),
        ]
        jobs = [backfill.plan([INSTRUMENT], start, TUE) for backfill, start in plans]
        assert jobs[0][0].pieces == jobs[1][0].pieces == MISSING
        barrier = threading.Barrier(len(plans))
        results: list[list] = [[] for _ in plans]

        def run(index: int) -> None:
            barrier.wait()
            results[index] = plans[index][0].run(jobs[index])

        threads = [threading.Thread(target=run, args=(index,)) for index in range(len(plans))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=20)
        assert all(not result[0].failed for result in results)
        assert all(result[0].done == result[0].total for result in results)
        # Every missing minute fetched, none twice.
        assert total(feed.calls) == total(MISSING)
        assert merge(feed.calls) == merge(MISSING)
        assert len(feed.calls) <= len(MISSING) + 1  # the overlapping start may split one
        assert store.coverage(INSTRUMENT) == merge(MISSING + PRE_COVERED)
        minutes = stored_minutes(store)
        assert len(minutes) == len(set(minutes)) == total(MISSING) // US_PER_MINUTE
    finally:
        store.close()


# --- status -------------------------------------------------------------------------------


def test_status_reports_coverage_gaps_and_daily_shares(engine: Engine) -> None:
    store = engine.require_store()
    # Friday to Monday: open Friday until 22:00 and Sunday from 22:00 (24 h in all).
    stored = CountingFeed().history(INSTRUMENT, FRI, FRI + 12 * US_PER_HOUR)
    store.upsert_bars(stored)
    store.add_coverage(INSTRUMENT, "1m", "oanda", FRI, FRI + 12 * US_PER_HOUR)
    store.add_coverage(INSTRUMENT, "1m", "import", SAT, SAT + US_PER_HOUR)  # closed anyway
    status = engine.data.status(INSTRUMENT, FRI, NEXT_MON)
    assert status.instrument == INSTRUMENT
    assert status.source == "import, oanda"
    assert (status.first_us, status.last_us) == (FRI, FRI + 12 * US_PER_HOUR - US_PER_MINUTE)
    assert status.bars == 12 * 60
    assert status.gaps == [
        (FRI + 12 * US_PER_HOUR, FRI + 22 * US_PER_HOUR),
        (SUN + 22 * US_PER_HOUR, NEXT_MON),
    ]
    assert status.coverage_pct == pytest.approx(50.0)
    assert status.days == pytest.approx([12 / 22, -1.0, 0.0])
    # Nothing stored: no bars, no share; a closed window is all covered.
    empty = engine.data.status("OANDA:GBP_USD", FRI, NEXT_MON)
    assert (empty.first_us, empty.last_us, empty.bars, empty.source) == (None, None, 0, "")
    assert empty.coverage_pct == 0.0 and empty.days == [0.0, -1.0, 0.0]
    closed = engine.data.status("OANDA:GBP_USD", SAT, SUN)
    assert (closed.coverage_pct, closed.gaps, closed.days) == (100.0, [], [-1.0])
