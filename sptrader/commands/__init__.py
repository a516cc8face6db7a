"""One module per CLI command (imported only when that command runs; the table is
``sptrader.cli.COMMANDS``). Each parses its arguments, reaches the engine through
``sptrader.client.connect`` and prints; only process control (``daemon_control``) and
offline file maintenance (``database``) reach below the client."""
