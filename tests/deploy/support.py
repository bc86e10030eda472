"""Helpers of the deployment checks: render the chart, validate objects with the real tools."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "order-platform"
SCHEMAS = Path(__file__).resolve().parent / "schemas"
VENV_BIN = Path(sys.executable).parent

# The Kubernetes versions the chart supports (Chart.yaml kubeVersion): oldest and newest.
KUBE_VERSIONS = ("1.29.0", "1.37.0")

RELEASE = "op"
NAMESPACE = "shop"

# Every template switched on, so each one is validated at least once.
ALL_ON: dict[str, Any] = {
    "environment": "development",
    "jwt": {"generate": True},
    "telemetry": {"enabled": True},
    "gateway": {"enabled": True},
    "ingress": {
        "enabled": True,
        "className": "nginx",
        "viaGateway": True,
        "tls": [{"hosts": ["orders.example.com"], "secretName": "orders-tls"}],
    },
    "serviceMonitor": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}},
    "prometheusRule": {
        "enabled": True,
        "extraGroups": [{"name": "extra", "rules": [{"record": "x:y", "expr": "vector(1)"}]}],
    },
    "connections": {"values": {"authDatabaseUrl": "postgresql+asyncpg://u:p@db/auth"}},
}


def load_values(name: str) -> dict[str, Any]:
    return yaml.safe_load((CHART / name).read_text())


EXAMPLES = sorted((CHART / "examples").glob("*.yaml"))

PROFILES: dict[str, dict[str, Any] | None] = {
    "default": None,
    "dev": load_values("values-dev.yaml"),
    "production": load_values("values-production.yaml"),
    "all-on": ALL_ON,
    # helm/order-platform/examples/*.yaml, each as profile "example-<name>".
    **{f"example-{p.stem}": load_values(f"examples/{p.name}") for p in EXAMPLES},
}

# Kinds kubernetes-validate knows; everything else is a CRD with a schema under schemas/.
CRD_SCHEMAS = {
    ("gateway.networking.k8s.io/v1", "HTTPRoute"): "httproute-gateway.networking.k8s.io-v1.json",
    ("gateway.networking.k8s.io/v1", "Gateway"): "gateway-gateway.networking.k8s.io-v1.json",
    (
        "gateway.networking.k8s.io/v1",
        "GatewayClass",
    ): "gatewayclass-gateway.networking.k8s.io-v1.json",
    (
        "gateway.envoyproxy.io/v1alpha1",
        "EnvoyProxy",
    ): "envoyproxy-gateway.envoyproxy.io-v1alpha1.json",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "servicemonitor-monitoring.coreos.com-v1.json",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "prometheusrule-monitoring.coreos.com-v1.json",
}
# CRDs the npm @kubernetes-models packages have generated validators for.
NODE_MODEL_APIS = {"gateway.networking.k8s.io/v1", "monitoring.coreos.com/v1"}


def render(
    values: dict[str, Any] | None,
    chart: Path = CHART,
    release: str = RELEASE,
    namespace: str = NAMESPACE,
) -> list[dict[str, Any]]:
    import helm_python

    with helm_python.Chart.load(chart) as loaded:
        files = loaded.render(values, name=release, namespace=namespace)
    objects: list[dict[str, Any]] = []
    for path, text in sorted(files.items()):
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                doc.setdefault("metadata", {}).setdefault("annotations", {})
                doc["metadata"]["annotations"].setdefault("x-template", path)
                objects.append(doc)
    return objects


def notes(values: dict[str, Any] | None) -> str:
    import helm_python

    with helm_python.Chart.load(CHART) as loaded:
        files = loaded.render(values, name=RELEASE, namespace=NAMESPACE)
    return next(text for path, text in files.items() if path.endswith("NOTES.txt"))


def strip_marker(obj: dict[str, Any]) -> dict[str, Any]:
    """The object without the x-template annotation the render adds for error messages."""
    clean = json.loads(json.dumps(obj))
    annotations = clean["metadata"].get("annotations", {})
    annotations.pop("x-template", None)
    if not annotations:
        clean["metadata"].pop("annotations", None)
    return clean


def is_crd(obj: dict[str, Any]) -> bool:
    return (obj["apiVersion"], obj["kind"]) in CRD_SCHEMAS


def kubernetes_validate(tool: str, objects: list[dict[str, Any]], version: str) -> str:
    """Run kubernetes-validate --strict; return its complaints, warnings included ('' if clean)."""
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as handle:
        yaml.safe_dump_all([strip_marker(o) for o in objects], handle, sort_keys=False)
    result = subprocess.run(
        [tool, "--strict", "--quiet", "-k", version, handle.name],
        capture_output=True,
        text=True,
    )
    Path(handle.name).unlink()
    complaints = (result.stdout + result.stderr).strip()
    if result.returncode != 0 and not complaints:
        complaints = f"kubernetes-validate exited {result.returncode}"
    return complaints


def validate_crds(tool: str, objects: list[dict[str, Any]]) -> list[str]:
    """check-jsonschema --schemafile per CRD object; returns the failures."""
    failures = []
    for obj in objects:
        schema = SCHEMAS / CRD_SCHEMAS[(obj["apiVersion"], obj["kind"])]
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
            json.dump(strip_marker(obj), handle)
        result = subprocess.run(
            [tool, "--schemafile", str(schema), handle.name], capture_output=True, text=True
        )
        Path(handle.name).unlink()
        if result.returncode != 0:
            failures.append(
                f"{obj['kind']}/{obj['metadata']['name']}: {result.stdout}{result.stderr}"
            )
    return failures


def validate_with_node_models(modules: Path, objects: list[dict[str, Any]]) -> str:
    chosen = [strip_marker(o) for o in objects if o["apiVersion"] in NODE_MODEL_APIS]
    if not chosen:
        return ""
    result = subprocess.run(
        ["node", str(Path(__file__).with_name("crd_models.mjs")), str(modules)],
        input=json.dumps(chosen),
        capture_output=True,
        text=True,
    )
    return "" if result.returncode == 0 else (result.stdout + result.stderr)


# --- settings: every variable the deployment sets must be a real setting ---------------------
SETTINGS_MODULES = {
    "AUTH_": "auth_service.settings",
    "ORDERS_": "orders_service.settings",
    "CONSUMER_": "event_consumer.settings",
    "WORKER_": "order_worker.settings",
}
# Read by something other than a Settings class (uvicorn, the OpenTelemetry SDK, the
# local stack's ports, the gateway template).
FOREIGN_VARIABLES = {"AUTH_PORT", "ORDERS_PORT", "AUTH_UPSTREAM", "ORDERS_UPSTREAM"}


def settings_fields(prefix: str) -> set[str] | None:
    """The field names of the service's Settings, or None when that service is not there yet."""
    try:
        module = importlib.import_module(SETTINGS_MODULES[prefix])
    except ImportError:
        return None
    settings_class = getattr(module, "Settings", None)
    if settings_class is None:
        return None
    return set(settings_class.model_fields)


