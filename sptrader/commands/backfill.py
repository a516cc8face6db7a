"""``sptrader backfill INSTRUMENT... --from DATE [--to DATE]``: download history with a
progress bar per instrument, in the engine ``connect()`` gives (a running daemon's, which
holds the store, or this process's)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from collections.abc import Callable, Iterator

from sptrader.client.connect import connect
from sptrader.client.protocol import EngineClient
from sptrader.clock import datetime_to_us, now_us, parse_time
from sptrader.config import Settings
from sptrader.errors import UsageError
from sptrader.models import BackfillProgressed, normalize_instrument
from sptrader.wording import counted


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

    latest: dict[str, BackfillProgressed] = {}

    async def fetch() -> dict[str, BackfillProgressed]:
        async with connect(settings) as client:
            return await backfill_showing_progress(
                client, instruments, start_us, end_us, latest=latest
            )

    try:
        outcome = asyncio.run(fetch())
    except KeyboardInterrupt:
        print(interrupted_line(latest), file=sys.stderr)
        return 130
    failed = False
    for name, event in outcome.items():
        if event.state == "failed":
            failed = True
            print(f"sptrader: backfill of {name} failed: {event.message}", file=sys.stderr)
        else:
            fetched = event.total - event.skipped
            print(
                f"{name}: {counted(event.rows, 'bar')} from {counted(fetched, 'range')}"
                f" ({event.skipped} already stored) in {event.elapsed_s:.1f}s"
            )
    return 1 if failed else 0


async def backfill_showing_progress(
    client: EngineClient,
    instruments: list[str],
    start_us: int,
    end_us: int,
    *,
    latest: dict[str, BackfillProgressed] | None = None,
) -> dict[str, BackfillProgressed]:
    """Fetch what is missing of each instrument's range with a progress bar (on a
    terminal), wherever the engine runs. Returns each instrument's last report;
    ``latest`` holds them as they come (what was stored when Ctrl+C stops it)."""
    reports = latest if latest is not None else {}
    with _progress() as show:

        def record(event: BackfillProgressed) -> None:
            reports[event.instrument] = event
            show(event)

        return await client.backfill(instruments, start_us, end_us, on_progress=record)


def interrupted_line(latest: dict[str, BackfillProgressed]) -> str:
    """``interrupted: 212/731 ranges stored; run it again to resume``."""
    done = sum(event.done for event in latest.values())
    total = sum(event.total for event in latest.values())
    stored = f"{done}/{total} ranges stored" if total else "nothing stored yet"
    return f"interrupted: {stored}; run it again to resume"


@contextlib.contextmanager
def _progress() -> Iterator[Callable[[BackfillProgressed], None]]:
    """A rich progress bar per instrument: ranges done, rows, rate and ETA; nothing
    when the output is not a terminal (piped, it would leave an empty first line)."""
    if not sys.stdout.isatty():
        yield lambda event: None
        return
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
