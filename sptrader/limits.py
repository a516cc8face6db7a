"""The bounds every entry point checks the same way: the command line's argument types
(``commands.arguments``) and the API's method table (``api.methods``). Plain constants,
so both import them without importing each other."""

#: Bars, rows, list entries: 10 million 1m bars are 19 years.
MAX_COUNT = 10_000_000
#: A coverage window in days.
MAX_DAYS = 3660
#: Waiting for history or a quote: a day at most (threading refuses much larger timeouts).
MAX_WAIT_S = 86_400.0
#: Ids of stored rows (BIGINT).
MAX_ID = 2**63 - 1
