"""The HTTP API's OpenAPI document is valid, names exactly the routes the API serves, and every
operation it says takes a key refuses a request without one or with a wrong one (401, JSON)."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from conftest import http_request
from openapi_spec_validator import validate

from gateways.health_detailed import HealthSettings
from gateways.http import ApiSettings, build_app
from gateways.status_page import StatusPageSettings
from shared.settings import DatabaseSettings, KafkaSettings, RegistrySettings

READ_KEY = "read-key-0d4e"
OPS_KEY = "ops-key-a81c"
# What a path parameter is filled with when the walk calls an operation.
SAMPLES = {"symbol": "AAPL", "id": "41", "subject": "md.trades.v1-value", "version": "latest"}


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    from importlib import resources

    doc: dict[str, Any] = orjson.loads(
        resources.files("gateways").joinpath("static/openapi.json").read_bytes()
    )
    return doc


def served_routes() -> set[tuple[str, str]]:
    """(method, path template) of every route the API registers, as OpenAPI spells paths."""
    app = build_app(
        KafkaSettings(bootstrap="127.0.0.1:9"),
        DatabaseSettings(url="postgresql://127.0.0.1:9/none"),
        RegistrySettings(),
        *ApiSettings(MS_API_KEYS=READ_KEY, ops_keys=OPS_KEY).guards(),  # type: ignore[call-arg]
        HealthSettings(),
        StatusPageSettings(),
    )
    routes = set()
    for route in app.router.routes():
        if route.method != "HEAD" and route.resource is not None:
            routes.add(
                (
                    route.method.lower(),
                    re.sub(r"\{(\w+):[^}]+\}", r"{\1}", route.resource.canonical),
                )
            )
    return routes


def operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method, path, op)
        for path, item in document["paths"].items()
        for method, op in item.items()
    ]


def test_the_document_is_valid_openapi_3_1(document: dict[str, Any]) -> None:
    validate(document)
    assert document["openapi"].startswith("3.1")


def test_the_document_names_every_route_served_and_no_other(document: dict[str, Any]) -> None:
    documented = {(method, path) for method, path, _ in operations(document)}

    assert served_routes() == documented


def test_every_keyed_operation_documents_its_401_and_429(document: dict[str, Any]) -> None:
    keyed = [(m, p, op) for m, p, op in operations(document) if op["security"]]

    assert len(keyed) >= 11
    for method, path, op in keyed:
        assert {"401", "429"} <= set(op["responses"]), f"{method} {path}"


def test_walking_the_document_every_keyed_operation_refuses_missing_and_wrong_keys(
    document: dict[str, Any], database_url: str, start_api: Callable[..., str]
) -> None:
    api = start_api(database_url, MS_API_KEYS=READ_KEY, MS_API_OPS_KEYS=OPS_KEY)
    walked = 0
    for method, path, op in operations(document):
        url = api + re.sub(r"\{(\w+)\}", lambda m: SAMPLES[m.group(1)], path)
        body = {} if method == "post" else None
        if not op["security"]:
            continue
        (scheme,) = op["security"][0]
        right, other = (READ_KEY, OPS_KEY) if scheme == "readerKey" else (OPS_KEY, READ_KEY)
        for key in (None, "read-key-0d4f", other):
            answer = http_request(url, method.upper(), body, key)
            assert answer.status == 401, f"{method} {path} with {key!r}"
            assert set(answer.json()) == {"error"}
        allowed = http_request(url, method.upper(), body, right)
        assert allowed.status != 401, f"{method} {path} refused its own key"
        for key in (READ_KEY, OPS_KEY):
            assert key.encode() not in allowed.body
        walked += 1

    assert walked >= 11
