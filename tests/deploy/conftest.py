"""Shared fixtures of the deployment checks: the chart rendered once per values profile, the
tools located once. `make test-deploy` sets DEPLOY_TOOLS_REQUIRED=1 so a missing tool fails
instead of skipping (under a plain `make test` these checks skip when the tools are absent)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

try:
    import yaml  # noqa: F401  (every check reads YAML)
except ImportError:  # pragma: no cover - a venv without PyYAML: nothing here can run
    collect_ignore_glob = ["test_*.py"]
else:
    from tests.deploy import support

REQUIRED = os.environ.get("DEPLOY_TOOLS_REQUIRED") == "1"


def require_tool(name: str, *candidates: str) -> str:
    for candidate in (name, *candidates):
        found = shutil.which(candidate) or (candidate if Path(candidate).is_file() else None)
        if found:
            return found
    message = f"{name} is not installed (scripts/ensure_deploy_tools.sh installs it)"
    if REQUIRED:
        pytest.fail(message)
    pytest.skip(message)


def require_module(name: str) -> None:
    try:
        __import__(name)
    except ImportError:
        message = f"python module {name} missing: uv sync --group deploy"
        if REQUIRED:
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="session")
def helm() -> object:
    require_module("helm_python")
    import helm_python

    helm_python.disable_logging()
    return helm_python


@pytest.fixture(scope="session")
def rendered(helm: object) -> dict[str, list[dict]]:
    """profile name -> the rendered objects (hooks included), as `helm template` would."""
    return {name: support.render(values) for name, values in support.PROFILES.items()}


@pytest.fixture(scope="session")
def kubernetes_validate() -> str:
    require_module("kubernetes_validate")
    return require_tool("kubernetes-validate", str(support.VENV_BIN / "kubernetes-validate"))


@pytest.fixture(scope="session")
def check_jsonschema() -> str:
    require_module("check_jsonschema")
    return require_tool("check-jsonschema", str(support.VENV_BIN / "check-jsonschema"))


@pytest.fixture(scope="session")
def node_models() -> Path | None:
    """The npm @kubernetes-models packages, if scripts/ensure_deploy_tools.sh installed them."""
    modules = support.ROOT / ".run" / "deploy-tools" / "node_modules"
    node = shutil.which("node")
    if node and (modules / "@kubernetes-models" / "gateway-api").is_dir():
        return modules
    if REQUIRED:
        pytest.fail("node and the @kubernetes-models packages: run scripts/ensure_deploy_tools.sh")
    return None
