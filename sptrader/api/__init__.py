"""The local API the daemon serves and the TUI and CLI attach through."""
