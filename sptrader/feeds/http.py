"""HTTP GET with the retries every history API needs: 429/418 honour ``Retry-After``,
5xx and time-outs back off exponentially, 404 may mean "nothing there" (a closed hour)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import httpx

from sptrader.errors import SptraderError

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 6
NETWORK_ATTEMPTS = 3


def get_with_retries(
    client: httpx.Client,
    url: str,
    *,
    what: str,
    params: dict | None = None,
    headers: dict | None = None,
    missing_ok: bool = False,
    attempts: int = MAX_ATTEMPTS,
    sleep: Callable[[float], None] = time.sleep,
) -> httpx.Response | None:
    """The 200 response; None for a 404 when ``missing_ok``; SptraderError otherwise.

    ``what`` names the request in messages ("Binance klines for BTCUSDT").
    """
    for attempt in range(1, attempts + 1):
        backoff = min(30.0, 0.5 * 2 ** (attempt - 1))
        try:
            response = client.get(url, params=params, headers=headers)
        except (httpx.TimeoutException, httpx.NetworkError) as error:
            # Unreachable is rarely fixed by waiting long: fewer tries than for a 503.
            if attempt >= min(attempts, NETWORK_ATTEMPTS):
                raise SptraderError(
                    f"{what}: cannot connect ({type(error).__name__}: {error})"
                ) from None
            log.warning("%s: %s; retrying in %.1fs", what, type(error).__name__, backoff)
            sleep(backoff)
            continue
        status = response.status_code
        if status == 200:
            return response
        if status == 404 and missing_ok:
            return None
        if status in (429, 418):
            if attempt == attempts:
                break
            wait = _retry_after(response, backoff)
            log.warning("%s: HTTP %d, asked to slow down; waiting %.1fs", what, status, wait)
            sleep(wait)
            continue
        if status >= 500:
            if attempt == attempts:
                break
            log.warning("%s: HTTP %d; retrying in %.1fs", what, status, backoff)
            sleep(backoff)
            continue
        raise SptraderError(f"{what}: HTTP {status} {response.text[:200].strip()}")
    raise SptraderError(f"{what}: gave up after {attempts} attempts")


def _retry_after(response: httpx.Response, default: float) -> float:
    try:
        return max(0.0, float(response.headers.get("Retry-After", default)))
    except ValueError:
        return default
