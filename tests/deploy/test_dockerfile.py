"""The Dockerfile: hadolint, and the properties the image build relies on."""

from __future__ import annotations

import re
import subprocess
import tomllib

from tests.deploy import support
from tests.deploy.conftest import require_tool

DOCKERFILE = support.ROOT / "Dockerfile"
TEXT = DOCKERFILE.read_text()
TARGETS = {
    "auth": "auth-service",
    "orders": "orders-service",
    "event-consumer": "event-consumer",
    "worker": "order-worker",
}


stage = support.dockerfile_stage


def test_hadolint_is_clean() -> None:
    hadolint = require_tool("hadolint", str(support.VENV_BIN / "hadolint"))
    result = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_base_image_is_an_overridable_argument() -> None:
    assert "\nARG BASE_IMAGE=python:3.11-slim-bookworm\n" in TEXT
    assert TEXT.index("ARG BASE_IMAGE") < TEXT.index("\nFROM ")
    assert "\nARG NGINX_IMAGE=nginx:1.27.3-bookworm\n" in TEXT
    for line in re.findall(r"^FROM (\S+)", TEXT, re.M):
        assert line in {"${BASE_IMAGE}", "${NGINX_IMAGE}"} or re.fullmatch(r"[a-z-]+", line), line


def test_every_workspace_service_has_a_target_with_cached_dependencies() -> None:
    root = tomllib.loads((support.ROOT / "pyproject.toml").read_text())
    services = [m for m in root["tool"]["uv"]["workspace"]["members"] if m.startswith("services/")]
    packages = {
        tomllib.loads((support.ROOT / m / "pyproject.toml").read_text())["project"]["name"]: m
        for m in services
    }
    assert set(TARGETS.values()) == set(packages), "a service without an image (or vice versa)"
    for target, package in TARGETS.items():
        build = stage(f"{target}-build")
        deps = build.index(f"uv sync --frozen --no-dev --no-install-workspace --package {package}")
        source = build.index(f"COPY {packages[package]} {packages[package]}")
        full = build.index(f"uv sync --frozen --no-dev --package {package}")
        assert deps < source < full, target


def test_runtime_images_are_slim_unprivileged_and_secret_free() -> None:
    runtime = stage("runtime")
    assert "USER 10001:10001" in runtime
    assert "uv" not in re.sub(r"#.*", "", runtime)
    for target in TARGETS:
        final = stage(target)
        copies = re.findall(r"^COPY (.*)$", final, re.M)
        assert copies == [f"--from={target}-build --chown=${{APP_OWNER}} /app /app"], target
        assert "ARG APP_OWNER=0:0" in final, target
    assert not re.search(r"^(ENV|ARG)\s+\S*(PASSWORD|SECRET|TOKEN|PRIVATE)", TEXT, re.M | re.I)


def test_http_services_have_a_python_healthcheck() -> None:
    for target, port in (("auth", 8001), ("orders", 8002)):
        final = stage(target)
        assert f"EXPOSE {port}" in final
        assert "HEALTHCHECK" in final
        assert f"http://127.0.0.1:{port}/healthz" in final
        assert "curl" not in final
        assert "wget" not in final
        assert f'"--port", "{port}"' in final


def test_gateway_image_runs_unprivileged_with_the_docs() -> None:
    gateway = stage("gateway")
    assert "USER 101:101" in gateway
    assert "--from=gateway-assets /assets" in gateway
    assert "uv sync --frozen --only-group docs" in stage("gateway-assets")
    assert "HEALTHCHECK" in gateway
    assert "/healthz" in gateway


def test_dockerignore_keeps_secrets_and_clutter_out() -> None:
    ignored = (support.ROOT / ".dockerignore").read_text().split()
    for pattern in (".env", "**/.venv", "**/.git", ".dev", ".run", "**/__pycache__"):
        assert pattern in ignored, pattern
