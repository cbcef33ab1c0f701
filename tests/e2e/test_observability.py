"""Monitoring against a real stack: every metric the Grafana dashboard and the Prometheus rules
name is one the replicas, the worker or Envoy really export (read from a scraped `/metrics` and
Envoy's `/stats/prometheus`), and a real Prometheus (Debian's) scrapes the stack, loads the
rules and answers a recording rule back through its HTTP API."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from taskapi.server import worker
from taskapi.server.dev import free_port
from tests.e2e.conftest import Stack, register, running_stack
from tests.support.jobs import job_settings
from tests.support.smtp import running_sink

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "taskapi.rules.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "taskapi.json"
PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
# PromQL words that look like metric names.
_KEYWORDS = {"by", "without", "and", "or", "unless", "on", "ignoring", "group_left", "group_right", "bool", "offset"}
# Series Prometheus makes itself, not an exporter.
_SYNTHETIC = {"up", "ALERTS", "ALERTS_FOR_STATE"}


def metric_names(expr: str) -> set[str]:
    """The metric (and recording-rule) names a PromQL expression reads."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)  # strings: label values, regexes
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # range selectors
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)  # label lists
    names = set(re.findall(r"(?<![\w:.$])([a-zA-Z_:][a-zA-Z0-9_:]*)\b(?!\s*\()", text))
    return names - _KEYWORDS


def test_metric_names_are_read_from_promql() -> None:
    expr = (
        "histogram_quantile(0.99, sum by (grpc_method, le)"
        ' (rate(grpc_server_handling_seconds_bucket{grpc_service=~"a"}[5m])))'
        ' / on (x) taskapi:ratio_rate5m > 2 * 0.001 or up{job="x"} == 0'
    )
    assert metric_names(expr) == {"grpc_server_handling_seconds_bucket", "taskapi:ratio_rate5m", "up"}


def dashboard_exprs() -> list[str]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [target["expr"] for panel in panels for target in panel.get("targets", [])]


def rules() -> list[dict[str, Any]]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


def exported(text: str) -> set[str]:
    """Sample names in a Prometheus text exposition."""
    return set(re.findall(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)[{ ]", text, re.M))


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        return str(response.read().decode())


@pytest.fixture(scope="module")
def monitored(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A stack with a job worker on the App's registry (as `taskapi dev` runs one), after a
    little of every kind of traffic: sign-ups and sign-ins, a write, cached reads, a miss."""
    with running_sink() as sink:
        settings = job_settings(redis_url, sink.port, outbox_relay=False)  # the embedded store is shared
        with running_stack(settings, tmp_path_factory.mktemp("monitored")) as stack:
            assert stack.app is not None  # the single layout: one App in this process
            with worker.running_worker(settings, stack.app.job_metrics, relay=False):
                account = register(stack.client)
                created = stack.client.post("tasks", {"title": "watched"}, token=account.token)
                assert created.status == 200, created.text
                for _ in range(3):
                    assert stack.client.get(f"tasks/{created.json()['id']}", token=account.token).status == 200
                assert stack.client.get("tasks/0123456789abcdef01234567", token=account.token).status == 404
                yield stack


def scraped(stack: Stack) -> set[str]:
    assert stack.app is not None
    server = get(f"http://127.0.0.1:{stack.app.metrics_port}/metrics")
    envoy = stack.envoy.admin_get("/stats/prometheus")
    return exported(server) | exported(envoy)


def test_every_metric_the_dashboard_and_the_rules_read_is_exported(monitored: Stack) -> None:
    names = scraped(monitored)
    recorded = {rule["record"] for rule in rules() if "record" in rule}
    wanted = set().union(*(metric_names(expr) for expr in dashboard_exprs() + [rule["expr"] for rule in rules()]))
    assert wanted, "no metric names found"
    missing = sorted(name for name in wanted - recorded - _SYNTHETIC if name not in names)
    assert not missing, f"named by deploy/ but exported by nothing: {missing}"
    # Recording rules the dashboard reads are defined.
    used_records = {name for expr in dashboard_exprs() for name in metric_names(expr) if ":" in name}
    assert used_records <= recorded


def test_the_check_finds_a_metric_nobody_exports(monitored: Stack) -> None:
    """The check above can fail: a misspelt name is not in the scrape."""
    assert "grpc_server_handled_total" in scraped(monitored)
    assert "grpc_server_handeld_total" not in scraped(monitored)


def query(base: str, promql: str) -> list[dict[str, Any]]:
    answer = json.loads(get(f"{base}/api/v1/query?query={urllib.parse.quote(promql)}"))
    assert answer["status"] == "success", answer
    result: list[dict[str, Any]] = answer["data"]["result"]
    return result


def test_a_real_prometheus_scrapes_the_stack_and_evaluates_the_rules(monitored: Stack, tmp_path: Path) -> None:
    assert monitored.app is not None
    port = free_port()
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES)],
        "scrape_configs": [
            {
                "job_name": "taskapi-server",
                "static_configs": [{"targets": [f"127.0.0.1:{monitored.app.metrics_port}"]}],
            },
            {
                "job_name": "envoy",
                "metrics_path": "/stats/prometheus",
                "static_configs": [{"targets": [f"127.0.0.1:{monitored.envoy.config.admin_port}"]}],
            },
        ],
    }
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    with open(tmp_path / "prometheus.log", "wb") as log:
        process = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={tmp_path / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp_path / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        recorded: list[dict[str, Any]] = []
        while time.monotonic() < deadline and process.poll() is None:
            monitored.client.get("tasks")  # traffic while it scrapes (401s count too)
            try:
                recorded = query(base, 'taskapi:grpc_requests:rate5m{grpc_method="CreateTask"}')
            except OSError:  # not listening yet
                recorded = []
            if recorded:
                break
            time.sleep(0.5)
        assert recorded, (tmp_path / "prometheus.log").read_text()[-3000:]
        assert recorded[0]["metric"]["grpc_service"] == "taskapi.v1.TaskService"
        up = {sample["metric"]["job"]: sample["value"][1] for sample in query(base, "up")}
        assert up == {"taskapi-server": "1", "envoy": "1"}
        healthy = query(base, 'sum(envoy_cluster_membership_healthy{envoy_cluster_name="taskapi_replicas"})')
        assert healthy[0]["value"][1] == "2"
        # Every rule loaded and evaluates without error.
        groups = json.loads(get(f"{base}/api/v1/rules"))["data"]["groups"]
        loaded = [rule for group in groups for rule in group["rules"]]
        assert len(loaded) == len(rules())
        assert all(rule["health"] in ("ok", "unknown") and not rule.get("lastError") for rule in loaded), loaded
    finally:
        process.terminate()
        process.wait(timeout=30)
