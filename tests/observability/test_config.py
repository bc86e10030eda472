"""The Prometheus configs, alert rules and Grafana dashboards of the repo, checked without the
stack: promtool (config, rules, rule unit tests) and the dashboards' structure. What they show
against a live stack is test_prometheus.py's part."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.stack import ROOT

PROMETHEUS = ROOT / "observability" / "prometheus"
CONFIGS = [PROMETHEUS / "prometheus.yml", PROMETHEUS / "compose.yml"]
RULES = sorted((PROMETHEUS / "rules").glob("*.yml"))
RULE_TESTS = sorted((PROMETHEUS / "tests").glob("*.yml"))
DASHBOARDS = sorted((ROOT / "observability" / "dashboards").glob("*.json"))
JOBS = {
    "auth",
    "orders",
    "orders-events",
    "event-consumer",
    "worker",
    "rabbitmq",
    "rabbitmq-queues",
}


@pytest.fixture(scope="module")
def promtool() -> str:
    if shutil.which("promtool") is None:
        subprocess.run(["bash", str(ROOT / "scripts" / "ensure_prometheus.sh")], check=True)
    binary = shutil.which("promtool")
    assert binary, "promtool is not installed (scripts/ensure_prometheus.sh)"
    return binary


def run(promtool: str, *args: str) -> None:
    result = subprocess.run([promtool, *args], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("config", CONFIGS, ids=[path.name for path in CONFIGS])
def test_the_scrape_config_is_valid(promtool: str, config: Path) -> None:
    run(promtool, "check", "config", str(config))


@pytest.mark.parametrize("config", CONFIGS, ids=[path.name for path in CONFIGS])
def test_the_scrape_config_names_the_jobs_the_dashboards_and_rules_select(config: Path) -> None:
    jobs = {job["job_name"] for job in yaml.safe_load(config.read_text())["scrape_configs"]}
    assert jobs >= JOBS


def test_the_alert_rules_are_valid(promtool: str) -> None:
    assert RULES
    run(promtool, "check", "rules", *map(str, RULES))


def test_the_alert_rules_pass_their_unit_tests(promtool: str) -> None:
    assert RULE_TESTS
    run(promtool, "test", "rules", *map(str, RULE_TESTS))


def test_every_alert_has_a_unit_test_where_it_fires() -> None:
    alerts = {
        rule["alert"]
        for path in RULES
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
        if "alert" in rule
    }
    fired = {
        case["alertname"]
        for path in RULE_TESTS
        for test in yaml.safe_load(path.read_text())["tests"]
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    assert alerts
    assert alerts <= fired, f"alerts without a firing test: {sorted(alerts - fired)}"


def _panels(panels: list[dict[str, Any]]) -> list[dict[str, Any]]:
    found = []
    for panel in panels:
        found.append(panel)
        found.extend(_panels(panel.get("panels", [])))
    return found


@pytest.mark.parametrize("path", DASHBOARDS, ids=[path.name for path in DASHBOARDS])
def test_the_dashboard_is_a_provisionable_grafana_dashboard(path: Path) -> None:
    dashboard = json.loads(path.read_text())
    assert re.fullmatch(r"[a-z0-9-]{1,40}", dashboard["uid"])
    assert dashboard["title"].startswith("Order Platform / ")
    assert "order-platform" in dashboard["tags"]
    assert dashboard["schemaVersion"] >= 36
    variables = {var["name"]: var for var in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    panels = _panels(dashboard["panels"])
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["title"]
        assert panel.get("description"), f"{panel['title']}: say what the panel shows"
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        refs = [target["refId"] for target in panel["targets"]]
        assert refs
        assert len(refs) == len(set(refs))
        for target in panel["targets"]:
            assert target["expr"].strip(), panel["title"]
            assert target["datasource"] == panel["datasource"]


def test_the_dashboards_have_distinct_uids() -> None:
    uids = [json.loads(path.read_text())["uid"] for path in DASHBOARDS]
    assert len(DASHBOARDS) == 3
    assert len(uids) == len(set(uids))


# --- what an on-call needs from each alert ----------------------------------------------------
RUNBOOK_BASE = "https://github.com/order-platform/order-platform/blob/main/"
CHART_RULES = ROOT / "helm" / "order-platform" / "templates" / "prometheusrule.yaml"


def _alert_rules() -> list[dict[str, Any]]:
    return [
        rule
        for path in RULES
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
        if "alert" in rule
    ]


def _runbook_urls() -> dict[str, set[str]]:
    """alert -> its runbook_urls, the repository's rules and the chart's own ones."""
    urls: dict[str, set[str]] = {}
    for rule in _alert_rules():
        urls.setdefault(rule["alert"], set()).add(rule["annotations"].get("runbook_url", ""))
    chart = CHART_RULES.read_text()
    for alert, url in re.findall(r"- alert: (\w+)\n(?:.*\n)*?\s+runbook_url: (\S+)", chart):
        urls.setdefault(alert, set()).add(url)
    return urls


def test_every_alert_links_a_runbook_that_exists() -> None:
    urls = _runbook_urls()
    assert "OrderPlatformNoReadyPods" in urls  # the chart's Kubernetes-only rule is covered
    chart_alerts = set(re.findall(r"- alert: (\w+)", CHART_RULES.read_text()))
    assert chart_alerts <= set(urls)
    for alert, found in urls.items():
        assert found == {f"{RUNBOOK_BASE}docs/runbooks/{alert}.md"}, alert
        page = ROOT / found.pop().removeprefix(RUNBOOK_BASE)
        assert page.is_file(), f"{alert}: {page} is missing"
        text = page.read_text()
        assert text.startswith(f"# {alert}\n"), alert
        # The commands for both ways of running it (the Kubernetes-only alert excepted).
        assert "kubectl -n $NS" in text, alert
        if alert != "OrderPlatformNoReadyPods":
            assert "### `make run`" in text, alert
            assert "### Kubernetes" in text, alert


def test_runbooks_use_the_variables_the_pods_really_have() -> None:
    pages = sorted((ROOT / "docs" / "runbooks").glob("*.md"))
    text = "\n".join(page.read_text() for page in pages)
    assert "BUS_AMQP_URL" not in text  # no pod has it
    for line in re.findall(r"kubectl .*order-bus .*", text):
        # A deployment whose pods carry an *_AMQP_URL: orders, the relay, the consumer, the worker.
        assert re.search(r"deploy/\$REL-(orders|orders-events|event-consumer|worker) ", line), line
    index = (ROOT / "docs" / "runbooks" / "README.md").read_text()
    for page in pages:
        if page.name != "README.md":
            assert f"]({page.name})" in index, page.name


AGGREGATION = re.compile(
    r"\b(sum|max|min|avg|count|group|stddev|stdvar|topk|bottomk|quantile|count_values)\b"
    r"\s*(by\s*\(([^)]*)\))?\s*\("
)


def _aggregations_without_namespace(expr: str) -> list[str]:
    return [
        match.group(0)
        for match in AGGREGATION.finditer(expr)
        if "namespace" not in [label.strip() for label in (match.group(3) or "").split(",")]
    ]


def test_every_aggregation_keeps_the_namespace() -> None:
    """Two releases in one Prometheus must not merge into one series."""
    assert _aggregations_without_namespace("sum(rate(x[5m])) / sum by (job) (y)") == [
        "sum(",
        "sum by (job) (",
    ]
    bad = [
        f"{rule['alert']}: {agg}"
        for rule in _alert_rules()
        for agg in _aggregations_without_namespace(rule["expr"])
    ]
    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text())
        for panel in _panels(dashboard["panels"]):
            for target in panel.get("targets", []):
                bad += [
                    f"{path.name} {panel['title']}: {agg}"
                    for agg in _aggregations_without_namespace(target["expr"])
                ]
    for expr in re.findall(r"expr: (.*)", CHART_RULES.read_text()):
        bad += [f"chart: {agg}" for agg in _aggregations_without_namespace(expr)]
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("config", CONFIGS, ids=[path.name for path in CONFIGS])
def test_every_scraped_job_of_ours_has_an_absent_rule(config: Path) -> None:
    absent = {
        match
        for rule in _alert_rules()
        for match in re.findall(r'absent\(up\{job="([\w-]+)"\}\)', rule["expr"])
    }
    assert {r["alert"] for r in _alert_rules() if "absent(" in r["expr"]} == {
        "OrderPlatformTargetMissing"
    }
    jobs = {job["job_name"] for job in yaml.safe_load(config.read_text())["scrape_configs"]}
    assert jobs & JOBS <= absent
    fired = {
        labels["job"]
        for path in RULE_TESTS
        for test in yaml.safe_load(path.read_text())["tests"]
        for case in test.get("alert_rule_test", [])
        if case["alertname"] == "OrderPlatformTargetMissing"
        for labels in (a["exp_labels"] for a in case.get("exp_alerts", []))
    }
    assert {"worker", "rabbitmq-queues"} <= fired
