"""The headless daemon: event fan-out to attached clients, idle cost, start time.

    .venv/bin/python bench/daemon_fanout.py [--rates 10000,50000] [--clients 1,5]
        [--seconds 6] [--warmup 1] [--modes api,raw] [--idle-s 10] [--starts 3]

Everything runs against real daemon processes (``sptrader start``) on temporary homes
with a 20-instrument SIM watchlist (an hour of seeded history), from a temporary cwd.

(a) ``start`` to healthy: median of ``--starts`` starts on fresh homes and of as many
    restarts on a seeded home; wall time of the ``start`` command and the time it
    prints ("started (pid N) in X.Ys").
(b) Idle daemon (``feeds.sim.tick_rate`` 0.01, no client): CPU% of a core (psutil) over
    ``--idle-s`` seconds, and RSS.
(c) Fan-out: for each target rate, ``feeds.sim.tick_rate`` is chosen from the sim's
    instrument specs and activity profile for this time of day; the source rate is then
    measured from the sim service's ``events_per_s`` (mean of 3 one-second samples).
    For 1 and 5 clients, ONE separate client process (this script with ``--client``)
    attaches N clients that subscribe; after ``--warmup`` seconds it measures for
    ``--seconds``: latency = receive time - event ``ts_us`` for every quote and trade
    (wall-clock µs of generation), and "publish latency" = receive time - the newest
    event's ``ts_us`` per frame (the sim stamps ticks uniformly over its 50 ms publish
    interval, so event latency carries up to 50 ms of that batching; the newest event of
    a frame was stamped at publish). Drops are the server-reported ``dropped`` fields
    summed over clients. Modes: ``api`` = ``ApiConnection`` (what the TUI uses: events
    decoded into dataclasses), ``raw`` = a websockets client that only parses JSON.
    Daemon and client-process CPU% are sampled over the measured window.

Prints ``name: value unit`` lines; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import INSTRUMENTS, SYMBOLS

STARTED = re.compile(r"started \(pid (\d+)\) in (\d+\.\d+)s")
IDLE_TICK_RATE = 0.01


def line(name: str, value: float | str, unit: str = "", extra: str = "") -> None:
    if isinstance(value, float):
        text = f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"
    else:
        text = str(value)
    suffix = f"  ({extra})" if extra else ""
    print(f"{name}: {text} {unit}{suffix}".rstrip(), flush=True)


# --- the client process ------------------------------------------------------------------


class Probe:
    """One client's figures; only counted while ``measuring``."""

    def __init__(self) -> None:
        self.measuring = False
        self.latencies: list[int] = []
        self.newest: list[int] = []
        self.events = 0
        self.dropped = 0
        self.dropped_all = 0
        self.reader: asyncio.Task[None] | None = None

    def record(self, stamps: list[int], count: int, dropped: int) -> None:
        now = time.time_ns() // 1000
        self.dropped_all += dropped
        if not self.measuring:
            return
        self.dropped += dropped
        self.events += count
        if stamps:
            self.latencies.extend([now - ts for ts in stamps])
            self.newest.append(now - max(stamps))


async def api_client(home: Path, probe: Probe) -> Any:
    from sptrader.client.connection import ApiConnection
    from sptrader.models import QuoteReceived, TradeReceived

    ticks = (QuoteReceived, TradeReceived)

    def on_events(events: list[object], dropped: int) -> None:
        stamps = [event.ts_us for event in events if type(event) in ticks]
        probe.record(stamps, len(events), dropped)

    connection = ApiConnection(home, on_events=on_events)
    await connection.open()
    await connection.call("subscribe")
    return connection


