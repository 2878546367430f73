"""rt/payload: client JSON is read once, bounded in depth."""

from __future__ import annotations

from typing import Any

import pytest

from rt.errors import BadRequest
from rt.payload import MAX_DEPTH, loads, too_deep


def nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


def test_depth_counts_objects_and_arrays_from_the_outermost() -> None:
    assert not too_deep(1)
    assert not too_deep(nested(MAX_DEPTH))
    assert too_deep(nested(MAX_DEPTH + 1))
    assert not too_deep({"a": {"b": [1, 2, {"c": []}]}}, limit=5)
    assert too_deep({"a": {"b": [1, 2, {"c": []}]}}, limit=4)


def test_the_deepest_branch_counts_whatever_its_siblings() -> None:
    wide = {"flat": list(range(1000)), "deep": nested(MAX_DEPTH)}
    assert too_deep(wide)
    assert not too_deep({"flat": list(range(1000)), "deep": nested(MAX_DEPTH - 1)})


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 300, 2000])
def test_too_deep_json_is_a_bad_request(depth: int) -> None:
    with pytest.raises(BadRequest, match=r"too deep|malformed"):
        loads(b"[" * depth + b"]" * depth)


def test_malformed_json_is_a_bad_request() -> None:
    with pytest.raises(BadRequest, match="malformed JSON"):
        loads(b'{"a": ')
    assert loads(b'{"a": [1, {"b": 2}]}') == {"a": [1, {"b": 2}]}
