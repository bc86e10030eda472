"""The gateway serves the API docs itself: the pages, their assets, the merged OpenAPI document
and the event schemas, straight from docs/ and with no CDN; and every operation in that document
reaches its service through the gateway and answers as documented."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import pytest
from jsonschema import Draft202012Validator

from scripts import openapi as published
from tests.stack import Stack

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def client(stack: Stack) -> httpx.Client:
    return httpx.Client(base_url=stack.base_url, timeout=10, follow_redirects=False)


@pytest.mark.parametrize("path", ["/docs", "/docs/", "/redoc", "/redoc/"])
def test_docs_pages_load_their_assets_from_the_gateway(client: httpx.Client, path: str) -> None:
    page = client.get(path)
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "/openapi.json" in page.text
    # Nothing from elsewhere: every URL in the page is the gateway's own.
    assert "http://" not in page.text
    assert "https://" not in page.text


@pytest.mark.parametrize(
    ("asset", "content_type"),
    [
        ("swagger-ui-bundle.js", "text/javascript"),
        ("swagger-ui.css", "text/css"),
        ("redoc.standalone.js", "text/javascript"),
        ("favicon.png", "image/png"),
    ],
)
def test_docs_assets_are_served(client: httpx.Client, asset: str, content_type: str) -> None:
    response = client.get(f"/docs/assets/{asset}")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith(content_type)
    assert len(response.content) > 1000


def test_openapi_json_is_the_merged_document(client: httpx.Client) -> None:
    response = client.get("/openapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    assert response.json() == json.loads((published.OPENAPI_DIR / "openapi.json").read_text())
    assert "no-cache" in response.headers["cache-control"]
    assert response.headers["X-Request-ID"]


@pytest.mark.parametrize(
    "path",
    [
        *(f"/docs/openapi/{p.name}" for p in sorted(published.OPENAPI_DIR.glob("*.json"))),
        *(f"/docs/events/{p.name}" for p in sorted(published.EVENTS_DIR.glob("*.json"))),
    ],
)
def test_published_files_are_served(client: httpx.Client, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 200
    assert response.json() == json.loads((published.DOCS / path.removeprefix("/docs/")).read_text())


def test_every_event_schema_is_served(client: httpx.Client) -> None:
    for name in ("new_order", "order_status_changed", "order_processed"):
        schema = client.get(f"/docs/events/{name}.json").json()
        assert schema["properties"]["event_type"]
        assert "data" in schema["required"]


def test_an_unknown_docs_file_is_a_json_404(client: httpx.Client) -> None:
    for path in ("/docs/events/nothing.json", "/docs/assets/../../etc/passwd", "/docs/x"):
        response = client.get(path)
        assert response.status_code in (400, 404), path
    assert client.get("/docs/events/nothing.json").json() == {"detail": "Not Found"}


def _request_without_credentials(
    client: httpx.Client, method: str, path: str, operation: dict[str, Any]
) -> httpx.Response:
    url = path.replace("{order_id}", str(uuid.uuid4())).replace("{user_id}", "1")
    content = operation.get("requestBody", {}).get("content", {})
    if "application/json" in content:
        return client.request(method, url, json={})
    if "application/x-www-form-urlencoded" in content:
        return client.request(method, url, data={})
    return client.request(method, url)


def test_every_documented_operation_answers_through_the_gateway_as_documented(
    client: httpx.Client,
) -> None:
    """Unauthenticated, with an empty body: each operation answers a status it documents (no
    gateway 404), with a body that fits the documented schema."""
    document = client.get("/openapi.json").json()
    components = document["components"]
    for path, item in document["paths"].items():
        for method, operation in item.items():
            response = _request_without_credentials(client, method, path, operation)
            where = f"{method.upper()} {path}: {response.status_code} {response.text[:200]}"
            assert str(response.status_code) in operation["responses"], where
            documented = operation["responses"][str(response.status_code)]
            schema = documented["content"]["application/json"]["schema"]
            validator = Draft202012Validator({**schema, "components": components})
            errors = [e.message for e in validator.iter_errors(response.json())]
            assert not errors, f"{where}: {errors}"
