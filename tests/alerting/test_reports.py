"""Scheduled reports (sptrader.alerting.reports): ``sptrader report`` in-process on a SIM
home with a closed trade and an open position, in each kind and format, and the
``reports`` service firing on its cron times against a fake clock.

The home is made once per module (three orders through the CLI, each streaming SIM for
a moment); the tests only read it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import CliResult, logging_restored, run_cli, running_daemon, wait_until

from sptrader.alerting.notice import Notice
from sptrader.alerting.reports import ReportScheduler, build_report, render, report_notice
from sptrader.bus import Bus
from sptrader.cli import main
from sptrader.client.connect import connect
from sptrader.clock import datetime_to_us, now_us
from sptrader.config import ReportConfig, Settings, load_settings
from sptrader.schedule import FakeClock
from sptrader.supervisor import ServiceContext

CONFIG = """\
watchlist = ["SIM:GBPUSD"]

[store]
seed_days = 0.05
flush_interval_ms = 50

[feeds.sim]
tick_rate = 5.0

[broker]
slippage_bps = 0.0
fee_bps = 1.0
"""


def _sptrader(home: Path, *args: str) -> None:
    assert main(["--home", str(home), *args]) == 0, args


@pytest.fixture(scope="module")
def traded_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A home where EURUSD was bought and sold today (one closed trade) and 500 GBPUSD
    are held (one open position)."""
    root = tmp_path_factory.mktemp("reports")
    home = root / "home"
    home.mkdir()
    (home / "config.toml").write_text(CONFIG)
    # order and close point the sptrader logger at the home's log file: put it back.
    with pytest.MonkeyPatch.context() as patch, logging_restored():
        (root / "cwd").mkdir()
        patch.chdir(root / "cwd")
        patch.delenv("SPTRADER_HOME", raising=False)
        patch.delenv("SPTRADER_CONFIG", raising=False)
        _sptrader(home, "order", "buy", "sim:eurusd", "1000", "--json")
        _sptrader(home, "close", "sim:eurusd", "--json")
        _sptrader(home, "order", "buy", "sim:gbpusd", "500", "--json")
    yield home


@pytest.fixture
def report_cli(traded_home: Path, run):
    def report(*args: str) -> CliResult:
        return run("--home", str(traded_home), "report", *args, with_home=False)

    return report


