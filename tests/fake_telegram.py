"""A fake Telegram Bot API on 127.0.0.1: ``/bot<TOKEN>/METHOD`` for getMe, getUpdates
(a long poll: held until an update is queued or its ``timeout`` passes), sendMessage,
sendPhoto (a multipart upload) and answerCallbackQuery, in Telegram's JSON shapes (``{"ok": true, "result": ...}``, or
``{"ok": false, "error_code": 401, "description": "Unauthorized"}`` for another token).

Tests queue what a user does (``push_message``, ``push_callback``), read what the bot
sent (``sent``: each sendMessage's parameters; ``photos``: each sendPhoto's chat_id,
caption and photo bytes; ``answered``: answerCallbackQuery's), and
make the next calls of a method fail (``fail_next``)."""

from __future__ import annotations

import json
import sys
import threading
import time
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any

from fakes import FakeHttpServer, FakeRequest, FakeResponse

BOT = {"id": 7000001, "is_bot": True, "first_name": "SPtrader", "username": "sptrader_test_bot"}
UNAUTHORIZED = {"ok": False, "error_code": 401, "description": "Unauthorized"}


def _user(chat_id: int) -> dict[str, Any]:
    return {"id": chat_id, "is_bot": False, "first_name": "Trader", "language_code": "en"}


def _chat(chat_id: int) -> dict[str, Any]:
    return {"id": chat_id, "first_name": "Trader", "type": "private"}


def buttons(message: dict[str, Any]) -> dict[str, str]:
    """A sent message's inline keyboard as {button text: callback_data}."""
    rows = (message.get("reply_markup") or {}).get("inline_keyboard") or []
    return {button["text"]: button["callback_data"] for row in rows for button in row}


class FakeTelegram:
    """``with FakeTelegram(token) as telegram: telegram.url`` is the bot's api_url."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.sent: list[dict[str, Any]] = []
        self.photos: list[dict[str, Any]] = []
        self.answered: list[dict[str, Any]] = []
        self._updates: list[dict[str, Any]] = []
        self._update_ids = iter(range(100, 1_000_000))
        self._message_ids = iter(range(1, 1_000_000))
        self._failures: dict[str, list[tuple[int, dict[str, Any]]]] = {}
        self._condition = threading.Condition()
        self._closing = False
        self.server = FakeHttpServer(self._route)
        # A long poll answered after the bot hung up is no error worth a traceback.
        http_server = self.server._server
        report = http_server.handle_error

        def handle_error(request: Any, address: Any) -> None:
            if not isinstance(sys.exc_info()[1], BrokenPipeError | ConnectionResetError):
                report(request, address)

        http_server.handle_error = handle_error  # type: ignore[method-assign]

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def requests(self) -> list[FakeRequest]:
        return self.server.requests

    def __enter__(self) -> FakeTelegram:
        self.server.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        with self._condition:  # release held long polls
            self._closing = True
            self._condition.notify_all()
        self.server.__exit__(*exc)

    # --- what a user does --------------------------------------------------------------

    def push_message(self, chat_id: int, text: str) -> dict[str, Any]:
        message: dict[str, Any] = {
            "message_id": next(self._message_ids),
            "from": _user(chat_id),
            "chat": _chat(chat_id),
            "date": int(time.time()),
            "text": text,
        }
        if text.startswith("/"):
            command = text.split()[0]
            message["entities"] = [{"offset": 0, "length": len(command), "type": "bot_command"}]
        return self._push({"message": message})

    def push_callback(self, chat_id: int, data: str, message_id: int = 1) -> dict[str, Any]:
        """A press of an inline button with ``data`` under the bot's message ``message_id``."""
        query = {
            "id": str(next(self._update_ids) * 1000),
            "from": _user(chat_id),
            "message": {
                "message_id": message_id,
                "from": BOT,
                "chat": _chat(chat_id),
                "date": int(time.time()),
                "text": "confirm?",
            },
            "chat_instance": f"-{chat_id}",
            "data": data,
        }
        return self._push({"callback_query": query})

    def _push(self, body: dict[str, Any]) -> dict[str, Any]:
        with self._condition:
            update = {"update_id": next(self._update_ids), **body}
            self._updates.append(update)
            self._condition.notify_all()
        return update

    def fail_next(self, method: str, status: int, body: dict[str, Any], times: int = 1) -> None:
        """The next ``times`` calls of ``method`` answer ``status`` with ``body``."""
        with self._condition:
            self._failures.setdefault(method, []).extend([(status, body)] * times)

    # --- the API -----------------------------------------------------------------------

    def _route(self, request: FakeRequest) -> FakeResponse | None:
        prefix, _, method = request.path.lstrip("/").partition("/")
        if not prefix.startswith("bot"):
            return None
        if prefix != f"bot{self.token}":
            return FakeResponse(401, UNAUTHORIZED)
        params: dict[str, Any] = dict(request.query)
        content_type = request.headers.get("content-type", "")
        if content_type.startswith("multipart/form-data"):
            params.update(_form_fields(content_type, request.body))
        elif request.body:
            params.update(json.loads(request.body))
        with self._condition:
            failures = self._failures.get(method)
            if failures:
                status, body = failures.pop(0)
                return FakeResponse(status, body)
        handler = {
            "getMe": lambda _: BOT,
            "getUpdates": self._get_updates,
            "sendMessage": self._send_message,
            "sendPhoto": self._send_photo,
            "answerCallbackQuery": self._answer_callback,
        }.get(method)
        if handler is None:
            return FakeResponse(404, {"ok": False, "error_code": 404, "description": "Not Found"})
        return FakeResponse(200, {"ok": True, "result": handler(params)})

    def _get_updates(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        offset = int(params.get("offset", 0))
        deadline = time.monotonic() + float(params.get("timeout", 0))
        with self._condition:
            # Telegram forgets the updates before the offset once they are asked past.
            self._updates = [u for u in self._updates if u["update_id"] >= offset]
            while not self._updates and not self._closing:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._condition.wait(left)
            return list(self._updates)

    def _send_message(self, params: dict[str, Any]) -> dict[str, Any]:
        with self._condition:
            self.sent.append(params)
            self._condition.notify_all()
        return {
            "message_id": next(self._message_ids),
            "from": BOT,
            "chat": _chat(int(params["chat_id"])),
            "date": int(time.time()),
            "text": params.get("text", ""),
        }

    def _send_photo(self, params: dict[str, Any]) -> dict[str, Any]:
        photo = {
            "chat_id": int(params["chat_id"]),
            "caption": params.get("caption", ""),
            "photo": params["photo"],
        }
        with self._condition:
            self.photos.append(photo)
            self._condition.notify_all()
        return {
            "message_id": next(self._message_ids),
            "from": BOT,
            "chat": _chat(photo["chat_id"]),
            "date": int(time.time()),
            "photo": [{"file_id": "chart", "width": 800, "height": 450}],
            "caption": photo["caption"],
        }

    def _answer_callback(self, params: dict[str, Any]) -> bool:
        with self._condition:
            self.answered.append(params)
        return True


def _form_fields(content_type: str, body: bytes) -> dict[str, Any]:
    """A multipart/form-data body's fields: files as bytes, the rest as text."""
    message = BytesParser(policy=HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body
    )
    fields: dict[str, Any] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        fields[name] = payload if part.get_filename() else payload.decode()
    return fields
