"""How the CLI prints prices, on a temporary home (no network):

    .venv/bin/python bench/price_format.py

(a) ``sptrader candles`` of bars imported at 48109.96 (an instrument no enabled feed
    lists: its stored closes give the precision) - the row as printed.
(b) ``sptrader order buy SIM:EURUSD 1000`` with 0.7 bps slippage (a fill price with more
    digits than a quote) - the fill line as printed, beside the stored price.
(c) ``price_decimals`` as the engine client answers it for a few SIM and Dukascopy
    instruments (their built-in tables).

For comparison each line also shows what the expression the table used before printed
(``f"{x:g}"`` for candles, eight decimals with zeros stripped for fills).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import re
import sys
import tempfile
from pathlib import Path

from sptrader.cli import main
from sptrader.client.connect import connect
from sptrader.config import load_settings

CONFIG = """\
watchlist = ["SIM:EURUSD"]
[store]
seed_days = 0.05
flush_interval_ms = 50
[feeds.sim]
tick_rate = 5.0
[feeds.dukascopy]
enabled = true
[broker]
slippage_bps = 0.7
"""


def cli(home: Path, *args: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["--home", str(home), *args])
    if code:
        sys.exit(f"sptrader {' '.join(args)} exited {code}")
    return out.getvalue()


def old_fill_text(value: float) -> str:
    return f"{value:,.8f}".rstrip("0").rstrip(".")


def run(home: Path) -> None:
    home.mkdir()
    (home / "config.toml").write_text(CONFIG)
    bars = home.parent / "bars.csv"
    bars.write_text(
        "ts,open,high,low,close,volume\n2024-03-01T10:00:00Z," + "48109.96," * 4 + "1\n"
    )
    cli(home, "import", str(bars), "--instrument", "KRAKEN:BTC/USD")
    table = cli(
        home, "candles", "KRAKEN:BTC/USD", "--from", "2024-03-01T10:00", "--to", "2024-03-01T10:01"
    )
    row = next(line for line in table.splitlines() if line.lstrip().startswith("2024-"))
    print(f"(a) candles close 48109.96: printed {row.split()[4]}   (before: {48109.96:g})")

    text = cli(home, "order", "buy", "SIM:EURUSD", "1000")
    [order] = json.loads(cli(home, "orders", "--all", "--format", "json"))
    shown = re.search(r"filled \S+ at (\S+) ", text)
    assert shown is not None, text
    price = order["avg_price"]
    print(f"(b) fill stored {price!r}: printed {shown.group(1)}   (before: {old_fill_text(price)})")

    async def ask() -> dict[str, int]:
        names = ["SIM:EURUSD", "SIM:USDJPY", "SIM:BTCUSD", "DUKASCOPY:XAUUSD", "DUKASCOPY:USDJPY"]
        async with connect(load_settings(home, home / "config.toml")) as client:
            return await client.price_decimals(names)

    print(f"(c) price_decimals: {asyncio.run(ask())}")


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as directory:
        run(Path(directory) / "home")
