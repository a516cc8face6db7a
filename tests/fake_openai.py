"""A local fake of an OpenAI-compatible chat completions endpoint (POST
/v1/chat/completions), in the documented wire format: it answers each request with the
next of its ``replies`` (a verdict, a malformed answer, a slow one, an HTTP error) and
keeps every request it was sent."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that timed out and left: what the slow reply is for


class FakeOpenAI:
    def __init__(self) -> None:
        #: What to answer, in order (the last one repeats): ("content", text),
        #: ("slow", seconds), ("status", code).
        self.replies: list[tuple[str, Any]] = [("content", '{"verdict": "take"}')]
        self.requests: list[dict[str, Any]] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # http.server's name for it
                length = int(self.headers.get("content-length", 0))
                body = json.loads(self.rfile.read(length) or b"{}")
                fake.requests.append(
                    {"path": self.path, "headers": dict(self.headers), "body": body}
                )
                kind, value = fake.replies[min(len(fake.requests), len(fake.replies)) - 1]
                if kind == "slow":
                    time.sleep(value)
                    kind, value = "content", '{"verdict": "take", "confidence": 1}'
                if kind == "status":
                    self.send_response(value)
                    self.end_headers()
                    self.wfile.write(b'{"error": {"message": "overloaded"}}')
                    return
                payload = json.dumps(
                    {
                        "id": "chatcmpl-1",
                        "object": "chat.completion",
                        "model": body.get("model"),
                        "choices": [
                            {
                                "index": 0,
                                "message": {"role": "assistant", "content": value},
                                "finish_reason": "stop",
                            }
                        ],
                        "usage": {
                            "prompt_tokens": 321,
                            "completion_tokens": 42,
                            "total_tokens": 363,
                        },
                    }
                ).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = _QuietServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def __enter__(self) -> FakeOpenAI:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
