"""Setting up several hosts: roles need [nats], auth comes from env vars only, a server
with a token refuses a host without it, and bad [nats] values are one-line errors."""

from __future__ import annotations

import subprocess
import sys

import pytest
from nats_harness import poll, start_server

from sptrader.cluster import link
from sptrader.config import ConfigError, NatsConfig, load_settings
from sptrader.errors import SptraderError

pytest_plugins = ["nats_harness"]  # its fixture make_host


def _sptrader(home, config, *args):
    return subprocess.run(
        [sys.executable, "-m", "sptrader.cli", "--home", str(home), "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_role_without_nats_enabled_is_a_one_line_error(tmp_path):
    config = tmp_path / "config.toml"
    config.write_text('watchlist = ["SIM:EURUSD"]\n')
    done = _sptrader(tmp_path / "home", config, "start", "--role", "writer", "--foreground")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "error: --role writer needs [nats] enabled = true in the config"
    ] or done.stderr.strip().endswith("--role writer needs [nats] enabled = true in the config")
    assert len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "home" / "sptrader.pid").exists()


@pytest.mark.parametrize(
    ("table", "problem"),
    [
        ('url = "http://x:4222"', "nats.url: 'http://x:4222' is not a nats:// or tls:// URL"),
        ("url = []", "nats.url: must name at least one server"),
        ('stream_prefix = "A.B"', "nats.stream_prefix: 'A.B' must be letters, digits, - or _"),
        ("replicas = 0", "nats.replicas: must be greater than 0, got 0"),
    ],
)
def test_bad_nats_settings_name_the_key(tmp_path, table, problem):
    config = tmp_path / "config.toml"
    config.write_text(f'watchlist = ["SIM:EURUSD"]\n[nats]\n{table}\n')
    with pytest.raises(ConfigError, match="nats"):
        load_settings(tmp_path, config)
    try:
        load_settings(tmp_path, config)
    except ConfigError as error:
        assert str(error).endswith(problem)


def test_secrets_come_from_the_env_vars_the_config_names(monkeypatch):
    config = NatsConfig(enabled=True, token_env="MY_NATS_TOKEN")
    monkeypatch.delenv("MY_NATS_TOKEN", raising=False)
    with pytest.raises(SptraderError, match="env var MY_NATS_TOKEN is not set"):
        link.connect_options(config, "test")
    monkeypatch.setenv("MY_NATS_TOKEN", "s3cret")
    assert link.connect_options(config, "test")["token"] == "s3cret"
    assert "token" not in link.connect_options(NatsConfig(enabled=True), "test")


def test_a_server_with_a_token_takes_only_hosts_that_have_it(tmp_path, make_host, monkeypatch):
    server = start_server(tmp_path / "nats", ["--auth", "s3cret"])
    try:
        with_token = make_host("good", "collector", [server.url])
        text = with_token.config.read_text()
        with_token.config.write_text(
            text.replace("[nats]\n", '[nats]\ntoken_env = "TEST_NATS_TOKEN"\n')
        )
        without = make_host(
            "bad", "collector", [server.url], extra="\n[daemon]\nstart_timeout_s = 12\n"
        )
        monkeypatch.setenv("TEST_NATS_TOKEN", "s3cret")
        with_token.start()
        poll(lambda: with_token.service("nats-out")["state"] == "running", 20, "the collector")
        # Refused: the start says why (the daemon keeps retrying with backoff meanwhile).
        done = without.run("start", "--role", "collector")
        assert done.returncode != 0
        assert "no NATS server took the connection" in done.stderr
        assert "uthorization" in done.stderr  # the server's reason
        assert len(done.stderr.strip().splitlines()) == 1
        for host in (with_token, without):
            assert "s3cret" not in (host.home / "sptrader.log").read_text()
    finally:
        server.kill()
