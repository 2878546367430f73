"""The OpenAPI document and the offline docs page: complete, consistent, valid, and served over real HTTP."""

from __future__ import annotations

import re
import types
import typing
from collections.abc import Iterator
from decimal import Decimal
from typing import Any
from urllib.parse import urljoin

import httpx
import orjson
import pytest
from openapi_spec_validator import validate
from pydantic import BaseModel

from rt.api.openapi import errors_of
from rt.app import OPERATIONS as ROUTES
from rt.app import create_app
from rt.auth import scopes
from rt.config import Settings
from tests.e2e.server import Server, run_server

# The contract's status of every error code (SPEC §3), plus the codes the project added on top.
STATUS = {
    "API_KEY_MISSING": 401,
    "API_KEY_INVALID": 401,
    "API_KEY_REVOKED": 401,
    "ALERT_UNAUTHORIZED": 401,
    "REQUEST_SIGNATURE_INVALID": 401,
    "INSUFFICIENT_SCOPE": 403,
    "IP_NOT_ALLOWED": 403,
    "NOT_FOUND": 404,
    "KEY_LIMIT_REACHED": 409,
    "ALERT_HOOK_LIMIT_REACHED": 409,
    "IDEMPOTENCY_CONFLICT": 409,
    "ORDER_NOT_OPEN": 409,
    "POSITION_NOT_OPEN": 409,
    "PAYLOAD_TOO_LARGE": 413,
    "UNSUPPORTED_MEDIA_TYPE": 415,
    "VALIDATION_FAILED": 422,
    "TRADING_LOCKED": 423,
    "RATE_LIMITED": 429,
    "IP_LOCKED_OUT": 429,
    "BAD_REQUEST": 400,
    "EXCHANGE_UNAVAILABLE": 503,
    "WEBHOOK_URL_NOT_ALLOWED": 400,
    "WEBHOOK_LIMIT_REACHED": 409,
    "WEBHOOK_DISABLED": 409,
}

# A catch-all route (a dialect's 404 for any other path) is served, not documented.
OPERATIONS = [op for op in ROUTES if op.documented]

SCHEMA_REF = "#/components/schemas/"
URL = re.compile(r"https?://", re.IGNORECASE)
# Protocol-relative or imported resources would also load from the network.
REMOTE = re.compile(r"""(?:src|href|action)\s*=\s*["']?\s*//|url\(\s*["']?\s*//|@import""", re.IGNORECASE)


def doc_path(path: str) -> str:
    """OpenAPI templates name the parameter only; Starlette's `{symbol:path}` becomes `{symbol}`."""
    return re.sub(r"{(\w+):\w+}", r"{\1}", path)


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return create_app(Settings()).state.openapi  # type: ignore[no-any-return]


def operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in document["paths"].items():
        for method, op in item.items():
            yield path, method, op


def refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from refs(item)


def resolve(document: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), f"{ref} points outside the document"
    node: Any = document
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        assert isinstance(node, dict) and part in node, f"{ref} does not resolve (no {part!r})"
        node = node[part]
    return node


def test_document_is_openapi_3_1_and_validates(document: dict[str, Any]) -> None:
    assert document["openapi"] == "3.1.0"
    assert document["info"]["title"] == "rt"
    assert document["info"]["version"]
    validate(document)


def test_every_operation_appears_once_with_its_method_and_path(document: dict[str, Any]) -> None:
    for op in OPERATIONS:
        item = document["paths"].get(doc_path(op.path))
        assert item is not None, f"{op.method} {op.path} is missing"
        entry = item.get(op.method.lower())
        assert entry is not None, f"{op.method} {op.path} is missing"
        assert entry["operationId"] == op.name
        assert entry["summary"] == op.summary
        assert entry["tags"] == [op.tag]
        assert str(op.status) in entry["responses"]
    assert sorted((m.upper(), p) for p, m, _ in operations(document)) == sorted(
        (op.method, doc_path(op.path)) for op in OPERATIONS
    )
    ids = [op["operationId"] for _, _, op in operations(document)]
    assert len(ids) == len(set(ids)), "operationIds must be unique"


def test_the_contract_routes_are_documented(document: dict[str, Any]) -> None:
    for path in ("/v1/health", "/v1/ready", "/v1/time", "/v1/openapi.json", "/v1/docs", "/v1/keys", "/v1/account"):
        assert "get" in document["paths"][path], path
    assert "post" in document["paths"]["/v1/keys"]
    assert "delete" in document["paths"]["/v1/keys/{key_id}"]


