"""Configuration: strict typed decoding, errors naming file and key path, resolution."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from sptrader import config as config_module
from sptrader.config import (
    DEFAULT_WATCHLIST,
    Config,
    load_config,
    load_settings,
    parse_config,
    resolve_config_path,
    resolve_home,
)
from sptrader.errors import ConfigError
from sptrader.models import TIMEFRAMES

REPO_CONFIG = Path(__file__).resolve().parents[2] / "config.toml"


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def config_error(tmp_path: Path, text: str) -> ConfigError:
    path = write(tmp_path / "bad.toml", text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    error = caught.value
    assert error.exit_code == 2
    assert str(error).startswith(f"{path}: "), "the message names the file first"
    assert "\n" not in str(error)
    return error


# --- defaults ------------------------------------------------------------------------------


def test_defaults_load() -> None:
    config = load_config(None)
    assert config == Config()
    assert config.watchlist == DEFAULT_WATCHLIST
    assert config.feeds.sim.enabled is True
    assert config.feeds.replay.enabled is False
    assert config.chart.timeframes == list(TIMEFRAMES)
    assert config.store.path == "sptrader.duckdb"


def test_empty_file_is_the_defaults(tmp_path: Path) -> None:
    assert load_config(write(tmp_path / "config.toml", "")) == Config()


def test_defaults_round_trip_through_the_parser() -> None:
    assert parse_config(msgspec.to_builtins(Config()), "defaults") == Config()


def test_values_are_read(tmp_path: Path) -> None:
    path = write(
        tmp_path / "config.toml",
        """
watchlist = ["SIM:EURUSD", "SIM:BTCUSD"]

[feeds.sim]
seed = 7
tick_rate = 2          # an integer where a float is expected is fine

[store]
seed_days = 0.5
keep_ticks = ["*"]

[chart]
default_timeframe = "1h"

