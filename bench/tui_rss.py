"""Peak RSS and CPU of the TUI with 20 SIM instruments streaming at 200+ ticks/s each.

    .venv/bin/python bench/tui_rss.py [--minutes 5 | --quick] [--tick-rate X] [--keep-ticks]

Writes a temporary config.toml (20-instrument SIM watchlist, ``feeds.sim.tick_rate``
chosen so the least active instrument gets at least ``--min-rate`` quotes/s at this time
of day), runs ``sptrader tui`` in tmux (160x48) so it really paints, and once a second
samples the process's RSS and CPU% (psutil) and the screen (capture-pane): the header
clock, the EURUSD bid and the services pane's events/s. Every ``--probe-s`` seconds it
presses Down/Up in the watchlist and times until the chart title follows (key latency).
After ``q`` it reads the store: stored 1m bars of the run give each instrument's
ticks/s, and the log file gives the UI's dropped events. ``--quick`` is 0.5 minutes.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import math
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import INSTRUMENTS, SYMBOLS
from tmux_util import CLOCK, EURUSD_PRICED, TmuxTui

from sptrader.feeds.sim import TRADE_SHARE, activity_profile, instrument_spec

SERVICE_ROW = re.compile(r"│\s*(\w+)\s+(running|starting|backoff|stopped|failed)\s+([\d,]+)\s")
# A well-formed figure: 1,234,567 (a narrow column cuts it to e.g. "34,9").
WHOLE_NUMBER = re.compile(r"^\d{1,3}(,\d{3})*$")
EURUSD_BID = re.compile(r"SIM:EURUSD\s+(\d[\d,]*\.\d+)")


def rates_now(multiplier: float, seconds: float) -> dict[str, float]:
    """Each instrument's quotes/s at its least active second in the next ``seconds``."""
    now = int(time.time()) % 86_400
    window = [(now + offset) % 86_400 for offset in range(0, int(seconds) + 60)]
    rates = {}
    for symbol in SYMBOLS:
        spec = instrument_spec(symbol)
        profile = activity_profile(spec.asset_class)
        rates[symbol] = spec.tick_rate * multiplier * min(profile[second] for second in window)
    return rates


def write_config(path: Path, tick_rate: float, keep_ticks: bool) -> None:
    watchlist = ", ".join(f'"{name}"' for name in INSTRUMENTS)
    keep = '["*"]' if keep_ticks else "[]"
    path.write_text(
        f"watchlist = [{watchlist}]\n\n[feeds.sim]\ntick_rate = {tick_rate}\n\n"
        f"[store]\nkeep_ticks = {keep}\n",
        encoding="utf-8",
    )


def key_latency(tui: TmuxTui, timeout: float = 10.0) -> float | None:
    """Press Down in the watchlist and time until the chart title shows the next row's
    instrument; then press Up to go back (not timed)."""
    screen = tui.capture()
    match = re.search(r"│ (SIM:[A-Z]+)\s+\d+m\b", screen)  # the chart title
    current = match.group(1) if match else INSTRUMENTS[0]
    index = INSTRUMENTS.index(current) if current in INSTRUMENTS else 0
    target, key = (
        (INSTRUMENTS[index + 1], "Down")
        if index + 1 < len(INSTRUMENTS)
        else (INSTRUMENTS[index - 1], "Up")
    )
    pattern = re.compile(re.escape(target) + r"\s+\d+m\b")
    started = time.monotonic()
    tui.send(key)
    shown = tui.wait_for(pattern, timeout, poll=0.01)
    tui.send("Up" if key == "Down" else "Down")
    tui.wait_for(re.compile(re.escape(current) + r"\s+\d+m\b"), timeout)
    return None if shown is None else shown - started


def store_rates(
    db_path: Path, launched_s: float, start_s: float, end_s: float
) -> dict[str, tuple[float, str]]:
    """Per instrument: quotes/s from the stored bars of the run. Live bars are those from
    the launch minute on (history is seeded up to the minute before); the ticks in them
    arrived between the first paint (``start_s``) and the quit (``end_s``), give or take
    the ~0.1 s between the sim starting and the first paint."""
    import duckdb

    first_minute = math.floor(launched_s / 60) * 60
    connection = duckdb.connect(str(db_path), read_only=True)
    try:
        rows = connection.execute(
            "SELECT instrument, sum(trades) FROM bars_1m WHERE ts >= make_timestamp($first) GROUP BY instrument",
            {"first": int(first_minute * 1e6)},
        ).fetchall()
    finally:
        connection.close()
    seconds = end_s - start_s
    result = {}
    for instrument, trades in rows:
        spec = instrument_spec(instrument.split(":", 1)[1])
        if spec.has_trades:  # bars of traded instruments count trades, ~35% of quotes
            quotes = trades / TRADE_SHARE / seconds
            result[instrument] = (quotes, "estimated from its trades")
        else:  # bid-priced bars count every quote
            quotes = trades / seconds
            result[instrument] = (quotes, "counted")
    return result


