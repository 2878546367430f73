"""Schemathesis over the served /v1/openapi.json: a real `rt serve` on a fresh data dir, called with its bootstrap
key, answers every generated request as the document says (status, content type, body schema) and never with 5xx."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from rt.app import create_app
from rt.config import Settings
from tests.e2e.server import Server, run_server

pytestmark = pytest.mark.e2e

CHECKS = [not_a_server_error, response_schema_conformance, status_code_conformance, content_type_conformance]

# A generous budget, so the run explores the routes instead of collecting 429s; limits have their own tests.
DOCUMENT: dict[str, Any] = create_app(Settings()).state.openapi

SERVER_ENV = {"RT_TIER_LIMITS": "pro_plus=1000000/100000", "RT_LOCKOUT_THRESHOLD": "1000000"}


# Something of each kind, so list and item responses hold records to check, not only empty pages.
SEED: list[tuple[str, dict[str, Any]]] = [
    ("/v1/positions", {"symbol": "BTC/USDT", "side": "long", "quantity": 0.01, "stop_loss": 1000}),
    ("/v1/positions", {"symbol": "ETH/USDT", "side": "short", "quantity": 0.1, "entry_price": 9000}),
    ("/v1/orders", {"symbol": "SOL/USDT", "side": "buy", "type": "limit", "quantity": 1, "price": 1}),
    (
        "/v1/strategies",
        {
            "name": "grid",
            "type": "grid",
            "symbol": "ETH/USDT",
            "config": {"grid_levels": 3, "price_range": [3000, 3400], "quantity_per_level": 0.01},
        },
    ),
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with run_server(tmp_path_factory.mktemp("conformance") / "data", env=SERVER_ENV) as running:
        assert running.key is not None
        with running.client(running.key) as client:
            for path, body in SEED:
                response = client.post(path, json=body)
                assert response.status_code in (200, 201, 202), response.text
        yield running


@pytest.fixture(scope="module")
def served(server: Server) -> None:
    """The document the cases come from is the one the server serves."""
    with server.client() as client:
        assert client.get("/v1/openapi.json").json() == orjson.loads(orjson.dumps(DOCUMENT))


# Schemathesis reuses ids it saw in responses, so it finds the key it calls with: revoking or rotating that key, the
# kill switch (which locks the account until UNLOCK) and the risk command's `kill` would turn every later call into
# 401 or 423, and the run would test nothing. They have their own tests (tests/e2e/test_auth_e2e.py, test_kill.py).
schema = (
    schemathesis.openapi.from_dict(DOCUMENT)
    .exclude(path="/v1/keys/{key_id}", method="DELETE")
    .exclude(path="/v1/keys/{key_id}/rotate")
    .exclude(path="/v1/emergency/kill")
    .exclude(path="/v1/risk/kill")
    .exclude(path="/api/v1/b2b/risk/kill")
)


@schema.parametrize()
@settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
def test_every_answer_matches_the_document(case: schemathesis.Case, server: Server, served: None) -> None:
    case.call_and_validate(base_url=server.url, headers={"X-API-Key": server.key}, checks=CHECKS)


# Inputs that once drew answers the document did not describe: an overflowing money string stored and sent back as
# null, a symbol with a line break that routes nowhere (404), money strings the number branch cannot say.
EDGES: list[tuple[str, str, dict[str, Any]]] = [
    ("/v1/markets/{symbol}/ticker", "GET", {"path_parameters": {"symbol": "BTC\nUSDT"}}),
    ("/v1/orders/{order_id}", "GET", {"path_parameters": {"order_id": "ord_a/b"}}),
    *(
        (
            "/v1/risk/envelope",
            "PUT",
            {
                "body": {
                    "max_position_size": money,
                    "max_exposure": 3,
                    "max_daily_loss": 5000,
                    "max_concurrent_positions": 20,
                }
            },
        )
        for money in ("+010939006803983E049539793", "1e999999", "1e-999999", "NaN", "-1", "0.0000000000001")
    ),
    ("/v1/orders", "POST", {"body": {"symbol": "BTC/USDT", "side": "buy", "quantity": "1e-999999"}}),
    ("/v1/positions", "POST", {"body": {"symbol": "BTC/USDT", "side": "long", "quantity": "Infinity"}}),
]


@pytest.mark.parametrize(("path", "method", "parts"), EDGES, ids=[f"{m} {p} {v}" for p, m, v in EDGES])
def test_edge_inputs_are_answered_as_documented(
    server: Server, served: None, path: str, method: str, parts: dict[str, Any]
) -> None:
    case = schemathesis.openapi.from_dict(DOCUMENT)[path][method].Case(**parts)
    response = case.call_and_validate(base_url=server.url, headers={"X-API-Key": server.key}, checks=CHECKS)
    assert response.status_code in (400, 404), response.text
