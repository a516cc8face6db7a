"""The optional LLM analysis step against a local fake OpenAI-compatible server: a
verdict taken or skipped, a malformed answer and a timeout (each following the
scanner's llm_on_error), and the prompt, answer, tokens and latency in the run's
lineage."""

from __future__ import annotations

import polars as pl
import pytest
from fake_openai import FakeOpenAI
from test_scanners import make_engine, scanner_table, store_bars
from test_shadow import AboveSma  # registers the test strategy

from sptrader.errors import ConfigError
from sptrader.models import SignalRaised
from sptrader.scanners import lineage
from sptrader.scanners.llm_step import LlmFailed, parse_answer
from sptrader.scanners.service import ScannerService

__all__ = ["AboveSma", "make_engine"]  # the fixture, imported from test_scanners

TEMPLATE = "Signal: $side $instrument on $timeframe at $bar ($reason).\nIndicators: $indicators\nLast $bars_count bars:\n$bars"


@pytest.fixture
def fake():
    with FakeOpenAI() as server:
        yield server


def engine_with_llm(make_engine, home, fake, **scanner_overrides):
    (home / "prompt.txt").write_text(TEMPLATE)
    return make_engine(
        scanner_table("above", "test_above_sma", llm_prompt="prompt.txt", **scanner_overrides),
        llm={
            "enabled": True,
            "base_url": fake.base_url,
            "model": "local-test",
            "api_key_env": "TEST_LLM_KEY",
            "timeout_s": 0.5,
        },
    )


async def run_once(engine):
    store_bars(engine, "SIM:BTCUSD")
    heard = engine.bus.subscribe("test", maxsize=100)
    service = ScannerService(engine.scanner_deps, engine.config.scanners[0])
    result = await service.run_now()
    raised = [event for event in heard.get_nowait() if isinstance(event, SignalRaised)]
    _, steps, _ = lineage.run_detail(engine.require_store(), result.run_id)
    return result, raised, steps.filter(pl.col("step") == "llm")


async def test_a_take_verdict_sends_the_signal_on_and_is_in_the_lineage(
    make_engine, home, fake, monkeypatch
) -> None:
    monkeypatch.setenv("TEST_LLM_KEY", "sk-test-secret")
    fake.replies = [
        (
            "content",
            'Sure.\n```json\n{"verdict": "take", "confidence": 0.8, "reason": "trend   intact"}\n```',
        )
    ]
    result, raised, llm = await run_once(engine_with_llm(make_engine, home, fake))
    assert [event.instrument for event in raised] == ["SIM:BTCUSD"]
    [request] = fake.requests
    assert request["path"] == "/v1/chat/completions"
    assert request["headers"]["authorization"] == "Bearer sk-test-secret"
    assert request["body"]["model"] == "local-test" and request["body"]["max_tokens"] == 400
    prompt = request["body"]["messages"][-1]["content"]
    assert prompt.startswith("Signal: buy SIM:BTCUSD on 1m at ")
    assert "sma3=" in prompt and "ts,open,high,low,close,volume" in prompt
    step = llm.row(0, named=True)
    assert step["input_summary"] == prompt and step["instrument"] == "SIM:BTCUSD"
    assert step["output_summary"].startswith("take (0.80): trend intact · tokens 321+42 · ")
    assert "answer: Sure." in step["output_summary"] and step["error"] is None
    assert result.signals[0]["taken"] is True


async def test_a_skip_verdict_holds_the_signal_back(make_engine, home, fake) -> None:
    fake.replies = [("content", '{"verdict": "skip", "confidence": 0.9, "reason": "news"}')]
    result, raised, llm = await run_once(engine_with_llm(make_engine, home, fake))
    assert raised == [] and len(result.signals) == 1
    assert result.signals[0]["taken"] is False
    assert llm["output_summary"][0].startswith("skip (0.90): news")


@pytest.mark.parametrize("on_error", ["skip", "take"])
async def test_a_malformed_answer_follows_llm_on_error(make_engine, home, fake, on_error) -> None:
    fake.replies = [("content", "I think you should buy, probably.")]
    engine = engine_with_llm(make_engine, home, fake, llm_on_error=on_error)
    _, raised, llm = await run_once(engine)
    assert len(raised) == (1 if on_error == "take" else 0)
    assert "the answer holds no verdict" in llm["error"][0]


async def test_a_timeout_fails_the_step_within_timeout_s(make_engine, home, fake) -> None:
    import time

    fake.replies = [("slow", 3.0)]
    began = time.monotonic()
    _, raised, llm = await run_once(engine_with_llm(make_engine, home, fake))
    assert time.monotonic() - began < 2.5
    assert raised == [] and "no answer from" in llm["error"][0] and "within 0.5s" in llm["error"][0]


async def test_an_http_error_is_one_line_and_skips(make_engine, home, fake) -> None:
    fake.replies = [("status", 503)]
    _, raised, llm = await run_once(engine_with_llm(make_engine, home, fake))
    assert raised == [] and "answered HTTP 503" in llm["error"][0]


def test_answers_are_parsed_strictly() -> None:
    assert parse_answer('{"verdict": "TAKE", "confidence": 1, "reason": "a\\nb"}') == (
        "take",
        1.0,
        "a b",
    )
    for bad in ("", "take it", '{"verdict": "maybe"}', '{"verdict": "take", "confidence": 3}'):
        with pytest.raises(LlmFailed):
            parse_answer(bad)


def test_llm_prompt_needs_llm_enabled(make_engine) -> None:
    with pytest.raises(ConfigError, match=r"llm_prompt: needs \[llm\] enabled = true"):
        make_engine(scanner_table("above", "test_above_sma", llm_prompt="p.txt"))


async def test_a_missing_template_is_a_service_error(make_engine, home, fake) -> None:
    engine = engine_with_llm(make_engine, home, fake)
    (home / "prompt.txt").unlink()
    service = ScannerService(engine.scanner_deps, engine.config.scanners[0])
    from sptrader.errors import SptraderError

    with pytest.raises(SptraderError, match="cannot read llm_prompt"):
        await service.load()