async def raw_client(home: Path, probe: Probe) -> Any:
    from websockets.asyncio.client import unix_connect

    from sptrader.client import paths
    from sptrader.client.wire import PROTOCOL_VERSION

    websocket = await unix_connect(str(paths.socket_path(home)), "ws://localhost/", max_size=None)
    await websocket.send(json.dumps({"type": "hello", "protocol": PROTOCOL_VERSION}))
    json.loads(await websocket.recv())
    await websocket.send(json.dumps({"type": "request", "id": 1, "method": "subscribe"}))

    async def read() -> None:
        with contextlib.suppress(Exception):
            async for frame in websocket:
                message = json.loads(frame)
                if message["type"] != "events":
                    continue
                events = message["events"]
                stamps = [fields[2] for fields in events if fields[0] in ("q", "t")]
                probe.record(stamps, len(events), message["dropped"])

    probe.reader = asyncio.create_task(read())
    return websocket


async def run_clients(home: Path, count: int, mode: str, warmup: float, seconds: float) -> None:
    import numpy as np

    probes = [Probe() for _ in range(count)]
    attach = api_client if mode == "api" else raw_client
    clients = [await attach(home, probe) for probe in probes]
    print("subscribed", flush=True)
    await asyncio.sleep(warmup)
    for probe in probes:
        probe.measuring = True
    print("measuring", flush=True)
    started = time.monotonic()
    await asyncio.sleep(seconds)
    for probe in probes:
        probe.measuring = False
    elapsed = time.monotonic() - started
    print("done", flush=True)
    for client in clients:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(client.close(), 5)
    latencies = np.concatenate([np.asarray(probe.latencies, dtype=np.int64) for probe in probes])
    newest = np.concatenate([np.asarray(probe.newest, dtype=np.int64) for probe in probes])

    def percentile(values: Any, q: float) -> float | None:
        return float(np.percentile(values, q)) / 1000 if len(values) else None

    result = {
        "events_per_s_per_client": [probe.events / elapsed for probe in probes],
        "latency_ms": {str(q): percentile(latencies, q) for q in (50, 99, 99.9)},
        "latency_max_ms": float(latencies.max()) / 1000 if len(latencies) else None,
        "publish_latency_ms": {str(q): percentile(newest, q) for q in (50, 99)},
        "dropped": sum(probe.dropped for probe in probes),
        "dropped_incl_warmup": sum(probe.dropped_all for probe in probes),
        "seconds": elapsed,
    }
    print(json.dumps(result), flush=True)


# --- the daemon --------------------------------------------------------------------------


def expected_rate(tick_rate: float) -> float:
    """Quotes + trades per second the sim should make now at ``tick_rate``."""
    from sptrader.feeds.sim import TRADE_SHARE, activity_profile, instrument_spec

    second = int(time.time()) % 86_400
    total = 0.0
    for symbol in SYMBOLS:
        spec = instrument_spec(symbol)
        activity = float(activity_profile(spec.asset_class)[second])
        total += spec.tick_rate * activity * (1 + TRADE_SHARE if spec.has_trades else 1)
    return total * tick_rate


class Daemon:
    def __init__(self, workdir: Path, name: str, tick_rate: float) -> None:
        self.workdir = workdir
        self.home = workdir / name
        self.home.mkdir()
        self.config = self.home / "config.toml"
        watchlist = ", ".join(f'"{instrument}"' for instrument in INSTRUMENTS)
        self.config.write_text(
            f"watchlist = [{watchlist}]\n\n[feeds.sim]\ntick_rate = {tick_rate}\n\n"
            "[store]\nseed_days = 0.05\n",
            encoding="utf-8",
        )
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("SPTRADER_")}
        self.pid: int | None = None

    def cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "sptrader.cli", "--home", str(self.home)]
        command += ["--config", str(self.config), *args]
        return subprocess.run(
            command, cwd=self.workdir, env=self.env, capture_output=True, text=True, timeout=timeout
        )

    def start(self) -> tuple[float, float]:
        """(wall seconds of `start`, seconds it printed)."""
        began = time.perf_counter()
        result = self.cli("start")
        wall = time.perf_counter() - began
        match = STARTED.search(result.stdout)
        if result.returncode != 0 or not match:
            raise RuntimeError(f"start failed: {result.stdout} {result.stderr}")
        self.pid = int(match.group(1))
        return wall, float(match.group(2))

    def stop(self) -> None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.cli("stop", timeout=30)
        if self.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                if _running(self.pid):
                    os.kill(self.pid, signal.SIGKILL)
        self.pid = None

    def status(self) -> dict[str, Any]:
        from sptrader.client.connection import call_daemon

        return asyncio.run(call_daemon(self.home, "status"))

    def sim_rate(self, samples: int = 3) -> float:
        """Mean of ``samples`` one-second samples of the sim's events/s."""
        rates = []
        for _ in range(samples):
            time.sleep(1.0)
            services = {service["name"]: service for service in self.status()["services"]}
            rates.append(services["sim"]["events_per_s"])
        return statistics.fmean(rates)


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


