"""The OpenAPI document through tools no one here wrote: schemathesis against the real stack,
and Redocly's linter with the rule set in redocly.yaml.

schemathesis (pinned in pyproject) runs every phase (examples, coverage, fuzzing, stateful)
with every check (`--checks all`: status codes, content types, headers and bodies as
documented, valid data accepted, invalid data rejected, 405 + Allow for other methods, ...)
against `taskapi dev` (a real Envoy in front of two real replicas), as an admin (so the admin
RPCs run too).
Any failure or error fails the test; the report is kept in the test's temporary folder.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from tests.clients.conftest import CLIENTS, ROOT
from tests.conftest import GENEROUS, unique_email
from tests.e2e.conftest import PASSWORD, login
from tests.support.dev_process import running_dev
from tests.support.edge import RestClient

DOCUMENT = CLIENTS / "openapi" / "taskapi.openapi.json"
CONFIG = CLIENTS / "openapi" / "schemathesis.toml"
SCHEMATHESIS = Path(sys.executable).parent / "st"
REDOCLY = ROOT / "node_modules" / ".bin" / "redocly"
# Enough examples per operation for every phase to reach each rule, in a few minutes on 2 cores.
MAX_EXAMPLES = 40
SEED = 16


def test_schemathesis_finds_nothing_through_envoy(tmp_path: Path) -> None:
    # `taskapi dev` as a user runs it (its own process, store, Redis and mail sink, so the
    # accounts and tasks schemathesis makes stay there), with limits it never reaches.
    email = unique_email("schemathesis-admin").lower()
    generous = f"{GENEROUS.requests}/{GENEROUS.window_seconds}"
    env = {
        "TASKAPI_ADMIN_PASSWORD": PASSWORD,
        **dict.fromkeys(("RATE_LIMIT_IP", "RATE_LIMIT_USER", "RATE_LIMIT_AUTH"), generous),
    }
    ports = [flag for name in ("rest", "grpc", "admin", "metrics", "web") for flag in (f"--{name}-port", "0")]
    with running_dev([*ports, "--admin-email", email], tmp_path, env) as dev:
        rest = dev.wait_for(r"REST\s+(http://\S+/api/v1/)")
        token = login(RestClient(rest), email).token
        report = tmp_path / "report"
        command = [
            str(SCHEMATHESIS),
            "--config-file",
            str(CONFIG),
            "run",
            str(DOCUMENT),
            "--url",
            rest.removesuffix("/api/v1/"),
            "--header",
            f"Authorization: Bearer {token}",
            "--phases",
            "examples,coverage,fuzzing,stateful",
            "--checks",
            "all",
            "--max-examples",
            str(MAX_EXAMPLES),
            "--seed",
            str(SEED),
            "--workers",
            "2",
            "--generation-database",
            "none",
            "--no-color",
            "--report",
            "json",
            "--report-dir",
            str(report),
        ]
        result = subprocess.run(command, capture_output=True, text=True, timeout=900, check=False, cwd=tmp_path)
        assert dev.stop() == 0, dev.text()[-5000:]
    output = result.stdout + result.stderr
    (tmp_path / "schemathesis.txt").write_text(output)
    assert result.returncode == 0, output[-20000:]
    # A run that tested nothing would pass too: every operation and phase must have run, clean.
    document = json.loads(DOCUMENT.read_text())
    operations = sum(len(verbs) for verbs in document["paths"].values())
    assert f"Tested: {operations}" in output, output[-3000:]
    summary = output[output.index("SUMMARY") :]
    for phase in ("Examples", "Coverage", "Fuzzing", "Stateful"):
        assert f"✅ {phase}" in summary, summary
    assert re.search(r"Test cases:\n\s+(\d+) generated, \1 passed", summary), summary
    assert "Failures:" not in summary and "Errors:" not in summary, summary


def _redocly_lint(document: Path) -> subprocess.CompletedProcess[str]:
    command = [str(REDOCLY), "lint", str(document), "--config", str(ROOT / "redocly.yaml"), "--format", "stylish"]
    # Offline: no usage telemetry, no check for a newer release.
    env = dict(os.environ, REDOCLY_TELEMETRY="off", REDOCLY_SUPPRESS_UPDATE_NOTICE="true")
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False, cwd=ROOT, env=env)


def test_redocly_lint_is_clean() -> None:
    result = _redocly_lint(DOCUMENT)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Your API description is valid" in output, output
    assert "warning" not in output.split("validating", 1)[1], output  # recommended-strict: none at all


def test_redocly_lint_fails_on_what_the_rule_set_forbids(tmp_path: Path) -> None:
    """The rule set bites: a dotted path parameter that no operation declares, an unused schema."""
    document = json.loads(DOCUMENT.read_text())
    document["paths"]["/api/v1/tasks/{task.id}:archive"] = {
        "post": {"operationId": "Archive", "responses": {"200": {"description": "OK"}}}
    }
    document["components"]["schemas"]["Unused"] = {"type": "object"}
    broken = tmp_path / "broken.openapi.json"
    broken.write_text(json.dumps(document))
    output = (result := _redocly_lint(broken)).stdout + result.stderr
    assert result.returncode != 0, output
    for rule in ("path-parameters-defined", "no-unused-components", "operation-4xx-response"):
        assert rule in output, (rule, output)
