"""tilt/Tiltfile: parsed with Starlark's extended dialect (as Tilt does), linted, and evaluated
with Tilt's built-ins stubbed; what it asks Tilt to do is checked against the repository."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from tests.deploy import support
from tests.deploy.conftest import require_module
from tests.deploy.support import by_kind

TILT_DIR = support.ROOT / "tilt"
TILTFILE = TILT_DIR / "Tiltfile"


class Recorder:
    def __init__(self) -> None:
        self.calls: dict[str, list[tuple[tuple[Any, ...], dict[str, Any]]]] = defaultdict(list)

    def stub(self, name: str, result: Any = None) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls[name].append((args, kwargs))
            return result(*args, **kwargs) if callable(result) else result

        return call


@pytest.fixture(scope="module")
def tilt() -> Recorder:
    require_module("starlark")
    import starlark as sl

    ast = sl.parse("Tiltfile", TILTFILE.read_text(), sl.Dialect.extended())
    lints = [str(lint) for lint in ast.lint()]
    assert not lints, lints

    recorder = Recorder()
    module = sl.Module()
    for name in (
        "allow_k8s_contexts",
        "update_settings",
        "k8s_yaml",
        "local_resource",
        "k8s_resource",
        "docker_build",
    ):
        module.add_callable(name, recorder.stub(name))
    module.add_callable(
        "fall_back_on", recorder.stub("fall_back_on", lambda paths: {"fall_back_on": paths})
    )
    module.add_callable("sync", recorder.stub("sync", lambda src, dest: {"sync": [src, dest]}))
    module.add_callable("run", recorder.stub("run", lambda cmd, **_: {"run": cmd}))
    module.add_callable("link", recorder.stub("link", lambda url, name="": {"link": url}))
    module.add_callable("kustomize", recorder.stub("kustomize", lambda path: f"kustomize:{path}"))
    module.add_callable("helm", recorder.stub("helm", lambda path, **_: f"helm:{path}"))
    module.add_callable("k8s_context", recorder.stub("k8s_context", lambda: "kind-order-platform"))

    def load(name: str) -> Any:
        assert name == "ext://restart_process", name
        extension = sl.Module()
        extension.add_callable(
            "docker_build_with_restart", recorder.stub("docker_build_with_restart")
        )
        return extension.freeze()

    sl.eval(module, ast, sl.Globals.extended_by([sl.LibraryExtension.Print]), sl.FileLoader(load))
    return recorder


def tilt_path(path: str) -> Path:
    return (TILT_DIR / path).resolve()


def test_builds_every_service_image_from_the_dockerfile(tilt: Recorder) -> None:
    builds = {args[0]: kwargs for args, kwargs in tilt.calls["docker_build_with_restart"]}
    assert set(builds) == {
        f"order-platform/{t}" for t in ("auth", "orders", "event-consumer", "worker")
    }
    dockerfile = (support.ROOT / "Dockerfile").read_text()
    for image, build in builds.items():
        assert tilt_path(build["context"]) == support.ROOT
        assert tilt_path(build["dockerfile"]) == support.ROOT / "Dockerfile"
        assert f" AS {build['target']}\n" in dockerfile
        assert image == f"order-platform/{build['target']}"
        assert build["build_args"] == {"APP_OWNER": "10001:10001"}
        for path in build["only"]:
            assert (support.ROOT / path).exists(), path
        steps = build["live_update"]
        assert "fall_back_on" in steps[0]
        for path in steps[0]["fall_back_on"]:
            assert tilt_path(path).is_file(), path
        syncs = [s["sync"] for s in steps if "sync" in s]
        assert syncs, image
        for source, dest in syncs:
            assert tilt_path(source).is_dir(), source
            # The editable install runs the code from /app/<same path>.
            assert dest == "/app/" + str(tilt_path(source).relative_to(support.ROOT))


def test_deploys_the_same_chart_with_dev_values(tilt: Recorder, helm: Any) -> None:
    ((args, kwargs),) = tilt.calls["helm"]
    assert tilt_path(args[0]) == support.CHART
    assert [tilt_path(v) for v in kwargs["values"]] == [support.CHART / "values-dev.yaml"]
    values = support.load_values("values-dev.yaml")
    for expression in kwargs["set"]:
        values = _merge(values, helm.parse_set_string(expression))
    objects = support.render(values, release=kwargs["name"], namespace=kwargs["namespace"])
    workloads = {o["metadata"]["name"] for o in support.workloads(objects)}
    kustomized = {"postgres", "redis", "rabbitmq"}
    for args, _ in tilt.calls["k8s_resource"]:
        assert args[0] in workloads | kustomized, args[0]
    relay = next(
        o
        for o in by_kind(objects, "Deployment")
        if o["metadata"]["name"].endswith("-orders-events")
    )
    # The whole command: the wrapper, then the service's own subcommand (it must exist).
    assert relay["spec"]["template"]["spec"]["containers"][0]["command"] == [
        "/tilt-restart-wrapper",
        "--watch_file=/tmp/.restart-proc",
        "orders-service",
        "events",
    ]
    for deployment in by_kind(objects, "Deployment"):
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        assert container["securityContext"]["readOnlyRootFilesystem"] is False
    applied = [args[0] for args, _ in tilt.calls["k8s_yaml"]]
    assert "kustomize:../k8s/dev-data" in applied


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def test_port_forwards_and_labels(tilt: Recorder) -> None:
    resources = {
        kwargs.get("new_name", args[0]): kwargs for args, kwargs in tilt.calls["k8s_resource"]
    }
    locals_ = {args[0]: kwargs for args, kwargs in tilt.calls["local_resource"]}
    forwards = {name: kw.get("port_forwards", []) for name, kw in resources.items()}
    assert "15672:15672" in forwards["rabbitmq"]
    assert "3000:80" in locals_["grafana"]["serve_cmd"]
    assert any(
        link["link"] == "http://localhost:8000/healthz" for link in locals_["gateway"]["links"]
    )
    labelled = {name for name, kw in resources.items() if kw.get("labels")}
    labelled |= {name for name, kw in locals_.items() if kw.get("labels")}
    assert {
        "auth",
        "orders",
        "orders-events",
        "event-consumer",
        "worker",
        "grafana",
        "gateway",
    } <= labelled
