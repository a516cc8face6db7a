"""The briefing report: everything a report has, the watchlist's overnight moves, and an
LLM's summary of it (a local fake OpenAI-compatible server); with the LLM down, the
report still goes out and says why there is no summary."""

from __future__ import annotations

import numpy as np
import polars as pl
from fake_openai import FakeOpenAI

from sptrader.clock import now_us
from sptrader.models import US_PER_MINUTE
from sptrader.store import Store


def home_with_bars(cli_home, base_url: str, timeout_s: float = 2.0) -> None:
    cli_home.mkdir(parents=True, exist_ok=True)
    (cli_home / "config.toml").write_text(
        'watchlist = ["SIM:EURUSD"]\n[llm]\nenabled = true\n'
        f'base_url = "{base_url}"\nmodel = "brief"\ntimeout_s = {timeout_s}\n'
    )
    now = now_us()
    end = now - now % (60 * US_PER_MINUTE)
    minutes = 13 * 60
    closes = 1.08 * (1 + np.linspace(0, 0.01, minutes))  # +1% over the night
    store = Store(cli_home / "sptrader.duckdb")
    store.migrate()
    store.upsert_bars(
        pl.DataFrame(
            {
                "instrument": "SIM:EURUSD",
                "ts": pl.Series([end - (minutes - i) * US_PER_MINUTE for i in range(minutes)]).cast(
                    pl.Datetime("us")
                ),
                "open": closes,
                "high": closes,
                "low": closes,
                "close": closes,
                "volume": 1.0,
                "trades": 1,
            }
        )
    )
    store.close()


def test_a_briefing_is_the_llms_summary_above_the_report(run, cli_home) -> None:
    with FakeOpenAI() as fake:
        fake.replies = [("content", "EURUSD rose about 1% overnight. No positions open.")]
        home_with_bars(cli_home, fake.base_url)
        done = run("report", "--kind", "briefing")
    assert done.code == 0, done.err
    lines = done.out.splitlines()
    assert lines[0].startswith("SPtrader briefing report")
    assert lines[1] == "EURUSD rose about 1% overnight. No positions open."
    assert "Moves (last 12h)" in done.out and "SIM:EURUSD +0.9" in done.out
    [request] = fake.requests
    shown = request["body"]["messages"][-1]["content"]
    assert "Moves (last 12h)" in shown and "SIM:EURUSD" in shown  # what it summarised
    assert request["body"]["model"] == "brief"


def test_with_the_llm_down_the_briefing_still_goes_out(run, cli_home) -> None:
    with FakeOpenAI() as fake:
        fake.replies = [("status", 500)]
        home_with_bars(cli_home, fake.base_url)
        done = run("report", "--kind", "briefing", "--format", "json")
    assert done.code == 0, done.err
    import json

    report = json.loads(done.out)
    assert "briefing" not in report and "answered HTTP 500" in report["briefing_error"]
    assert report["moves"][0]["instrument"] == "SIM:EURUSD"
