"""The chart's README keeps its values table in step with values.yaml, and its documents say
what an operator needs."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import yaml

from tests.deploy import support

README = support.CHART / "README.md"


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "chart_values_table", support.ROOT / "scripts" / "chart_values_table.py"
    )
    assert spec
    assert spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_values_table_is_in_sync_with_values_yaml() -> None:
    generator = _generator()
    readme = README.read_text()
    assert generator.updated_readme(readme, support.CHART / "values.yaml") == readme, (
        "stale: python scripts/chart_values_table.py"
    )
    assert generator.main(["--check"]) == 0


def test_every_setting_has_a_row_with_its_default() -> None:
    generator = _generator()
    rows = {
        key: (default, text) for key, default, text in generator.rows(support.CHART / "values.yaml")
    }
    values = yaml.safe_load((support.CHART / "values.yaml").read_text())
    assert set(values) == {key.split(".")[0] for key in rows}
    assert rows["migrations.createDatabase"][0] == "`false`"
    assert "maintenance database" in rows["migrations.createDatabase"][1]
    assert rows["connections.authDatabase.url"][1].startswith("A URL string")
    # A comment on the same line counts too.
    assert "cache, rate limits" in rows["connections.values.redisUrl"][1]


def test_generator_reads_comments_above_and_beside_and_skips_list_items(tmp_path: Path) -> None:
    values = tmp_path / "values.yaml"
    values.write_text(
        "# --- a ruler ---\n"
        "# The replicas.\n"
        "replicas: 2\n"
        "\n"
        "# Not attached (blank line between).\n"
        "\n"
        "group:\n"
        '  # Inner, with a # "quoted" hash.\n'
        '  inner: "a # b"   # beside\n'
        "  items:\n"
        "    - name: x\n"
        "      value: y\n"
        "  after: {a: 1}\n"
    )
    assert _generator().rows(values) == [
        ("replicas", "`2`", "The replicas."),
        ("group.inner", '`"a # b"`', 'Inner, with a # "quoted" hash. beside'),
        ("group.items", '`[{"name": "x", "value": "y"}]`', ""),
        ("group.after", '`{"a": 1}`', ""),
    ]


def test_chart_documents_cover_upgrades_rollbacks_and_the_grafana_folder() -> None:
    readme = README.read_text()
    upgrading = (support.CHART / "UPGRADING.md").read_text()
    assert "folderAnnotation: grafana_folder" in readme
    values = yaml.safe_load(
        (support.ROOT / "k8s" / "monitoring" / "kube-prometheus-stack.values.yaml").read_text()
    )
    assert values["grafana"]["sidecar"]["dashboards"]["folderAnnotation"] == "grafana_folder"
    assert "expand" in upgrading.lower()
    assert "contract" in upgrading.lower()
    assert "helm rollback" in upgrading
    assert "pre-install,pre-upgrade" in upgrading
    for example in support.EXAMPLES:
        assert f"examples/{example.name}" in readme, example.name


def test_readme_walkthrough_creates_or_names_every_secret_the_operator_example_reads() -> None:
    import re

    readme = (support.ROOT / "README.md").read_text()
    section = readme[readme.index("### Production (Helm)") : readme.index("## Architecture")]
    assert "examples/operators.yaml" in section
    example = (support.CHART / "examples" / "operators.yaml").read_text()
    names = set(re.findall(r"(?:name|secretName): ([\w-]+)", example))
    secrets = {n for n in names if n.endswith(("-app", "-default-user", "-ca")) or "redis" in n}
    secrets |= set(re.findall(r"secretKeyRef: \{name: ([\w-]+)", example))
    secrets.add(yaml.safe_load(example)["jwt"]["existingSecret"])
    assert {"auth-db-app", "orders-db-app", "order-bus-default-user", "managed-redis"} <= secrets
    for secret in secrets:
        created = f"create secret generic {secret} " in section
        by_operator = f"`{secret}`" in section or secret in section
        assert created or by_operator, secret
    # The clusters the Secrets come from are the ones the walkthrough creates.
    for cluster in ("auth-db", "orders-db", "order-bus"):
        assert f"name: {cluster}}}" in section, cluster