[keymap]
quit = "ctrl+q"
""",
    )
    config = load_config(path)
    assert config.watchlist == ["SIM:EURUSD", "SIM:BTCUSD"]
    assert config.feeds.sim.seed == 7
    assert config.feeds.sim.tick_rate == 2.0
    assert config.store.seed_days == 0.5
    assert config.store.keep_ticks == ["*"]
    assert config.chart.default_timeframe == "1h"
    assert config.keymap == {"quit": "ctrl+q"}


def test_settings_paths_are_under_home(settings) -> None:
    assert settings.store_path == settings.home / "sptrader.duckdb"
    assert settings.log_path == settings.home / "sptrader.log"


# --- errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[feeds.sim]\nsed = 1\n", "feeds.sim.sed: unknown key"),
        ("colour = 'red'\n", "colour: unknown key"),
        ("[store]\nflush_ms = 3\n", "store.flush_ms: unknown key"),
        ("[feeds.nope]\nenabled = true\n", "feeds.nope: unknown key"),
        ("[keymap]\nquitt = 'q'\n", "keymap.quitt: unknown binding id"),
    ],
)
def test_unknown_keys_are_rejected_naming_the_key_path(
    tmp_path: Path, text: str, expected: str
) -> None:
    assert f": {expected}" in str(config_error(tmp_path, text))


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[feeds.sim]\nseed = 'forty-two'\n", "feeds.sim.seed: expected int, got str"),
        ("[feeds.sim]\nenabled = 'yes'\n", "feeds.sim.enabled: expected bool, got str"),
        ("watchlist = 'SIM:EURUSD'\n", "watchlist: expected array, got str"),
        ("watchlist = ['SIM:EURUSD', 3]\n", "watchlist[1]: expected str, got int"),
        ("[store]\nflush_rows = 1.5\n", "store.flush_rows: expected int, got float"),
        ("store = 3\n", "store: expected object, got int"),
        ("[log]\nlevel = 'TRACE'\n", "log.level:"),
    ],
)
def test_wrong_types_are_rejected(tmp_path: Path, text: str, key: str) -> None:
    assert key in str(config_error(tmp_path, text))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("watchlist = ['EURUSD']\n", "watchlist[0]: bad instrument 'EURUSD'"),
        ("watchlist = ['SIM:EURUSD', 'sim:gbpusd']\n", "watchlist[1]: bad instrument 'sim:gbpusd'"),
        ("watchlist = ['NOPE:EURUSD']\n", "watchlist[0]: unknown feed 'NOPE'"),
        ("watchlist = ['SIM:EURUSD', 'SIM:EURUSD']\n", "watchlist: an instrument is listed twice"),
        ("watchlist = []\n", "watchlist: must name at least one instrument"),
        ("watchlist = ['REPLAY:SIM:EURUSD']\n", "feeds.replay.enabled = true"),
        (
            "watchlist = ['REPLAY:EURUSD']\n[feeds.replay]\nenabled = true\n",
            "replay instruments are REPLAY:FEED:SYMBOL",
        ),
        ("[store]\nkeep_ticks = ['eurusd']\n", "store.keep_ticks[0]: bad instrument 'eurusd'"),
    ],
)
def test_bad_instruments_are_rejected(tmp_path: Path, text: str, expected: str) -> None:
    assert expected in str(config_error(tmp_path, text))


def test_replay_instruments_are_accepted_when_enabled(tmp_path: Path) -> None:
    path = write(
        tmp_path / "config.toml",
        "watchlist = ['SIM:EURUSD', 'REPLAY:SIM:EURUSD']\n[feeds.replay]\nenabled = true\n",
    )
    assert load_config(path).watchlist == ["SIM:EURUSD", "REPLAY:SIM:EURUSD"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[chart]\ntimeframes = ['1m', '1x']\n", "chart.timeframes[1]: unknown timeframe '1x'"),
        (
            "[chart]\ndefault_timeframe = '3h'\n",
            "chart.default_timeframe: '3h' is not in chart.timeframes",
        ),
        (
            "[chart]\ntimeframes = ['1m', '5m']\ndefault_timeframe = '1h'\n",
            "chart.default_timeframe: '1h' is not in chart.timeframes",
        ),
    ],
)
def test_unknown_timeframes_are_rejected(tmp_path: Path, text: str, expected: str) -> None:
    assert expected in str(config_error(tmp_path, text))


@pytest.mark.parametrize(
    ("section", "key", "value"),
    [
        ("feeds.sim", "tick_rate", "-1.0"),
        ("feeds.sim", "publish_interval_ms", "0"),
        ("feeds.replay", "speed", "-60"),
        ("store", "seed_days", "-1"),
        ("store", "flush_rows", "-5"),
        ("chart", "bars", "0"),
        ("ui", "refresh_hz", "-10"),
        ("supervisor", "backoff_max_s", "-1"),
        ("log", "max_bytes", "0"),
    ],
)
def test_non_positive_numbers_are_rejected(
    tmp_path: Path, section: str, key: str, value: str
) -> None:
    message = str(config_error(tmp_path, f"[{section}]\n{key} = {value}\n"))
    assert f"{section}.{key}: must be greater than 0" in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[supervisor]\nbackoff_factor = 0.5\n", "supervisor.backoff_factor: must be at least 1"),
        ("[supervisor]\nbackoff_jitter = 1.0\n", "supervisor.backoff_jitter: must be in [0, 1)"),
        ("[supervisor]\nbackoff_jitter = -0.1\n", "supervisor.backoff_jitter: must be in [0, 1)"),
        ("[feeds.replay]\nstart = 'yesterday'\n", "feeds.replay.start: bad time 'yesterday'"),
    ],
)
def test_other_range_checks(tmp_path: Path, text: str, expected: str) -> None:
    assert expected in str(config_error(tmp_path, text))


def test_invalid_toml_names_the_file(tmp_path: Path) -> None:
    assert "not valid TOML" in str(config_error(tmp_path, "watchlist = [\n"))


def test_unreadable_config_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path)  # a directory
    assert str(caught.value).startswith(f"{tmp_path}: cannot read config")
    assert caught.value.exit_code == 2


# --- where home and config come from ---------------------------------------------------------


def test_home_resolution_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    platform_dir = tmp_path / "platform"
    monkeypatch.setattr("platformdirs.user_data_dir", lambda *args, **kwargs: str(platform_dir))
    monkeypatch.delenv("SPTRADER_HOME", raising=False)
    assert resolve_home() == platform_dir

    monkeypatch.setenv("SPTRADER_HOME", str(tmp_path / "from-env"))
    assert resolve_home() == (tmp_path / "from-env").resolve()

    assert resolve_home(tmp_path / "from-arg") == (tmp_path / "from-arg").resolve()
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    assert resolve_home("~/trading") == (tmp_path / "user" / "trading").resolve()


def test_config_resolution_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    workdir = tmp_path / "work"
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    monkeypatch.delenv("SPTRADER_CONFIG", raising=False)

    assert resolve_config_path(home) is None  # nothing anywhere: defaults

    in_home = write(home / "config.toml", "")
    assert resolve_config_path(home) == in_home

    in_cwd = write(workdir / "config.toml", "")
    assert resolve_config_path(home) == in_cwd

    from_env = write(tmp_path / "env.toml", "")
    monkeypatch.setenv("SPTRADER_CONFIG", str(from_env))
    assert resolve_config_path(home) == from_env

    from_arg = write(tmp_path / "arg.toml", "")
    assert resolve_config_path(home, from_arg) == from_arg


def test_missing_explicit_config_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SPTRADER_CONFIG", raising=False)
    missing = tmp_path / "missing.toml"
    with pytest.raises(ConfigError, match="config file not found") as caught:
        resolve_config_path(tmp_path, missing)
    assert str(missing) in str(caught.value)
    assert caught.value.exit_code == 2

    monkeypatch.setenv("SPTRADER_CONFIG", str(missing))
    with pytest.raises(ConfigError, match="config file not found"):
        resolve_config_path(tmp_path)


def test_load_settings_uses_arguments_over_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    env_home = tmp_path / "env-home"
    arg_home = tmp_path / "arg-home"
    write(env_home / "config.toml", "[feeds.sim]\nseed = 1\n")
    write(arg_home / "config.toml", "[feeds.sim]\nseed = 2\n")
    monkeypatch.setenv("SPTRADER_HOME", str(env_home))
    monkeypatch.delenv("SPTRADER_CONFIG", raising=False)

    from_env = load_settings()
    assert from_env.home == env_home.resolve()
    assert from_env.config.feeds.sim.seed == 1

    from_arg = load_settings(home=arg_home)
    assert from_arg.home == arg_home.resolve()
    assert from_arg.config_path == arg_home / "config.toml"
    assert from_arg.config.feeds.sim.seed == 2

    explicit = write(tmp_path / "explicit.toml", "[feeds.sim]\nseed = 3\n")
    assert load_settings(home=arg_home, config=explicit).config.feeds.sim.seed == 3


def test_relative_and_absolute_store_paths(tmp_path: Path) -> None:
    home = tmp_path / "home"
    relative = config_module.Settings(
        home, None, parse_config({"store": {"path": "data/db.duckdb"}}, "t")
    )
    assert relative.store_path == home / "data" / "db.duckdb"
    absolute = config_module.Settings(
        home, None, parse_config({"store": {"path": str(tmp_path / "elsewhere.duckdb")}}, "t")
    )
    assert absolute.store_path == tmp_path / "elsewhere.duckdb"


@pytest.mark.skipif(
    not REPO_CONFIG.exists(), reason="the example config.toml is not checked in yet"
)
def test_checked_in_example_config_parses() -> None:
    config = load_config(REPO_CONFIG)
    assert config.watchlist
    assert config.chart.default_timeframe in config.chart.timeframes


@pytest.mark.skipif(
    not REPO_CONFIG.exists(), reason="the example config.toml is not checked in yet"
)
def test_example_config_documents_every_binding_id() -> None:
    text = REPO_CONFIG.read_text("utf-8")
    keymap = text[text.index("[keymap]") : text.index("\n[", text.index("[keymap]") + 1)]
    first, *_, last = TIMEFRAMES
    assert f"timeframe-{first} ... timeframe-{last}" in keymap
    for binding_id in config_module.BINDING_IDS:
        if not binding_id.startswith("timeframe-"):
            assert binding_id in keymap, f"config.toml's [keymap] does not list {binding_id}"


def test_strategies_screen_keys_are_remappable(tmp_path: Path) -> None:
    for binding_id in ("strategies-run", "strategies-pause", "strategies-close"):
        assert binding_id in config_module.BINDING_IDS
    config = load_config(write(tmp_path / "c.toml", '[keymap]\n"strategies-run" = "x"\n'))
    assert config.keymap == {"strategies-run": "x"}
