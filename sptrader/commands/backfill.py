"""``sptrader backfill INSTRUMENT... --from DATE [--to DATE]``: download history with a
progress bar per instrument. With a daemon running, the daemon does the work (it holds
the store) and this command shows its progress."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from collections.abc import Callable, Iterator

from sptrader.client.paths import running_pid
from sptrader.clock import datetime_to_us, now_us, parse_time
from sptrader.config import Settings
from sptrader.errors import SptraderError, UsageError
from sptrader.models import BackfillProgressed, normalize_instrument


def run_backfill(settings: Settings, args: argparse.Namespace) -> int:
    if args.tf != "1m":
        raise UsageError(
            f"--tf {args.tf}: the store keeps 1m bars and rolls the other timeframes up from them; use --tf 1m"
        )
    instruments = list(dict.fromkeys(normalize_instrument(name) for name in args.instruments))
    start_us = datetime_to_us(parse_time(args.start, what="--from time"))
    end_us = datetime_to_us(parse_time(args.end, what="--to time")) if args.end else now_us()
    if end_us <= start_us:
        raise UsageError("--to must be later than --from")
    outcome = backfill_with_progress(settings, instruments, start_us, end_us)
    failed = False
    for name, event in outcome.items():
        if event.state == "failed":
            failed = True
            print(f"sptrader: backfill of {name} failed: {event.message}", file=sys.stderr)
        else:
            fetched = event.total - event.skipped
            print(
                f"{name}: {event.rows:,} bars from {fetched} range{'s' if fetched != 1 else ''}"
                f" ({event.skipped} already stored) in {event.elapsed_s:.1f}s"
            )
    return 1 if failed else 0


def backfill_with_progress(
    settings: Settings, instruments: list[str], start_us: int, end_us: int
) -> dict[str, BackfillProgressed]:
    """Fetch what is missing of each instrument's range, with a progress bar; in the
    daemon when one runs (it holds the store). Returns each instrument's last report."""
    if running_pid(settings.home) is not None:
        return asyncio.run(_backfill_in_daemon(settings, instruments, start_us, end_us))
    return _backfill_here(settings, instruments, start_us, end_us)


def _backfill_here(
    settings: Settings, instruments: list[str], start_us: int, end_us: int
) -> dict[str, BackfillProgressed]:
    from sptrader.engine import Engine

    engine = Engine(settings)
    store = engine.open_store()
    try:
        names = [engine.check_instrument(name) for name in instruments]
        with _progress(len(names)) as show:
            backfill = engine.make_backfill(on_progress=show)
            jobs = backfill.plan(names, start_us, end_us)
            outcome: dict[str, BackfillProgressed] = {}

            def record(event: BackfillProgressed) -> None:
                outcome[event.instrument] = event
                show(event)

            backfill.on_progress = record
            backfill.run(jobs)
    finally:
        store.close()
    return outcome


async def _backfill_in_daemon(
    settings: Settings, instruments: list[str], start_us: int, end_us: int
) -> dict[str, BackfillProgressed]:
    from sptrader.client.connection import ApiConnection

    outcome: dict[str, BackfillProgressed] = {}
    finished = asyncio.Event()
    with _progress(len(instruments)) as show:

        def on_events(events: list[object], dropped: int) -> None:
            for event in events:
                if type(event) is BackfillProgressed and event.instrument in instruments:
                    outcome[event.instrument] = event
                    show(event)
            if len(outcome) == len(instruments) and all(
                event.state != "running" for event in outcome.values()
            ):
                finished.set()

        connection = ApiConnection(settings.home, on_events=on_events)
        await connection.open()
        try:
            await connection.call("subscribe")
            await connection.call(
                "start_backfill", instruments=instruments, start_us=start_us, end_us=end_us
            )
            closed = asyncio.ensure_future(connection.closed.wait())
            done = asyncio.ensure_future(finished.wait())
            await asyncio.wait([closed, done], return_when=asyncio.FIRST_COMPLETED)
            closed.cancel()
            done.cancel()
            if not finished.is_set():
                raise SptraderError(
                    "the daemon went away during the backfill; run it again to resume"
                )
        finally:
            await connection.close()
    return outcome


@contextlib.contextmanager
def _progress(count: int) -> Iterator[Callable[[BackfillProgressed], None]]:
    """A rich progress bar per instrument: ranges done, rows, rate and ETA."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    progress = Progress(
        TextColumn("{task.description:<22}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("ranges"),
        TextColumn("{task.fields[rows]:>10,} rows"),
        TextColumn("{task.fields[rate]:>9} bars/s"),
        TextColumn("ETA {task.fields[eta]:>6}"),
        TimeElapsedColumn(),
        TextColumn("{task.fields[state]}"),
        transient=True,
    )
    tasks: dict[str, int] = {}

    def show(event: BackfillProgressed) -> None:
        task = tasks.get(event.instrument)
        if task is None:
            task = progress.add_task(
                event.instrument, total=event.total, rows=0, rate="", eta="", state=""
            )
            tasks[event.instrument] = task
        rate = event.rows / event.elapsed_s if event.elapsed_s > 0 else 0.0
        remaining = event.total - event.done
        per_range = event.elapsed_s / event.done if event.done else 0.0
        eta = "" if event.state != "running" or not event.done else f"{remaining * per_range:.0f}s"
        progress.update(
            task,
            total=event.total,
            completed=event.done,
            rows=event.rows,
            rate=f"{rate:,.0f}" if event.rows else "",
            eta=eta,
            state="" if event.state == "running" else event.state,
        )

    with progress:
        yield show
