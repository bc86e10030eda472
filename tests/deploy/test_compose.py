"""docker-compose.yml and its observability overlay, checked by docker-compose itself, the
compose-spec JSON schema, and for what the platform needs (order of start, healthchecks)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy import support
from tests.deploy.conftest import require_tool

CORE = support.ROOT / "docker-compose.yml"
OVERLAY = support.ROOT / "docker-compose.observability.yml"
ENV_EXAMPLE = support.ROOT / ".env.example"
APPS = ("auth", "api", "orders-events", "consumer", "celery_worker")


def compose_config(*files: Path) -> dict[str, Any]:
    tool = require_tool("docker-compose")
    args = [tool, "--env-file", str(ENV_EXAMPLE)]
    for file in files:
        args += ["-f", str(file)]
    quiet = subprocess.run(
        [*args, "config", "-q"], capture_output=True, text=True, cwd=support.ROOT
    )
    assert quiet.returncode == 0, quiet.stderr
    full = subprocess.run([*args, "config"], capture_output=True, text=True, cwd=support.ROOT)
    assert full.returncode == 0, full.stderr
    return yaml.safe_load(full.stdout)


def published(service: dict[str, Any]) -> set[str]:
    """Host ports, whichever syntax `config` printed (1.x keeps short strings)."""
    ports = set()
    for port in service.get("ports", []):
        if isinstance(port, dict):
            ports.add(str(port["published"]))
        else:
            ports.add(str(port).split("/")[0].split(":")[-2])
    return ports


def mounts(service: dict[str, Any]) -> dict[str, str]:
    """target -> source of the service's volumes, whichever syntax."""
    found = {}
    for volume in service.get("volumes", []):
        if isinstance(volume, dict):
            found[volume["target"]] = str(volume.get("source", ""))
        else:
            source, target = volume.split(":")[:2]
            found[target] = source
    return found


@pytest.fixture(scope="module")
def core() -> dict[str, Any]:
    return compose_config(CORE)


@pytest.fixture(scope="module")
def stack() -> dict[str, Any]:
    return compose_config(CORE, OVERLAY)


def test_docker_compose_accepts_both_files(core: dict[str, Any], stack: dict[str, Any]) -> None:
    assert set(core["services"]) < set(stack["services"])


