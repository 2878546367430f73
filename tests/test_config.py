from __future__ import annotations

from pathlib import Path

import pytest

from rt.config import OPTIONS, ConfigError, Settings

README = Path(__file__).resolve().parent.parent / "README.md"


def test_every_setting_is_in_the_readme_table() -> None:
    rows = [line for line in README.read_text().splitlines() if line.startswith("| `RT_")]
    documented = {row.split("`")[1]: row for row in rows}
    for option in OPTIONS:
        assert option.env in documented, f"{option.env} missing from the README settings table"
        assert f"`{option.flag}`" in documented[option.env]
    assert set(documented) == {o.env for o in OPTIONS}


def test_settings_fields_match_options() -> None:
    assert {o.name for o in OPTIONS} == set(Settings.__dataclass_fields__)
    for option in OPTIONS:
        assert getattr(Settings(), option.name) == option.default


def test_environment_then_overrides() -> None:
    env = {"RT_PORT": "9001", "RT_BOOTSTRAP": "0", "RT_TRUSTED_PROXIES": "10.0.0.1, 10.0.0.0/8", "RT_HOST": "::1"}
    settings = Settings.from_env(env, host="0.0.0.0")
    assert settings.port == 9001
    assert settings.bootstrap is False
    assert settings.trusted_proxies == ("10.0.0.1", "10.0.0.0/8")
    assert settings.host == "0.0.0.0"


def test_bad_environment_value_names_the_variable() -> None:
    with pytest.raises(ConfigError, match="RT_PORT"):
        Settings.from_env({"RT_PORT": "eighty"})
    with pytest.raises(ConfigError, match="RT_BOOTSTRAP"):
        Settings.from_env({"RT_BOOTSTRAP": "maybe"})


def test_store_url_defaults_to_sqlite_in_the_data_dir() -> None:
    assert Settings(data_dir="/tmp/x").store_url == "sqlite:////tmp/x/rt.db"
    assert Settings(database_url="sqlite:///elsewhere.db").store_url == "sqlite:///elsewhere.db"
