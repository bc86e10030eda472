"""The published API documents tell the truth: they are up to date, every route the services
serve is in them with the errors it can answer, their examples fit their schemas, and the
README's walkthrough sends bodies the schemas accept. No data service needed."""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl

import pytest
from fastapi import FastAPI, routing
from jsonschema import Draft202012Validator

from scripts import openapi as published
from tests.e2e.test_walkthrough import walkthrough_script

MERGED = json.loads((published.OPENAPI_DIR / "openapi.json").read_text())

# The statuses each public operation can answer with: the contract. A change here is an API
# change, to be made on purpose (and in the code first).
ERRORS_BY_OPERATION: dict[tuple[str, str], set[int]] = {
    ("post", "/register/"): {201, 409, 413, 422, 429},
    ("post", "/token/"): {200, 401, 413, 422, 429},
    ("get", "/.well-known/jwks.json"): {200},
    ("post", "/orders/"): {201, 401, 413, 422, 429, 503},
    ("get", "/orders/user/{user_id}/"): {200, 401, 403, 422, 429, 503},
    ("get", "/orders/{order_id}/"): {200, 401, 404, 422, 429, 503},
    ("patch", "/orders/{order_id}/"): {200, 401, 404, 409, 413, 422, 429, 503},
}
# Served on each replica's own port for the orchestrator and Prometheus, never through the
# gateway: /healthz and /readyz are in each service's own document (tag "health"), /metrics is
# Prometheus' text format rather than an API and is in none.
PROBES = {"/healthz", "/readyz"}
UNDOCUMENTED = {"/metrics"}
# FastAPI's own documentation routes, present on every app.
FASTAPI_DOCS = {"/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"}


def _apps() -> dict[str, FastAPI]:
    from auth_service.main import create_app as create_auth
    from auth_service.settings import Settings as AuthSettings
    from orders_service.main import create_app as create_orders
    from orders_service.settings import Settings as OrdersSettings

    return {
        "auth": create_auth(AuthSettings(_env_file=None)),
        "orders": create_orders(OrdersSettings(_env_file=None)),
    }


def _operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in document["paths"].items():
        for method, operation in item.items():
            yield method, path, operation


def _validator(document: dict[str, Any], schema: dict[str, Any]) -> Draft202012Validator:
    """A validator for a schema that may $ref the document's components."""
    return Draft202012Validator({**schema, "components": document["components"]})


def _twin(path: str) -> str:
    return path[:-1] if path.endswith("/") else path + "/"


def test_published_documents_are_up_to_date() -> None:
    stale = published.stale_files(published.documents())
    assert not stale, f"stale: {[str(p) for p in stale]}; run `make openapi` and commit"


@pytest.mark.parametrize("service", published.SERVICES)
def test_every_route_a_service_serves_is_documented(service: str) -> None:
    app = _apps()[service]
    file = json.loads((published.OPENAPI_DIR / f"{service}.json").read_text())
    routes = [context.original_route for context in routing.iter_route_contexts(app.routes)]
    api_routes = [route for route in routes if isinstance(route, routing.APIRoute)]
    assert {getattr(r, "path", None) for r in routes if r not in api_routes} <= FASTAPI_DOCS

    documented = {
        (method.lower(), route.path)
        for route in api_routes
        if route.include_in_schema
        for method in route.methods
    }
    for route in api_routes:
        for method in route.methods:
            key = (method.lower(), route.path)
            if route.include_in_schema:
                assert route.path in file["paths"], key
                assert method.lower() in file["paths"][route.path], key
                continue
            # Hidden routes are the slash twins of documented ones, or deliberately internal.
            twin_documented = (method.lower(), _twin(route.path)) in documented
            assert twin_documented or route.path.rstrip("/") in UNDOCUMENTED, key

    gateway = published.gateway_routes()
    for method, path in documented:
        routed = any(r.upstream == service and r.matches(path) for r in gateway)
        if path in PROBES:
            assert not routed, f"{path} is a probe: the gateway must not route it"
            assert path not in MERGED["paths"]
        else:
            assert routed, f"{method.upper()} {path} is not routed by the gateway"
            merged = dict(MERGED["paths"][path][method])
            own = dict(file["paths"][path][method])
            merged.pop("security", None)
            own.pop("security", None)
            assert merged == own, f"{method.upper()} {path} differs in the merged document"


