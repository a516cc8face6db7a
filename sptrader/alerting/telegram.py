"""The Telegram bot: alerts out to the configured chats, commands in from them.

One service (``telegram``) long-polls ``getUpdates`` and answers commands through an
``EngineClient`` (so a command goes through the same client methods and risk checks as
the TUI); it is also the ``telegram`` alert Channel: ``send`` only queues, and the
service's delivery task sends with retries and backoff.

Requests go to ``{api_url}/bot{token}/METHOD``: the token is in every URL, and httpx
puts URLs in its exception texts and logs them at INFO. So every httpx failure becomes
an error of ours whose text is built without the URL (raised outside the ``except``
block, so no chained exception carries it either), httpx's loggers are held at WARNING
while the bot runs, and a filter redacts the token from any record they still log.

Commands are answered only in ``chat_ids``; any other chat gets nothing and one log
line. Commands that change something (/close, /cancel, /halt, /resume) first ask with
an inline keyboard and act only on its Yes, pressed in an allowed chat within
``CONFIRM_TTL_S``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from sptrader.alerting.chart_png import candles_png
from sptrader.alerting.notice import Notice
from sptrader.config import TelegramConfig
from sptrader.errors import SptraderError
from sptrader.formatting import format_price, one_line, price_decimals, sparkline
from sptrader.models import normalize_instrument
from sptrader.supervisor import Service, ServiceContext

log = logging.getLogger(__name__)

#: Notices and replies waiting to go out; beyond this the oldest is dropped (counted).
QUEUE_SIZE = 1000
#: A confirmation keyboard's Yes is honoured this long after it was sent.
CONFIRM_TTL_S = 60.0
#: Telegram refuses messages longer than 4096 characters.
MAX_TEXT = 4000
#: Delivery attempts of one message before it counts as failed.
MAX_ATTEMPTS = 5
CHART_BARS = 40
CHART_ROWS = 8

HELP = """SPtrader commands:
/status - services and venues
/positions - open positions
/orders - working orders
/pnl [day|week] - realized P&L and accounts
/chart INSTRUMENT [TF] - the last bars as a chart image
/close INSTRUMENT [VENUE] - flatten a position (asks first)
/cancel ID - cancel a working order (asks first)
/halt [VENUE] - stop new entries, cancel working orders (asks first)
/resume [VENUE] - lift a halt (asks first)
/help - this list"""


# --- the Bot API ------------------------------------------------------------------------


class TelegramError(Exception):
    """The Bot API refused a request (``ok: false``): its error_code and description."""

    def __init__(self, method: str, code: int, description: str, retry_after: float | None):
        super().__init__(f"Telegram {method}: {code} {description}")
        self.code = code
        self.description = description
        self.retry_after = retry_after


class TelegramUnreachable(ConnectionError):
    """A network failure or a 5xx: an ordinary disconnect (the supervisor reconnects).
    Its text never holds the request URL."""


class _RedactToken(logging.Filter):
    """Replaces the bot token in any record logged through httpx's loggers."""

    def __init__(self, token: str) -> None:
        super().__init__()
        self.token = token

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if self.token in text:
            record.msg, record.args = text.replace(self.token, "<token>"), None
        return True


@contextlib.contextmanager
def _quiet_httpx(token: str):
    """httpx logs every request URL (the token in it) at INFO: hold its loggers at
    WARNING at least, and redact the token from whatever they still log."""
    loggers = [logging.getLogger(name) for name in ("httpx", "httpcore")]
    levels = [logger.level for logger in loggers]
    redact = _RedactToken(token)
    for logger in loggers:
        if logger.getEffectiveLevel() < logging.WARNING:
            logger.setLevel(logging.WARNING)
        logger.addFilter(redact)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.removeFilter(redact)
            logger.setLevel(level)


