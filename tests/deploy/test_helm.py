"""The Helm chart: lint, render, validate every object, and the properties a reviewer checks."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from tests.deploy import support
from tests.deploy.support import by_kind, named, pod_spec, workloads

FULL = f"{support.RELEASE}-order-platform"
ALL_INTERFACES = "0.0.0.0"  # noqa: S104 (what the containers listen on)
PROFILE_NAMES = list(support.PROFILES)


# --- lint and validation ------------------------------------------------------------------
@pytest.mark.parametrize("kube_version", support.KUBE_VERSIONS)
@pytest.mark.parametrize("profile", PROFILE_NAMES)
def test_chart_lints_strictly(helm: Any, profile: str, kube_version: str) -> None:
    report = helm.lint(
        support.CHART, support.PROFILES[profile], strict=True, kube_version=f"v{kube_version}"
    )
    problems = [m for m in report["messages"] if m["severity"] >= 2] + report["errors"]
    assert not problems, problems


@pytest.mark.parametrize("kube_version", support.KUBE_VERSIONS)
@pytest.mark.parametrize("profile", PROFILE_NAMES)
def test_every_builtin_object_is_valid_kubernetes(
    rendered: dict[str, list[dict]], kubernetes_validate: str, profile: str, kube_version: str
) -> None:
    builtins = [o for o in rendered[profile] if not support.is_crd(o)]
    complaints = support.kubernetes_validate(kubernetes_validate, builtins, kube_version)
    # Any output is a failure, warnings included ("Couldn't find schema" = an unknown kind).
    assert complaints == "", complaints


@pytest.mark.parametrize("profile", PROFILE_NAMES)
def test_custom_resources_match_their_crd_schemas(
    rendered: dict[str, list[dict]], check_jsonschema: str, node_models: Path | None, profile: str
) -> None:
    crds = [o for o in rendered[profile] if support.is_crd(o)]
    assert not support.validate_crds(check_jsonschema, crds)
    if node_models is not None:
        assert support.validate_with_node_models(node_models, crds) == ""


def test_all_templates_are_exercised(rendered: dict[str, list[dict]]) -> None:
    kinds = {o["kind"] for o in rendered["all-on"]}
    assert {
        "Deployment",
        "Service",
        "ConfigMap",
        "Secret",
        "ServiceAccount",
        "Job",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "NetworkPolicy",
        "HTTPRoute",
        "Ingress",
        "ServiceMonitor",
        "PrometheusRule",
    } <= kinds
    templates = {p.name for p in (support.CHART / "templates").glob("*.yaml")}
    used = {
        Path(o["metadata"]["annotations"]["x-template"]).name
        for profile in rendered.values()
        for o in profile
    }
    # dashboards.yaml renders nothing without dashboards: test_dashboards_* covers it.
    assert templates - used <= {"dashboards.yaml"}


def test_schema_rejects_wrong_values(helm: Any) -> None:
    for bad in (
        {"environment": "prod"},
        {"auth": {"port": "8001"}},
        {"unknownTopLevel": True},
        {"corsAllowOrigins": ["*"]},
        {"ingress": {"enabled": True, "viaGateway": True}},  # needs gateway.enabled
    ):
        with pytest.raises(helm.HelmError):
            support.render(bad)


# --- workloads ------------------------------------------------------------------------------
@pytest.mark.parametrize("profile", PROFILE_NAMES)
def test_every_workload_is_locked_down(rendered: dict[str, list[dict]], profile: str) -> None:
    objects = rendered[profile]
    assert workloads(objects)
    for workload in workloads(objects):
        name = workload["metadata"]["name"]
        spec = pod_spec(workload)
        assert spec["automountServiceAccountToken"] is False, name
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True, name
        assert pod["runAsUser"] > 0, name
        assert pod["seccompProfile"]["type"] == "RuntimeDefault", name
        tmp = [v for v in spec["volumes"] if v["name"] == "tmp"]
        assert tmp, name
        assert "emptyDir" in tmp[0], name
        for container in spec["containers"] + spec.get("initContainers", []):
            where = f"{name}/{container['name']}"
            sc = container["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc["readOnlyRootFilesystem"] is True, where
            assert sc["runAsNonRoot"] is True, where
            assert sc["capabilities"]["drop"] == ["ALL"], where
            assert sc["seccompProfile"]["type"] == "RuntimeDefault", where
            assert "add" not in sc["capabilities"], where
            assert {"cpu", "memory"} <= set(container["resources"]["requests"]), where
            assert {"cpu", "memory"} <= set(container["resources"]["limits"]), where
            mounts = {m["mountPath"] for m in container["volumeMounts"]}
            assert "/tmp" in mounts, where  # noqa: S108
            image = container["image"]
            assert not image.endswith(":latest"), where
            assert ":" in image or "@" in image, where


@pytest.mark.parametrize("profile", ["default", "dev", "all-on"])
def test_long_running_containers_have_probes(rendered: dict[str, list[dict]], profile: str) -> None:
    for workload in by_kind(rendered[profile], "Deployment"):
        for container in pod_spec(workload)["containers"]:
            where = f"{workload['metadata']['name']}/{container['name']}"
            assert container.get("livenessProbe"), where
            assert container.get("readinessProbe"), where
            ports = {p["name"] for p in container.get("ports", [])}
            if "http" in ports:
                # Web services: alive on /healthz, ready (dependencies answer) on /readyz.
                assert container["livenessProbe"]["httpGet"]["path"] == "/healthz", where
                path = container["readinessProbe"]["httpGet"]["path"]
                nginx = container["name"] in {"gateway", "docs"}
                assert path == ("/healthz" if nginx else "/readyz"), where
            elif ports:
                # No HTTP API: alive = the metrics server (it serves only /metrics) answers.
                assert ports == {"metrics"}, where
                assert container["livenessProbe"]["httpGet"] == {
                    "path": "/metrics",
                    "port": "metrics",
                }, where


def test_service_accounts_do_not_mount_tokens(rendered: dict[str, list[dict]]) -> None:
    accounts = by_kind(rendered["all-on"], "ServiceAccount")
    assert len(accounts) >= 6
    assert all(a["automountServiceAccountToken"] is False for a in accounts)
    names = {a["metadata"]["name"] for a in accounts}
    for workload in workloads(rendered["all-on"]):
        assert pod_spec(workload)["serviceAccountName"] in names


def test_components_and_commands(rendered: dict[str, list[dict]]) -> None:
    objects = rendered["default"]
    commands = {
        d["metadata"]["name"]: pod_spec(d)["containers"][0].get("command")
        for d in by_kind(objects, "Deployment")
    }
    assert commands == {
        f"{FULL}-auth": ["auth-service", "serve", "--host", ALL_INTERFACES, "--port", "8001"],
        f"{FULL}-orders": ["orders-service", "serve", "--host", ALL_INTERFACES, "--port", "8002"],
        f"{FULL}-orders-events": ["orders-service", "events"],
        f"{FULL}-event-consumer": ["event-consumer"],
        f"{FULL}-worker": ["order-worker"],
        # nginx from the gateway image, its own entrypoint (the API docs).
        f"{FULL}-docs": None,
    }
    images = {
        d["metadata"]["name"]: pod_spec(d)["containers"][0]["image"]
        for d in by_kind(objects, "Deployment")
    }
    assert (
        images[f"{FULL}-orders-events"] == images[f"{FULL}-orders"] == "order-platform/orders:0.1.0"
    )


def test_settings_reach_the_services_under_their_real_names(
    rendered: dict[str, list[dict]],
) -> None:
    for profile in ("default", "production", "all-on"):
        objects = rendered[profile]
        variables: set[str] = set()
        for config in by_kind(objects, "ConfigMap"):
            if config["metadata"]["name"].endswith("-gateway"):
                continue
            variables |= {k for k in config["data"] if re.fullmatch(r"[A-Z_][A-Z0-9_]*", k)}
        for workload in workloads(objects):
            for container in pod_spec(workload)["containers"] + pod_spec(workload).get(
                "initContainers", []
            ):
                variables |= {e["name"] for e in container.get("env", [])}
        assert not support.unknown_settings(variables), profile


def test_jwt_key_is_a_mounted_secret_file(rendered: dict[str, list[dict]]) -> None:
    objects = rendered["dev"]
    auth = named(objects, "Deployment", f"{FULL}-auth")
    config = named(objects, "ConfigMap", f"{FULL}-auth")["data"]
    mount = next(m for m in pod_spec(auth)["containers"][0]["volumeMounts"] if m["name"] == "jwt")
    volume = next(v for v in pod_spec(auth)["volumes"] if v["name"] == "jwt")
    key_file = volume["secret"]["items"][0]["path"]
    assert config["AUTH_JWT_PRIVATE_KEY_PATH"] == f"{mount['mountPath']}/{key_file}"
    assert mount["readOnly"] is True
    secret = named(objects, "Secret", volume["secret"]["secretName"])
    assert secret["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert key_file in secret["data"]
    # Only auth holds the signing key.
    for workload in workloads(objects):
        if workload is not auth:
            assert all(
                "secret" not in v or "jwt" not in v["secret"]["secretName"]
                for v in pod_spec(workload)["volumes"]
            )


def test_a_key_ring_mounts_every_key_of_the_secret_as_a_directory() -> None:
    objects = support.render({"jwt": {"existingSecret": "shop-jwt-keys", "keyRing": True}})
    auth = named(objects, "Deployment", f"{FULL}-auth")
    config = named(objects, "ConfigMap", f"{FULL}-auth")["data"]
    mount = next(m for m in pod_spec(auth)["containers"][0]["volumeMounts"] if m["name"] == "jwt")
    volume = next(v for v in pod_spec(auth)["volumes"] if v["name"] == "jwt")
    # The whole Secret (no items, no subPath, so updates reach the pod) at the key path.
    assert volume["secret"]["secretName"] == "shop-jwt-keys"
    assert "items" not in volume["secret"]
    assert "subPath" not in mount
    assert config["AUTH_JWT_PRIVATE_KEY_PATH"] == mount["mountPath"]


def test_existing_secrets_replace_the_generated_ones(rendered: dict[str, list[dict]]) -> None:
    objects = rendered["production"]
    assert not by_kind(objects, "Secret"), "production values name existing Secrets"
    for workload in workloads(objects):
        for container in pod_spec(workload)["containers"]:
            for env in container.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["name"] == "order-platform-connections"


def test_orders_finds_auth_jwks_in_cluster(rendered: dict[str, list[dict]]) -> None:
    config = named(rendered["default"], "ConfigMap", f"{FULL}-orders")["data"]
    assert config["ORDERS_JWKS_URL"] == (
        f"http://{FULL}-auth.{support.NAMESPACE}.svc:8001/.well-known/jwks.json"
    )
    service = named(rendered["default"], "Service", f"{FULL}-auth")
    assert service["spec"]["ports"][0]["port"] == 8001


# --- migrations -----------------------------------------------------------------------------
def test_migrations_run_as_a_pre_install_and_pre_upgrade_hook(
    rendered: dict[str, list[dict]],
) -> None:
    job = named(rendered["default"], "Job", f"{FULL}-migrations")
    annotations = job["metadata"]["annotations"]
    assert annotations["helm.sh/hook"] == "pre-install,pre-upgrade"
    spec = pod_spec(job)
    assert [c["command"] for c in spec["initContainers"] + spec["containers"]] == [
        ["auth-service", "migrate"],
        ["orders-service", "migrate"],
    ]
    # What the hook uses must exist before the release's own objects: hooks too, created first.
    for kind in ("ServiceAccount", "Secret"):
        dependency = named(rendered["default"], kind, f"{FULL}-migrations")
        assert dependency["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
        assert int(dependency["metadata"]["annotations"]["helm.sh/hook-weight"]) < int(
            annotations["helm.sh/hook-weight"]
        )
    production_job = named(rendered["production"], "Job", f"{FULL}-migrations")
    refs = {
        e["valueFrom"]["secretKeyRef"]["name"]
        for c in pod_spec(production_job)["initContainers"] + pod_spec(production_job)["containers"]
        for e in c["env"]
        if "valueFrom" in e
    }
    assert refs == {"order-platform-connections"}


# --- scaling ----------------------------------------------------------------------------------
def test_http_services_and_worker_autoscale_with_disruption_budgets(
    rendered: dict[str, list[dict]],
) -> None:
    objects = rendered["default"]
    hpas = {
        h["spec"]["scaleTargetRef"]["name"] for h in by_kind(objects, "HorizontalPodAutoscaler")
    }
    assert hpas == {f"{FULL}-auth", f"{FULL}-orders", f"{FULL}-worker"}
    pdbs = {p["metadata"]["name"] for p in by_kind(objects, "PodDisruptionBudget")}
    assert {f"{FULL}-auth", f"{FULL}-orders", f"{FULL}-worker"} <= pdbs
    for deployment in by_kind(objects, "Deployment"):
        name = deployment["metadata"]["name"]
        # An HPA owns the replica count: the Deployment must not fight it on every upgrade.
        assert ("replicas" in deployment["spec"]) == (name not in hpas), name


def test_notes_warn_about_missing_secrets(helm: Any) -> None:
    assert "WARNING: some data service URLs are empty" in support.notes(None)
    assert "WARNING: no JWT signing key" in support.notes(None)
    production = support.notes(support.PROFILES["production"])
    assert "WARNING" not in production


def test_helm_test_pod_checks_readiness_and_the_route(
    rendered: dict[str, list[dict]], kubernetes_validate: str
) -> None:
    pod = named(rendered["default"], "Pod", f"{FULL}-test")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    container = pod["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["AUTH_URL"] == f"http://{FULL}-auth:8001"
    assert env["ORDERS_URL"] == f"http://{FULL}-orders:8002"
    assert env["ROUTE_URL"] == ""  # no Gateway address given: routes skipped, said so
    script = container["args"][0]
    for path in ('"/readyz"', '"/.well-known/jwks.json"', '"/orders/"', '"/openapi.json"'):
        assert path in script, path
    compile(script, "helm-test", "exec")  # the script is valid Python
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["spec"]["automountServiceAccountToken"] is False
    # Through the nginx gateway when it runs; through the given Gateway otherwise.
    gateway_pod = named(rendered["all-on"], "Pod", f"{FULL}-test")
    env = {e["name"]: e["value"] for e in gateway_pod["spec"]["containers"][0]["env"]}
    assert env["ROUTE_URL"] == f"http://{FULL}-gateway:8000"
    given = support.render(
        {
            "helmTest": {"routeUrl": "https://api.shop.example.com"},
            "httpRoute": {"hostnames": ["api.shop.example.com"]},
        }
    )
    test_pod = named(given, "Pod", f"{FULL}-test")
    env = {e["name"]: e["value"] for e in test_pod["spec"]["containers"][0]["env"]}
    assert (env["ROUTE_URL"], env["ROUTE_HOST"]) == (
        "https://api.shop.example.com",
        "api.shop.example.com",
    )
    # The default deny holds for the test Pod: it may reach auth, orders and the Gateway.
    policy = named(given, "NetworkPolicy", f"{FULL}-test")
    ports = [p["port"] for r in policy["spec"]["egress"] for p in r["ports"]]
    assert ports == [8001, 8002, 443]
    for web in ("auth", "orders"):
        ingress = named(given, "NetworkPolicy", f"{FULL}-{web}-ingress")["spec"]["ingress"][0]
        assert {
            "podSelector": {
                "matchLabels": {
                    "app.kubernetes.io/name": "order-platform",
                    "app.kubernetes.io/instance": support.RELEASE,
                    "app.kubernetes.io/component": "helm-test",
                }
            }
        } in ingress["from"], web
    for version in support.KUBE_VERSIONS:
        assert support.kubernetes_validate(kubernetes_validate, [pod, policy], version) == ""
    assert not [o for o in support.render({"helmTest": {"enabled": False}}) if o["kind"] == "Pod"]