def test_each_public_operation_documents_exactly_its_statuses() -> None:
    operations = {(method, path): op for method, path, op in _operations(MERGED)}
    assert set(operations) == set(ERRORS_BY_OPERATION)
    for key, operation in operations.items():
        statuses = {int(status) for status in operation["responses"]}
        assert statuses == ERRORS_BY_OPERATION[key], key


@pytest.mark.parametrize(("method", "path"), sorted(ERRORS_BY_OPERATION))
def test_operation_is_fully_described(method: str, path: str) -> None:
    operation = MERGED["paths"][path][method]
    assert operation["summary"]
    assert operation["description"]
    assert operation["operationId"]
    assert operation["tags"] in (["auth"], ["orders"])
    schemas = MERGED["components"]["schemas"]

    if "requestBody" in operation or operation.get("parameters"):
        assert "422" in operation["responses"], "input can be invalid"
    if "requestBody" in operation:
        assert "413" in operation["responses"], "the gateway limits bodies"
    if operation.get("security"):
        assert operation["security"] == [{"OAuth2PasswordBearer": []}, {"HTTPBearer": []}]
        assert {"401", "429", "503"} <= set(operation["responses"])

    for status, response in operation["responses"].items():
        assert response["description"], status
        content = response["content"]["application/json"]
        if int(status) >= 400:
            expected = "ValidationErrorResponse" if status == "422" else "ErrorResponse"
            assert content["schema"] == {"$ref": f"#/components/schemas/{expected}"}, status
            assert "detail" in content["example"], status
        else:
            ref = content["schema"].get("$ref") or content["schema"]["items"]["$ref"]
            assert schemas[ref.rsplit("/", 1)[1]].get("examples"), f"{status}: no example"
        if status in ("429", "503"):
            assert "Retry-After" in response["headers"], status
        if status == "401":
            assert "WWW-Authenticate" in response["headers"]


def test_money_is_documented_as_exact_decimal_strings() -> None:
    schemas = MERGED["components"]["schemas"]
    for name, field in (("OrderRead", "total_price"), ("OrderItem-Output", "price")):
        money = schemas[name]["properties"][field]
        assert money["type"] == "string"
        assert re.fullmatch(money["pattern"], "451.00")
        assert not re.fullmatch(money["pattern"], "451.5")
    for name, field in (("OrderCreate", "total_price"), ("OrderItem-Input", "price")):
        money = schemas[name]["properties"][field]
        assert {"type": "string", "pattern": money["anyOf"][0]["pattern"]} in money["anyOf"]
        assert "decimal" in money["description"]


def test_patch_describes_the_status_machine() -> None:
    description = MERGED["paths"]["/orders/{order_id}/"]["patch"]["description"]
    for row in (
        "| `PENDING` | `PAID`, `CANCELED` |",
        "| `PAID` | `SHIPPED`, `CANCELED` |",
        "| `SHIPPED` | none (final) |",
        "| `CANCELED` | none (final) |",
    ):
        assert row in description


def test_password_flow_logs_in_at_the_gateway_token_endpoint() -> None:
    scheme = MERGED["components"]["securitySchemes"]["OAuth2PasswordBearer"]
    assert scheme["flows"]["password"]["tokenUrl"] == "/token/"
    assert "post" in MERGED["paths"]["/token/"]
    form = MERGED["paths"]["/token/"]["post"]["requestBody"]["content"]
    assert "application/x-www-form-urlencoded" in form


