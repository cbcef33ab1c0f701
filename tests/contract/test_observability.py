"""The operations files are valid: promtool checks the Prometheus rules and runs their unit
tests (deploy/prometheus/tests.yml: every alert fires on its case and not on its near miss),
the Grafana dashboard is well-formed, and every alert has its entry in docs/operations.md.
That the metrics they name exist is tests/e2e/test_observability.py, against a real stack."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "taskapi.rules.yml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "tests.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "taskapi.json"
OPERATIONS = ROOT / "docs" / "operations.md"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"


def alerts() -> list[str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule["alert"] for group in groups for rule in group["rules"] if "alert" in rule]


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PROMTOOL, *args], cwd=RULES.parent, capture_output=True, text=True, timeout=120)


def test_promtool_checks_the_rules() -> None:
    result = promtool("check", "rules", RULES.name)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests_pass_and_cover_every_alert() -> None:
    result = promtool("test", "rules", RULE_TESTS.name)
    assert result.returncode == 0, result.stdout + result.stderr
    tested = {
        test["alertname"]
        for case in yaml.safe_load(RULE_TESTS.read_text())["tests"]
        for test in case.get("alert_rule_test", [])
    }
    assert set(alerts()) <= tested
    # Each alert is shown firing at least once, not only staying quiet.
    firing = {
        test["alertname"]
        for case in yaml.safe_load(RULE_TESTS.read_text())["tests"]
        for test in case.get("alert_rule_test", [])
        if test["exp_alerts"]
    }
    assert set(alerts()) <= firing


def test_promtool_fails_a_broken_rule(tmp_path: Path) -> None:
    """The check above can fail: a rule with a PromQL error is refused."""
    broken = tmp_path / "broken.yml"
    broken.write_text("groups:\n- name: x\n  rules:\n  - alert: X\n    expr: sum(rate(up[5m])\n")
    result = subprocess.run([PROMTOOL, "check", "rules", str(broken)], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0


def test_every_alert_links_its_runbook_entry() -> None:
    text = OPERATIONS.read_text()
    anchors = {
        re.sub(r"[^a-z0-9 -]", "", heading.lower()).replace(" ", "-")
        for heading in re.findall(r"^#+ (.+)$", text, re.M)
    }
    groups = yaml.safe_load(RULES.read_text())["groups"]
    for rule in (rule for group in groups for rule in group["rules"] if "alert" in rule):
        anchor = rule["alert"].lower()
        assert anchor in anchors, f"docs/operations.md has no heading for {rule['alert']}"
        assert f"docs/operations.md#{anchor}" in rule["annotations"]["description"]
        assert rule["labels"]["severity"] in ("page", "ticket")


def test_the_dashboard_is_grafana_json_with_a_prometheus_datasource_variable() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["title"] == "Task API"
    [variable] = dashboard["templating"]["list"]
    assert (variable["type"], variable["query"]) == ("datasource", "prometheus")
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}" and panel["targets"], panel["title"]


@pytest.mark.parametrize(
    "title",
    [
        "p99 latency per RPC",
        "Rate-limit rejections",
        "Cache hit ratio",
        "bcrypt queue",
        "Job lag: event to job start",
        "Replicas: healthy of total, ejected",
        "Calls per second, per RPC",
        "Errors per second, per RPC and code",
    ],
)
def test_the_dashboard_has_the_panels_on_call_needs(title: str) -> None:
    assert title in {panel["title"] for panel in json.loads(DASHBOARD.read_text())["panels"]}
