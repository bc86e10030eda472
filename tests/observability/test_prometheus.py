"""A real Prometheus (Debian's) scrapes the test stack with the repo's scrape config; after a
short load every panel query of dashboards/*.json must return data (unless it is marked as
needing a Kubernetes-only source) and every alert rule must evaluate."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.observability.support import User, request_token
from tests.stack import ROOT, Stack, free_port

pytestmark = pytest.mark.e2e

DASHBOARDS = sorted((ROOT / "observability" / "dashboards").glob("*.json"))
KUBERNETES_ONLY = "[kubernetes-only]"
# What Grafana puts in place of its built-in variables when it runs a query.
GRAFANA_BUILTINS = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "5m"}
JOBS = (
    "auth",
    "orders",
    "orders-events",
    "event-consumer",
    "worker",
    "rabbitmq",
    "rabbitmq-queues",
)
RABBITMQ_PROMETHEUS = ("127.0.0.1", 15692)
ORDER = {
    "items": [{"name": "Pen", "quantity": 3, "price": "1.50"}],
    "total_price": "4.50",
}


def _reachable(host: str, port: int) -> bool:
    import socket

    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex((host, port)) == 0


def _prometheus_binary() -> str:
    if shutil.which("prometheus") is None or shutil.which("promtool") is None:
        subprocess.run(["bash", str(ROOT / "scripts" / "ensure_prometheus.sh")], check=True)
    binary = shutil.which("prometheus")
    assert binary, "prometheus is not installed (scripts/ensure_prometheus.sh)"
    return binary


def _ensure_rabbitmq_exporter() -> None:
    if not _reachable(*RABBITMQ_PROMETHEUS):
        subprocess.run(["bash", str(ROOT / "scripts" / "rabbitmq_plugins.sh")], check=False)
        deadline = time.monotonic() + 30
        while not _reachable(*RABBITMQ_PROMETHEUS) and time.monotonic() < deadline:
            time.sleep(0.5)
    assert _reachable(*RABBITMQ_PROMETHEUS), (
        "RabbitMQ's Prometheus endpoint :15692 is off: rabbitmq-plugins enable rabbitmq_prometheus"
    )


@pytest.fixture(scope="module")
def prometheus(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Prometheus on a free loopback port, scraping the stack every second."""
    binary = _prometheus_binary()
    _ensure_rabbitmq_exporter()
    workdir = tmp_path_factory.mktemp("prometheus")
    config = workdir / "prometheus.yml"
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "render_prometheus.py"),
            "--out",
            str(config),
            "--interval",
            "1s",
        ],
        check=True,
        env=stack.env,
        capture_output=True,
    )
    port = free_port()
    log = (workdir / "prometheus.log").open("wb")
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--enable-feature=exemplar-storage",
            "--log.level=warn",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, (workdir / "prometheus.log").read_text()
            try:
                if httpx.get(f"{url}/-/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "prometheus did not become ready"
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _drive_load(stack: Stack, user: User) -> None:
    """A little of everything the dashboards show: orders created, read (cache misses and
    hits), moved through their statuses, refused moves, unknown orders, a failed login, a
    taken email; then wait until the worker processed every order."""
    with httpx.Client(base_url=stack.base_url, timeout=10, headers=user.auth) as client:
        ids = []
        for _ in range(5):
            created = client.post("/orders/", json=ORDER)
            assert created.status_code == 201, created.text
            ids.append(created.json()["id"])
        for order_id in ids:
            assert client.get(f"/orders/{order_id}/").status_code == 200
            assert client.get(f"/orders/{order_id}").status_code == 200
        assert client.get(f"/orders/user/{user.id}/").status_code == 200
        for order_id, status in ((ids[0], "PAID"), (ids[0], "SHIPPED"), (ids[1], "CANCELED")):
            assert client.patch(f"/orders/{order_id}/", json={"status": status}).is_success
        assert client.patch(f"/orders/{ids[0]}/", json={"status": "PENDING"}).status_code == 409
        assert client.get(f"/orders/{uuid.uuid4()}/").status_code == 404
        assert request_token(client, user.email, "not-the-password").status_code == 401
        taken = client.post("/register/", json={"email": user.email, "password": "whatever1"})
        assert taken.status_code == 409

        deadline = time.monotonic() + 30
        for order_id in ids:
            while client.get(f"/orders/{order_id}/").json()["processed_at"] is None:
                assert time.monotonic() < deadline, f"not processed:\n{stack.logs()[-3000:]}"
                time.sleep(0.1)


def _get(prometheus: str, path: str, **params: Any) -> Any:
    answer = httpx.get(f"{prometheus}{path}", params=params, timeout=10)
    body = answer.json()
    assert body.get("status") == "success", f"{path} {params}: {body}"
    return body["data"]


def _wait_for_scrapes(prometheus: str, after: float) -> None:
    """Until every target was scraped, healthy, after ``after`` and every rule group was
    evaluated after it."""
    deadline = time.monotonic() + 30
    while True:
        targets = _get(prometheus, "/api/v1/targets")["activeTargets"]
        rules = _get(prometheus, "/api/v1/rules")["groups"]
        # Targets appear a few seconds after start (discovery updates are batched).
        scraped = {target["labels"]["job"] for target in targets} >= set(JOBS) and all(
            target["health"] == "up" and _timestamp(target["lastScrape"]) > after
            for target in targets
        )
        evaluated = all(_timestamp(group["lastEvaluation"]) > after for group in rules)
        if scraped and evaluated:
            return
        assert time.monotonic() < deadline, json.dumps(
            [(t["labels"]["job"], t["health"], t["lastError"]) for t in targets]
        )
        time.sleep(0.3)


@pytest.fixture(scope="module")
def loaded(prometheus: str, stack: Stack, user: User) -> float:
    """Prometheus saw the stack before and after a short load (so rates show the load), and
    evaluated every rule since; returns when the load started."""
    _wait_for_scrapes(prometheus, after=0)
    started = time.time()
    _drive_load(stack, user)
    # Two scrapes after the load, at one-second intervals.
    _wait_for_scrapes(prometheus, after=time.time() + 1)
    return started


def _timestamp(value: str) -> float:
    from datetime import datetime

    # Prometheus writes nanoseconds; Python parses up to microseconds.
    value = re.sub(r"(\.\d{6})\d+", r"\1", value).replace("Z", "+00:00")
    return datetime.fromisoformat(value).timestamp()


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))