def unknown_settings(variables: set[str]) -> list[str]:
    unknown = []
    for variable in sorted(variables - FOREIGN_VARIABLES):
        prefix = next((p for p in SETTINGS_MODULES if variable.startswith(p)), None)
        if prefix is None:
            continue
        fields = settings_fields(prefix)
        if fields is not None and variable[len(prefix) :].lower() not in fields:
            unknown.append(variable)
    return unknown


def workloads(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] in {"Deployment", "StatefulSet", "DaemonSet", "Job"}]


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    return workload["spec"]["template"]["spec"]


def by_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def named(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    matches = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert matches, (
        f"no {kind} {name}; have {[o['metadata']['name'] for o in by_kind(objects, kind)]}"
    )
    return matches[0]


# --- the gateway image ----------------------------------------------------------------------
GATEWAY_TEMPLATE = ROOT / "gateway" / "nginx.conf.template"


def dockerfile_stage(name: str) -> str:
    import re

    text = (ROOT / "Dockerfile").read_text()
    match = re.search(rf"^FROM \S+ AS {re.escape(name)}\n(.*?)(?=^FROM |\Z)", text, re.M | re.S)
    assert match, f"no stage {name}"
    return match.group(1)


def gateway_image_env() -> dict[str, str]:
    """The ENV of the Dockerfile's gateway stage."""
    import re

    stage = dockerfile_stage("gateway")
    env: dict[str, str] = {}
    for block in re.findall(r"^ENV (.*?)(?<!\\)$", stage, re.M | re.S):
        for key, value in re.findall(r"([A-Z_][A-Z0-9_]*)=(\S+)", block):
            env[key] = value
    return env


def without_comments(config: str) -> str:
    import re

    return re.sub(r"(?m)^\s*#.*$", "", config)


def template_variables() -> set[str]:
    """The ${VAR}s the gateway template needs (comments mention ${NAME} forms too)."""
    import re

    text = without_comments(GATEWAY_TEMPLATE.read_text())
    return set(re.findall(r"\$\{([A-Z_][A-Z0-9_]*)\}", text))


def expand_env(container: dict[str, Any], secrets: dict[str, dict[str, str]]) -> dict[str, str]:
    """The container's environment as the kubelet builds it: each secretKeyRef read from
    ``secrets`` (name -> key -> value), then $(VAR) replaced by variables defined before it."""
    import re

    env: dict[str, str] = {}
    for entry in container.get("env", []):
        if "valueFrom" in entry:
            ref = entry["valueFrom"]["secretKeyRef"]
            value = secrets[ref["name"]][ref["key"]]
        else:
            value = re.sub(
                r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
                lambda m: env.get(m.group(1), m.group(0)),
                str(entry.get("value", "")),
            )
        env[entry["name"]] = value
    return env
