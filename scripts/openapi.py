"""Write the published API documents under docs/: the OpenAPI document of each service, the
merged one the gateway serves at /openapi.json (and shows at /docs), and the JSON Schema of each
event envelope. Each app is built with create_app() and asked for its schema; no server starts.

    python scripts/openapi.py          write the files (`make openapi`)
    python scripts/openapi.py --check  exit 1 if a file is stale (`make openapi-check`, and a test)
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
OPENAPI_DIR = DOCS / "openapi"
EVENTS_DIR = DOCS / "events"
GATEWAY_TEMPLATE = ROOT / "gateway" / "nginx.conf.template"

# The upstream names of gateway/nginx.conf.template, and the service each one is.
SERVICES = ("auth", "orders")
TOKEN_OPERATION = "token"  # noqa: S105 (an operation id)
PASSWORD_SCHEME = "OAuth2PasswordBearer"  # noqa: S105 (a scheme name)
BEARER_SCHEME = "HTTPBearer"

MERGED_DESCRIPTION = """\
The public API of the Order Platform as this gateway serves it: accounts and tokens from the \
**auth** service, orders from the **orders** service.

**Try it** on [/docs](/docs):
1. `POST /register/`: *Try it out*, change the example's email if you like, *Execute*. The \
answer carries your user `id`.
2. **Authorize** (top right): under *OAuth2PasswordBearer* enter your email as `username` and \
your password, then *Authorize*. (A token you already have goes under *HTTPBearer*.)
3. `POST /orders/`: *Try it out*, *Execute* the README's example order; then read it, change \
its status and list your orders.

**Conventions**
- Errors are JSON `{"detail": ...}`: a sentence, or for invalid input (422) a list of problems \
that each name the field. Every route documents the statuses it can answer with.
- Money is exact: prices and totals are decimal strings with two places (`"451.00"`).
- Paths work with and without the trailing slash. Request bodies are limited to 1 MiB (413).
- Rate limits answer 429 with `Retry-After`.

**Also here**: [ReDoc](/redoc); the per-service documents \
([auth](/docs/openapi/auth.json), [orders](/docs/openapi/orders.json)); the JSON Schemas of \
the events published on the message bus ([new_order](/docs/events/new_order.json), \
[order_status_changed](/docs/events/order_status_changed.json), \
[order_processed](/docs/events/order_processed.json))."""


@dataclass(frozen=True)
class GatewayRoute:
    """One `location` of the gateway that proxies to a service."""

    path: str
    exact: bool
    upstream: str

    def matches(self, path: str) -> bool:
        return path == self.path if self.exact else path.startswith(self.path)


_LOCATION = re.compile(
    r"location\s+(=\s*)?(\S+)\s*\{\s*proxy_pass\s+http://([A-Za-z0-9_]+)\s*;\s*\}"
)


def gateway_routes(template: str | None = None) -> list[GatewayRoute]:
    """The proxied locations of the gateway template: what the public API is made of."""
    text = GATEWAY_TEMPLATE.read_text() if template is None else template
    return [
        GatewayRoute(path=path, exact=bool(exact), upstream=upstream)
        for exact, path, upstream in _LOCATION.findall(text)
    ]


def service_documents() -> dict[str, dict[str, Any]]:
    """Each service's OpenAPI document, from an app built as in production but never started."""
    from auth_service.main import create_app as create_auth
    from auth_service.settings import Settings as AuthSettings
    from orders_service.main import create_app as create_orders
    from orders_service.settings import Settings as OrdersSettings

    # No .env: the documents must not depend on who generates them.
    return {
        "auth": create_auth(AuthSettings(_env_file=None)).openapi(),
        "orders": create_orders(OrdersSettings(_env_file=None)).openapi(),
    }


def event_documents() -> dict[str, dict[str, Any]]:
    from order_common.events import json_schemas

    return {
        name: {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}
        for name, schema in json_schemas().items()
    }


def _merge_components(
    merged: dict[str, dict[str, Any]], service: str, components: Mapping[str, Any]
) -> None:
    for kind, entries in components.items():
        target = merged.setdefault(kind, {})
        for name, value in entries.items():
            if name in target and target[name] != value:
                raise ValueError(
                    f"components.{kind}.{name} differs between services ({service}); "
                    "rename one model so the merged document stays correct"
                )
            target[name] = value