def test_authenticated_operations_carry_their_scope_and_security(document: dict[str, Any]) -> None:
    schemes = document["components"]["securitySchemes"]
    authenticated = [op for op in OPERATIONS if op.scope is not None]
    assert authenticated
    for op in OPERATIONS:
        entry = document["paths"][doc_path(op.path)][op.method.lower()]
        if op.scope is None:
            assert "x-required-scope" not in entry
            assert "security" not in entry
            continue
        assert op.scope in scopes.ALL, f"{op.method} {op.path} needs unknown scope {op.scope}"
        assert entry["x-required-scope"] == op.scope
        assert entry["security"], f"{op.method} {op.path} declares no security"
        for requirement in entry["security"]:
            for name in requirement:
                assert name in schemes, f"{op.method} {op.path} uses undeclared scheme {name}"
    assert {"type": "apiKey", "in": "header", "name": "X-API-Key"} in schemes.values()
    assert {"type": "http", "scheme": "bearer"} in schemes.values()


def test_every_ref_resolves(document: dict[str, Any]) -> None:
    found = list(refs(document))
    assert found
    for ref in found:
        assert ref.startswith(SCHEMA_REF), ref
        target = resolve(document, ref)
        assert isinstance(target, dict) and target, f"{ref} resolves to an empty schema"


