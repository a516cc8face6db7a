"""The ``/`` instrument search: type to search every configured feed's instruments,
Enter (or a click) adds the highlighted one to the watchlist."""

from __future__ import annotations

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.timer import Timer
from textual.widgets import Input, Label, OptionList
from textual.widgets.option_list import Option

from sptrader.client.protocol import EngineClient
from sptrader.screens.inputs import OrderedInput

# Wait for a pause in typing before searching (each search may read a large list).
DEBOUNCE_S = 0.15


class SymbolSearchScreen(ModalScreen[str | None]):
    BINDINGS = [
        Binding("escape", "dismiss(None)", "Close", id="search-close"),
        Binding("down", "move(1)", show=False),
        Binding("up", "move(-1)", show=False),
    ]

    def __init__(self, client: EngineClient, watched: list[str]) -> None:
        super().__init__()
        self.client = client
        self.watched = set(watched)
        self._timer: Timer | None = None
        self.searches = 0

    def compose(self) -> ComposeResult:
        with Vertical(id="search-body"):
            yield Label("Add to the watchlist: type a symbol or a name (btcusd, gold, eur)")
            yield OrderedInput(placeholder="search instruments…", id="search-input")
            yield OptionList(id="search-results")
            yield Label("", id="search-status")

    def on_mount(self) -> None:
        self.query_one(Input).focus()
        self._search("")

    @on(Input.Changed, "#search-input")
    def _query_changed(self, event: Input.Changed) -> None:
        if self._timer is not None:
            self._timer.stop()
        self._timer = self.set_timer(DEBOUNCE_S, lambda: self._search(event.value))

    @work(exclusive=True, group="symbol-search", exit_on_error=False)
    async def _search(self, query: str) -> None:
        status = self.query_one("#search-status", Label)
        status.update("searching…")
        try:
            found = await self.client.search_symbols(query, limit=100)
        except Exception as error:  # offline, daemon gone: say so, keep the screen
            status.update(Text(f"search failed: {error}", style="red"))
            return
        results = self.query_one(OptionList)
        results.clear_options()
        for item in found:
            label = Text(f"{item.instrument:<24}", style="bold")
            label.append(f" {item.description}", style="")
            if item.kind:
                label.append(f"  {item.kind}", style="dim")
            if item.instrument in self.watched:
                label.append("  (watched)", style="green")
            results.add_option(Option(label, id=item.instrument))
        if found:
            results.highlighted = 0
        status.update(f"{len(found)} match{'es' if len(found) != 1 else ''}" if query else "")
        self.searches += 1

    def action_move(self, step: int) -> None:
        results = self.query_one(OptionList)
        if results.option_count:
            current = results.highlighted if results.highlighted is not None else -1
            results.highlighted = max(0, min(results.option_count - 1, current + step))

    @on(Input.Submitted, "#search-input")
    def _submitted(self) -> None:
        results = self.query_one(OptionList)
        if results.highlighted is not None:
            option = results.get_option_at_index(results.highlighted)
            self.dismiss(option.id)

    @on(OptionList.OptionSelected, "#search-results")
    def _chosen(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(event.option.id)
