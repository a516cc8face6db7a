"""The API's method table: every method a client may call, with its parameters' JSON types
and bounds and the EngineClient call that answers it.

A request is checked against its row before anything runs (one line naming the method
and the parameter, a usage error), so a handler only ever sees values of the types it
declares. A handler is the client call plus the JSON shape of its result, nothing else:
the work is the client's, so the API, the TUI and the commands do it one way. A new
capability is a typed EngineClient method plus one row here.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import astuple, dataclass
from typing import Any

from sptrader.client.protocol import EngineClient
from sptrader.client.wire import bar_fields, encode_status
from sptrader.errors import UsageError
from sptrader.limits import MAX_COUNT, MAX_DAYS, MAX_ID, MAX_WAIT_S

#: Microseconds since 1970 that a datetime can show: years 1 to 9999.
MIN_US = -62_135_596_800_000_000
MAX_US = 253_402_300_799_999_999
#: A subscriber's event queue (events, not bytes).
MAX_QUEUE = 1_000_000


@dataclass(frozen=True, slots=True)
class Param:
    """One request parameter. Left out, or null, it is ``default`` (unless required)."""

    kind: type  # int, str, bool, list (of str) or dict
    required: bool = False
    default: Any = None
    low: int = 0
    high: int = 0
    what: str = ""  # how a bad value is described: "a time in microseconds since 1970"

    def check(self, method: str, name: str, value: Any) -> Any:
        if self.kind is int:
            if isinstance(value, float) and value.is_integer():
                value = int(value)  # 5.0 from a client whose JSON has one number type
            if (
                not isinstance(value, int)
                or isinstance(value, bool)
                or not self.low <= value <= self.high
            ):
                what = self.what or f"a whole number from {self.low:,} to {self.high:,}"
                raise UsageError(f"{method}: {name} must be {what}, not {shown(value)}")
        elif self.kind is str:
            if not isinstance(value, str):
                raise UsageError(f"{method}: {name} must be text, not {shown(value)}")
        elif self.kind is bool:
            if not isinstance(value, bool):
                raise UsageError(f"{method}: {name} must be true or false, not {shown(value)}")
        elif self.kind is list:
            if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
                raise UsageError(f"{method}: {name} must be a list of text, not {shown(value)}")
        elif not isinstance(value, self.kind):
            raise UsageError(f"{method}: {name} must be a JSON object, not {shown(value)}")
        return value


Handler = Callable[..., Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class Method:
    """A row: the parameters, and the call that answers (None: the server answers it
    itself, for what is about the connection rather than the engine)."""

    params: dict[str, Param]
    call: Handler | None = None


def shown(value: Any) -> str:
    """A client's value in a message: its repr, cut short."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _count(default: int | None = None, high: int = MAX_COUNT, required: bool = False) -> Param:
    return Param(int, required, default, 1, high)


_TEXT = Param(str, required=True)
_MAYBE_TEXT = Param(str)
_NAMES = Param(list, required=True)
_TIME_WHAT = "a time in microseconds since 1970 (years 1 to 9999)"
_TIME = Param(int, True, None, MIN_US, MAX_US, _TIME_WHAT)
_MAYBE_TIME = Param(int, False, None, MIN_US, MAX_US, _TIME_WHAT)
_ID = Param(int, True, None, 1, MAX_ID, "a positive whole number")


async def _done(awaitable: Awaitable[Any]) -> bool:
    """A call that returns nothing answers true."""
    await awaitable
    return True


# --- the handlers that shape a result for JSON ----------------------------------------------


async def _services(client: EngineClient) -> list[dict[str, Any]]:
    return [encode_status(status) for status in await client.services()]


async def _candles(client: EngineClient, **values: Any) -> list[Any]:
    frame = await client.candles(
        values["instrument"],
        values["timeframe"],
        last=values["last"],
        start_us=values["start_us"],
        end_us=values["end_us"],
    )
    return frame.with_columns(frame["ts"].dt.epoch("us")).rows()


async def _summaries(client: EngineClient, instruments: list[str], points: int) -> dict[str, Any]:
    summaries = await client.summaries(instruments, points)
    return {
        name: [summary.session_open, summary.last, summary.closes]
        for name, summary in summaries.items()
    }


async def _forming_bars(client: EngineClient) -> dict[str, Any]:
    return {
        name: bar_fields(bar)
        for name in client.watchlist
        if (bar := client.forming_bar(name)) is not None
    }


async def _search_symbols(client: EngineClient, **values: Any) -> list[Any]:
    found = await client.search_symbols(values["query"], values["feed"], values["limit"])
    return [list(astuple(item)) for item in found]


async def _stale(client: EngineClient) -> list[str]:
    return sorted(await client.stale_instruments())


# --- data commands (candles, backfill, data, symbols, export) ---
# (backfill has no row: the remote client starts one and follows its reports in the
# event stream; import_bars none either: the API carries no bars.)


async def _bars_before(client: EngineClient, **values: Any) -> list[Any]:
    frame = await client.bars_before(
        values["instrument"], values["timeframe"], values["before_us"], values["count"]
    )
    return frame.with_columns(frame["ts"].dt.epoch("us")).rows()


