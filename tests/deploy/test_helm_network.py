"""The Helm chart's traffic: network policies that allow only the architecture's flows, the
HTTPRoute (and Ingress) routing what the nginx gateway routes, and the API docs behind it."""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.deploy import support
from tests.deploy.support import by_kind, named, pod_spec, workloads

FULL = f"{support.RELEASE}-order-platform"
ALL_INTERFACES = "0.0.0.0"  # noqa: S104 (what the containers listen on)


# --- network policies -------------------------------------------------------------------------
def _selects(policy: dict[str, Any], labels: dict[str, str]) -> bool:
    wanted = policy["spec"]["podSelector"].get("matchLabels", {})
    return all(labels.get(k) == v for k, v in wanted.items())


@pytest.mark.parametrize("profile", ["default", "dev", "all-on"])
def test_network_policies_default_deny_then_allow_only_the_architecture(
    rendered: dict[str, list[dict]], profile: str
) -> None:
    objects = rendered[profile]
    policies = by_kind(objects, "NetworkPolicy")
    deny = named(objects, "NetworkPolicy", f"{FULL}-default-deny")
    assert set(deny["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    assert "ingress" not in deny["spec"]
    assert "egress" not in deny["spec"]

    for workload in workloads(objects):
        labels = workload["spec"]["template"]["metadata"]["labels"]
        name = workload["metadata"]["name"]
        mine = [p for p in policies if _selects(p, labels)]
        assert deny in mine, f"{name} escapes the default deny"
        egress = [r for p in mine for r in p["spec"].get("egress", [])]
        assert any({"port": 53, "protocol": "UDP"} in r.get("ports", []) for r in egress), name
        # Every egress rule is restricted to ports: nothing may talk to everything.
        assert all(r.get("ports") for r in egress), name

    def ingress_sources(component: str) -> list[dict[str, Any]]:
        labels = {
            "app.kubernetes.io/instance": support.RELEASE,
            "app.kubernetes.io/name": "order-platform",
            "app.kubernetes.io/component": component,
        }
        return [
            s
            for p in policies
            if _selects(p, labels)
            for r in p["spec"].get("ingress", [])
            for s in r.get("from", [])
        ]

    # auth: the gateway, orders (JWKS), monitoring. orders: the gateway and monitoring. The
    # relay, consumer and worker: monitoring on their metrics port only. Migrations: nobody.
    auth_sources = ingress_sources("auth")
    assert {
        "podSelector": {
            "matchLabels": {
                "app.kubernetes.io/name": "order-platform",
                "app.kubernetes.io/instance": support.RELEASE,
                "app.kubernetes.io/component": "orders",
            }
        }
    } in auth_sources
    assert all(auth_sources)
    assert ingress_sources("migrations") == []
    monitoring = support.PROFILES["dev"]["networkPolicy"]["monitoringPeers"]  # type: ignore[index]
    for worker in ("orders-events", "event-consumer", "worker"):
        assert ingress_sources(worker) == monitoring, worker
        policy = named(objects, "NetworkPolicy", f"{FULL}-{worker}-ingress")
        assert [r["ports"] for r in policy["spec"]["ingress"]] == [
            [{"port": "metrics", "protocol": "TCP"}]
        ], worker
    for web in ("auth", "orders"):
        assert all(m in ingress_sources(web) for m in monitoring), web
    orders_sources = ingress_sources("orders")
    assert not any(
        s.get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/component")
        in {"auth", "worker", "event-consumer", "orders-events"}
        for s in orders_sources
    )

    # orders may call auth (JWKS); nothing else calls another service directly.
    orders_egress = named(objects, "NetworkPolicy", f"{FULL}-orders-egress")["spec"]["egress"]
    assert any(r["ports"] == [{"port": 8001, "protocol": "TCP"}] for r in orders_egress)
    data_ports = {"postgres": 5432, "redis": 6379, "rabbitmq": 5672}
    expected = {
        "auth": {"postgres", "redis"},
        "orders-events": {"postgres", "redis", "rabbitmq"},
        "event-consumer": {"redis", "rabbitmq"},
        "worker": {"redis", "rabbitmq"},
        "migrations": {"postgres"},
    }
    for component, services in expected.items():
        rules = named(objects, "NetworkPolicy", f"{FULL}-{component}-egress")["spec"]["egress"]
        ports = {p["port"] for r in rules for p in r["ports"]}
        otlp = {4317} if objects is rendered["all-on"] and component != "migrations" else set()
        assert ports == {data_ports[s] for s in services} | otlp, component


# --- routing ----------------------------------------------------------------------------------
def test_http_route_routes_exactly_what_the_nginx_gateway_routes(
    rendered: dict[str, list[dict]],
) -> None:
    template = (support.ROOT / "gateway" / "nginx.conf.template").read_text()
    nginx: set[tuple[str, str, str]] = set()
    for modifier, path, upstream in re.findall(
        r"location\s+(=?)\s*(/[^\s{]*)\s*\{\s*proxy_pass http://(\w+);", template
    ):
        nginx.add(("Exact" if modifier else "PathPrefix", path, upstream))
    route = by_kind(rendered["dev"], "HTTPRoute")[0]
    routed: set[tuple[str, str, str]] = set()
    for rule in route["spec"]["rules"]:
        backend = rule["backendRefs"][0]["name"].removeprefix(f"{FULL}-")
        if backend == "docs":  # nginx serves those itself (test_api_docs_are_routed)
            continue
        for match in rule["matches"]:
            routed.add((match["path"]["type"], match["path"]["value"], backend))
    # nginx's `location = /orders` + `location /orders/` is one Gateway API PathPrefix /orders
    # (Gateway API prefixes match whole path segments).
    nginx -= {("Exact", "/orders", "orders"), ("PathPrefix", "/orders/", "orders")}
    nginx.add(("PathPrefix", "/orders", "orders"))
    assert routed == nginx
    parent = route["spec"]["parentRefs"][0]
    assert (parent["name"], parent["namespace"]) == ("order-platform", "envoy-gateway-system")


def test_ingress_fallback_and_optional_nginx_gateway(rendered: dict[str, list[dict]]) -> None:
    objects = rendered["all-on"]
    ingress = by_kind(objects, "Ingress")[0]
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": f"{FULL}-gateway", "port": {"number": 8000}}
    gateway = named(objects, "Deployment", f"{FULL}-gateway")
    container = pod_spec(gateway)["containers"][0]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["AUTH_UPSTREAM"] == f"{FULL}-auth:8001"
    assert env["ORDERS_UPSTREAM"] == f"{FULL}-orders:8002"
    assert container["image"] == "order-platform/gateway:0.1.0"
    # The image's ENV and the pod's env define every ${VAR} of the template.
    assert not support.template_variables() - set(support.gateway_image_env()) - set(env)
    direct = support.render({"ingress": {"enabled": True}})
    paths = by_kind(direct, "Ingress")[0]["spec"]["rules"][0]["http"]["paths"]
    assert {p["path"]: p["backend"]["service"]["name"] for p in paths} == {
        "/register": f"{FULL}-auth",
        "/token": f"{FULL}-auth",
        "/.well-known": f"{FULL}-auth",
        "/orders": f"{FULL}-orders",
    }


# --- API docs and `helm test` -----------------------------------------------------------------
DOCS_PATHS = {
    ("Exact", "/docs"),
    ("PathPrefix", "/docs/"),
    ("Exact", "/redoc"),
    ("Exact", "/redoc/"),
    ("Exact", "/openapi.json"),
}


def _docs_rule(objects: list[dict[str, Any]]) -> tuple[set[tuple[str, str]], dict[str, Any]]:
    route = by_kind(objects, "HTTPRoute")[0]
    for rule in route["spec"]["rules"]:
        paths = {(m["path"]["type"], m["path"]["value"]) for m in rule["matches"]}
        if ("Exact", "/openapi.json") in paths:
            return paths, rule["backendRefs"][0]
    raise AssertionError("no HTTPRoute rule for the API docs")


def test_api_docs_are_routed_to_an_nginx_that_serves_them(rendered: dict[str, list[dict]]) -> None:
    template = support.without_comments(support.GATEWAY_TEMPLATE.read_text())
    # What nginx serves itself (root/alias), every one of them reachable through the route.
    served = set(re.findall(r"location\s+=?\s*(/(?:docs|redoc|openapi)[^\s{]*)\s*\{", template))
    assert {"/docs", "/redoc", "/openapi.json", "/docs/openapi/", "/docs/assets/"} <= served
    paths, backend = _docs_rule(rendered["default"])
    assert paths == DOCS_PATHS
    assert all(
        any(p == v or (t == "PathPrefix" and p.startswith(v)) for t, v in paths) for p in served
    )
    # By default a small docs workload, from the gateway image (the docs are baked into it).
    assert backend == {"name": f"{FULL}-docs", "port": 8000}
    docs = named(rendered["default"], "Deployment", f"{FULL}-docs")
    container = pod_spec(docs)["containers"][0]
    assert container["image"] == "order-platform/gateway:0.1.0"
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {"http": 8000}
    service = named(rendered["default"], "Service", f"{FULL}-docs")
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    env = {e["name"]: e["value"] for e in container["env"]}
    assert not support.template_variables() - set(support.gateway_image_env()) - set(env)
    policy = named(rendered["default"], "NetworkPolicy", f"{FULL}-docs")
    assert (
        policy["spec"]["ingress"][0]["from"]
        == support.load_values("values.yaml")["networkPolicy"]["gatewayPeers"]
    )
    # With the nginx gateway on, it serves the docs and no docs workload runs.
    _, backend = _docs_rule(rendered["all-on"])
    assert backend == {"name": f"{FULL}-gateway", "port": 8000}
    assert not [
        d
        for d in by_kind(rendered["all-on"], "Deployment")
        if d["metadata"]["name"].endswith("-docs")
    ]
    off = support.render({"docs": {"enabled": False}})
    assert not [o for o in off if o["metadata"]["name"] == f"{FULL}-docs"]
    assert all(
        ("Exact", "/openapi.json")
        not in {(m["path"]["type"], m["path"]["value"]) for m in r["matches"]}
        for r in by_kind(off, "HTTPRoute")[0]["spec"]["rules"]
    )