class BotApi:
    """``call(method, **params)`` -> the ``result`` of ``{api_url}/bot{token}/METHOD``."""

    def __init__(self, http: httpx.AsyncClient, api_url: str, token: str) -> None:
        self._http = http
        self._base = f"{api_url.rstrip('/')}/bot{token}"
        self._token = token

    async def call(self, method: str, files: dict[str, Any] | None = None, **params: Any) -> Any:
        """With ``files`` (httpx's form), the request is multipart: ``params`` go as
        form fields (sendPhoto's upload); else a JSON body."""
        failure: Exception | None = None
        url = f"{self._base}/{method}"
        try:
            if files:
                fields = {key: str(value) for key, value in params.items()}
                response = await self._http.post(url, data=fields, files=files)
            else:
                response = await self._http.post(url, json=params)
        except (httpx.InvalidURL, httpx.UnsupportedProtocol):
            failure = SptraderError("telegram.api_url is not a usable http(s) URL")
        except httpx.TimeoutException:
            failure = TelegramUnreachable(f"Telegram {method}: timed out")
        except httpx.HTTPError as error:
            failure = TelegramUnreachable(f"Telegram {method}: {self._describe(error)}")
        # Raised out here, not in the except block: no chained httpx error with the URL.
        if failure is not None:
            raise failure
        try:
            body = response.json()
        except ValueError:  # not JSON: a proxy's error page, say
            body = None
        if not isinstance(body, dict):
            raise self._status_error(method, response.status_code, "answer is not a JSON object")
        if body.get("ok") is True:
            return body.get("result")
        code = int(body.get("error_code") or response.status_code)
        description = one_line(self._redact(str(body.get("description", ""))), 200)
        if code >= 500:
            raise TelegramUnreachable(f"Telegram {method}: {code} {description}")
        parameters = body.get("parameters") or {}
        retry_after = parameters.get("retry_after") if isinstance(parameters, dict) else None
        raise TelegramError(
            method,
            code,
            description,
            float(retry_after) if isinstance(retry_after, int | float) else None,
        )

    def _status_error(self, method: str, status: int, what: str) -> Exception:
        if status >= 500:
            return TelegramUnreachable(f"Telegram {method}: HTTP {status}, {what}")
        return TelegramError(method, status, what, None)

    def _describe(self, error: Exception) -> str:
        text = self._redact(one_line(str(error), 200))
        return f"{text} ({type(error).__name__})" if text else type(error).__name__

    def _redact(self, text: str) -> str:
        return text.replace(self._token, "<token>")


# --- what goes out ----------------------------------------------------------------------


@dataclass(slots=True)
class Outgoing:
    chat_id: int
    text: str
    parse_mode: str | None = None
    reply_markup: dict[str, Any] | None = None
    #: A PNG: sent with sendPhoto, ``text`` as its caption.
    photo: bytes | None = None


@dataclass(slots=True)
class Pending:
    """A change a chat asked for, waiting for its Yes."""

    chat_id: int
    question: str
    action: Callable[[], Awaitable[str]]
    expires_at: float


def _clip(text: str) -> str:
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 1] + "…"


def _pre(text: str) -> str:
    """``text`` as a MarkdownV2 code block (in one, only ` and \\ are special)."""
    return "```\n" + text.replace("\\", "\\\\").replace("`", "\\`") + "\n```"


def _money(value: Any) -> str:
    return f"{value:+,.2f}" if isinstance(value, int | float) else "-"


def _qty(value: Any) -> str:
    return f"{value:,.8g}" if isinstance(value, int | float) else "-"


# --- the service ------------------------------------------------------------------------