def _queries(dashboard: dict[str, Any]) -> Iterator[tuple[str, str, str]]:
    """(panel title, its description, PromQL as Grafana would send it) for every target, and
    the metric behind every label_values() variable."""
    variables = {
        f"${var['name']}": var.get("allValue") or ".*"
        for var in dashboard["templating"]["list"]
        if var["type"] == "query"
    }
    for var in dashboard["templating"]["list"]:
        definition = var.get("definition", "")
        match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", definition)
        if match:
            metric, label = match.groups()
            yield f"variable {var['name']}", "", f"group by ({label}) ({metric})"
    for panel in _panels(dashboard["panels"]):
        for target in panel.get("targets", []):
            expr = target["expr"]
            for name, value in {**GRAFANA_BUILTINS, **variables}.items():
                expr = expr.replace(name, value)
            assert "$" not in expr, f"{panel['title']}: unknown variable in {target['expr']}"
            yield panel["title"], panel.get("description", ""), expr


def test_every_target_of_the_stack_is_scraped(prometheus: str, loaded: float) -> None:
    targets = _get(prometheus, "/api/v1/targets")["activeTargets"]
    jobs = {target["labels"]["job"]: target["health"] for target in targets}
    assert jobs == dict.fromkeys(JOBS, "up")


@pytest.mark.parametrize("path", DASHBOARDS, ids=[path.name for path in DASHBOARDS])
def test_every_panel_of_the_dashboard_shows_data(
    prometheus: str, loaded: float, path: Path
) -> None:
    empty = []
    checked = 0
    for title, description, expr in _queries(json.loads(path.read_text())):
        if KUBERNETES_ONLY in description:
            continue
        result = _get(prometheus, "/api/v1/query", query=expr)["result"]
        checked += 1
        if not result:
            empty.append(f"{title}: {expr}")
    assert checked
    assert not empty, "panels without data:\n" + "\n".join(empty)


def test_every_alert_rule_evaluates(prometheus: str, loaded: float) -> None:
    groups = _get(prometheus, "/api/v1/rules")["groups"]
    rules = [rule for group in groups for rule in group["rules"]]
    assert {rule["name"] for rule in rules if rule["type"] == "alerting"} >= {
        "OrderPlatformHighErrorRate",
        "OrderPlatformHighLatency",
        "OrderPlatformOutboxBacklogGrowing",
        "OrderPlatformOutboxEventsOld",
        "OrderPlatformDeadLetters",
        "OrderPlatformDeadLetterQueueNotEmpty",
        "OrderPlatformOrdersNotProcessed",
        "OrderPlatformServiceDown",
    }
    for rule in rules:
        assert rule["health"] == "ok", f"{rule['name']}: {rule.get('lastError')}"
        _get(prometheus, "/api/v1/query", query=rule["query"])


def test_latency_histograms_carry_trace_ids_as_exemplars(prometheus: str, loaded: float) -> None:
    found = _get(
        prometheus,
        "/api/v1/query_exemplars",
        query='http_request_duration_seconds_bucket{service="orders"}',
        start=loaded - 5,
        end=time.time(),
    )
    trace_ids = {
        exemplar["labels"].get("trace_id") for series in found for exemplar in series["exemplars"]
    }
    assert any(re.fullmatch(r"[0-9a-f]{32}", str(trace_id)) for trace_id in trace_ids), found


@pytest.mark.parametrize(
    ("selector", "at_least"),
    [
        ("orders_created_total", 5),
        ('orders_events_published_total{event_type="new_order"}', 5),
        ('bus_events_consumed_total{job="event-consumer", result="ok"}', 5),
        # A task may carry a batch of orders (process_orders): orders counted one by one,
        # tasks at least once.
        ('worker_orders_total{outcome="processed"}', 5),
        ('worker_tasks_total{outcome="processed"}', 1),
        ("worker_task_duration_seconds_count", 1),
        ('bus_events_consumed_total{job="orders-events", result="ok"}', 5),
        ("orders_processing_lag_seconds_count", 5),
        ('orders_status_changes_total{to_status="SHIPPED"}', 1),
        ('orders_cache_operations_total{op="get", result="hit"}', 5),
        ('auth_logins_total{result="failure"}', 1),
        ('auth_registrations_total{result="conflict"}', 1),
        ('http_requests_total{service="orders", route="/orders/", status="201"}', 5),
        ('http_requests_total{route="/orders/{order_id}/", method="PATCH", status="409"}', 1),
    ],
)
def test_the_load_shows_on_the_metrics(
    prometheus: str, loaded: float, selector: str, at_least: float
) -> None:
    """The metrics count what happened (in the worker's prefork children too), not just
    exist: the total after the load minus the total Prometheus had before it."""
    query = f"sum({selector}) or vector(0)"
    before = _get(prometheus, "/api/v1/query", query=query, time=loaded)["result"]
    after = _get(prometheus, "/api/v1/query", query=query)["result"]
    grown = float(after[0]["value"][1]) - float(before[0]["value"][1])
    assert grown >= at_least, f"{selector}: {before} -> {after}"
