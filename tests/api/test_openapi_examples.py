"""Every example in the OpenAPI document is a body its own schema accepts, in every dialect; catch-alls, keys and
tags are documented as clients meet them."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from rt.app import OPERATIONS, create_app
from rt.config import Settings


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return create_app(Settings()).state.openapi  # type: ignore[no-any-return]


def examples(document: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any], Any]]:
    """(where, schema, value) of every example of every response."""
    for path, item in document["paths"].items():
        for method, op in item.items():
            for status, response in op["responses"].items():
                for media, content in response.get("content", {}).items():
                    for name, example in content.get("examples", {}).items():
                        where = f"{method.upper()} {path} {status} {media} {name}"
                        yield where, content["schema"], example["value"]


def test_every_example_is_valid_against_its_schema(document: dict[str, Any]) -> None:
    found = list(examples(document))
    assert len(found) > 100
    failures = []
    for where, schema, value in found:
        validator = Draft202012Validator({**schema, "components": document["components"]})
        problems = [error.message for error in validator.iter_errors(value)]
        if problems:
            failures.append(f"{where}: {problems[0]}")
    assert not failures, f"{len(failures)} of {len(found)} examples fail their schema:\n" + "\n".join(failures[:20])


def test_a_native_example_is_a_full_problem(document: dict[str, Any]) -> None:
    content = document["paths"]["/v1/positions"]["post"]["responses"]["422"]["content"]["application/problem+json"]
    value = content["examples"]["VALIDATION_FAILED"]["value"]
    assert value["type"].endswith("/validation-failed")
    assert value["title"] and value["detail"]
    assert (value["status"], value["code"]) == (422, "VALIDATION_FAILED")
    assert value["error"]["code"] == 422
    assert value["details"]["check"]


def test_dialect_examples_are_in_the_dialects_envelopes(document: dict[str, Any]) -> None:
    tradyn = document["paths"]["/v1/api/account"]["get"]["responses"]["401"]["content"]["application/json"]
    assert tradyn["examples"]["API_KEY_MISSING"]["value"] == {
        "success": False,
        "error": "Missing authorization header",
        "code": "API_KEY_MISSING",
    }
    draconis = document["paths"]["/api/v1/b2b/risk/kill"]["post"]["responses"]["401"]["content"]["application/json"]
    assert draconis["examples"]["API_KEY_INVALID"]["value"]["error"]["code"] == "INVALID_KEY"
    kraken = document["paths"]["/0/private/GetWebSocketsToken"]["post"]["responses"]["401"]["content"]
    assert kraken["application/json"]["examples"]["API_KEY_MISSING"]["value"] == {"error": ["EAPI:Invalid key"]}


def test_catch_all_routes_are_not_documented(document: dict[str, Any]) -> None:
    hidden = [op for op in OPERATIONS if not op.documented]
    assert hidden, "the Tradyn catch-all is a route"
    for op in hidden:
        assert "{rest" in op.path
    assert not [path for path in document["paths"] if "{rest}" in path]


def test_kraken_documents_its_api_key_header(document: dict[str, Any]) -> None:
    schemes = document["components"]["securitySchemes"]
    op = document["paths"]["/0/private/GetWebSocketsToken"]["post"]
    names = [name for requirement in op["security"] for name in requirement]
    assert {"type": "apiKey", "in": "header", "name": "API-Key"} in [schemes[name] for name in names]
    native = document["paths"]["/v1/ws/token"]["post"]
    assert "API-Key" not in [schemes[name]["name"] for r in native["security"] for name in r if "name" in schemes[name]]


def test_every_tag_used_is_listed_with_a_description(document: dict[str, Any]) -> None:
    listed = {tag["name"]: tag["description"] for tag in document["tags"]}
    used = {tag for item in document["paths"].values() for op in item.values() for tag in op["tags"]}
    assert used == set(listed)
    assert all(listed.values())
    compat = sorted(tag for tag in used if not tag.islower() or tag.startswith("compat"))
    assert compat == ["compat: Alpha Draconis", "compat: Kraken", "compat: Tradyn"]
