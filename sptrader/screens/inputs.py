"""Text fields that keep every keystroke in the order it was typed.

Textual runs a widget's own (non-priority) key bindings only once the key has bubbled
from the widget up to the App's message queue, while a printable key is inserted at
the widget at once. When that queue is busy (prices streaming, panes repainting), a
backspace typed before ``5 0`` runs after them: ``1000`` + backspace backspace 5 0
stays ``1000``. ``OrderedInput`` runs its bindings (backspace, delete, cursor moves,
enter) as the key reaches it, so editing keys and characters keep their order.
"""

from __future__ import annotations

from textual import events
from textual.widgets import Input


class OrderedInput(Input):
    async def on_key(self, event: events.Key) -> None:
        # Runs before Input's own key handler (our class comes first in the MRO). The
        # app's active bindings start at the focused widget: when this field binds the
        # key (and nothing app-wide takes it first, as a priority binding would), run it
        # now instead of after the queue.
        active = self.screen.active_bindings.get(event.key)
        if active is None or active.node is not self or active.binding.priority:
            return
        if await self.app.run_action(active.binding.action, self):
            event.stop()
            event.prevent_default()  # handled: not Input's own handler again
