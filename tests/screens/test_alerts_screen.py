"""The Alerts screen (``A``) as a trader uses it: the rules listed (a config file's one
too), a price_cross rule added through the form (a refusal of the client shown in the
form, nothing typed lost), paused, tested (the notice in the history), edited and
removed after a confirmation; the screen and the form fit 80x24 and 160x48."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import make_settings, wait_for
from rich.text import Text
from textual.pilot import Pilot
from textual.widgets import Button, Checkbox, DataTable, Input, Label

from sptrader.app import SptraderApp
from sptrader.config import RULE_KINDS
from sptrader.screens.alert_form import KIND_FIELDS, AlertRuleForm, build_rule
from sptrader.screens.alerts import AlertsScreen, ConfirmRemove, subject

INSTRUMENT = "SIM:EURUSD"
CONFIG_RULE = {"name": "halts", "kind": "halt", "channels": ["tui"], "cooldown_s": 60}


def settings(home: Path):
    return make_settings(
        home,
        watchlist=[INSTRUMENT],
        store={"seed_days": 0.05},
        alerts={"rules": [CONFIG_RULE]},
    )


async def open_alerts(pilot: Pilot, app: SptraderApp) -> AlertsScreen:
    await wait_for(pilot, lambda: app.engine_ready, timeout=20, what="the engine")
    await pilot.press("A")
    await wait_for(pilot, lambda: isinstance(app.screen, AlertsScreen), what="the Alerts screen")
    screen = app.screen
    assert isinstance(screen, AlertsScreen)
    await wait_for(pilot, lambda: screen.loads >= 1, what="the rules read")
    return screen


def status(screen: AlertsScreen) -> str:
    return str(screen.query_one("#alerts-status", Label).content)


def cell(screen: AlertsScreen, row: str, column: str) -> str:
    value = screen.query_one("#alert-rules-table", DataTable).get_cell(row, column)
    return value.plain if isinstance(value, Text) else str(value)


async def type_into(pilot: Pilot, form: AlertRuleForm, field: str, text: str) -> None:
    field_input = form.query_one(f"#alert-{field}", Input)
    field_input.focus()
    await pilot.pause()
    await pilot.press("end", *["backspace"] * len(field_input.value), *text)


async def select_rule(pilot: Pilot, screen: AlertsScreen, name: str) -> None:
    table = screen.query_one("#alert-rules-table", DataTable)
    table.focus()
    table.move_cursor(row=table.get_row_index(name))
    await pilot.pause()
    assert screen.selected_rule() == name


async def test_add_pause_test_edit_and_remove_a_rule(tmp_path: Path) -> None:
    app = SptraderApp(settings(tmp_path))
    async with app.run_test(size=(160, 48)) as pilot:
        screen = await open_alerts(pilot, app)
        assert list(screen.rules) == ["halts"]
        assert cell(screen, "halts", "subject") == "every venue"
        assert cell(screen, "halts", "state") == "on"

        # A config file's rule is edited (and removed) there.
        await pilot.press("e")
        assert "defined in the config file" in status(screen)
        assert app.screen is screen
        await pilot.press("x")
        assert app.screen is screen

        # New: a price_cross rule (the form's default kind), only to the TUI.
        await pilot.press("n")
        await wait_for(pilot, lambda: isinstance(app.screen, AlertRuleForm), what="the form")
        form = app.screen
        assert isinstance(form, AlertRuleForm)
        assert form.query_one("#row-level").display and not form.query_one("#row-pct").display
        await pilot.press(*"eurusd-up")
        await type_into(pilot, form, "instrument", INSTRUMENT)
        await type_into(pilot, form, "cooldown_s", "60")
        await pilot.click("#channel-webhooks")
        assert not form.query_one("#channel-webhooks", Checkbox).value
        # No level yet: the client refuses it, in one line; the form keeps what was typed.
        await pilot.click("#alert-form-save")
        error = form.query_one("#alert-form-error", Label)
        await wait_for(pilot, lambda: "level" in str(error.content), what="the refusal")
        assert "\n" not in str(error.content)
        assert app.screen is form
        assert form.query_one("#alert-name", Input).value == "eurusd-up"
        assert form.query_one("#alert-instrument", Input).value == INSTRUMENT
        await type_into(pilot, form, "level", "1.5")
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.screen is screen, what="the form to close")
        await wait_for(pilot, lambda: "eurusd-up" in screen.rules, what="the new rule listed")
        (rule,) = [r for r in await app.client.alert_rules() if r["name"] == "eurusd-up"]
        assert rule["source"] == "stored" and rule["channels"] == ["tui"]
        assert rule["rule"]["level"] == 1.5 and rule["cooldown_s"] == 60
        assert cell(screen, "eurusd-up", "subject") == f"{INSTRUMENT} crosses 1.5"
        assert screen.selected_rule() == "eurusd-up"  # the saved rule is selected

        # Pause it, then resume it.
        await pilot.press("p")
        await wait_for(pilot, lambda: cell(screen, "eurusd-up", "state") == "paused", what="paused")
        (rule,) = [r for r in await app.client.alert_rules() if r["name"] == "eurusd-up"]
        assert rule["paused"] is True
        await pilot.press("p")
        await wait_for(pilot, lambda: cell(screen, "eurusd-up", "state") == "on", what="resumed")

        # A test send: said, and in the history below.
        await pilot.press("t")
        await wait_for(pilot, lambda: "test sent to tui" in status(screen), what="the test")
        history = screen.query_one("#alert-history-table", DataTable)
        await wait_for(pilot, lambda: history.row_count >= 1, what="the history row")
        assert screen.history[0]["rule"] == "eurusd-up"
        assert "test of alert eurusd-up" in str(history.get_cell("0", "title"))

        # h: the history of the selected rule only (the config rule has none).
        await select_rule(pilot, screen, "halts")
        await pilot.press("h")
        await wait_for(pilot, lambda: history.row_count == 0, what="the rule's own history")
        await pilot.press("h")
        await wait_for(pilot, lambda: history.row_count >= 1, what="every rule's history")

        # Edit: the name is kept (disabled), the fields filled in; a new level.
        await select_rule(pilot, screen, "eurusd-up")
        await pilot.press("e")
        await wait_for(pilot, lambda: isinstance(app.screen, AlertRuleForm), what="the edit form")
        form = app.screen
        assert isinstance(form, AlertRuleForm)
        assert form.query_one("#alert-name", Input).disabled
        assert form.query_one("#alert-level", Input).value == "1.5"
        assert form.query_one("#alert-cooldown_s", Input).value == "60"
        await type_into(pilot, form, "level", "1.6")
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.screen is screen, what="the edit form to close")
        await wait_for(
            pilot,
            lambda: cell(screen, "eurusd-up", "subject") == f"{INSTRUMENT} crosses 1.6",
            what="the edited rule",
        )
        (rule,) = [r for r in await app.client.alert_rules() if r["name"] == "eurusd-up"]
        assert rule["rule"]["level"] == 1.6 and rule["channels"] == ["tui"]

        # Remove: escape keeps it, Remove removes it.
        await pilot.press("x")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmRemove), what="the question")
        await pilot.press("escape")
        await wait_for(pilot, lambda: app.screen is screen, what="the question closed")
        assert "eurusd-up" in screen.rules
        await pilot.press("x")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmRemove), what="the question")
        await pilot.press("enter")
        await wait_for(pilot, lambda: "eurusd-up" not in screen.rules, what="the rule removed")
        assert [r["name"] for r in await app.client.alert_rules()] == ["halts"]

        await pilot.press("escape")
        await wait_for(pilot, lambda: len(app.screen_stack) == 1, what="the main screen")
        await pilot.press("q")


def _fits(screen) -> None:
    """No label cut (wrapped labels have the rows they need), every table's columns fit
    its width, every button fully on screen."""
    width, height = screen.app.size
    for label in screen.query(Label):
        if not label.region.area or not str(label.content):  # not shown (its row hidden)
            continue
        content = (
            Text.from_markup(label.content) if isinstance(label.content, str) else label.content
        )
        lines = content.wrap(screen.app.console, label.content_region.width)
        assert len(lines) <= label.content_region.height, f"{label.id}: {content.plain!r} cut"
    for table in screen.query(DataTable):
        assert table.virtual_size.width <= table.scrollable_content_region.width, table.id
    for button in screen.query(Button):
        region = button.region
        assert region.width >= len(str(button.label)) and region.right <= width, button.id
        assert 0 <= region.y < height, button.id


@pytest.mark.parametrize("size", [(80, 24), (160, 48)])
async def test_the_screen_and_the_form_fit(tmp_path: Path, size: tuple[int, int]) -> None:
    app = SptraderApp(settings(tmp_path))
    async with app.run_test(size=size) as pilot:
        screen = await open_alerts(pilot, app)
        await app.client.add_alert_rule(
            {
                "name": "day-loss",
                "kind": "pnl",
                "threshold": -500,
                "channels": ["tui", "webhooks", "telegram", "desktop"],
            }
        )
        await app.client.test_alert("day-loss")
        screen._load()
        await wait_for(pilot, lambda: len(screen.history) == 1, what="the rows read")
        await pilot.pause()
        _fits(screen)
        # The form at its tallest (pnl: scope, threshold, venue, instrument).
        await select_rule(pilot, screen, "day-loss")
        await pilot.press("e")
        await wait_for(pilot, lambda: isinstance(app.screen, AlertRuleForm), what="the form")
        await pilot.pause()
        form = app.screen
        assert form.query_one("#row-scope").display and form.query_one("#row-venue").display
        _fits(form)
        save = form.query_one("#alert-form-save", Button)
        assert save.region.bottom <= size[1]
        await pilot.press("escape")
        await wait_for(pilot, lambda: app.screen is screen, what="the form closed")
        await pilot.press("escape")
        await pilot.press("q")


def test_the_form_sends_only_the_kinds_fields() -> None:
    assert set(RULE_KINDS) <= set(KIND_FIELDS)  # every kind the config knows has its fields
    texts = {"name": " move ", "instrument": "sim:eurusd", "level": "9", "pct": "1.5"}
    texts |= {"window_s": "600", "cooldown_s": "1k"}
    rule = build_rule("price_move", texts, channels=["tui"])
    assert rule == {
        "name": "move",
        "kind": "price_move",
        "channels": ["tui"],
        "cooldown_s": 1000.0,
        "instrument": "SIM:EURUSD",
        "pct": 1.5,
        "window_s": 600.0,
    }
    order = build_rule("order", {"name": "fills"}, events=["filled"], channels=[])
    assert order["events"] == ["filled"] and order["instrument"] == "" and "level" not in order
    with pytest.raises(Exception, match="give the rule a name"):
        build_rule("daemon", {"name": ""})
    assert subject({"kind": "pnl", "rule": {"scope": "day", "threshold": -500}}) == (
        "day P&L crosses -500"
    )