def drops_from_log(log_path: Path) -> tuple[int, list[tuple[float, int]], list[str]]:
    """From the app's log file: events the UI subscriber dropped in all, each drop report
    as (epoch seconds, events), and the ERROR lines."""
    dropped = 0
    reports: list[tuple[float, int]] = []
    errors = []
    if not log_path.exists():
        return 0, [], []
    for text in log_path.read_text("utf-8", errors="replace").splitlines():
        match = re.search(r"fell behind: dropped (\d+) events \((\d+) in all\)", text)
        if match:
            dropped = max(dropped, int(match.group(2)))
            with contextlib.suppress(ValueError):
                stamp, millis = text[:23].split(",")
                when = time.mktime(time.strptime(stamp, "%Y-%m-%d %H:%M:%S")) + int(millis) / 1000
                reports.append((when, int(match.group(1))))
        if " ERROR " in text or "Traceback" in text:
            errors.append(text.strip())
    return dropped, reports, errors


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--quick", action="store_true", help="0.5 minutes")
    parser.add_argument(
        "--tick-rate", type=float, help="feeds.sim.tick_rate (default: from --min-rate)"
    )
    parser.add_argument(
        "--min-rate", type=float, default=200.0, help="quotes/s of the least active instrument"
    )
    parser.add_argument("--keep-ticks", action="store_true", help="also store every tick")
    parser.add_argument(
        "--probe-s", type=float, default=60.0, help="seconds between key-latency probes"
    )
    args = parser.parse_args()
    minutes = 0.5 if args.quick else args.minutes
    duration = minutes * 60
    probe_every = min(args.probe_s, duration / 2)

    base = rates_now(1.0, duration)
    multiplier = args.tick_rate or math.ceil(args.min_rate * 1.05 / min(base.values()))
    expected = rates_now(multiplier, duration)
    expected_events = sum(
        rate * (1 + TRADE_SHARE if instrument_spec(symbol).has_trades else 1)
        for symbol, rate in expected.items()
    )
    lowest = min(expected, key=expected.get)
    print(
        f"config: {len(INSTRUMENTS)} instruments, feeds.sim.tick_rate = {multiplier:g}; expected: "
        f"lowest {lowest} {expected[lowest]:,.0f} quotes/s, all together ~{expected_events:,.0f} events/s; "
        f"{minutes:g} min",
        flush=True,
    )

    with tempfile.TemporaryDirectory(prefix="sptrader-bench-rss-") as temp:
        root = Path(temp)
        home, cwd = root / "home", root / "cwd"
        home.mkdir()
        cwd.mkdir()
        config = root / "config.toml"
        write_config(config, multiplier, args.keep_ticks)
        tui = TmuxTui(home, cwd, config=config)
        samples: list[dict] = []
        latencies: list[float | None] = []
        try:
            launched = time.monotonic()
            launched_wall = time.time()
            tui.start()
            pid = tui.app_pid()
            process = psutil.Process(pid)
            process.cpu_percent(None)
            shown = tui.wait_for(EURUSD_PRICED, 120)
            if shown is None:
                print(f"tui: no priced SIM:EURUSD row within 120 s; last screen:\n{tui.capture()}")
                return 0
            print(
                f"tui to first priced watchlist: {shown - launched:.2f} s  (fresh home, 20 instruments)",
                flush=True,
            )
            run_start_wall = time.time() - (time.monotonic() - shown)
            started = time.monotonic()
            process.cpu_percent(None)
            next_sample = started + 1
            next_probe = started + probe_every
            while time.monotonic() - started < duration:
                time.sleep(max(0.0, next_sample - time.monotonic()))
                next_sample += 1
                if tui.dead():
                    print("tui: the app exited during the run")
                    break
                memory = process.memory_info()
                screen = tui.capture()
                clock = CLOCK.search(screen.splitlines()[0] if screen else "")
                bid = EURUSD_BID.search(screen)
                services = {name: rate for name, _, rate in SERVICE_ROW.findall(screen)}
                samples.append(
                    {
                        "t": time.monotonic() - started,
                        "rss": memory.rss / 2**20,
                        "cpu": process.cpu_percent(None),
                        "clock": clock.group(1) if clock else None,
                        "bid": bid.group(1) if bid else None,
                        "services": services,
                    }
                )
                if time.monotonic() >= next_probe:
                    latencies.append(key_latency(tui))
                    next_probe += probe_every
            latencies.append(key_latency(tui))
            peak_rss = process.memory_info().rss / 2**20
            with contextlib.suppress(OSError):
                peak_rss = max(peak_rss, _vm_hwm_mb(pid))
            quit_wall = time.time()
            quit_s = tui.quit(timeout=30)
        finally:
            tui.kill()

        if not samples:
            return 0
        rss = [sample["rss"] for sample in samples]
        print(f"peak RSS: {max(max(rss), peak_rss):.1f} MB  (VmHWM of the process)")

        def rss_at(seconds: float) -> str:
            near = [sample for sample in samples if sample["t"] <= seconds + 0.5]
            return (
                f"{near[-1]['rss']:.1f} MB"
                if near and seconds <= samples[-1]["t"] + 0.5
                else "n/a (run too short)"
            )

        print(f"RSS at 10 s: {rss_at(10)}")
        print(f"RSS at 1 min: {rss_at(60)}")
        print(f"RSS at end: {rss[-1]:.1f} MB  (after {samples[-1]['t']:.0f} s)")
        half = samples[len(samples) // 2 :]
        if len(half) >= 5:
            slope = statistics.linear_regression(
                [s["t"] for s in half], [s["rss"] for s in half]
            ).slope
            print(f"RSS slope over the second half: {slope * 60:+.2f} MB/min")
        cpu = [sample["cpu"] for sample in samples[1:]]
        print(f"mean CPU: {statistics.mean(cpu):.0f} %  (max {max(cpu):.0f} %; 100 % = one core)")

        clocks = [sample["clock"] for sample in samples]
        bids = [sample["bid"] for sample in samples]
        gaps = len(samples) - 1
        stall = longest_run(clocks)
        print(
            f"header clock: {len(set(filter(None, clocks)))} distinct values in {len(samples)} samples 1 s apart; "
            f"longest unchanged: {stall} samples"
        )
        bid_moves = sum(1 for a, b in itertools.pairwise(bids) if a and b and a != b)
        print(
            f"EURUSD bid changed between samples: {bid_moves}/{gaps}  (longest unchanged: {longest_run(bids)} samples)"
        )
        valid = [value for value in latencies if value is not None]
        latency_text = ", ".join(
            "timeout" if value is None else f"{value * 1000:.0f} ms" for value in latencies
        )
        print(f"key latency (Down -> chart title follows): {latency_text}")
        responsive = (
            stall <= 2
            and bid_moves >= 0.5 * gaps
            and len(valid) == len(latencies)
            and max(valid, default=0) < 1.0
        )
        print(
            f"UI responsive: {'yes' if responsive else 'NO'}  (clock never stuck > 2 samples, prices moving, keys < 1 s)"
        )

        for name in ("sim", "bars", "store"):
            texts = [
                sample["services"][name] for sample in samples[2:] if name in sample["services"]
            ]
            if not texts:
                continue
            if all(WHOLE_NUMBER.match(text) for text in texts):
                values = [float(text.replace(",", "")) for text in texts]
                print(
                    f"services pane {name} Ev/s: median {statistics.median(values):,.0f}  (min {min(values):,.0f}, max {max(values):,.0f})"
                )
            else:
                shown_texts = sorted(set(texts))[:4]
                print(
                    f"services pane {name} Ev/s: unreadable, the column cuts the figure: {shown_texts}"
                )
        quit_text = "did not exit within 30 s" if quit_s is None else f"{quit_s:.2f} s"
        print(f"q to exit: {quit_text}")

        dropped, reports, errors = drops_from_log(home / "sptrader.log")
        when = ", ".join(f"{count:,} at {at - run_start_wall:+.0f} s" for at, count in reports[:8])
        print(
            f"ui events dropped (from the log): {dropped:,}"
            + (f"  ({when}; times from the first paint)" if reports else "")
        )
        if errors:
            print(f"log errors: {len(errors)}; first: {errors[0][:200]}")
        if quit_s is not None:
            per = store_rates(home / "sptrader.duckdb", launched_wall, run_start_wall, quit_wall)
            if per:
                lowest_name = min(per, key=lambda name: per[name][0])
                quotes = sorted(value for value, _ in per.values())
                events = sum(
                    value
                    * (1 + TRADE_SHARE if instrument_spec(name.split(":")[1]).has_trades else 1)
                    for name, (value, _) in per.items()
                )
                print(f"measured sim events/s, all instruments (stored bars): {events:,.0f}")
                print(
                    f"measured quotes/s per instrument (stored bars): lowest {lowest_name} "
                    f"{per[lowest_name][0]:,.0f} ({per[lowest_name][1]}), median {statistics.median(quotes):,.0f}, "
                    f"highest {quotes[-1]:,.0f}"
                )
    return 0


def longest_run(values: list) -> int:
    """Length of the longest run of equal consecutive values."""
    best = run = 1 if values else 0
    for previous, value in itertools.pairwise(values):
        run = run + 1 if value == previous else 1
        best = max(best, run)
    return best


def _vm_hwm_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for text in status:
            if text.startswith("VmHWM:"):
                return int(text.split()[1]) / 1024
    raise OSError("no VmHWM")


if __name__ == "__main__":
    sys.exit(main())