@pytest.mark.parametrize("file", [CORE, OVERLAY], ids=lambda p: p.name)
def test_files_match_the_compose_spec(check_jsonschema: str, file: Path) -> None:
    result = subprocess.run(
        [check_jsonschema, "--builtin-schema", "vendor.compose-spec", str(file)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_services_of_the_quick_start_exist(stack: dict[str, Any]) -> None:
    assert {
        "postgres",
        "redis",
        "rabbitmq",
        "keygen",
        "migrate",
        "auth",
        "api",
        "orders-events",
        "consumer",
        "celery_worker",
        "gateway",
        "prometheus",
        "grafana",
        "otel-collector",
        "jaeger",
    } <= set(stack["services"])
    ports = {name: published(svc) for name, svc in stack["services"].items()}
    assert "8000" in ports["gateway"]
    assert "15672" in ports["rabbitmq"]
    assert "9090" in ports["prometheus"]
    assert "3000" in ports["grafana"]
    # `api` is the orders service; other containers find it as `orders` too.
    assert "orders" in stack["services"]["api"]["networks"]["default"]["aliases"]


def test_apps_start_after_migrations_and_their_dependencies(core: dict[str, Any]) -> None:
    services = core["services"]
    for name in ("auth", "api", "orders-events"):
        assert (
            services[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        )
    migrate = services["migrate"]["depends_on"]
    assert {k: v["condition"] for k, v in migrate.items()} == {
        "migrate-auth": "service_completed_successfully",
        "migrate-orders": "service_completed_successfully",
    }
    assert services["auth"]["depends_on"]["keygen"]["condition"] == "service_completed_successfully"
    for name in (*APPS, "gateway"):
        for dependency, condition in services[name]["depends_on"].items():
            if dependency in {"postgres", "redis", "rabbitmq", "auth", "api"}:
                assert condition["condition"] == "service_healthy", (name, dependency)
                assert "healthcheck" in services[dependency], dependency
    for one_shot in ("keygen", "migrate", "migrate-auth", "migrate-orders"):
        assert services[one_shot]["restart"] == "no"


def test_apps_run_locked_down(core: dict[str, Any]) -> None:
    for name in (*APPS, "gateway"):
        service = core["services"][name]
        assert service["read_only"] is True, name
        assert service["cap_drop"] == ["ALL"], name
        assert "no-new-privileges:true" in service["security_opt"], name
        assert service.get("user") in (None, "10001:10001"), name


def test_images_are_pinned(stack: dict[str, Any]) -> None:
    for name, service in stack["services"].items():
        image = service["image"]
        if "build" in service or image.startswith("order-platform/"):
            continue
        tag = image.rsplit(":", 1)[-1] if ":" in image else ""
        assert tag != "latest", (name, image)
        assert any(c.isdigit() for c in tag), (name, image)


def test_builds_use_the_dockerfile_targets(core: dict[str, Any]) -> None:
    dockerfile = (support.ROOT / "Dockerfile").read_text()
    targets = {s["build"]["target"] for s in core["services"].values() if "build" in s}
    assert targets == {"auth", "orders", "event-consumer", "worker", "gateway"}
    for target in targets:
        assert f" AS {target}\n" in dockerfile


def test_settings_variables_are_real_settings(stack: dict[str, Any]) -> None:
    variables = {
        key for service in stack["services"].values() for key in (service.get("environment") or {})
    }
    assert not support.unknown_settings(variables)
    example = {
        line.split("=", 1)[0]
        for line in ENV_EXAMPLE.read_text().splitlines()
        if "=" in line and not line.startswith("#")
    }
    assert not support.unknown_settings(example)


def test_observability_overlay_turns_telemetry_on(
    stack: dict[str, Any], core: dict[str, Any]
) -> None:
    for name in APPS:
        env = core["services"][name]["environment"]
        # The SDK stays on (trace ids in the logs); without an endpoint it exports nothing.
        assert env.get("OTEL_SDK_DISABLED", "false") != "true", name
        assert "OTEL_EXPORTER_OTLP_ENDPOINT" not in env, name
        overlay = stack["services"][name]["environment"]
        assert overlay.get("OTEL_SDK_DISABLED", "false") != "true", name
        assert overlay["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector:4317", name
        assert overlay["OTEL_SERVICE_NAME"] == env["OTEL_SERVICE_NAME"], name


PROMETHEUS_DIR = support.ROOT / "observability" / "prometheus"
# job -> (compose service, port): what the rules and dashboards select on, and who serves it.
SCRAPED = {
    "auth": ("auth", 8001),
    "orders": ("api", 8002),
    "orders-events": ("orders-events", 9101),
    "event-consumer": ("consumer", 9102),
    "worker": ("celery_worker", 9103),
    "rabbitmq": ("rabbitmq", 15692),
    "rabbitmq-queues": ("rabbitmq", 15692),
}
# Processes without an HTTP API: the settings that put their metrics port on the network.
METRICS_SETTINGS = {
    "orders-events": "ORDERS_EVENTS_METRICS",
    "consumer": "CONSUMER_METRICS",
    "celery_worker": "WORKER_METRICS",
}


def test_prometheus_runs_the_repository_config_and_rules(stack: dict[str, Any]) -> None:
    prometheus = stack["services"]["prometheus"]
    assert mounts(prometheus)["/etc/prometheus"] == str(PROMETHEUS_DIR)
    assert "--config.file=/etc/prometheus/compose.yml" in prometheus["command"]
    assert "--enable-feature=exemplar-storage" in prometheus["command"]
    config = yaml.safe_load((PROMETHEUS_DIR / "compose.yml").read_text())
    # Relative to the config file: /etc/prometheus/rules/*.yml, i.e.
    # observability/prometheus/rules/.
    assert config["rule_files"] == ["rules/*.yml"]
    assert list(PROMETHEUS_DIR.glob("rules/*.yml"))
    # The compose copy the repository config replaced is gone.
    assert not (support.ROOT / "observability" / "prometheus.yml").exists()


def test_prometheus_targets_are_the_compose_services(stack: dict[str, Any]) -> None:
    config = yaml.safe_load((PROMETHEUS_DIR / "compose.yml").read_text())
    jobs = {
        job["job_name"]: [t for c in job["static_configs"] for t in c["targets"]]
        for job in config["scrape_configs"]
    }
    for job, (service, port) in SCRAPED.items():
        assert jobs.get(job) == [f"{service}:{port}"], job
        assert service in stack["services"], job
    # The job names are those of the `make prometheus` config, which the rules select on.
    local = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    assert {j["job_name"] for j in local["scrape_configs"]} <= set(jobs)
    rules = (PROMETHEUS_DIR / "rules" / "order-platform.yml").read_text()
    assert 'job=~"auth|orders|orders-events|event-consumer|worker"' in rules


def test_metrics_ports_listen_on_the_compose_network(core: dict[str, Any]) -> None:
    for service, prefix in METRICS_SETTINGS.items():
        env = core["services"][service]["environment"]
        assert env[f"{prefix}_HOST"] == "0.0.0.0", service  # noqa: S104
        job = next(j for j, (s, _) in SCRAPED.items() if s == service)
        assert int(env.get(f"{prefix}_PORT", SCRAPED[job][1])) == SCRAPED[job][1], service
    # The settings exist under these names (a typo would leave the port on loopback).
    assert not support.unknown_settings(
        {f"{p}_{s}" for p in METRICS_SETTINGS.values() for s in ("HOST", "PORT")}
    )
    plugins = (support.ROOT / "k8s" / "dev-data" / "config" / "enabled_plugins").read_text()
    assert "rabbitmq_prometheus" in plugins
    assert mounts(core["services"]["rabbitmq"])["/etc/rabbitmq/enabled_plugins"] == str(
        support.ROOT / "k8s" / "dev-data" / "config" / "enabled_plugins"
    )


def test_grafana_links_exemplars_to_jaeger_and_provisions_the_dashboards(
    stack: dict[str, Any],
) -> None:
    provisioning = support.ROOT / "observability" / "grafana" / "provisioning"
    sources = yaml.safe_load((provisioning / "datasources" / "datasources.yaml").read_text())
    by_type = {s["type"]: s for s in sources["datasources"]}
    assert by_type["jaeger"]["uid"] == "jaeger"
    assert by_type["prometheus"]["jsonData"]["exemplarTraceIdDestinations"] == [
        {"name": "trace_id", "datasourceUid": "jaeger"}
    ]
    providers = yaml.safe_load((provisioning / "dashboards" / "dashboards.yaml").read_text())
    path = providers["providers"][0]["options"]["path"]
    grafana = mounts(stack["services"]["grafana"])
    assert grafana[path] == str(support.ROOT / "observability" / "dashboards")


def test_prometheus_config_is_valid() -> None:
    promtool = require_tool("promtool")
    result = subprocess.run(
        [promtool, "check", "config", "--syntax-only", str(PROMETHEUS_DIR / "compose.yml")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_gateway_template_renders_as_the_nginx_image_does(
    core: dict[str, Any], tmp_path: Path
) -> None:
    """The nginx image runs envsubst over its templates with only the defined variables. Every
    ${VAR} of the template must be defined by the image or compose (an undefined one stays
    literal and nginx refuses to start), and the result must be a config nginx accepts."""
    nginx = require_tool("nginx", "/usr/sbin/nginx")
    env = {**support.gateway_image_env(), **core["services"]["gateway"]["environment"]}
    missing = support.template_variables() - set(env)
    assert not missing, f"the gateway container does not set {missing}"
    stage = support.dockerfile_stage("gateway")
    assert (
        "COPY gateway/nginx.conf.template /etc/nginx/templates/nginx/nginx.conf.template" in stage
    )
    # /etc/nginx/templates/nginx/nginx.conf.template -> $NGINX_ENVSUBST_OUTPUT_DIR/nginx/nginx.conf
    assert f'"-c", "{env["NGINX_ENVSUBST_OUTPUT_DIR"]}/nginx/nginx.conf"' in stage
    assert env["GATEWAY_PREFIX"].startswith(env["NGINX_ENVSUBST_OUTPUT_DIR"])
    for docs in ("ui", "openapi", "events"):
        assert f"COPY docs/{docs} {env['GATEWAY_DOCS_DIR']}/{docs}" in stage

    prefix = tmp_path / "nginx"
    prefix.mkdir()
    # The compose hostnames do not resolve here: loopback upstreams for `nginx -t`.
    values = {
        **env,
        "GATEWAY_PREFIX": str(prefix),
        "AUTH_UPSTREAM": "127.0.0.1:1",
        "ORDERS_UPSTREAM": "127.0.0.1:2",
    }
    template = support.GATEWAY_TEMPLATE.read_text()
    envsubst = shutil.which("envsubst")
    if envsubst:  # gettext-base, what the image's entrypoint uses
        shell_format = " ".join(f"${{{k}}}" for k in values)
        text = subprocess.run(
            [envsubst, shell_format],
            input=template,
            capture_output=True,
            text=True,
            env=values,
            check=True,
        ).stdout
    else:
        text = template
        for key, value in values.items():
            text = text.replace(f"${{{key}}}", value)
    assert "${" not in support.without_comments(text)
    conf = prefix / "nginx.conf"
    conf.write_text(text)
    result = subprocess.run(
        [nginx, "-t", "-e", "stderr", "-p", str(prefix), "-c", str(conf)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
