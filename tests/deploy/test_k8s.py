"""k8s/: the kustomization renders and validates; the kind and monitoring settings agree with
the chart's dev values."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy import support
from tests.deploy.conftest import require_tool
from tests.deploy.support import by_kind, named

K8S = support.ROOT / "k8s"


@pytest.fixture(scope="module")
def kustomized() -> list[dict[str, Any]]:
    kubectl = require_tool("kubectl", "/usr/bin/kubectl")
    result = subprocess.run([kubectl, "kustomize", str(K8S)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


@pytest.mark.parametrize("kube_version", support.KUBE_VERSIONS)
def test_kustomization_renders_valid_objects(
    kustomized: list[dict[str, Any]], kubernetes_validate: str, kube_version: str
) -> None:
    builtins = [o for o in kustomized if not support.is_crd(o)]
    for obj in builtins:
        obj.setdefault("metadata", {})
    assert support.kubernetes_validate(kubernetes_validate, builtins, kube_version) == ""


def test_kustomized_custom_resources_match_their_schemas(
    kustomized: list[dict[str, Any]], check_jsonschema: str, node_models: Path | None
) -> None:
    crds = [o for o in kustomized if support.is_crd(o)]
    assert {o["kind"] for o in crds} == {"Gateway", "GatewayClass", "EnvoyProxy"}
    assert not support.validate_crds(check_jsonschema, crds)
    if node_models is not None:
        assert support.validate_with_node_models(node_models, crds) == ""


def test_dev_data_services_are_what_values_dev_points_at(kustomized: list[dict[str, Any]]) -> None:
    services = {
        (s["metadata"]["name"], s["metadata"]["namespace"]): {p["port"] for p in s["spec"]["ports"]}
        for s in by_kind(kustomized, "Service")
    }
    urls = support.load_values("values-dev.yaml")["connections"]["values"]
    for url in urls.values():
        host_port = url.split("@")[-1].split("//")[-1].split("/")[0]
        host, port = host_port.split(":")
        name, namespace, _ = host.split(".")
        assert int(port) in services[(name, namespace)], url
    images = {
        c["image"]
        for s in by_kind(kustomized, "StatefulSet")
        for c in s["spec"]["template"]["spec"]["containers"]
    }
    assert {i.split(":")[0] for i in images} == {"postgres", "redis", "rabbitmq"}
    assert all(":" in i and not i.endswith(":latest") for i in images)
    for sts in by_kind(kustomized, "StatefulSet"):
        for container in sts["spec"]["template"]["spec"]["containers"]:
            name = sts["metadata"]["name"]
            assert container["resources"]["limits"], name
            assert container["readinessProbe"], name
    # The data network policies of values-dev select these pods.
    netpol = support.load_values("values-dev.yaml")["networkPolicy"]
    for service in ("postgres", "redis", "rabbitmq"):
        peer = netpol[service]["to"][0]
        pod_labels = named(kustomized, "StatefulSet", service)["spec"]["template"]["metadata"][
            "labels"
        ]
        assert peer["podSelector"]["matchLabels"].items() <= pod_labels.items()
        assert (
            peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"] == "order-data"
        )


def test_kind_maps_the_gateway_nodeport_to_host_8000(kustomized: list[dict[str, Any]]) -> None:
    cluster = yaml.safe_load((K8S / "kind-cluster.yaml").read_text())
    assert cluster["kind"] == "Cluster"
    assert cluster["apiVersion"] == "kind.x-k8s.io/v1alpha4"
    mapping = cluster["nodes"][0]["extraPortMappings"][0]
    assert mapping["hostPort"] == 8000
    proxy = by_kind(kustomized, "EnvoyProxy")[0]
    patch = proxy["spec"]["provider"]["kubernetes"]["envoyService"]["patch"]["value"]
    assert patch["spec"]["ports"][0]["nodePort"] == mapping["containerPort"]
    gateway = by_kind(kustomized, "Gateway")[0]
    assert gateway["spec"]["listeners"][0]["port"] == patch["spec"]["ports"][0]["port"]
    dev_route = support.load_values("values-dev.yaml")["httpRoute"]["parentRefs"][0]
    assert (dev_route["name"], dev_route["namespace"]) == (
        gateway["metadata"]["name"],
        gateway["metadata"]["namespace"],
    )
    assert (
        gateway["spec"]["gatewayClassName"]
        == by_kind(kustomized, "GatewayClass")[0]["metadata"]["name"]
    )


def test_monitoring_stack_picks_up_the_chart_objects() -> None:
    kps = yaml.safe_load((K8S / "monitoring" / "kube-prometheus-stack.values.yaml").read_text())
    dev = support.load_values("values-dev.yaml")
    chart = support.load_values("values.yaml")
    selector = kps["prometheus"]["prometheusSpec"]["serviceMonitorSelector"]["matchLabels"]
    assert selector.items() <= dev["serviceMonitor"]["labels"].items()
    rules = kps["prometheus"]["prometheusSpec"]["ruleSelector"]["matchLabels"]
    assert rules.items() <= dev["prometheusRule"]["labels"].items()
    sidecar = kps["grafana"]["sidecar"]["dashboards"]
    assert (sidecar["label"], sidecar["labelValue"]) == (
        chart["dashboards"]["label"],
        chart["dashboards"]["labelValue"],
    )
    assert kps["grafana"]["sidecar"]["dashboards"]["folderAnnotation"] == "grafana_folder"
    # The rest of the jobs of observability/prometheus/*.yml (the chart's ServiceMonitor brings
    # the services'),
    # and the exemplars the latency panels link to traces with.
    spec = kps["prometheus"]["prometheusSpec"]
    assert {j["job_name"] for j in spec["additionalScrapeConfigs"]} == {
        "rabbitmq",
        "rabbitmq-queues",
    }
    assert "exemplar-storage" in spec["enableFeatures"]


SCRIPTS = [
    "scripts/kind-up.sh",
    "scripts/kind-down.sh",
    "scripts/ensure_deploy_tools.sh",
    "scripts/podman/setup.sh",
    "scripts/podman/nginx-base/docker-entrypoint.sh",
]


@pytest.mark.parametrize("script", SCRIPTS)
def test_scripts_pass_shellcheck(script: str) -> None:
    shellcheck = require_tool("shellcheck")
    result = subprocess.run(
        [shellcheck, "-x", str(support.ROOT / script)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
