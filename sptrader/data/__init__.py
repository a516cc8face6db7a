"""The data manager: what is stored (coverage), when markets are open (sessions), what
is missing (gaps), and fetching it."""