@pytest.fixture
def settings(traded_home: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.delenv("SPTRADER_CONFIG", raising=False)
    monkeypatch.chdir(traded_home.parent / "cwd")  # no ./config.toml: the home's
    return load_settings(str(traded_home), None)


def ok(result: CliResult) -> str:
    assert result.code == 0, result
    assert result.err == "", result.err
    return result.out


# --- sptrader report ------------------------------------------------------------------


def test_the_text_report_of_each_kind_has_its_sections_with_the_days_numbers(
    report_cli,
) -> None:
    everything = ok(report_cli())
    health = ok(report_cli("--kind", "health"))
    pnl = ok(report_cli("--kind", "pnl"))

    assert everything.startswith("SPtrader all report · ")
    for text in (everything, health):
        assert "\nHealth\n" in text and "\nScanners (24h)\n" in text
        # No daemon: a store-only engine answers, and the report says nothing streams.
        assert "no engine running here: nothing streams" in text
        assert "SIM:GBPUSD covered yesterday" in text
        assert "  store: " in text and " MB" in text
        assert "  no runs" in text
    assert "P&L " not in health
    assert "Health" not in pnl and "Scanners" not in pnl
    for text in (everything, pnl):
        lines = text.splitlines()
        [paper] = [line for line in lines if line.startswith("  paper: day ")]
        assert " USD, equity 99,99" in paper  # 100,000 to start, less fees and losses
        assert any(line.startswith("  1 closed today (0 won): -0.") for line in lines), text
        assert any(line.startswith("    long 1,000 SIM:EURUSD ") for line in lines), text
        assert "  1 open:" in lines
        assert any(line.startswith("    long 500 SIM:GBPUSD @ 1.2") for line in lines), text
    # Phone-sized: a handful of short lines.
    assert len(everything.splitlines()) <= 20
    assert max(len(line) for line in everything.splitlines()) <= 80


async def _account_and_trades(settings: Settings) -> tuple[dict[str, Any], dict[str, Any]]:
    async with connect(settings) as client:
        today = datetime.now(UTC).date().isoformat()
        return await client.account("paper"), await client.journal(today, today, "paper")


def test_the_json_report_has_the_whole_shape_and_the_accounts_numbers(
    report_cli, settings: Settings
) -> None:
    report = json.loads(ok(report_cli("--format", "json")))
    account, journal = asyncio.run(_account_and_trades(settings))

    assert set(report) == {
        "kind",
        "generated",
        "day",
        "engine",
        "attached",
        "health",
        "scanners",
        "pnl",
    }
    assert report["kind"] == "all" and report["attached"] is False
    assert report["generated"].endswith("Z") and report["day"] == report["generated"][:10]

    health = report["health"]
    assert health["streaming"] is False and health["services"] == [] and health["trouble"] == []
    assert health["stale_feeds"] == []
    [coverage] = health["coverage"]  # the watched instrument only
    assert coverage["instrument"] == "SIM:GBPUSD"
    assert 0 < coverage["today_pct"] <= 100 and coverage["last_bar"].endswith("Z")
    size = (settings.home / "sptrader.duckdb").stat().st_size
    assert size / 2 <= health["store_bytes"] <= size * 2  # the file (and its WAL) while open

    assert report["scanners"]["runs"] == 0 and report["scanners"]["signals"] == []

    pnl = report["pnl"]
    assert pnl["day"] == report["day"]
    [paper] = pnl["venues"]  # live venues are not enabled here
    assert paper["venue"] == "paper" and paper["error"] == "" and paper["currency"] == "USD"
    assert paper["day_pnl"] == pytest.approx(account["day_pnl"], abs=1e-9)
    assert paper["equity"] == pytest.approx(account["equity"], abs=1e-9)
    [trade] = paper["trades"]
    [journal_trade] = journal["trades"]
    assert trade["instrument"] == "SIM:EURUSD" and trade["side"] == "long"
    assert trade["qty"] == 1000 and trade["exit"].endswith("Z")
    assert trade["pnl"] == pytest.approx(journal_trade["pnl"], abs=1e-9) and trade["pnl"] < 0
    assert paper["closed_trades"] == 1 and paper["losses"] == 1
    assert paper["closed_pnl"] == pytest.approx(trade["pnl"], abs=1e-9)
    [position] = paper["positions"]
    assert position["instrument"] == "SIM:GBPUSD" and position["qty"] == 500
    assert position["side"] == "long" and position["avg_price"] > 1
    assert pnl["price_decimals"] == {"SIM:GBPUSD": 5}

    only_pnl = json.loads(ok(report_cli("--kind", "pnl", "--format", "json")))
    assert "health" not in only_pnl and "scanners" not in only_pnl
    assert only_pnl["pnl"]["venues"][0]["trades"] == paper["trades"]
    only_health = json.loads(ok(report_cli("--kind", "health", "--format", "json")))
    assert "pnl" not in only_health and only_health["health"]["coverage"] == [coverage]


def test_the_markdown_report_is_bold_sections_bullets_and_names_in_code(report_cli) -> None:
    text = ok(report_cli("--format", "markdown"))
    lines = text.splitlines()
    assert lines[0].startswith("*SPtrader all report · ") and lines[0].endswith("Z*")
    for section in ("*Health*", "*Scanners (24h)*"):
        assert section in lines
    assert any(line.startswith("*P&L ") and line.endswith("*") for line in lines)
    assert "• `paper`: day " in text
    assert "    ◦ long 500 `SIM:GBPUSD` @ 1.2" in text
    assert "    ◦ long 1,000 `SIM:EURUSD` " in text
    # Nothing Slack or Telegram would show literally: no CommonMark-only ** or #.
    assert "**" not in text and not any(line.startswith("#") for line in lines)
    for line in lines[2:]:
        assert line.startswith(("*", "• ", "    ◦ ")), line
        assert line.count("`") % 2 == 0, line


def test_a_wrong_kind_or_format_is_one_line(report_cli) -> None:
    for args in (("--kind", "daily"), ("--format", "csv")):
        result = report_cli(*args)
        assert result.code == 2, result
        [line] = result.err.strip().splitlines()
        assert line.startswith("sptrader: ") and "choose from" in line


def test_with_a_daemon_the_report_comes_from_its_engine(tmp_path: Path) -> None:
    with running_daemon(tmp_path, CONFIG) as (home, config):
        result = run_cli(home, config, "report", "--kind", "health", "--format", "json")
        text = run_cli(home, config, "report", "--kind", "health")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["attached"] is True and report["engine"].startswith("attached to daemon pid")
    health = report["health"]
    assert health["streaming"] is True
    states = {service["name"]: service["state"] for service in health["services"]}
    assert {"store", "bars", "broker", "sim"} <= set(states)
    assert set(states.values()) <= {"starting", "running", "stale"}
    assert [row["instrument"] for row in health["coverage"]] == ["SIM:GBPUSD"]
    assert text.returncode == 0, text.stderr
    assert "no engine running" not in text.stdout
    assert re.search(rf"^  services: \d+/{len(states)} running$", text.stdout, re.MULTILINE)


# --- the notice and the service -------------------------------------------------------


class FailingClient:
    """An engine client whose ``services`` call breaks (everything else answers)."""

    def __init__(self, client: Any) -> None:
        self._client = client

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    async def services(self) -> list[Any]:
        raise RuntimeError("the engine broke")


@contextlib.asynccontextmanager
async def running(scheduler: ReportScheduler):
    context = ServiceContext(scheduler.name, Bus())
    task = asyncio.create_task(scheduler.run(context))
    try:
        await wait_until(lambda: bool(scheduler.next_due) or task.done())
        yield context, task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _today_at(hour: int, minute: int = 0, second: int = 0) -> datetime:
    today = datetime.now(UTC).date()
    return datetime(today.year, today.month, today.day, hour, minute, second, tzinfo=UTC)


async def test_a_report_fires_at_its_cron_time_and_reaches_deliver(settings: Settings) -> None:
    reports = [
        ReportConfig(name="morning", kind="pnl", schedule="0 8 * * *", channels=["telegram"]),
        ReportConfig(name="hourly", kind="all", schedule="30 * * * *", enabled=False),
    ]
    delivered: list[tuple[Notice, list[str]]] = []
    clock = FakeClock(_today_at(7, 59, 50))
    async with connect(settings) as client:
        scheduler = ReportScheduler(
            reports,
            client,
            lambda notice, channels: delivered.append((notice, channels)),
            clock=clock,
        )
        async with running(scheduler) as (context, task):
            assert scheduler.next_due == {"morning": _today_at(8)}  # the disabled one: none
            clock.advance(5)
            await asyncio.sleep(0.05)
            assert delivered == []  # 07:59:55: not yet
            clock.set(_today_at(8))
            await wait_until(lambda: bool(delivered))
            assert not task.done()
            assert scheduler.next_due == {"morning": _today_at(8) + timedelta(days=1)}

    [(notice, channels)] = delivered
    assert channels == ["telegram"]
    assert notice.kind == "report" and notice.rule == ""
    assert notice.ts_us == datetime_to_us(_today_at(8))
    assert notice.data["name"] == "morning" and notice.data["kind"] == "pnl"
    assert notice.data["generated"] == _today_at(8).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert notice.title.startswith("SPtrader pnl report 08:00Z · paper ")
    assert notice.title.endswith(" USD")
    assert notice.text == render(notice.data, "text")
    assert "1 closed today" in notice.text
    json.dumps(notice.to_dict(), allow_nan=False)  # JSON-able as every channel sends it
    assert context.counters == {"reports_sent": 1}


async def test_a_failing_build_is_counted_and_the_schedule_goes_on(settings: Settings) -> None:
    reports = [ReportConfig(name="health", kind="health", schedule="0 8,20 * * *")]
    delivered: list[Notice] = []

    async def deliver(notice: Notice, channels: list[str]) -> None:
        delivered.append(notice)

    clock = FakeClock(_today_at(7, 59))
    async with connect(settings) as client:
        scheduler = ReportScheduler(reports, FailingClient(client), deliver, clock=clock)
        async with running(scheduler) as (context, task):
            clock.set(_today_at(8))
            await wait_until(lambda: context.counters.get("reports_failed") == 1)
            clock.set(_today_at(20))
            await wait_until(lambda: context.counters.get("reports_failed") == 2)
            assert not task.done() and context.running
            assert scheduler.next_due == {"health": _today_at(8) + timedelta(days=1)}
            # The engine answers again: the next fire time delivers.
            scheduler.client = client
            clock.set(_today_at(8) + timedelta(days=1))
            await wait_until(lambda: bool(delivered))
    assert context.counters == {"reports_failed": 2, "reports_sent": 1}
    assert delivered[0].data["health"]["coverage"][0]["instrument"] == "SIM:GBPUSD"


async def test_a_failing_delivery_is_counted_too(settings: Settings) -> None:
    def deliver(notice: Notice, channels: list[str]) -> None:
        raise ConnectionError("webhook down")

    report = ReportConfig(name="pnl", kind="pnl")
    async with connect(settings) as client:
        scheduler = ReportScheduler([report], client, deliver)
        scheduler.context = ServiceContext(scheduler.name, Bus())
        assert await scheduler.send(report, now_us()) is None
    assert scheduler.context.counters == {"deliveries_failed": 1}


async def test_report_notice_renders_in_the_format_asked(settings: Settings) -> None:
    async with connect(settings) as client:
        report = await build_report(client, "all", now_us())
    notice = report_notice(report, "markdown")
    assert notice.text.startswith("*SPtrader all report")
    assert "all healthy" in notice.title and "paper" in notice.title
    with pytest.raises(ValueError, match="unknown report format"):
        render(report, "html")