class TelegramBot(Service):
    """The ``telegram`` service and alert Channel. ``client`` is how it reaches the
    engine (a LocalEngineClient over the engine it runs in); ``env`` holds the token."""

    kind = "alerts"

    def __init__(
        self,
        config: TelegramConfig,
        # An sptrader.client.protocol.EngineClient (not imported: the engine imports
        # sptrader.alerting, and the client imports the engine).
        client: Any,
        *,
        env: Mapping[str, str] | None = None,
        confirm_ttl_s: float = CONFIRM_TTL_S,
        retry_initial_s: float = 1.0,
        retry_max_s: float = 60.0,
    ) -> None:
        super().__init__("telegram")
        self.config = config
        self.client = client
        self._env = os.environ if env is None else env
        self.confirm_ttl_s = confirm_ttl_s
        self.retry_initial_s = retry_initial_s
        self.retry_max_s = retry_max_s
        self.allowed = frozenset(config.chat_ids)
        self._outbox: deque[Outgoing] = deque()
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._context: ServiceContext | None = None
        self._dropped_before_start = 0
        self._offset: int | None = None
        self._pending: dict[str, Pending] = {}
        self._ids = itertools.count(1)

    # --- the Channel ------------------------------------------------------------------

    def send(self, notice: Notice) -> None:
        """Queue the notice for every configured chat (delivered by the running service;
        kept until it runs). Never blocks; safe from another thread."""
        text = f"{notice.title}\n{notice.text}" if notice.text else notice.title
        for chat_id in self.config.chat_ids:
            self._enqueue(Outgoing(chat_id, _clip(text)))

    def _enqueue(self, message: Outgoing) -> None:
        if len(self._outbox) >= QUEUE_SIZE:
            self._outbox.popleft()
            if self._context is not None:
                self._context.count("dropped")
            else:
                self._dropped_before_start += 1
        self._outbox.append(message)
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._wake.set()
        else:
            loop.call_soon_threadsafe(self._wake.set)

    def _reply(self, chat_id: int, text: str, **extra: Any) -> None:
        self._enqueue(Outgoing(chat_id, _clip(text), **extra))

    # --- running ----------------------------------------------------------------------

    def _token(self) -> str:
        token = self._env.get(self.config.token_env, "").strip()
        if not token:
            raise SptraderError(
                f"no Telegram bot token: set the environment variable {self.config.token_env}"
            )
        return token

    async def run(self, context: ServiceContext) -> None:
        token = self._token()
        # The Event is this loop's (a service may run again on another loop: tests).
        self._wake = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._context = context
        if self._dropped_before_start:
            context.count("dropped", self._dropped_before_start)
            self._dropped_before_start = 0
        for name in ("sent", "failed", "retried"):
            context.counters.setdefault(name, 0)
        poll_s = max(0.0, self.config.poll_timeout_s)
        timeout = httpx.Timeout(10.0, read=poll_s + 10.0)
        with _quiet_httpx(token):
            async with httpx.AsyncClient(timeout=timeout) as http:
                api = BotApi(http, self.config.api_url, token)
                me = await self._checked(api, "getMe")
                log.info(
                    "Telegram bot @%s answering %d chat(s)",
                    (me or {}).get("username", "?"),
                    len(self.allowed),
                    extra={"source": self.name},
                )
                context.mark_running()
                delivery = asyncio.create_task(self._deliver(api, context))
                try:
                    await self._poll(api, context, poll_s)
                finally:
                    delivery.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await delivery

    async def _checked(self, api: BotApi, method: str, **params: Any) -> Any:
        """A call whose 401/404 means the token is rejected: the service fails for good
        (retrying cannot fix a token) with one line naming the env var, not the token."""
        rejected: TelegramError | None = None
        try:
            return await api.call(method, **params)
        except TelegramError as error:
            if error.code not in (401, 404):
                raise
            rejected = error
        raise SptraderError(
            f"Telegram rejected the bot token in ${self.config.token_env} "
            f"({rejected.code} {rejected.description or 'Unauthorized'})"
        )

    async def _poll(self, api: BotApi, context: ServiceContext, poll_s: float) -> None:
        while True:
            params: dict[str, Any] = {
                "timeout": int(poll_s) if poll_s >= 1 else poll_s,
                "allowed_updates": ["message", "callback_query"],
            }
            if self._offset is not None:
                params["offset"] = self._offset
            try:
                updates = await self._checked(api, "getUpdates", **params)
            except TelegramError as error:
                if error.retry_after is None:
                    raise
                await asyncio.sleep(error.retry_after)
                continue
            context.touch()
            for update in updates or []:
                update_id = update.get("update_id")
                if isinstance(update_id, int):
                    self._offset = update_id + 1
                await self._handle_update(api, update)

    async def _deliver(self, api: BotApi, context: ServiceContext) -> None:
        """Send the outbox in order; a message is retried with backoff on network errors,
        429 (after its retry_after) and 5xx, and counted sent or failed."""
        while True:
            while not self._outbox:
                self._wake.clear()
                await self._wake.wait()
            message = self._outbox[0]
            await self._deliver_one(api, context, message)
            if self._outbox and self._outbox[0] is message:
                self._outbox.popleft()

    async def _deliver_one(self, api: BotApi, context: ServiceContext, message: Outgoing) -> None:
        method, files = "sendMessage", None
        params: dict[str, Any] = {"chat_id": message.chat_id, "text": message.text}
        if message.photo is not None:
            method, files = "sendPhoto", {"photo": ("chart.png", message.photo, "image/png")}
            params = {"chat_id": message.chat_id, "caption": message.text}
        if message.parse_mode:
            params["parse_mode"] = message.parse_mode
        if message.reply_markup:
            params["reply_markup"] = message.reply_markup
        delay = self.retry_initial_s
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                await api.call(method, files, **params)
            except TelegramUnreachable as error:
                problem, wait = str(error), delay
            except TelegramError as error:
                if error.code != 429:  # refused (bad chat, bot blocked): retrying won't help
                    context.count("failed")
                    log.warning(
                        "message to chat %d refused: %s",
                        message.chat_id,
                        error,
                        extra={"source": self.name},
                    )
                    return
                problem, wait = str(error), error.retry_after or delay
            else:
                context.count("sent")
                return
            if attempt == MAX_ATTEMPTS:
                break
            context.count("retried")
            log.info(
                "message to chat %d not sent (%s); retry in %.1fs",
                message.chat_id,
                problem,
                wait,
                extra={"source": self.name},
            )
            await asyncio.sleep(wait)
            delay = min(self.retry_max_s, delay * 2)
        context.count("failed")
        log.warning(
            "message to chat %d failed after %d attempts: %s",
            message.chat_id,
            MAX_ATTEMPTS,
            problem,
            extra={"source": self.name},
        )

    # --- updates ----------------------------------------------------------------------

    async def _handle_update(self, api: BotApi, update: dict[str, Any]) -> None:
        if isinstance(update.get("callback_query"), dict):
            await self._handle_callback(api, update["callback_query"])
            return
        message = update.get("message")
        if not isinstance(message, dict) or not isinstance(message.get("text"), str):
            return
        chat_id = (message.get("chat") or {}).get("id")
        if chat_id not in self.allowed:
            log.warning(
                "ignored a message from chat %s (not in telegram.chat_ids)",
                chat_id,
                extra={"source": self.name},
            )
            return
        words = message["text"].split()
        if not words or not words[0].startswith("/"):
            self._reply(chat_id, "Send a command: /help lists them.")
            return
        command = words[0][1:].split("@", 1)[0].lower()
        try:
            await self._command(chat_id, command, words[1:])
        except SptraderError as error:  # a usage error, a rejected request: say it
            self._reply(chat_id, one_line(str(error), 500))
        except Exception as error:  # a bug: log it, tell the chat, keep polling
            log.exception("/%s failed", command, extra={"source": self.name})
            self._reply(chat_id, f"/{command} failed: {type(error).__name__}")

    async def _handle_callback(self, api: BotApi, query: dict[str, Any]) -> None:
        chat_id = ((query.get("message") or {}).get("chat") or {}).get("id")
        if chat_id not in self.allowed:
            log.warning(
                "ignored a button pressed in chat %s (not in telegram.chat_ids)",
                chat_id,
                extra={"source": self.name},
            )
            return
        answer, pending = self._take_pending(chat_id, str(query.get("data", "")))
        with contextlib.suppress(TelegramError, TelegramUnreachable):
            await api.call("answerCallbackQuery", callback_query_id=query.get("id"), text=answer)
        if pending is None:
            if answer != "Cancelled":
                self._reply(chat_id, f"{answer}.")
            else:
                self._reply(chat_id, "Cancelled: nothing changed.")
            return
        try:
            self._reply(chat_id, await pending.action())
        except SptraderError as error:
            self._reply(chat_id, one_line(str(error), 500))
        except Exception as error:
            log.exception("%s failed", pending.question, extra={"source": self.name})
            self._reply(chat_id, f"Failed: {type(error).__name__}")

    def _take_pending(self, chat_id: int, data: str) -> tuple[str, Pending | None]:
        """What to answer a pressed button, and the change to make (only for a Yes)."""
        now = time.monotonic()
        for key in [k for k, p in self._pending.items() if p.expires_at < now]:
            del self._pending[key]
        choice, _, key = data.partition(":")
        pending = self._pending.get(key)
        if pending is None or pending.chat_id != chat_id or choice not in ("yes", "no"):
            return "This confirmation has expired: send the command again", None
        del self._pending[key]
        if choice == "no":
            return "Cancelled", None
        return "Done", pending

    def _confirm(self, chat_id: int, question: str, action: Callable[[], Awaitable[str]]) -> None:
        key = str(next(self._ids))
        self._pending[key] = Pending(
            chat_id, question, action, time.monotonic() + self.confirm_ttl_s
        )
        keyboard = [
            [
                {"text": "Yes", "callback_data": f"yes:{key}"},
                {"text": "No", "callback_data": f"no:{key}"},
            ]
        ]
        self._reply(chat_id, question, reply_markup={"inline_keyboard": keyboard})

    # --- commands ---------------------------------------------------------------------

    async def _command(self, chat_id: int, command: str, args: list[str]) -> None:
        reads: dict[str, Callable[[list[str]], Awaitable[str]]] = {
            "status": self._status,
            "positions": self._positions,
            "orders": self._orders,
            "pnl": self._pnl,
        }
        if command in ("help", "start"):
            self._reply(chat_id, HELP)
        elif command in reads:
            self._reply(chat_id, await reads[command](args))
        elif command == "chart":
            await self._chart(chat_id, args)
        elif command == "close":
            await self._ask_close(chat_id, args)
        elif command == "cancel":
            self._ask_cancel(chat_id, args)
        elif command in ("halt", "resume"):
            self._ask_halt(chat_id, command, args)
        else:
            self._reply(chat_id, f"Unknown command /{command}: /help lists them.")

    async def _status(self, args: list[str]) -> str:
        status = await self.client.status()
        services = status.get("services", [])
        states: dict[str, int] = {}
        for service in services:
            states[service["state"]] = states.get(service["state"], 0) + 1
        summary = ", ".join(f"{count} {state}" for state, count in sorted(states.items()))
        lines = [f"Services: {summary or 'none'}"]
        for service in services:
            line = f"  {service['name']}: {service['state']}"
            if service["state"] != "running" and service.get("last_error"):
                line += f" ({one_line(service['last_error'], 80)})"
            lines.append(line)
        lines.append("Venues:")
        for venue in await self.client.trading_venues():
            if not venue.get("enabled", True) and not venue.get("halted"):
                continue
            mode = "live" if venue.get("live") else "paper"
            state = "connected" if venue.get("connected") else "not connected"
            line = f"  {venue['venue']}: {mode}, {state}"
            if venue.get("halted"):
                line += f", HALTED ({venue['halted']})"
            lines.append(line)
        return "\n".join(lines)

    async def _positions(self, args: list[str]) -> str:
        rows = await self.client.positions()
        if not rows:
            return "No open positions."
        lines = [f"Open positions ({len(rows)}):"]
        for row in rows:
            lines.append(
                f"{row['venue']} {row['instrument']} {row['side']} {_qty(row['qty'])}"
                f" @ {format_price(row.get('avg_price'))}, mark {format_price(row.get('mark'))},"
                f" unrealized {_money(row.get('unrealized'))}"
            )
        return "\n".join(lines)

    async def _orders(self, args: list[str]) -> str:
        rows = await self.client.open_orders()
        if not rows:
            return "No working orders."
        lines = [f"Working orders ({len(rows)}):"]
        for row in rows:
            price = f" @ {format_price(row['price'])}" if row.get("price") is not None else ""
            lines.append(
                f"#{row['order_id']} {row['venue']} {row['instrument']} {row['side']}"
                f" {row['type']} {_qty(row['qty'])}{price} ({row['status']})"
            )
        return "\n".join(lines)

    async def _pnl(self, args: list[str]) -> str:
        period = args[0].lower() if args else "day"
        if period not in ("day", "week"):
            raise SptraderError("use /pnl day or /pnl week")
        today = datetime.now(UTC).date()
        first = today if period == "day" else today - timedelta(days=6)
        journal = await self.client.journal(day_from=first.isoformat(), day_to=today.isoformat())
        stats = journal.get("stats", {})
        span = f"today ({today})" if period == "day" else f"{first} to {today}"
        lines = [
            f"Realized P&L {span}: {_money(stats.get('net_pnl'))}"
            f" from {stats.get('trades', 0)} trade(s)"
            f" ({stats.get('wins') or 0} won, {stats.get('losses') or 0} lost),"
            f" fees {_money(stats.get('fees'))}"
        ]
        for venue in await self.client.trading_venues():
            if not venue.get("enabled", True):
                continue
            try:
                account = await self.client.account(venue["venue"])
            except SptraderError:
                continue  # not trading here now: nothing to mark
            lines.append(
                f"{venue['venue']}: equity {account.get('equity', 0):,.2f}"
                f" {account.get('currency', '')}, day {_money(account.get('day_pnl'))},"
                f" unrealized {_money(account.get('unrealized'))}"
            )
        return "\n".join(lines)

    async def _chart(self, chat_id: int, args: list[str]) -> None:
        """The last bars as a PNG; as a text chart if drawing it fails (logged)."""
        if not args:
            raise SptraderError("use /chart INSTRUMENT [TF], e.g. /chart SIM:EURUSD 5m")
        instrument = normalize_instrument(args[0])
        timeframe = args[1] if len(args) > 1 else "1h"
        bars = await self.client.candles(instrument, timeframe, last=CHART_BARS)
        if bars.height == 0:
            raise SptraderError(f"no stored {timeframe} bars of {instrument}")
        rows = bars.to_dicts()
        known = (await self.client.price_decimals([instrument])).get(instrument)
        decimals = price_decimals(known, [row["close"] for row in rows])
        try:
            png = await asyncio.to_thread(candles_png, instrument, timeframe, rows, decimals)
        except Exception:
            log.exception(
                "could not draw the %s %s chart; sending it as text",
                instrument,
                timeframe,
                extra={"source": self.name},
            )
            text = _pre(text_chart(instrument, timeframe, rows))
            self._reply(chat_id, text, parse_mode="MarkdownV2")
            return
        caption = chart_summary(instrument, timeframe, rows, decimals)
        self._reply(chat_id, caption, photo=png)

    async def _ask_close(self, chat_id: int, args: list[str]) -> None:
        if not args:
            raise SptraderError("use /close INSTRUMENT [VENUE]")
        instrument = normalize_instrument(args[0])
        venue = args[1].lower() if len(args) > 1 else None
        held = [
            row for row in await self.client.positions(venue) if row["instrument"] == instrument
        ]
        if not held:
            where = f" at {venue}" if venue else ""
            raise SptraderError(f"no open position in {instrument}{where}")
        if len(held) > 1:
            venues = ", ".join(row["venue"] for row in held)
            raise SptraderError(f"{instrument} is held at {venues}: say which venue")
        row = held[0]
        venue = row["venue"]

        async def close() -> str:
            result = await self.client.close_position(instrument, venue)
            return _order_outcome(f"Close {venue} {instrument}", result)

        self._confirm(
            chat_id, f"Close {venue} {instrument} ({row['side']} {_qty(row['qty'])})?", close
        )

    def _ask_cancel(self, chat_id: int, args: list[str]) -> None:
        if len(args) != 1 or not args[0].lstrip("#").isdigit():
            raise SptraderError("use /cancel ORDER_ID (/orders lists them)")
        order_id = int(args[0].lstrip("#"))

        async def cancel() -> str:
            order = await self.client.cancel_order(order_id)
            return f"Order #{order_id}: {order.get('status', '?')}"

        self._confirm(chat_id, f"Cancel order #{order_id}?", cancel)

    def _ask_halt(self, chat_id: int, command: str, args: list[str]) -> None:
        venue = args[0].lower() if args else None
        where = f"at {venue}" if venue else "at every venue"

        async def halt() -> str:
            done = await self.client.halt(venue, reason="halted from Telegram")
            parts = [f"{row['venue']} ({row['cancelled']} order(s) cancelled)" for row in done]
            return "Halted: " + (", ".join(parts) or "nothing")

        async def resume() -> str:
            resumed = await self.client.resume(venue)
            return "Resumed: " + (", ".join(resumed) or "nothing was halted")

        if command == "halt":
            question = f"Halt trading {where} (new entries refused, working orders cancelled)?"
            self._confirm(chat_id, question, halt)
        else:
            self._confirm(chat_id, f"Resume trading {where}?", resume)


