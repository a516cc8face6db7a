"""Alerts away from the terminal: rules on the bus (``rules``), the channels a notice goes
out on (``channels``: the TUI, webhooks, Telegram, the desktop), and their history."""
