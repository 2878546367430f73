"""rt/api/asyncapi: command params describe money as the REST document does (a bounded number or a patterned string)."""

from __future__ import annotations

import re
from typing import Any

from rt.api import asyncapi


def _money(params: dict[str, Any], name: str) -> list[dict[str, Any]]:
    prop = params["properties"][name]
    return [b for b in prop["anyOf"] if b.get("type") in ("number", "string")]


def test_command_money_is_a_bounded_number_or_a_numeric_string() -> None:
    messages = asyncapi.build()["components"]["messages"]
    checked = 0
    for command, field in (("order.place", "quantity"), ("order.place", "price"), ("position.open", "quantity")):
        params = messages[f"command.{command}"]["payload"]["properties"]["params"]
        number, string = _money(params, field)
        assert number["type"] == "number" and number["exclusiveMinimum"] == 0 and "exclusiveMaximum" in number
        pattern = re.compile(string["pattern"])
        assert pattern.search("65000.5") and not pattern.search("NaN") and not pattern.search("lots")
        checked += 1
    assert checked == 3
