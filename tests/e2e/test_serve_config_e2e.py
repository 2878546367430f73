"""A setting `rt serve` cannot run with: one line naming it, exit 2, before the server or its data dir exists."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e


def _serve(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "RT_DATA_DIR": str(tmp_path / "data"), "RT_PORT": "0", **env}
    return subprocess.run(
        [sys.executable, "-m", "rt", "serve"], capture_output=True, text=True, env=full, timeout=60, check=False
    )


@pytest.mark.parametrize(
    ("env", "line"),
    [
        (
            {"RT_PAPER_VENUES": "paper"},
            "rt: RT_PAPER_VENUES: 'paper' is always served; list other exchange ids, such as binance",
        ),
        (
            {"RT_PAPER_VENUES": "Binance!"},
            "rt: RT_PAPER_VENUES: 'binance!' cannot name a simulated venue (an exchange id such as binance)",
        ),
        ({"RT_PAPER_FEE": "abc"}, "rt: RT_PAPER_FEE: 'abc' is not a number"),
    ],
    ids=["paper-venue", "bad-venue-name", "fee-not-a-number"],
)
def test_a_bad_setting_is_one_line_and_exit_2(tmp_path: Path, env: dict[str, str], line: str) -> None:
    result = _serve(tmp_path, **env)
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [line]
    assert result.stdout == ""
    assert not (tmp_path / "data").exists()
