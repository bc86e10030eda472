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
APPS = ("auth", "api", "orders-relay", "consumer", "celery_worker")


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
        "orders-relay",
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
    for name in ("auth", "api", "orders-relay"):
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
        assert core["services"][name]["environment"]["OTEL_SDK_DISABLED"] == "true"
        env = stack["services"][name]["environment"]
        assert env["OTEL_SDK_DISABLED"] == "false"
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector:4317"
    targets = yaml.safe_load(
        (support.ROOT / "compose" / "observability" / "prometheus.yml").read_text()
    )
    scraped = {
        t for job in targets["scrape_configs"] for c in job["static_configs"] for t in c["targets"]
    }
    assert {"auth:8001", "api:8002", "rabbitmq:15692"} <= scraped


def test_prometheus_config_is_valid() -> None:
    promtool = shutil.which("promtool")
    if not promtool:
        pytest.skip("promtool (Debian prometheus) not installed")
    result = subprocess.run(
        [
            promtool,
            "check",
            "config",
            "--syntax-only",
            str(support.ROOT / "compose" / "observability" / "prometheus.yml"),
        ],
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