def _examples(document: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any], Any]]:
    """Every example the document shows, with the schema it illustrates."""
    for name, schema in document["components"]["schemas"].items():
        for example in schema.get("examples", []):
            yield f"schema {name}", schema, example
    for method, path, operation in _operations(document):
        body = operation.get("requestBody", {}).get("content", {})
        for media in body.values():
            for key, example in media.get("examples", {}).items():
                yield f"{method} {path} body {key}", media["schema"], example["value"]
        for status, response in operation["responses"].items():
            for media in response.get("content", {}).values():
                if "example" in media:
                    yield f"{method} {path} {status}", media.get("schema", {}), media["example"]


@pytest.mark.parametrize("name", ["openapi", *published.SERVICES])
def test_every_example_fits_its_schema(name: str) -> None:
    document = json.loads((published.OPENAPI_DIR / f"{name}.json").read_text())
    checked = 0
    for where, schema, example in _examples(document):
        errors = [e.message for e in _validator(document, schema).iter_errors(example)]
        assert not errors, f"{where}: {errors}"
        checked += 1
    assert checked >= 10


def _walkthrough_requests() -> list[tuple[str, str, str | None]]:
    """(method, path, body) of each curl call of the README's walkthrough."""
    script = walkthrough_script().replace("\\\n", " ")
    lexer = shlex.shlex(script, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    tokens = list(lexer)
    calls = []
    for start, token in enumerate(tokens):
        if token != "curl":
            continue
        method, url, body = None, None, None
        args = iter(tokens[start + 1 :])
        for arg in args:
            if arg in ("|", ";", ")", "&&"):
                break
            if arg == "-X":
                method = next(args)
            elif arg == "-d":
                body = next(args)
            elif arg == "-H":
                next(args)
            elif arg.startswith("http://localhost:8000"):
                url = arg.removeprefix("http://localhost:8000")
        assert url, tokens[start : start + 12]
        calls.append((method or ("POST" if body else "GET"), url, body))
    return calls


def _operation_for(method: str, url: str) -> tuple[str, dict[str, Any]]:
    for path, item in MERGED["paths"].items():
        pattern = re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(path))
        if re.fullmatch(pattern, url) and method.lower() in item:
            return path, item[method.lower()]
    raise AssertionError(f"{method} {url} is not in the published document")


def test_readme_walkthrough_requests_fit_the_published_schemas() -> None:
    calls = _walkthrough_requests()
    seen = [(method, _operation_for(method, url)[0]) for method, url, _ in calls]
    assert seen == [
        ("POST", "/register/"),
        ("POST", "/token/"),
        ("POST", "/orders/"),
        ("GET", "/orders/{order_id}/"),
        ("GET", "/orders/{order_id}/"),
        ("PATCH", "/orders/{order_id}/"),
        ("GET", "/orders/user/{user_id}/"),
    ]
    for method, url, body in calls:
        if body is None:
            continue
        _, operation = _operation_for(method, url)
        content = operation["requestBody"]["content"]
        if "application/json" in content:
            value: Any = json.loads(body)
            schema = content["application/json"]["schema"]
        else:  # curl -d without a Content-Type sends a form
            value = dict(parse_qsl(body, strict_parsing=True))
            schema = content["application/x-www-form-urlencoded"]["schema"]
        errors = [e.message for e in _validator(MERGED, schema).iter_errors(value)]
        assert not errors, f"{method} {url}: {errors}"


def test_merge_refuses_a_model_two_services_define_differently() -> None:
    documents = published.service_documents()
    documents["orders"]["components"]["schemas"]["ErrorResponse"]["title"] = "Something else"
    with pytest.raises(ValueError, match="ErrorResponse"):
        published.merge(documents, published.gateway_routes())


def test_merge_takes_only_what_the_gateway_routes() -> None:
    routes = [r for r in published.gateway_routes() if not r.path.startswith("/.well-known")]
    merged = published.merge(published.service_documents(), routes)
    assert "/.well-known/jwks.json" not in merged["paths"]
    assert "/register/" in merged["paths"]