def _token_url(auth: Mapping[str, Any]) -> str:
    for path, item in auth["paths"].items():
        for operation in item.values():
            if operation.get("operationId") == TOKEN_OPERATION:
                return str(path)
    raise ValueError(f"the auth document has no operation {TOKEN_OPERATION!r}")


def merge(documents: Mapping[str, Mapping[str, Any]], routes: list[GatewayRoute]) -> dict[str, Any]:
    """One document for everything the gateway routes: each service's paths that a proxied
    location serves (so /healthz, /readyz stay per service), components unioned (a name two
    services define differently is an error), and the OAuth2 password flow against the
    gateway's own token endpoint offered next to the plain bearer scheme."""
    documents = copy.deepcopy(documents)
    paths: dict[str, Any] = {}
    components: dict[str, dict[str, Any]] = {}
    tags: list[dict[str, Any]] = []
    for service in SERVICES:
        document = documents[service]
        service_routes = [route for route in routes if route.upstream == service]
        public = {
            path: item
            for path, item in document["paths"].items()
            if any(route.matches(path) for route in service_routes)
        }
        clash = set(public) & set(paths)
        if clash:
            raise ValueError(f"paths served by two services: {sorted(clash)}")
        paths.update(public)
        _merge_components(components, service, document.get("components", {}))
        used_tags = {tag for item in public.values() for op in item.values() for tag in op["tags"]}
        tags.extend(tag for tag in document.get("tags", []) if tag["name"] in used_tags)

    # First, so the Authorize dialog offers the password flow first.
    components["securitySchemes"] = {
        PASSWORD_SCHEME: {
            "type": "oauth2",
            "description": "Log in with your email (as `username`) and password; the page gets "
            "a token from `POST /token/` and sends it as `Authorization: Bearer <token>`.",
            "flows": {"password": {"tokenUrl": _token_url(documents["auth"]), "scopes": {}}},
        },
        **components.get("securitySchemes", {}),
    }
    for item in paths.values():
        for operation in item.values():
            if {BEARER_SCHEME: []} in operation.get("security", []):
                operation["security"] = [{PASSWORD_SCHEME: []}, {BEARER_SCHEME: []}]

    versions = {documents[service]["info"]["version"] for service in SERVICES}
    return {
        "openapi": documents["orders"]["openapi"],
        "info": {
            "title": "Order Platform API",
            "version": versions.pop()
            if len(versions) == 1
            else ", ".join(f"{s} {documents[s]['info']['version']}" for s in SERVICES),
            "description": MERGED_DESCRIPTION,
        },
        "tags": tags,
        "paths": paths,
        "components": {
            "schemas": dict(sorted(components.pop("schemas", {}).items())),
            **components,
        },
    }


def render(document: Mapping[str, Any]) -> str:
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def documents() -> dict[Path, str]:
    """Every published file and its content."""
    services = service_documents()
    files = {OPENAPI_DIR / f"{name}.json": render(doc) for name, doc in services.items()}
    files[OPENAPI_DIR / "openapi.json"] = render(merge(services, gateway_routes()))
    for name, schema in event_documents().items():
        files[EVENTS_DIR / f"{name}.json"] = render(schema)
    return files


def stale_files(files: Mapping[Path, str]) -> list[Path]:
    """Files that differ from what would be written, are missing, or are no longer written."""
    stale = [path for path, text in files.items() if not path.exists() or path.read_text() != text]
    for directory in (OPENAPI_DIR, EVENTS_DIR):
        stale += [path for path in sorted(directory.glob("*.json")) if path not in files]
    return stale


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report stale files")
    args = parser.parse_args()
    files = documents()
    stale = stale_files(files)
    if args.check:
        for path in stale:
            print(f"stale: {path.relative_to(ROOT)}", file=sys.stderr)
        if stale:
            print("run `make openapi` and commit the result", file=sys.stderr)
        return 1 if stale else 0
    for path in stale:
        if path in files:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(files[path])
        else:
            path.unlink()
        print(f"wrote {path.relative_to(ROOT)}" if path in files else f"removed {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
