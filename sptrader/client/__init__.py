"""How every caller reaches the engine: the EngineClient protocol (``protocol``), its
three implementations (``local``, ``remote``, ``store``), the wire format and connection
of the daemon's API (``wire``, ``connection``, ``paths``) and ``connect()``, the one place
that decides which engine answers. Import the submodule you need: this package imports
nothing itself, so a screen importing the protocol does not load the engine."""
