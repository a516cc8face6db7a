"""Help shows every key with the key it really has: the bindings of the main screen's
panes and of the Journal, Strategies and Data screens (and the order ticket), as the
running app binds them, after a [keymap] that remaps some."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import make_settings, wait_for
from textual.binding import Binding

from sptrader.app import SptraderApp
from sptrader.config import BINDING_IDS
from sptrader.screens import DataScreen, HelpScreen, StrategiesScreen
from sptrader.screens.help import BOUND, ROWS, bound_keys, help_markdown
from sptrader.screens.journal import JournalScreen
from sptrader.screens.order_ticket import OrderTicket

SIZE = (160, 48)
# Pane widgets focused in turn to collect the main screen's bindings.
PANES = ("watchlist-table", "chart", "services-table", "events", "positions-table", "orders-table")


def settings(home: Path, keymap: dict[str, str] | None = None):
    return make_settings(
        home,
        watchlist=["SIM:EURUSD", "SIM:SPY"],
        store={"seed_days": 0.1},
        keymap=keymap or {},
    )


def _row_line(text: str, binding_id: str) -> str:
    """The line of Help's table about ``binding_id``."""
    (row,) = [row for row in ROWS if binding_id in row.binding_ids]
    (line,) = [
        line
        for line in text.splitlines()
        if line.startswith(f"| {row.where} |") and line.endswith(f"| {row.does} |")
    ]
    return line


def _shown(app: SptraderApp, key: str, binding: Binding) -> set[str]:
    """How ``key`` of ``binding`` may be written: its key_display or the key itself."""
    plain = app.get_key_display(binding.with_key(key, key_display=None))
    return {f"`{plain}`"} | ({f"`{binding.key_display}`"} if binding.key_display else set())


def test_every_binding_has_a_help_row(tmp_path: Path) -> None:
    """Every remappable binding, and every binding with an id the app and the panes and
    screens declare, is in a row; no row names a binding that does not exist."""
    declared = {
        binding.id
        for node_type in (SptraderApp, *BOUND)
        for binding in Binding.make_bindings(node_type.BINDINGS)
        if binding.id
    }
    in_rows = {binding_id for row in ROWS for binding_id in row.binding_ids}
    assert set(BINDING_IDS) <= in_rows
    assert declared <= in_rows
    app = SptraderApp(settings(tmp_path))
    keys = bound_keys(app, (*BOUND, HelpScreen), {})
    assert in_rows <= set(keys), in_rows - set(keys)
    assert "(unbound)" not in help_markdown(keys)


def test_help_says_the_keys_as_declared(tmp_path: Path) -> None:
    text = help_markdown(bound_keys(SptraderApp(settings(tmp_path)), (*BOUND, HelpScreen), {}))
    bands = _row_line(text, "chart-bands")
    assert "`m` / `B`" in bands and "Bollinger" in bands  # B, not b (the buy ticket)
    assert "| journal | `e` |" in _row_line(text, "journal-equity")
    assert "`esc` or `S`" in _row_line(text, "strategies-close")
    assert "`[` or `-` / `]` or `+`" in _row_line(text, "data-shorter")


async def _collect(pilot, app: SptraderApp, collected: dict[str, dict[str, Binding]]) -> None:
    """The bindings (id -> key -> binding) active on the current screen and focus."""
    for key, active in app.screen.active_bindings.items():
        if active.binding.id:
            collected.setdefault(active.binding.id, {})[key] = active.binding


async def _open(pilot, app: SptraderApp, key: str, screen_type: type) -> None:
    await pilot.press(key)
    await wait_for(pilot, lambda: isinstance(app.screen, screen_type), what=screen_type.__name__)
    await pilot.pause()


async def _back(pilot, app: SptraderApp, key: str = "escape") -> None:
    await pilot.press(key)
    await wait_for(pilot, lambda: len(app.screen_stack) == 1, what="the main screen")


@pytest.mark.parametrize(
    "keymap",
    [{}, {"chart-bands": "n", "journal-equity": "g", "strategies-close": "z", "data-fill": "F"}],
)
async def test_help_shows_each_binding_with_its_real_key(
    tmp_path: Path, keymap: dict[str, str]
) -> None:
    app = SptraderApp(settings(tmp_path, keymap))
    collected: dict[str, dict[str, Binding]] = {}
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.engine_ready, timeout=20, what="the engine")
        for pane in PANES:
            app.query_one(f"#{pane}").focus()
            await pilot.pause()
            await _collect(pilot, app, collected)
        for key, screen_type, close in (
            ("J", JournalScreen, "journal-close"),
            ("S", StrategiesScreen, "strategies-close"),
            ("d", DataScreen, "data-close"),
        ):
            await _open(pilot, app, key, screen_type)
            await _collect(pilot, app, collected)
            await _back(pilot, app, keymap.get(close, "escape"))
        await _open(pilot, app, "b", OrderTicket)
        await _collect(pilot, app, collected)
        await _back(pilot, app)
        await _open(pilot, app, "question_mark", HelpScreen)
        help_screen = app.screen
        assert isinstance(help_screen, HelpScreen)
        text = help_screen.text
        await pilot.press("q")
        await wait_for(pilot, lambda: app.return_code is not None, what="the app to exit")

    # The main screen's, the Journal's e, Strategies' and Data's keys were all seen.
    assert {"focus-chart", "chart-bands", "journal-equity", "strategies-run", "data-fill"} <= set(
        collected
    )
    for binding_id, keys in collected.items():
        if binding_id.startswith("help"):
            continue
        line = _row_line(text, binding_id)
        for key, binding in keys.items():
            shown = _shown(app, key, binding)
            assert any(text in line for text in shown), f"{binding_id}: {key} not in {line!r}"
    for binding_id, key in keymap.items():
        assert set(collected[binding_id]) == {key}  # the remap took (and the old key went)
        assert f"`{key}`" in _row_line(text, binding_id)
    if "chart-bands" in keymap:
        assert "`B`" not in _row_line(text, "chart-bands")