# --- figures -----------------------------------------------------------------------------


def start_times(workdir: Path, runs: int) -> None:
    fresh: list[tuple[float, float]] = []
    again: list[tuple[float, float]] = []
    seeded = None
    for index in range(runs):
        daemon = Daemon(workdir, f"start-{index}", IDLE_TICK_RATE)
        try:
            fresh.append(daemon.start())
        finally:
            daemon.stop()
        seeded = daemon
    assert seeded is not None
    for _ in range(runs):
        try:
            again.append(seeded.start())
        finally:
            seeded.stop()
    for name, times in (("fresh_home", fresh), ("restart", again)):
        walls = [wall for wall, _ in times]
        printed = [shown for _, shown in times]
        line(
            f"start_to_healthy_{name}_median",
            f"{statistics.median(walls):.2f}",
            "s",
            f"wall time of `sptrader start`, {runs} runs: "
            + ", ".join(f"{wall:.2f}" for wall in walls)
            + "; printed: "
            + ", ".join(f"{shown:.1f}" for shown in printed),
        )


def idle(workdir: Path, seconds: float) -> None:
    import psutil

    daemon = Daemon(workdir, "idle", IDLE_TICK_RATE)
    try:
        daemon.start()
        assert daemon.pid is not None
        time.sleep(1.0)  # past the start-up work
        process = psutil.Process(daemon.pid)
        process.cpu_percent(None)
        began = time.monotonic()
        rss: list[int] = []
        while time.monotonic() - began < seconds:
            time.sleep(1.0)
            rss.append(process.memory_info().rss)
        cpu = process.cpu_percent(None)
    finally:
        daemon.stop()
    line(
        "daemon_idle_cpu",
        f"{cpu:.2f}",
        "% of a core",
        f"{seconds:.0f} s, {len(INSTRUMENTS)} instruments, tick_rate {IDLE_TICK_RATE} "
        f"(~{expected_rate(IDLE_TICK_RATE):.1f} events/s), no client",
    )
    line(
        "daemon_idle_rss",
        f"{rss[-1] / 1e6:.0f}",
        "MB",
        f"max {max(rss) / 1e6:.0f} MB over the window",
    )


def read_until(stream: Any, wanted: str) -> None:
    while True:
        text = stream.readline()
        if not text:
            raise RuntimeError(f"the client process ended before {wanted!r}")
        if text.strip() == wanted:
            return


def fanout_run(
    daemon: Daemon, workdir: Path, clients: int, mode: str, warmup: float, seconds: float
) -> dict[str, Any]:
    import psutil

    assert daemon.pid is not None
    command = [sys.executable, str(Path(__file__).resolve()), "--client", str(daemon.home)]
    command += ["--n", str(clients), "--mode", mode, "--warmup", str(warmup)]
    command += ["--seconds", str(seconds)]
    process = subprocess.Popen(
        command, cwd=workdir, env=daemon.env, stdout=subprocess.PIPE, text=True
    )
    watchdog = threading.Timer(warmup + seconds + 60, process.kill)
    watchdog.start()
    try:
        assert process.stdout is not None
        daemon_ps = psutil.Process(daemon.pid)
        client_ps = psutil.Process(process.pid)
        read_until(process.stdout, "measuring")
        daemon_ps.cpu_percent(None)
        client_ps.cpu_percent(None)
        read_until(process.stdout, "done")
        daemon_cpu = daemon_ps.cpu_percent(None)
        client_cpu = client_ps.cpu_percent(None)
        result = json.loads(process.stdout.readline())
        process.wait(timeout=30)
    finally:
        watchdog.cancel()
        if process.poll() is None:
            process.kill()
            process.wait()
    result["daemon_cpu"] = daemon_cpu
    result["client_cpu"] = client_cpu
    return result


