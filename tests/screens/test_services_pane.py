"""The services pane and `sptrader service list` as a user reads them: the keys the
footer offers follow the selected service's state, a stopped service shows no rate,
and long (scanner) names are never cut, in the pane or the CLI's columns."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

from conftest import run_cli, wait_for
from textual.widgets import DataTable, Footer

from sptrader.app import SptraderApp
from sptrader.config import load_settings
from sptrader.screens import ServicesPane

SCANNER = "scanner:fast_momentum_breakout"
CONFIG = """\
watchlist = ["SIM:EURUSD", "SIM:BTCUSD"]
[feeds.sim]
tick_rate = 5.0
[store]
seed_days = 0.05
[[scanners]]
name = "fast_momentum_breakout"
strategy = "sma_cross"
instruments = ["SIM:EURUSD"]
schedule = "0 0 1 1 *"
bars = 30
"""


def footer_keys(app: SptraderApp) -> list[str]:
    """The descriptions the footer shows (as painted: its keys are composed anew only
    when the screen's bindings are refreshed)."""
    footer = app.screen.query_one(Footer)
    return [str(key.description) for key in footer.query("*") if hasattr(key, "description")]


def cell(table: DataTable, row: str, column: str) -> str:
    return str(table.get_cell(row, column))


async def test_service_keys_rate_and_names_follow_what_runs(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(CONFIG)
    home = tmp_path / "home"
    app = SptraderApp(load_settings(home, config))
    async with app.run_test(size=(160, 48)) as pilot:
        await wait_for(pilot, lambda: app.engine_ready, what="the engine to start")
        services = app.query_one(ServicesPane)
        table = app.query_one("#services-table", DataTable)
        await wait_for(pilot, lambda: SCANNER in services.statuses, what="the scanner row")
        await wait_for(
            pilot,
            lambda: (
                services.statuses["sim"].state.value == "running"
                and services.statuses["sim"].events_per_s > 0
            ),
            what="sim streaming",
        )
        # The whole name fits its column.
        assert cell(table, SCANNER, "name") == SCANNER
        assert table.columns["name"].width >= len(SCANNER)

        await pilot.press("v")  # the services pane
        table.move_cursor(row=table.get_row_index("sim"))
        await wait_for(pilot, lambda: services.selected == "sim", what="sim selected")
        await pilot.pause()
        assert "Stop" in footer_keys(app) and "Start" not in footer_keys(app)

        await pilot.press("x")
        await wait_for(
            pilot, lambda: services.statuses["sim"].state.value == "stopped", what="sim stopped"
        )
        await pilot.pause()
        # The footer offers what can be done now: start it again (never Stop).
        assert "Start" in footer_keys(app) and "Stop" not in footer_keys(app)
        # No events/s for what does not run (not its last rate), in the pane and the
        # engine's status (the metrics exporter's too).
        assert cell(table, "sim", "rate") == "-"
        assert services.statuses["sim"].events_per_s == 0

        listed = await asyncio.to_thread(run_cli, home, config, "service", "list")
        assert listed.returncode == 0, listed.stderr
        lines = listed.stdout.splitlines()
        rows = {line.split()[0]: line for line in lines[1:]}
        assert SCANNER in rows  # whole, not cut at 10 characters
        assert rows["sim"].split()[2] == "-"
        # Every row's state starts in the header's "state" column.
        column = lines[0].index("state")
        for name, line in rows.items():
            assert re.match(r"\S", line[column:]), f"{name}'s state is misaligned: {line!r}"
            assert line[:column].rstrip() == name

        await pilot.press("s")
        await wait_for(
            pilot, lambda: services.statuses["sim"].state.value == "running", what="sim again"
        )
        await pilot.pause()
        assert "Stop" in footer_keys(app) and "Start" not in footer_keys(app)
        await pilot.press("q")
        await wait_for(pilot, lambda: app.return_code is not None, what="the app to exit")