def _order_outcome(what: str, result: dict[str, Any]) -> str:
    rejected = result.get("rejected")
    if rejected:
        return f"{what}: rejected ({rejected.get('limit')}): {rejected.get('message')}"
    fills = result.get("fills") or []
    if fills:
        qty = sum(fill["qty"] for fill in fills)
        value = sum(fill["qty"] * fill["price"] for fill in fills)
        return f"{what}: filled {_qty(qty)} @ {format_price(value / qty if qty else None)}"
    order = result.get("order") or {}
    return f"{what}: order #{order.get('order_id', '?')} {order.get('status', 'sent')}"


def text_chart(instrument: str, timeframe: str, bars: list[dict[str, Any]]) -> str:
    """The bars as a few lines of monospace text: each column a bar's high-low range
    (│) with its close (●), the price scale on the left, a sparkline of closes below."""
    highs = [bar["high"] for bar in bars]
    lows = [bar["low"] for bar in bars]
    closes = [bar["close"] for bar in bars]
    top, bottom = max(highs), min(lows)
    step = (top - bottom) / CHART_ROWS or 1.0
    decimals = price_decimals(None, [*highs, *lows, *closes])
    labels = [format_price(top - row * step, decimals) for row in range(CHART_ROWS)]
    width = max(len(label) for label in labels)
    lines = []
    for row in range(CHART_ROWS):
        band_high = top - row * step
        band_low = band_high - step
        cells = []
        for bar in bars:
            if band_low <= bar["close"] <= band_high:
                cells.append("●")
            elif bar["low"] <= band_high and bar["high"] >= band_low:
                cells.append("│")
            else:
                cells.append(" ")
        lines.append(f"{labels[row]:>{width}} {''.join(cells)}")
    head = chart_summary(instrument, timeframe, bars, decimals)
    return "\n".join([head, *lines, f"{'':>{width}} {sparkline(closes)}"])


def chart_summary(
    instrument: str, timeframe: str, bars: list[dict[str, Any]], decimals: int | None
) -> str:
    """One line on the bars: the photo's caption and the text chart's head."""
    first_open, last_close = bars[0]["open"], bars[-1]["close"]
    change = (last_close - first_open) / first_open * 100 if first_open else 0.0
    return (
        f"{instrument} {timeframe}, last {len(bars)} bars: "
        f"close {format_price(last_close, decimals)} ({change:+.2f}%)"
    )
