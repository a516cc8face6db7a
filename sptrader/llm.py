"""One chat completion from the ``[llm]`` endpoint: any OpenAI-compatible server (a
local one or a hosted one), through httpx, no SDK. The API key is read from the env var
``api_key_env`` names, sent as a bearer token and never logged. Used by a scanner's LLM
step (``sptrader.scanners.llm_step``) and the briefing report
(``sptrader.alerting.reports``)."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import httpx

from sptrader.config import LlmConfig
from sptrader.errors import SptraderError


class LlmFailed(SptraderError):
    """The call timed out, was refused, or its answer was not a chat completion (or,
    for a caller that parses it, held no usable answer)."""


@dataclass(frozen=True)
class Reply:
    text: str
    tokens_in: int | None
    tokens_out: int | None
    latency_ms: float


def chat(config: LlmConfig, system: str, user: str) -> Reply:
    """The assistant's answer to ``user`` (blocking); LlmFailed with one line when
    there is none within ``timeout_s``."""
    headers = {"content-type": "application/json"}
    key = os.environ.get(config.api_key_env, "") if config.api_key_env else ""
    if key:
        headers["authorization"] = f"Bearer {key}"
    body = {
        "model": config.model,
        "max_tokens": config.max_tokens,
        "temperature": 0,
        "messages": [{"role": "system", "content": system}, {"role": "user", "content": user}],
    }
    url = config.base_url.rstrip("/") + "/chat/completions"
    began = time.perf_counter()
    try:
        response = httpx.post(url, json=body, headers=headers, timeout=config.timeout_s)
    except httpx.TimeoutException:
        raise LlmFailed(f"no answer from {url} within {config.timeout_s:g}s") from None
    except httpx.HTTPError as error:
        raise LlmFailed(f"{url}: {error}") from None
    latency_ms = (time.perf_counter() - began) * 1000
    if response.status_code != 200:
        raise LlmFailed(f"{url} answered HTTP {response.status_code}: {response.text[:200]}")
    try:
        reply = response.json()
        text = str(reply["choices"][0]["message"]["content"])
    except (ValueError, KeyError, IndexError, TypeError):
        raise LlmFailed(f"{url} sent no chat completion: {response.text[:200]}") from None
    usage = reply.get("usage") or {}
    return Reply(text, usage.get("prompt_tokens"), usage.get("completion_tokens"), latency_ms)