def test_bodies_reference_their_models(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    for op in OPERATIONS:
        entry = document["paths"][doc_path(op.path)][op.method.lower()]
        if op.body is None:
            assert "requestBody" not in entry
        else:
            body = entry["requestBody"]
            assert body["required"] is True
            assert body["content"]["application/json"]["schema"] == {"$ref": SCHEMA_REF + op.body.__name__}
            assert set(op.body.model_fields) <= set(schemas[op.body.__name__]["properties"])
        if op.response is not None:
            content = entry["responses"][str(op.status)]["content"]["application/json"]
            assert content["schema"] == {"$ref": SCHEMA_REF + op.response.__name__}
            assert op.response.__name__ in schemas


def test_parameters_match_the_path_and_query(document: dict[str, Any]) -> None:
    for op in OPERATIONS:
        path = doc_path(op.path)
        entry = document["paths"][path][op.method.lower()]
        params = {(p["in"], p["name"]): p for p in entry.get("parameters", [])}
        for name in re.findall(r"{(\w+)}", path):
            assert params[("path", name)]["required"] is True, f"{path}: {name}"
        if op.query is not None:
            for name, field in op.query.model_fields.items():
                assert params[("query", name)]["required"] is field.is_required(), f"{path}: {name}"
    limit = {p["name"]: p for p in document["paths"]["/v1/keys"]["get"]["parameters"]}["limit"]
    assert limit["schema"]["maximum"] == 500
    assert limit["schema"]["default"] == 50


def test_each_error_code_appears_under_its_status(document: dict[str, Any]) -> None:
    for op in OPERATIONS:
        # A compatibility dialect answers its own statuses, body and media type; rt's own API answers problems.
        dialect = op.dialect
        problem = {"$ref": SCHEMA_REF + (dialect.error_model.__name__ if dialect.error_model else "Problem")}
        responses = document["paths"][doc_path(op.path)][op.method.lower()]["responses"]
        for code in op.errors:
            status = dialect.status_of(code, STATUS[code])
            response = responses.get(str(status))
            assert response is not None, f"{op.method} {op.path}: {code} has no {status} response"
            content = response["content"][dialect.error_media]
            assert content["schema"] == problem
            assert code in content["examples"], f"{op.method} {op.path}: no example of {code}"
            if dialect.error_model is None:
                assert content["examples"][code]["value"]["status"] == status
                assert content["examples"][code]["value"]["code"] == code
            assert code in response["description"]
        error_statuses = {s for s in responses if int(s) >= 400}
        assert error_statuses == {str(dialect.status_of(c, STATUS[c])) for c in errors_of(op)}, f"{op.method} {op.path}"
        if op.scope is not None:
            assert {"API_KEY_MISSING", "INSUFFICIENT_SCOPE"} <= set(op.errors), f"{op.method} {op.path}"


def test_a_path_parameter_that_does_not_route_is_a_documented_404(document: dict[str, Any]) -> None:
    """`/v1/markets/BTC%0AUSDT/ticker` matches no route (nor does an id holding a `/`): the server answers 404."""
    for op in OPERATIONS:
        if "{" not in op.path:
            continue
        responses = document["paths"][doc_path(op.path)][op.method.lower()]["responses"]
        assert "404" in responses, f"{op.method} {op.path}"
        assert "NOT_FOUND" in responses["404"]["content"][op.dialect.error_media]["examples"]


def _decimals(model: type[BaseModel]) -> Iterator[tuple[type[BaseModel], str]]:
    """(model, field) of every Decimal field of a model and of the models it holds."""
    for name, field in model.model_fields.items():
        stack: list[Any] = [field.annotation]
        while stack:
            kind = stack.pop()
            if kind is Decimal:
                yield model, name
            elif isinstance(kind, type) and issubclass(kind, BaseModel):
                yield from _decimals(kind)
            elif typing.get_origin(kind) in (typing.Union, types.UnionType, list, dict, tuple, typing.Annotated):
                stack.extend(typing.get_args(kind))


def _money(document: dict[str, Any], part: str) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """`Model.field` and its documented branches for every Decimal of the operations' `part` (body or response)."""
    schemas = document["components"]["schemas"]
    for op in OPERATIONS:
        model_of = getattr(op, part)
        if model_of is None:
            continue
        for model, name in _decimals(model_of):
            prop = schemas[model.__name__]["properties"][name]
            yield f"{model.__name__}.{name}", prop.get("anyOf", [prop])


def test_money_in_responses_is_a_json_number_as_rt_sends_it(document: dict[str, Any]) -> None:
    seen = 0
    for field, branches in _money(document, "response"):
        types_ = {b.get("type") for b in branches}
        assert "number" in types_ and types_ <= {"number", "null"}, f"{field}: {types_}"
        seen += 1
    assert seen > 20, "no response money found: the check would look at nothing"


NUMERIC = ["65000.5", "0.001", "1", "+2.50"]
NOT_NUMERIC = ["", "abc", "NaN", "Infinity", "1,5", "0x10", "1.5.5", " 1"]


def test_request_money_is_a_number_or_a_numeric_string_the_pattern_describes(document: dict[str, Any]) -> None:
    seen = 0
    for field, branches in _money(document, "body"):
        numbers = [b for b in branches if b.get("type") == "number"]
        strings = [b for b in branches if b.get("type") == "string"]
        assert numbers and strings, field
        assert numbers[0].get("exclusiveMinimum") == 0, f"{field} has no lower bound"
        assert "exclusiveMaximum" in numbers[0] or "maximum" in numbers[0], f"{field} is unbounded"
        pattern = re.compile(strings[0]["pattern"])
        for text in NUMERIC:
            assert pattern.search(text), f"{field}: {text!r}"
        for text in NOT_NUMERIC:
            assert not pattern.search(text), f"{field} documents {text!r} as a decimal"
        seen += 1
    assert seen > 10, "no request money found: the check would look at nothing"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with run_server(tmp_path_factory.mktemp("openapi") / "data") as running:
        yield running


def test_openapi_json_is_served_without_a_key(server: Server, document: dict[str, Any]) -> None:
    with server.client() as client:
        response = client.get("/v1/openapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    assert response.json() == orjson.loads(orjson.dumps(document))


def test_a_symbol_that_does_not_route_is_the_documented_404(server: Server, document: dict[str, Any]) -> None:
    with server.client(server.key) as client:
        response = client.get("/v1/markets/BTC%0AUSDT/ticker")
    assert response.status_code == 404, response.text
    assert response.json()["code"] == "NOT_FOUND"
    assert "404" in document["paths"]["/v1/markets/{symbol}/ticker"]["get"]["responses"]


def test_docs_page_is_offline_html_over_the_document(server: Server) -> None:
    with server.client() as client:
        response = client.get("/v1/docs")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/html")
        page = response.text
        assert URL.search(page) is None, f"the docs page links out: {URL.search(page)}"
        assert REMOTE.search(page) is None, f"the docs page loads a remote resource: {REMOTE.search(page)}"
        fetched = re.search(r"""fetch\(\s*["']([^"']+)["']""", page)
        assert fetched is not None, "the docs page does not fetch the document"
        target = urljoin(str(response.url), fetched.group(1))
        assert httpx.URL(target).path == "/v1/openapi.json"
        assert client.get(target).status_code == 200


def test_query_parameters_are_values_never_null(document: dict[str, Any]) -> None:
    """An optional filter is left out of the URL, not sent as null: the document shows only its value's type."""
    seen = 0
    for _, _, op in operations(document):
        for param in op.get("parameters", []):
            if param["in"] != "query":
                continue
            branches = param["schema"].get("anyOf", [param["schema"]])
            assert {"type": "null"} not in branches, f"{op['operationId']}: {param['name']}"
            assert all("type" in b or "enum" in b for b in branches), f"{op['operationId']}: {param['name']}"
            seen += 1
    assert seen > 10
