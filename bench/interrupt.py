"""Ctrl+C in a long command: seconds from SIGINT to the process's exit, and what it said.

    .venv/bin/python bench/interrupt.py [--delay 1.5] [--after 4] [--days 60]

``sptrader backfill COINBASE:BTC-USD --from <--days ago>`` and ``sptrader data ensure``
against tests/fake_coinbase.py's history on a local FakeHttpServer whose every candles
answer takes ``--delay`` seconds (a slow venue), and a backtest sweep on SIM; SIGINT is
sent ``--after`` seconds after the start, as a terminal's Ctrl+C would.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import fake_coinbase
from fakes import FakeHttpServer


def interrupt(
    command: list[str], home: Path, config: Path, after_s: float, workers: bool = False
) -> None:
    """Run ``command``; SIGINT ``after_s`` seconds after it starts (``workers``: after
    its sweep's worker processes have started)."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("SPTRADER_")}
    argv = [sys.executable, "-m", "sptrader.cli", "--home", str(home), "--config", str(config)]
    process = subprocess.Popen(
        [*argv, *command], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    if workers:
        import psutil

        while not psutil.Process(process.pid).children() and process.poll() is None:
            time.sleep(0.05)
    time.sleep(after_s)
    sent = time.monotonic()
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=300)
    took = time.monotonic() - sent
    print(f"{' '.join(command[:2])}: exit {process.returncode} {took:.2f}s after SIGINT")
    for line in out.strip().splitlines()[-3:] + err.strip().splitlines()[-3:]:
        print(f"    {line}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--delay", type=float, default=1.5)
    parser.add_argument("--after", type=float, default=4.0)
    parser.add_argument("--days", type=int, default=60)
    args = parser.parse_args()

    def slow(request):  # type: ignore[no-untyped-def]
        if request.path.endswith("/candles"):
            time.sleep(args.delay)
        return fake_coinbase.history_route(request)

    start = (datetime.now(UTC) - timedelta(days=args.days)).strftime("%Y-%m-%d")
    with tempfile.TemporaryDirectory() as tmp, FakeHttpServer(slow) as server:
        config = Path(tmp) / "config.toml"
        config.write_text(
            f'[feeds.coinbase]\nenabled = true\nrest_url = "{server.url}"\n'
            'ws_url = "ws://127.0.0.1:9"\n'
        )
        interrupt(
            ["backfill", "COINBASE:BTC-USD", "--from", start], Path(tmp) / "a", config, args.after
        )
        interrupt(
            ["data", "ensure", "COINBASE:BTC-USD", "--from", start],
            Path(tmp) / "b",
            config,
            args.after,
        )
        sweep_from = (datetime.now(UTC) - timedelta(days=20)).strftime("%Y-%m-%d")
        interrupt(
            [
                "backtest",
                "sma_cross",
                "SIM:EURUSD",
                "--from",
                sweep_from,
                "--param",
                "fast=2..100:1",
                "--param",
                "slow=50,80,120,160,200,240",
            ],
            Path(tmp) / "c",
            config,
            3.0,
            workers=True,
        )


if __name__ == "__main__":
    main()
