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

PROMETHEUS = ROOT / "prometheus"
CONFIGS = [PROMETHEUS / "prometheus.yml", PROMETHEUS / "compose.yml"]
RULES = sorted((PROMETHEUS / "rules").glob("*.yml"))
RULE_TESTS = sorted((PROMETHEUS / "tests").glob("*.yml"))
DASHBOARDS = sorted((ROOT / "dashboards").glob("*.json"))
JOBS = {"auth", "orders", "orders-relay", "event-consumer", "worker", "rabbitmq", "rabbitmq-queues"}


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
