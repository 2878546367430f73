"""rt/engine/requests: every money, quantity and limit field takes only a bounded, finite decimal."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from rt.engine.requests import EnvelopeIn, OrderRequest, PositionRequest, PositionUpdate

ORDER = {"symbol": "BTC/USDT", "side": "buy", "type": "limit", "quantity": "1", "price": "100"}
POSITION = {"symbol": "BTC/USDT", "side": "long", "quantity": "1"}
ENVELOPE = {"max_position_size": "1000", "max_exposure": "2", "max_daily_loss": "500", "max_concurrent_positions": 5}

FIELDS: list[tuple[type[BaseModel], dict[str, Any], str]] = [
    (OrderRequest, ORDER, "quantity"),
    (OrderRequest, ORDER, "price"),
    (OrderRequest, {**ORDER, "type": "stop", "price": None}, "stop_price"),
    (OrderRequest, ORDER, "stop_loss"),
    (OrderRequest, ORDER, "take_profit"),
    (PositionRequest, POSITION, "quantity"),
    (PositionRequest, POSITION, "entry_price"),
    (PositionRequest, POSITION, "stop_loss"),
    (PositionRequest, POSITION, "take_profit"),
    (PositionUpdate, {}, "stop_loss"),
    (PositionUpdate, {}, "take_profit"),
    (EnvelopeIn, ENVELOPE, "max_position_size"),
    (EnvelopeIn, ENVELOPE, "max_exposure"),
    (EnvelopeIn, ENVELOPE, "max_daily_loss"),
]
PLACES = 12  # documented in docs/trading.md, "Money"
BAD = {
    "tiny": ("1e-999999", "decimal places"),
    "huge": ("1e999999", "less than"),
    "nan": ("NaN", "finite"),
    "infinity": ("-Infinity", "finite"),
    "negative": ("-5", "greater than 0"),
    "zero": ("0", "greater than 0"),
    "too-many-places": ("0." + "0" * PLACES + "1", "decimal places"),
    "float-overflow": (1e300, "less than"),
}


@pytest.mark.parametrize(("model", "base", "name"), FIELDS, ids=[f"{m.__name__}.{n}" for m, _, n in FIELDS])
@pytest.mark.parametrize(("value", "message"), BAD.values(), ids=list(BAD))
def test_a_money_field_refuses_unbounded_values(
    model: type[BaseModel], base: dict[str, Any], name: str, value: Any, message: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        model.model_validate({**base, name: value})
    errors = caught.value.errors()
    assert [e["loc"] for e in errors] == [(name,)]
    assert message in errors[0]["msg"]


@pytest.mark.parametrize(("model", "base", "name"), FIELDS, ids=[f"{m.__name__}.{n}" for m, _, n in FIELDS])
def test_a_money_field_takes_ordinary_values(model: type[BaseModel], base: dict[str, Any], name: str) -> None:
    for value, expected in (("0.000000000001", Decimal("1e-12")), (0.1, Decimal("0.1")), ("2.50000000000000", 2.5)):
        parsed = model.model_validate({**base, name: value})
        assert getattr(parsed, name) == Decimal(str(expected))


def test_money_fields_stay_numbers_in_the_json_schema() -> None:
    schema = EnvelopeIn.model_json_schema()["properties"]["max_daily_loss"]
    assert {"type": "number", "exclusiveMinimum": 0.0, "exclusiveMaximum": 1e15} in schema["anyOf"]


# Python's Decimal reads all of these; a client never means them, and the document's pattern refuses them.
NOT_PLAIN = ["1_0", "5_000", " 1", "1 ", "5\n", "\u0661", "\uff15\uff10", "0x10", "1,5", ""]


@pytest.mark.parametrize(("model", "base", "name"), FIELDS, ids=[f"{m.__name__}.{n}" for m, _, n in FIELDS])
@pytest.mark.parametrize("value", NOT_PLAIN, ids=repr)
def test_a_money_string_is_plain_ascii_decimal_text(
    model: type[BaseModel], base: dict[str, Any], name: str, value: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        model.model_validate({**base, name: value})
    assert [e["loc"] for e in caught.value.errors()] == [(name,)]


@pytest.mark.parametrize("value", ["1", "1.5", "5.", ".5", "+2", "1e3", "2.5E-3"])
def test_every_money_string_the_document_allows_is_taken(value: str) -> None:
    import re

    from rt.api.openapi import WireSchema

    schema = EnvelopeIn.model_json_schema(schema_generator=WireSchema)["properties"]["max_daily_loss"]
    (text,) = [branch for branch in schema["anyOf"] if branch.get("type") == "string"]
    assert re.fullmatch(text["pattern"], value)
    assert EnvelopeIn.model_validate({**ENVELOPE, "max_daily_loss": value}).max_daily_loss == Decimal(value)


@pytest.mark.parametrize("value", ["5_000", " 5", "\uff15"])
def test_a_count_is_plain_text_too(value: str) -> None:
    with pytest.raises(ValidationError):
        EnvelopeIn.model_validate({**ENVELOPE, "max_concurrent_positions": value})
