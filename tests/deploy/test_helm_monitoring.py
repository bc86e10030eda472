"""The Helm chart's monitoring: the ServiceMonitor scraping every job, the metrics ports, the
PrometheusRule carrying the repository's rules, and the dashboards as sidecar ConfigMaps."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.deploy import support
from tests.deploy.support import by_kind, named, pod_spec

FULL = f"{support.RELEASE}-order-platform"
ALL_INTERFACES = "0.0.0.0"  # noqa: S104 (what the containers listen on)


# --- monitoring -----------------------------------------------------------------------------------
# The job names the alert rules and the dashboards select on
# (observability/prometheus/prometheus.yml).
JOBS = {"auth", "orders", "orders-events", "event-consumer", "worker"}
METRICS_PORTS = {"orders-events": 9101, "event-consumer": 9102, "worker": 9103}
RULES = support.ROOT / "observability" / "prometheus" / "rules" / "order-platform.yml"


def test_service_monitor_scrapes_all_five_jobs(rendered: dict[str, list[dict]]) -> None:
    objects = rendered["dev"]
    monitor = by_kind(objects, "ServiceMonitor")[0]
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    spec = monitor["spec"]
    selector = spec["selector"]["matchLabels"]
    scraped = [
        s
        for s in by_kind(objects, "Service")
        if all(s["metadata"]["labels"].get(k) == v for k, v in selector.items())
    ]
    assert sorted(s["metadata"]["name"] for s in scraped) == sorted(f"{FULL}-{j}" for j in JOBS)
    # Prometheus's `job` is the Service's jobLabel: the rules' and dashboards' job names.
    assert {s["metadata"]["labels"][spec["jobLabel"]] for s in scraped} == JOBS
    endpoints = {e["port"]: e for e in spec["endpoints"]}
    assert set(endpoints) == {"http", "metrics"}
    assert all(e["path"] == "/metrics" for e in endpoints.values())
    deployments = {d["metadata"]["name"]: d for d in by_kind(objects, "Deployment")}
    for service in scraped:
        component = service["metadata"]["labels"]["app.kubernetes.io/component"]
        (port,) = service["spec"]["ports"]
        assert port["name"] in endpoints, component
        # The Service's port reaches a named container port of the component's pods.
        container = pod_spec(deployments[f"{FULL}-{component}"])["containers"][0]
        container_ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert port["targetPort"] in container_ports, component
        if component in METRICS_PORTS:
            assert port["name"] == "metrics", component
            assert container_ports["metrics"] == port["port"] == METRICS_PORTS[component]


def test_metrics_ports_listen_on_all_interfaces(rendered: dict[str, list[dict]]) -> None:
    prefixes = {
        "orders-events": "ORDERS_EVENTS_METRICS",
        "event-consumer": "CONSUMER_METRICS",
        "worker": "WORKER_METRICS",
    }
    for profile in ("default", "dev", "all-on"):
        for component, prefix in prefixes.items():
            deployment = named(rendered[profile], "Deployment", f"{FULL}-{component}")
            env = {e["name"]: e.get("value") for e in pod_spec(deployment)["containers"][0]["env"]}
            where = f"{profile}/{component}"
            assert env[f"{prefix}_HOST"] == ALL_INTERFACES, where
            assert env[f"{prefix}_PORT"] == str(METRICS_PORTS[component]), where
    assert not support.unknown_settings(
        {f"{p}_{s}" for p in prefixes.values() for s in ("HOST", "PORT")}
    )


def test_worker_metrics_directory_is_writable(rendered: dict[str, list[dict]]) -> None:
    for profile in ("default", "all-on"):
        worker = named(rendered[profile], "Deployment", f"{FULL}-worker")
        container = pod_spec(worker)["containers"][0]
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        env = {e["name"]: e.get("value") for e in container["env"]}
        directory = env["PROMETHEUS_MULTIPROC_DIR"]
        mount = next(m for m in container["volumeMounts"] if m["mountPath"] == directory)
        volume = next(v for v in pod_spec(worker)["volumes"] if v["name"] == mount["name"])
        assert "emptyDir" in volume
        assert not mount.get("readOnly")


def test_prometheus_rule_carries_the_repository_rules(rendered: dict[str, list[dict]]) -> None:
    import yaml

    repository = yaml.safe_load(RULES.read_text())["groups"]
    # The broker's absent() rules are the RabbitMQ operator's business on Kubernetes.
    shipped = [g for g in repository if g["name"] != "order-platform.absent-broker"]
    for profile in ("dev", "all-on"):
        rule = by_kind(rendered[profile], "PrometheusRule")[0]
        groups = rule["spec"]["groups"]
        # Verbatim: the Prometheus templates of the annotations were not run through tpl. The
        # absent() rules alone are pinned to the release's namespace (absent() of another
        # release's series would never fire).
        for mine, theirs in zip(groups, shipped, strict=False):
            if mine["name"] == "order-platform.absent":
                for pinned, rule_ in zip(mine["rules"], theirs["rules"], strict=True):
                    job = re.fullmatch(r'absent\(up\{job="([\w-]+)"\}\)', rule_["expr"])
                    assert job, rule_["expr"]
                    assert pinned["expr"] == (
                        f'absent(up{{job="{job.group(1)}", namespace="{support.NAMESPACE}"}})'
                    )
                    assert {k: v for k, v in pinned.items() if k != "expr"} == {
                        k: v for k, v in rule_.items() if k != "expr"
                    }
            else:
                assert mine == theirs, profile
        assert [g["name"] for g in groups[: len(shipped)]] == [g["name"] for g in shipped]
        assert all(
            r["annotations"]["runbook_url"].endswith(f"/docs/runbooks/{r['alert']}.md")
            for g in groups
            if g["name"] != "extra"
            for r in g["rules"]
        ), profile
        names = [g["name"] for g in groups]
        assert len(names) == len(set(names)), names  # the operator rejects duplicate groups
    annotations = [
        r["annotations"]["summary"]
        for g in by_kind(rendered["dev"], "PrometheusRule")[0]["spec"]["groups"]
        for r in g["rules"]
        if "alert" in r
    ]
    assert any("{{ $labels.job }}" in a for a in annotations)
    extra = by_kind(rendered["all-on"], "PrometheusRule")[0]["spec"]["groups"]
    assert extra[-1]["name"] == "extra"
    # Every job the rules expect to be up is one the ServiceMonitor scrapes.
    assert 'job=~"auth|orders|orders-events|event-consumer|worker"' in RULES.read_text()


def test_repository_rules_are_in_the_chart() -> None:
    in_chart = support.CHART / "rules" / RULES.name
    assert in_chart.is_file(), (
        "link them: ln -s ../../observability/prometheus/rules helm/order-platform/rules"
    )
    assert in_chart.read_text() == RULES.read_text()


def test_prometheus_rule_without_the_rules_file_fails(helm: Any, chart_copy: Path) -> None:
    shutil.rmtree(chart_copy / "rules")
    with pytest.raises(helm.HelmError):
        support.render({"prometheusRule": {"enabled": True}}, chart=chart_copy)


@pytest.fixture
def chart_copy(tmp_path: Path) -> Path:
    copy = tmp_path / "order-platform"
    shutil.copytree(support.CHART, copy, symlinks=False)
    return copy


def test_no_dashboards_renders_no_configmap(helm: Any, chart_copy: Path) -> None:
    shutil.rmtree(chart_copy / "dashboards", ignore_errors=True)
    objects = support.render(None, chart=chart_copy)
    assert not [
        o for o in by_kind(objects, "ConfigMap") if "grafana_dashboard" in o["metadata"]["labels"]
    ]


def test_each_dashboard_becomes_a_sidecar_configmap(helm: Any, chart_copy: Path) -> None:
    shutil.rmtree(chart_copy / "dashboards", ignore_errors=True)  # the repository's, if linked
    (chart_copy / "dashboards").mkdir()
    (chart_copy / "dashboards" / "Orders_Overview.json").write_text('{"title": "Orders"}')
    objects = support.render(None, chart=chart_copy)
    boards = [
        o for o in by_kind(objects, "ConfigMap") if "grafana_dashboard" in o["metadata"]["labels"]
    ]
    assert [b["metadata"]["name"] for b in boards] == [f"{FULL}-dashboard-orders-overview"]
    assert boards[0]["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert boards[0]["data"] == {"Orders_Overview.json": '{"title": "Orders"}'}


def test_repository_dashboards_are_in_the_chart() -> None:
    """The chart ships the same dashboards as the repository root."""
    source = support.ROOT / "observability" / "dashboards"
    assert source.is_dir(), "dashboards/ is missing at the repository root"
    in_chart = support.CHART / "dashboards"
    assert in_chart.is_dir(), (
        "link them: ln -s ../../observability/dashboards helm/order-platform/dashboards"
    )
    assert {p.name for p in source.glob("*.json")} <= {p.name for p in in_chart.glob("*.json")}
