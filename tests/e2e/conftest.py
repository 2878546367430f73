"""End-to-end fixtures."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.checks import LeakCheck


@pytest.fixture(scope="module")
def leaks() -> Iterator[LeakCheck]:
    """Servers a module watches must never log a key or secret it saw; checked when the module ends."""
    check = LeakCheck()
    yield check
    check.verify()