def fanout(
    workdir: Path,
    target: int,
    client_counts: list[int],
    modes: list[str],
    warmup: float,
    seconds: float,
) -> None:
    tick_rate = round(target / expected_rate(1.0), 2)
    label = f"{target // 1000}k" if target >= 1000 else str(target)
    daemon = Daemon(workdir, f"fanout-{label}", tick_rate)
    try:
        daemon.start()
        time.sleep(1.0)
        source = daemon.sim_rate()
        line(
            f"fanout_{label}_source_rate",
            source,
            "events/s",
            f"feeds.sim.tick_rate {tick_rate:g}, {len(INSTRUMENTS)} instruments, "
            "sim events_per_s with no client attached",
        )
        for mode in modes:
            for clients in client_counts:
                result = fanout_run(daemon, workdir, clients, mode, warmup, seconds)
                name = f"fanout_{label}_{clients}c_{mode}"
                latency = result["latency_ms"]
                publish = result["publish_latency_ms"]
                received = result["events_per_s_per_client"]

                def ms(value: float | None) -> str:
                    return "n/a" if value is None else f"{value:.1f}"

                line(
                    f"{name}_latency_p50",
                    ms(latency["50"]),
                    "ms",
                    f"p99 {ms(latency['99'])} ms, p99.9 {ms(latency['99.9'])} ms, "
                    f"max {ms(result['latency_max_ms'])} ms",
                )
                line(f"{name}_latency_p99", ms(latency["99"]), "ms")
                line(
                    f"{name}_publish_latency_p50",
                    ms(publish["50"]),
                    "ms",
                    f"p99 {ms(publish['99'])} ms (newest event of each frame)",
                )
                line(
                    f"{name}_dropped",
                    str(result["dropped"]),
                    "events",
                    f"server-reported, all clients, {result['seconds']:.1f} s; "
                    f"incl. warm-up {result['dropped_incl_warmup']}",
                )
                line(
                    f"{name}_received",
                    statistics.fmean(received),
                    "events/s per client",
                    f"min {min(received):,.0f}",
                )
                line(
                    f"{name}_cpu",
                    f"daemon {result['daemon_cpu']:.0f} / clients {result['client_cpu']:.0f}",
                    "% of a core",
                    f"client process hosts {clients} client(s)",
                )
    finally:
        daemon.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rates", default="10000,50000", help="target events/s, comma-separated")
    parser.add_argument("--clients", default="1,5", help="client counts, comma-separated")
    parser.add_argument("--modes", default="api,raw", help="api and/or raw")
    parser.add_argument("--seconds", type=float, default=6.0, help="measured seconds per run")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--idle-s", type=float, default=10.0)
    parser.add_argument("--starts", type=int, default=3)
    # The client process (internal).
    parser.add_argument("--client", metavar="HOME", help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="api", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        asyncio.run(run_clients(Path(args.client), args.n, args.mode, args.warmup, args.seconds))
        return 0

    began = time.monotonic()
    print(f"# {os.cpu_count()} CPUs; python {sys.version.split()[0]}", flush=True)
    with tempfile.TemporaryDirectory(prefix="sptrader-fanout-") as tmp:
        workdir = Path(tmp)
        start_times(workdir, args.starts)
        idle(workdir, args.idle_s)
        for target in (int(rate) for rate in args.rates.split(",")):
            fanout(
                workdir,
                target,
                [int(count) for count in args.clients.split(",")],
                args.modes.split(","),
                args.warmup,
                args.seconds,
            )
    line("total_runtime", f"{time.monotonic() - began:.0f}", "s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
