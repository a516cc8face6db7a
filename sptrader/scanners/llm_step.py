"""An optional LLM analysis step: a scanner with ``llm_prompt`` (and ``[llm]`` enabled)
asks an OpenAI-compatible chat completions endpoint (httpx, no SDK) for a verdict on each
entry signal still going on after its model filter, before it reaches the broker.

The prompt is the scanner's template (``string.Template``: ``$name`` fields) rendered
with the signal (``$instrument $side $timeframe $reason $stop $target $bar``), its
strategy's indicator values at its bar (``$indicators``) and its last bars as CSV
(``$bars``, ``$bars_count`` of them). The answer must hold a JSON object
``{"verdict": "take"|"skip", "confidence": 0..1, "reason": "..."}`` (alone, or in a
fenced block). Each call is an ``llm`` step of the run's lineage: the prompt as its
input; the verdict, confidence, reason, tokens, latency and the raw answer as its
output. A timeout, an HTTP error or an answer without a verdict fails the step, and the
signal follows the scanner's ``llm_on_error``: ``skip`` (the default) or ``take``.
"""

from __future__ import annotations

import json
import re
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from sptrader.clock import format_us
from sptrader.config import LlmConfig, ScannerConfig
from sptrader.errors import SptraderError
from sptrader.llm import LlmFailed, chat

__all__ = ["LlmFailed", "LlmStep", "Verdict", "parse_answer"]

#: Bars of the signal's instrument the prompt shows (newest last).
PROMPT_BARS = 30
SYSTEM = (
    "You review trading signals. Answer with one JSON object:"
    ' {"verdict": "take" or "skip", "confidence": a number from 0 to 1,'
    ' "reason": one paragraph}.'
)
_JSON = re.compile(r"\{.*\}", re.DOTALL)


@dataclass(frozen=True)
class Verdict:
    verdict: str  # take | skip
    confidence: float
    reason: str
    answer: str
    tokens_in: int | None
    tokens_out: int | None
    latency_ms: float

    def summary(self) -> str:
        tokens = (
            f"tokens {self.tokens_in}+{self.tokens_out}"
            if self.tokens_in is not None
            else "tokens ?"
        )
        return (
            f"{self.verdict} ({self.confidence:.2f}): {self.reason} · {tokens} ·"
            f" {self.latency_ms:.0f} ms\nanswer: {self.answer}"
        )


@dataclass
class LlmStep:
    config: LlmConfig
    template: string.Template
    on_error: str

    @classmethod
    def load(
        cls, home: Path | None, llm: LlmConfig | None, scanner: ScannerConfig
    ) -> LlmStep | None:
        """The scanner's step, or None without ``llm_prompt``; a missing template or a
        disabled ``[llm]`` is an error (the scanner never runs without its step)."""
        if not scanner.llm_prompt:
            return None
        if llm is None or not llm.enabled:
            raise SptraderError(f"scanner {scanner.name}: llm_prompt needs [llm] enabled = true")
        path = Path(scanner.llm_prompt).expanduser()
        if not path.is_absolute() and home is not None:
            path = home / path
        try:
            text = path.read_text("utf-8")
        except OSError as error:
            raise SptraderError(
                f"scanner {scanner.name}: cannot read llm_prompt {path}: {error.strerror}"
            ) from None
        return cls(llm, string.Template(text), scanner.llm_on_error)

    def prompt(self, signal: dict[str, Any], bars: pl.DataFrame, indicators: list[str]) -> str:
        """The template rendered for ``signal`` (``bars``: its instrument's, up to its
        bar, with the indicator columns)."""
        recent = bars.tail(PROMPT_BARS)
        last = recent.row(-1, named=True) if recent.height else {}
        values = ", ".join(
            f"{name}={last[name]:.6g}"
            for name in indicators
            if isinstance(last.get(name), int | float)
        )
        shown = recent.select(
            pl.col("ts").dt.strftime("%Y-%m-%d %H:%M"), "open", "high", "low", "close", "volume"
        )
        return self.template.safe_substitute(
            instrument=signal["instrument"],
            side=signal["side"],
            timeframe=signal.get("timeframe", ""),
            reason=signal.get("reason", ""),
            stop="" if signal.get("stop") is None else f"{signal['stop']:.6g}",
            target="" if signal.get("target") is None else f"{signal['target']:.6g}",
            bar=format_us(signal["ts_us"]),
            indicators=values or "none",
            bars=shown.write_csv(),
            bars_count=str(shown.height),
        )

    def ask(self, prompt: str) -> Verdict:
        """The endpoint's verdict on ``prompt``; LlmFailed with one line when there is
        none (no answer in time, an HTTP error, an answer without a verdict)."""
        reply = chat(self.config, SYSTEM, prompt)
        verdict, confidence, reason = parse_answer(reply.text)
        return Verdict(
            verdict,
            confidence,
            reason,
            reply.text,
            reply.tokens_in,
            reply.tokens_out,
            reply.latency_ms,
        )


def parse_answer(answer: str) -> tuple[str, float, str]:
    """(verdict, confidence, reason) from an answer holding one JSON object."""
    found = _JSON.search(answer or "")
    try:
        said = json.loads(found.group(0)) if found else None
        verdict = str(said["verdict"]).strip().lower()
        confidence = float(said.get("confidence", 0.0))
        reason = " ".join(str(said.get("reason", "")).split())
    except (ValueError, KeyError, TypeError, AttributeError):
        raise LlmFailed(
            f"the answer holds no verdict: {' '.join(answer.split())[:160]!r}"
        ) from None
    if verdict not in ("take", "skip") or not 0 <= confidence <= 1:
        raise LlmFailed(f"the answer's verdict is {verdict!r} at confidence {confidence}")
    return verdict, confidence, reason