METHODS: dict[str, Method] = {
    # About the connection: answered by the server.
    "status": Method({}),
    # market_data false: no quotes, trades or bars (a client that takes them from NATS).
    "subscribe": Method(
        {"maxsize": _count(high=MAX_QUEUE), "market_data": Param(bool, default=True)}
    ),
    # Services.
    "services": Method({}, _services),
    "service_start": Method({"name": _TEXT}, lambda c, name: _done(c.start_service(name))),
    "service_stop": Method({"name": _TEXT}, lambda c, name: _done(c.stop_service(name))),
    "service_restart": Method({"name": _TEXT}, lambda c, name: _done(c.restart_service(name))),
    # Market data.
    "candles": Method(
        {
            "instrument": _TEXT,
            "timeframe": Param(str, default="1m"),
            "last": _count(),
            "start_us": _MAYBE_TIME,
            "end_us": _MAYBE_TIME,
        },
        _candles,
    ),
    "summaries": Method({"instruments": _NAMES, "points": _count(required=True)}, _summaries),
    "forming_bars": Method({}, _forming_bars),
    "data_gaps": Method(
        {"instrument": _TEXT, "start_us": _TIME, "end_us": _TIME},
        lambda c, **v: c.data_gaps(v["instrument"], v["start_us"], v["end_us"]),
    ),
    "data_status": Method(
        {"instruments": Param(list), "start_us": _TIME, "end_us": _TIME},
        lambda c, **v: c.data_status(list(v["instruments"] or []), v["start_us"], v["end_us"]),
    ),
    "stale_instruments": Method({}, _stale),
    "price_decimals": Method(
        {"instruments": _NAMES}, lambda c, instruments: c.price_decimals(instruments)
    ),
    "search_symbols": Method(
        {"query": Param(str, default=""), "feed": _MAYBE_TEXT, "limit": _count(default=50)},
        _search_symbols,
    ),
    "add_instrument": Method(
        {"instrument": _TEXT}, lambda c, instrument: c.add_instrument(instrument)
    ),
    "remove_instrument": Method(
        {"instrument": _TEXT}, lambda c, instrument: _done(c.remove_instrument(instrument))
    ),
    "start_backfill": Method(
        {"instruments": _NAMES, "start_us": _TIME, "end_us": _TIME},
        lambda c, **v: _done(c.start_backfill(v["instruments"], v["start_us"], v["end_us"])),
    ),
    # Scanners and their runs.
    "scanners": Method({}, lambda c: c.scanners()),
    "run_scanner": Method({"name": _TEXT}, lambda c, name: c.run_scanner(name)),
    "pause_scanner": Method({"name": _TEXT}, lambda c, name: _done(c.pause_scanner(name))),
    "resume_scanner": Method({"name": _TEXT}, lambda c, name: _done(c.resume_scanner(name))),
    "recent_signals": Method(
        {"limit": _count(default=50)}, lambda c, limit: c.recent_signals(limit)
    ),
    "run_steps": Method({"run_id": _ID}, lambda c, run_id: c.run_steps(run_id)),
    "scan": Method({"name": _TEXT}, lambda c, name: c.scan(name)),
    "runs": Method({"last": _count(default=20)}, lambda c, last: c.runs(last)),
    "run_detail": Method({"run_id": _ID}, lambda c, run_id: c.run_detail(run_id)),
    "shadow_report": Method(
        {"scanner": _MAYBE_TEXT, "days": _count(default=30, high=MAX_DAYS)},
        lambda c, scanner, days: c.shadow_report(scanner, days),
    ),
    "signal_labels": Method(
        {
            "scanner": _MAYBE_TEXT,
            "start_us": _MAYBE_TIME,
            "end_us": _MAYBE_TIME,
            "source": Param(str, default="live"),
        },
        lambda c, scanner, start_us, end_us, source: c.signal_labels(
            scanner, start_us, end_us, source
        ),
    ),
    "scanner_activity": Method(
        {"name": _TEXT, "start_us": _TIME, "end_us": _TIME},
        lambda c, name, start_us, end_us: c.scanner_activity(name, start_us, end_us),
    ),
    # The paper broker and the journal; an order request's fields are checked by the
    # broker, as for a local client.
    "place_order": Method(
        {"request": Param(dict, required=True)}, lambda c, request: c.place_order(request)
    ),
    "cancel_order": Method({"order_id": _ID}, lambda c, order_id: c.cancel_order(order_id)),
    "close_position": Method(
        {"instrument": _TEXT, "venue": Param(str, default="paper")},
        lambda c, instrument, venue: c.close_position(instrument, venue),
    ),
    "account": Method({"venue": Param(str, default="paper")}, lambda c, venue: c.account(venue)),
    "positions": Method({"venue": _MAYBE_TEXT}, lambda c, venue: c.positions(venue)),
    "open_orders": Method({"venue": _MAYBE_TEXT}, lambda c, venue: c.open_orders(venue)),
    "order_history": Method(
        {"limit": _count(default=100), "venue": _MAYBE_TEXT},
        lambda c, limit, venue: c.order_history(limit, venue),
    ),
    "trading_venues": Method({}, lambda c: c.trading_venues()),
    "halt": Method(
        {"venue": _MAYBE_TEXT, "reason": Param(str, default="")},
        lambda c, venue, reason: c.halt(venue, reason),
    ),
    "resume": Method({"venue": _MAYBE_TEXT}, lambda c, venue: c.resume(venue)),
    "alert_rules": Method({}, lambda c: c.alert_rules()),
    "alert_history": Method(
        {"limit": _count(default=50), "rule": _MAYBE_TEXT},
        lambda c, limit, rule: c.alert_history(limit, rule),
    ),
    "test_alert": Method({"name": _TEXT}, lambda c, name: c.test_alert(name)),
    "add_alert_rule": Method(
        {"rule": Param(dict, required=True)}, lambda c, rule: c.add_alert_rule(rule)
    ),
    "remove_alert_rule": Method({"name": _TEXT}, lambda c, name: c.remove_alert_rule(name)),
    "pause_alert_rule": Method(
        {"name": _TEXT, "paused": Param(bool, default=True)},
        lambda c, name, paused: c.pause_alert_rule(name, paused),
    ),
    "wait_venue_ready": Method(
        {"venue": _TEXT, "timeout_s": Param(float, default=10.0)},
        lambda c, venue, timeout_s: c.wait_venue_ready(venue, min(timeout_s, MAX_WAIT_S)),
    ),
    "reconcile": Method({"venue": _MAYBE_TEXT}, lambda c, venue: c.reconcile(venue)),
    "fills": Method(
        {"since_us": _MAYBE_TIME, "limit": _count()},
        lambda c, since_us, limit: c.fills(since_us, limit),
    ),
    "journal": Method(
        {"day_from": _MAYBE_TEXT, "day_to": _MAYBE_TEXT, "venue": _MAYBE_TEXT},
        lambda c, day_from, day_to, venue: c.journal(day_from, day_to, venue),
    ),
    "equity_curve": Method(
        {
            "start_us": _MAYBE_TIME,
            "end_us": _MAYBE_TIME,
            "timeframe": Param(str, default="1h"),
            "venue": Param(str, default="paper"),
        },
        lambda c, **v: c.equity_curve(v["start_us"], v["end_us"], v["timeframe"], v["venue"]),
    ),
    "add_journal_note": Method(
        {"text": _TEXT, "day": _MAYBE_TEXT}, lambda c, text, day: c.add_journal_note(text, day)
    ),
    # --- trading commands (order, journal, scan, backtest) ---
    # (wait_for_quote has no row: a daemon's engine is running already, nothing to wait for.)
    "history_source": Method(
        {"instrument": _TEXT}, lambda c, instrument: c.history_source(instrument)
    ),
    "start_backtest": Method(
        {"request": Param(dict, required=True)}, lambda c, request: c.start_backtest(request)
    ),
    "backtest_job": Method({"job_id": _ID}, lambda c, job_id: c.backtest_job(job_id)),
    "cancel_backtest": Method({"job_id": _ID}, lambda c, job_id: c.cancel_backtest(job_id)),
    # --- data commands (candles, backfill, data, symbols, export) ---
    "recent_window": Method(
        {"instrument": _TEXT, "timeframe": Param(str, default="1m"), "bars": _count(required=True)},
        lambda c, **v: c.recent_window(v["instrument"], v["timeframe"], v["bars"]),
    ),
    "fetch_missing": Method(
        {
            "instrument": _TEXT,
            "start_us": _TIME,
            "end_us": _TIME,
            "wait_ms": Param(int, False, 0, 0, int(MAX_WAIT_S * 1000)),
        },
        lambda c, **v: c.fetch_missing(
            v["instrument"], v["start_us"], v["end_us"], v["wait_ms"] / 1000
        ),
    ),
    "bars_before": Method(
        {
            "instrument": _TEXT,
            "timeframe": Param(str, default="1m"),
            "before_us": _TIME,
            "count": _count(required=True),
        },
        _bars_before,
    ),
    "refresh_symbols": Method(
        {"feed": _MAYBE_TEXT}, lambda c, feed: _done(c.refresh_symbols(feed))
    ),
    "unknown_symbols": Method(
        {"instruments": _NAMES}, lambda c, instruments: c.unknown_symbols(instruments)
    ),
}


def check_params(method: str, params: dict[str, Any]) -> dict[str, Any]:
    """The parameters of a call to ``method`` (a METHODS key), checked and completed with
    their defaults; a UsageError naming the method and the parameter otherwise."""
    spec = METHODS[method].params
    unknown = [name for name in params if name not in spec]
    if unknown:
        takes = ", ".join(spec) or "no parameters"
        raise UsageError(f"{method}: unknown parameter {shown(unknown[0])} (it takes {takes})")
    values: dict[str, Any] = {}
    for name, param in spec.items():
        value = params.get(name)
        if value is None:
            if param.required:
                raise UsageError(f"{method}: missing parameter {name!r}")
            values[name] = param.default
        else:
            values[name] = param.check(method, name, value)
    return values
