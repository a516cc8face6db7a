"""How a feed's connection ends: which failures of a feed's run are ordinary disconnects
(reconnect and say so in one line) and how to say what happened, in a few words.

The supervisor knows the standard library's network errors (``sptrader.supervisor``);
this adds what the feeds' client libraries and their watchdog raise: websocket closes
of any code (``ConnectionClosed``), the watchdog's ``StreamSilent``, httpx transport
errors, and a websocket handshake answered 429 or 5xx or cut off. ``FeedService`` hands
these rules to the supervisor, so the supervisor names no client library. Not a
disconnect: a malformed URL, a certificate that does not verify, a 404 handshake, and
everything the supervisor does not count as one either.

websockets and httpx are imported where they are used: importing a feed's protocol
loads neither.
"""

from __future__ import annotations

from sptrader import supervisor
from sptrader.formatting import one_line


class StreamSilent(Exception):
    """No message for longer than the watchdog allows: reconnect."""


def is_disconnect(error: BaseException) -> bool:
    """Whether a feed's run ended in an ordinary disconnect rather than a crash: the
    supervisor's network errors (resets, refusals, time-outs, DNS; feeds raise
    ``ConnectionResetError`` for Binance's ``serverShutdown`` and the 24-hour limit)
    and the feeds' own (see the module's docstring)."""
    import httpx
    from websockets.exceptions import ConnectionClosed, InvalidMessage, InvalidStatus

    if isinstance(error, BaseExceptionGroup):
        return all(is_disconnect(inner) for inner in error.exceptions)
    if isinstance(error, (ConnectionClosed, StreamSilent, InvalidMessage)):
        return True
    if isinstance(error, InvalidStatus):
        status = error.response.status_code
        return status == 429 or status >= 500
    if isinstance(error, httpx.TransportError):
        return not isinstance(error, (httpx.UnsupportedProtocol, httpx.LocalProtocolError))
    return supervisor.is_disconnect(error)


def disconnect_reason(error: BaseException) -> str:
    """A feed's disconnect in a few words, for the log line and the services pane:
    ``server closed the connection: 1001 going away``, ``connection refused``."""
    import httpx
    from websockets.exceptions import ConnectionClosed, InvalidStatus

    if isinstance(error, BaseExceptionGroup) and error.exceptions:
        return disconnect_reason(error.exceptions[0])
    if isinstance(error, ConnectionClosed):
        if error.rcvd is not None:
            return f"server closed the connection: {_close_text(error.rcvd)}"
        if error.sent is not None:
            return f"closed the connection: {_close_text(error.sent)}"
        return "connection lost without a close frame"
    if isinstance(error, InvalidStatus):
        return f"server answered HTTP {error.response.status_code}"
    if isinstance(error, httpx.TransportError):
        text = one_line(str(error), 200)
        return f"{type(error).__name__}: {text}" if text else type(error).__name__
    return supervisor.disconnect_reason(error)


def _close_text(close: object) -> str:
    from websockets.frames import CLOSE_CODE_EXPLANATIONS

    code: int = close.code  # type: ignore[attr-defined]
    reason: str = close.reason  # type: ignore[attr-defined]
    if code in CLOSE_CODE_EXPLANATIONS:
        explanation = CLOSE_CODE_EXPLANATIONS[code].removesuffix(" [internal]")  # type: ignore[index]
    elif 3000 <= code < 4000:
        explanation = "registered"
    elif 4000 <= code < 5000:
        explanation = "private use"
    else:
        explanation = "unknown"
    text = f"{code} {explanation}"
    return f"{text}, {one_line(reason, 120)}" if reason.strip() else text
