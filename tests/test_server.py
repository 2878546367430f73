"""rt/server: what `rt serve` warns about before it listens."""

from __future__ import annotations

from pathlib import Path

import pytest

from rt.config import Settings
from rt.server import startup_warnings


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"])
def test_loopback_needs_no_tls_warning(host: str, tmp_path: Path) -> None:
    assert startup_warnings(Settings(host=host, data_dir=str(tmp_path / "new"))) == []


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.5", "rt.example.com"])
def test_any_other_host_without_a_proxy_warns_that_keys_travel_in_clear(host: str, tmp_path: Path) -> None:
    (warning,) = startup_warnings(Settings(host=host, data_dir=str(tmp_path / "new")))
    assert host in warning and "clear text" in warning and "TLS" in warning and "RT_TRUSTED_PROXIES" in warning
    proxied = Settings(host=host, data_dir=str(tmp_path / "new"), trusted_proxies=("10.0.0.1",))
    assert startup_warnings(proxied) == []


@pytest.mark.parametrize(("mode", "warned"), [(0o700, False), (0o750, True), (0o755, True), (0o707, True)])
def test_a_data_dir_others_can_enter_is_named_with_its_fix(mode: int, warned: bool, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    data_dir.chmod(mode)
    warnings = startup_warnings(Settings(data_dir=str(data_dir)))
    assert bool(warnings) is warned
    if warned:
        assert f"mode {mode:04o}" in warnings[0] and f"chmod 700 {data_dir}" in warnings[0]
