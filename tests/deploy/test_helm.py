"""The Helm chart: lint, render, validate every object, and the properties a reviewer checks."""

from __future__ import annotations

import re
import shutil
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


def test_notes_warn_about_missing_secrets(helm: Any) -> None:
    assert "WARNING: some data service URLs are empty" in support.notes(None)
    assert "WARNING: no JWT signing key" in support.notes(None)
    production = support.notes(support.PROFILES["production"])
    assert "WARNING" not in production


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
