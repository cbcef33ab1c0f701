"""deploy/: what can be checked without a Docker engine or a cluster (neither runs here).

The Dockerfile through hadolint and a wheel build from exactly what it copies; the Kubernetes
manifests through `kubernetes-validate --strict` for a named version; every Envoy config
through `envoy --mode validate`; the compose file against the Compose specification's JSON
schema and dclint; and the rules the files must keep (settings, drain, probes, security),
read back from the committed files. deploy/render.py writes them; `check` keeps them fresh.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import render
import stack
import yaml

from taskapi.server import edge
from taskapi.server.config import Settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DOCKERFILE = DEPLOY / "Dockerfile"
MANIFESTS = sorted((DEPLOY / "kubernetes").glob("*.yaml"))
COMPOSE = DEPLOY / "compose.yaml"
# The official Compose specification schema, as dclint (package.json) ships it.
COMPOSE_SCHEMA = ROOT / "node_modules" / "dclint" / "schemas" / "compose.schema.json"
BIN = Path(sys.executable).parent


def _run(*args: str | Path, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=300, check=False)


def _documents(path: Path) -> list[dict[str, Any]]:
    return [document for document in yaml.safe_load_all(path.read_text()) if document]


def _all_documents() -> Iterator[dict[str, Any]]:
    for path in MANIFESTS:
        yield from _documents(path)


def _of_kind(kind: str) -> list[dict[str, Any]]:
    return [document for document in _all_documents() if document["kind"] == kind]


def _pod(deployment: dict[str, Any]) -> dict[str, Any]:
    pod: dict[str, Any] = deployment["spec"]["template"]["spec"]
    return pod


def _servers() -> list[dict[str, Any]]:
    servers = [d for d in _of_kind("Deployment") if d["metadata"]["labels"]["app.kubernetes.io/component"] == "server"]
    assert servers
    return servers


# --- freshness ----------------------------------------------------------------------------


def test_committed_files_are_what_render_writes() -> None:
    result = _run(sys.executable, DEPLOY / "render.py", "check")
    assert result.returncode == 0, result.stderr


def test_check_names_a_stale_or_missing_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(render, "ROOT", tmp_path)
    assert render.main(["check"]) == 1  # nothing written yet
    assert render.main(["generate"]) == 0
    assert render.main(["check"]) == 0
    (tmp_path / "kubernetes" / "single.yaml").write_text("# edited by hand\n")
    assert render.main(["check"]) == 1


def test_render_refuses_an_unknown_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert render.main(["deploy"]) == 2
    assert "usage" in capsys.readouterr().err


# --- the image ----------------------------------------------------------------------------


def test_dockerfile_passes_hadolint() -> None:
    result = _run(BIN / "hadolint", DOCKERFILE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_fails_a_careless_dockerfile(tmp_path: Path) -> None:
    # The linter really lints: an unpinned base, root and a cached pip install are reported.
    careless = tmp_path / "Dockerfile"
    careless.write_text("FROM python:latest\nRUN pip install flask\nCMD python app.py\n")
    result = _run(BIN / "hadolint", careless)
    assert result.returncode != 0
    assert "DL3007" in result.stdout  # `latest`


def _stages() -> list[list[str]]:
    """The Dockerfile's instructions (continuations joined, comments dropped), per stage."""
    text = re.sub(r"\\\n(\s*#.*\n)*", " ", DOCKERFILE.read_text())
    stages: list[list[str]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("FROM "):
            stages.append([])
        if stages:
            stages[-1].append(line)
    return stages


def test_image_runs_taskapi_serve_as_a_non_root_user_without_pip() -> None:
    build, runtime = _stages()
    assert build[0].endswith("AS build") and runtime[0].endswith("AS runtime")
    assert f"USER {stack.UID}:{stack.UID}" in runtime
    assert 'ENTRYPOINT ["taskapi"]' in runtime and runtime[-1] == 'CMD ["serve"]'
    env = next(line for line in runtime if line.startswith("ENV "))
    assert "TASKAPI_GRPC_HOST=0.0.0.0" in env and "PYTHONDONTWRITEBYTECODE=1" in env
    assert any("pip uninstall" in line and "pip setuptools wheel" in line for line in runtime)
    assert any("venv --without-pip /opt/taskapi" in line for line in build)
    assert not any(line.startswith(("COPY . ", "ADD ")) for stage in (build, runtime) for line in stage)


def test_envoy_finds_the_descriptor_where_the_image_installs_it() -> None:
    base = re.search(r"ARG PYTHON_IMAGE=python:(\d+\.\d+)\.\d+-slim", DOCKERFILE.read_text())
    assert base is not None
    assert stack.IMAGE_DESCRIPTOR == (
        f"/opt/taskapi/lib/python{base.group(1)}/site-packages/taskapi/envoy/taskapi.binpb"
    )


def test_what_the_dockerfile_copies_builds_the_wheels(tmp_path: Path) -> None:
    """The build stage's COPY lines, replayed into an empty folder, are enough to build both
    wheels, and the server's carries the Envoy template and descriptor the edge needs."""
    build, _ = _stages()
    context = tmp_path / "context"
    for line in build:
        if line.startswith("COPY "):
            *sources, target = line.split()[1:]
            for source in sources:
                destination = context / target / Path(source).name if target.endswith("/") else context / target
                if (ROOT / source).is_dir():
                    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "build")
                    shutil.copytree(ROOT / source, destination, ignore=ignore)
                else:
                    destination.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy(ROOT / source, destination)
    wheels = tmp_path / "wheels"
    result = _run(
        sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
        "--wheel-dir", wheels, "./clients/python", ".", cwd=context,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    (server_wheel,) = wheels.glob("taskapi-0.1.0-*.whl")
    names = set(zipfile.ZipFile(server_wheel).namelist())
    assert {"taskapi/envoy/taskapi.binpb", "taskapi/envoy/envoy.yaml.j2", "taskapi/server/cli.py"} <= names
    assert list(wheels.glob("taskapi_client-0.1.0-*.whl"))


def test_dockerignore_keeps_the_context_to_the_copied_sources() -> None:
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
    assert ignore.index("*") < min(i for i, line in enumerate(ignore) if line.startswith("!"))  # all out, then in
    copied = {line.split()[1] for line in _stages()[0] if line.startswith("COPY ")}
    for source in copied:
        assert f"!{source}/" in ignore or f"!{source}" in ignore, source


# --- Kubernetes ---------------------------------------------------------------------------


# The oldest version the manifests support, and the newest kubernetes-validate knows (nothing removed since).
@pytest.mark.parametrize("version", [stack.KUBERNETES_VERSION, "1.37.0"])
def test_manifests_pass_kubernetes_validate_strict(version: str) -> None:
    result = _run(BIN / "kubernetes-validate", "--strict", "-k", version, "--quiet", *MANIFESTS)
    assert result.returncode == 0, result.stdout + result.stderr


def test_kubernetes_validate_rejects_an_unknown_field(tmp_path: Path) -> None:
    # Strict really is strict: a misspelt field fails, not just passes unchecked.
    (deployment,) = [d for d in _documents(DEPLOY / "kubernetes" / "single.yaml") if d["kind"] == "Deployment"][:1]
    _pod(deployment)["containers"][0]["readinesProbe"] = {"grpc": {"port": 1}}
    broken = tmp_path / "broken.yaml"
    broken.write_text(yaml.safe_dump(deployment))
    result = _run(BIN / "kubernetes-validate", "--strict", "-k", stack.KUBERNETES_VERSION, broken)
    assert result.returncode != 0
    assert "readinesProbe" in result.stdout + result.stderr


def test_no_secret_value_is_in_the_repository() -> None:
    assert not _of_kind("Secret")
    secrets = {s.name for s in stack.SETTINGS if s.secret}
    for deployment in _of_kind("Deployment"):
        for container in _pod(deployment)["containers"]:
            for entry in container.get("env", []):
                assert "value" not in entry, entry  # every setting by reference
                if entry["name"] in secrets:
                    assert entry["valueFrom"]["secretKeyRef"]["name"] == stack.SECRET
    (config_map,) = [d for d in _of_kind("ConfigMap") if d["metadata"]["name"] == stack.CONFIG_MAP]
    assert not secrets & set(config_map["data"])


def test_every_taskapi_container_refers_to_every_setting() -> None:
    names = [s.name for s in stack.SETTINGS]
    for deployment in _of_kind("Deployment"):
        for container in _pod(deployment)["containers"]:
            if container["name"] == "envoy":
                assert "env" not in container
                continue
            assert [entry["name"] for entry in container["env"]] == names, deployment["metadata"]["name"]


def test_processes_need_their_secrets() -> None:
    def required(deployment_name: str) -> set[str]:
        (deployment,) = [d for d in _of_kind("Deployment") if d["metadata"]["name"] == deployment_name]
        env = _pod(deployment)["containers"][0]["env"]
        return {
            e["name"]
            for e in env
            if "secretKeyRef" in e["valueFrom"] and not e["valueFrom"]["secretKeyRef"]["optional"]
        }

    # Redis is REDIS_URL, REDIS_SENTINELS or REDIS_CLUSTER (exactly one): none is required alone.
    assert required("taskapi-server") == {"JWT_SECRET", "MONGODB_URI"}
    assert required("taskapi-worker") == {"JWT_SECRET", "MONGODB_URI", "SMTP_URL"}


class _RecordingEnv(dict[str, str]):
    """An empty environment that notes every variable read from it."""

    def __init__(self, **values: str) -> None:
        super().__init__(values)
        self.read: set[str] = set()

    def get(self, key: str, default: Any = None) -> Any:
        self.read.add(key)
        return super().get(key, default)

    def __getitem__(self, key: str) -> str:
        self.read.add(key)
        return super().__getitem__(key)

    def __contains__(self, key: object) -> bool:
        self.read.add(str(key))
        return super().__contains__(key)


def test_render_lists_every_setting_the_server_reads() -> None:
    """A new setting in Settings fails here until deploy/stack.py says where it comes from."""
    # Empty, and with tracing on: the OTEL_* details are read only once an endpoint is set.
    envs = [_RecordingEnv(), _RecordingEnv(OTEL_EXPORTER_OTLP_ENDPOINT="http://collector:4317")]
    for env in envs:
        Settings.from_env(env)
    listed = [s.name for s in stack.SETTINGS]
    assert len(listed) == len(set(listed)), "a setting listed twice"
    assert set(listed) == set().union(*(env.read for env in envs))


def _config_values() -> dict[str, str]:
    (config_map,) = [d for d in _of_kind("ConfigMap") if d["metadata"]["name"] == stack.CONFIG_MAP]
    data: dict[str, str] = config_map["data"]
    return data


def _settings(values: Mapping[str, str]) -> Settings:
    # Placeholders for the Secret's keys (a real value of the right shape for each).
    secrets = {"JWT_SECRET": "x" * 48, "MONGODB_URI": "mongodb://db/", "REDIS_URL": "redis://redis:6379/0"}
    return Settings.from_env({**values, **secrets})


def test_the_config_map_holds_values_the_server_accepts() -> None:
    settings = _settings(_config_values())
    assert settings.grpc_host == "0.0.0.0"
    assert settings.drain_seconds == stack.DRAIN_SECONDS
    assert settings.shutdown_grace_seconds == stack.SHUTDOWN_GRACE_SECONDS


def test_termination_outlasts_the_servers_drain() -> None:
    """preStop (leave DNS), then SIGTERM: NOT_SERVING for the drain, then in-flight calls get
    the grace; the pod's grace period must cover all of it, read from the committed files."""
    settings = _settings(_config_values())
    for deployment in _servers():
        pod = _pod(deployment)
        (container,) = pod["containers"]
        pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
        needed = pre_stop + settings.drain_seconds + settings.shutdown_grace_seconds
        assert pod["terminationGracePeriodSeconds"] > needed, deployment["metadata"]["name"]
        # Envoy re-resolves the headless Service within the preStop wait.
        assert pre_stop >= stack.DNS_REFRESH_SECONDS
    (worker,) = [d for d in _of_kind("Deployment") if d["metadata"]["name"] == "taskapi-worker"]
    assert _pod(worker)["terminationGracePeriodSeconds"] > settings.jobs_time_limit_ms / 1000


def test_every_server_deployment_has_probes_an_hpa_a_pdb_and_a_headless_service() -> None:
    autoscalers = {d["spec"]["scaleTargetRef"]["name"]: d["spec"] for d in _of_kind("HorizontalPodAutoscaler")}
    budgets = {d["metadata"]["name"]: d["spec"] for d in _of_kind("PodDisruptionBudget")}
    services = {d["metadata"]["name"]: d["spec"] for d in _of_kind("Service")}
    for deployment in _servers():
        name = deployment["metadata"]["name"]
        selector = deployment["spec"]["selector"]["matchLabels"]
        assert "replicas" not in deployment["spec"]  # the HPA owns it
        (container,) = _pod(deployment)["containers"]
        for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
            assert container[probe]["grpc"] == {"port": stack.GRPC_PORT, "service": ""}, (name, probe)
        assert autoscalers[name]["minReplicas"] == 3 and autoscalers[name]["maxReplicas"] == 20
        (metric,) = autoscalers[name]["metrics"]
        assert metric["resource"] == {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}}
        assert budgets[name]["selector"]["matchLabels"] == selector and budgets[name]["maxUnavailable"] == 1
        assert services[name]["clusterIP"] == "None" and services[name]["selector"] == selector
        keys = {c["topologyKey"] for c in _pod(deployment)["topologySpreadConstraints"]}
        assert keys == {"topology.kubernetes.io/zone", "kubernetes.io/hostname"}


def test_split_layout_serves_each_service_from_its_own_deployment() -> None:
    documents = _documents(DEPLOY / "kubernetes" / "split.yaml")
    split = {d["metadata"]["name"]: d for d in documents if d["kind"] == "Deployment"}
    assert _pod(split["taskapi-accounts"])["containers"][0]["args"] == ["serve", "--services", "auth,users"]
    assert _pod(split["taskapi-tasks"])["containers"][0]["args"] == ["serve", "--services", "tasks"]
    kinds = {(d["kind"], d["metadata"]["name"]) for d in documents}
    for name in ("taskapi-accounts", "taskapi-tasks"):
        assert {("Service", name), ("HorizontalPodAutoscaler", name), ("PodDisruptionBudget", name)} <= kinds
    # Each Envoy cluster of the split layout has a headless Service behind it.
    hosts = {host for upstreams in stack.SPLIT_UPSTREAMS.values() for host, _ in upstreams}
    assert hosts == {"taskapi-accounts", "taskapi-tasks"}


def test_every_container_is_locked_down_and_sized() -> None:
    for deployment in _of_kind("Deployment"):
        pod = _pod(deployment)
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == stack.UID
        assert pod["automountServiceAccountToken"] is False
        assert pod["serviceAccountName"] == deployment["metadata"]["name"]
        for container in pod["containers"]:
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True and context["allowPrivilegeEscalation"] is False
            assert context["capabilities"] == {"drop": ["ALL"]}
            assert set(container["resources"]) == {"requests", "limits"}
            assert container["image"] == stack.IMAGE
            assert "livenessProbe" in container and "readinessProbe" in container


# --- Envoy --------------------------------------------------------------------------------


def _envoy_configs() -> dict[str, str]:
    configs = {
        f"{path.name}:{document['metadata']['name']}": document["data"]["envoy.yaml"]
        for path in MANIFESTS
        for document in _documents(path)
        if document["kind"] == "ConfigMap" and "envoy.yaml" in document.get("data", {})
    }
    configs |= {str(path.relative_to(DEPLOY)): path.read_text() for path in (DEPLOY / "envoy").glob("*.yaml")}
    return configs


def test_every_rendered_envoy_config_passes_envoy_validate(tmp_path: Path) -> None:
    configs = _envoy_configs()
    assert {"single.yaml:taskapi-edge", "split.yaml:taskapi-edge", "envoy/compose.yaml"} <= set(configs)
    for name, text in configs.items():
        # Inside the image Envoy reads the descriptor from the venv; here from the checkout.
        assert stack.IMAGE_DESCRIPTOR in text, name
        path = tmp_path / f"{len(list(tmp_path.iterdir()))}.yaml"
        path.write_text(text.replace(stack.IMAGE_DESCRIPTOR, str(edge.DESCRIPTOR.resolve())))
        result = edge.validate(path)
        assert result.returncode == 0, (name, result.stdout + result.stderr)
        assert "deprecated" not in result.stdout + result.stderr, name


def test_edge_configs_discover_replicas_through_dns() -> None:
    for name, text in _envoy_configs().items():
        clusters = [c for c in yaml.safe_load(text)["static_resources"]["clusters"] if c["name"].startswith("taskapi_")]
        # One cluster (single layout), or one per service (split: auth and users on the accounts pods),
        # and the task replicas' watch servers (WatchTasks streams).
        assert len(clusters) in (2, 4) and clusters[-1]["name"] == "taskapi_watch", name
        for cluster in clusters:
            assert cluster["cluster_type"]["name"] == "envoy.cluster.dns", name
            (endpoint,) = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"]
            socket_address = endpoint["endpoint"]["address"]["socket_address"]
            assert socket_address["address"] in {"taskapi-server", "server", "taskapi-accounts", "taskapi-tasks"}, name
        watch = clusters[-1]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
        assert watch["socket_address"]["port_value"] == stack.WATCH_PORT, name
        assert watch["socket_address"]["address"] in {"taskapi-server", "server", "taskapi-tasks"}, name


def test_edge_pods_roll_when_their_config_changes() -> None:
    for path in MANIFESTS:
        documents = _documents(path)
        configs = {d["metadata"]["name"]: d["data"].get("envoy.yaml") for d in documents if d["kind"] == "ConfigMap"}
        edges = [d for d in documents if d["kind"] == "Deployment" and d["metadata"]["name"] == "taskapi-edge"]
        for deployment in edges:
            annotations = deployment["spec"]["template"]["metadata"]["annotations"]
            (volume,) = [v for v in _pod(deployment)["volumes"] if "configMap" in v]
            digest = hashlib.sha256(configs[volume["configMap"]["name"]].encode()).hexdigest()
            assert annotations["checksum/envoy-config"] == digest


# --- compose ------------------------------------------------------------------------------


def _compose_validator() -> jsonschema.Draft7Validator:
    schema = json.loads(COMPOSE_SCHEMA.read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def test_compose_file_matches_the_compose_specification() -> None:
    errors = [error.message for error in _compose_validator().iter_errors(yaml.safe_load(COMPOSE.read_text()))]
    assert not errors


def test_the_compose_schema_rejects_what_compose_would(tmp_path: Path) -> None:
    compose = yaml.safe_load(COMPOSE.read_text())
    compose["services"]["server"]["replica"] = 3  # `deploy.replicas` misspelt at the wrong level
    assert any("replica" in error.message for error in _compose_validator().iter_errors(compose))


def test_compose_file_passes_dclint() -> None:
    result = _run(ROOT / "node_modules" / ".bin" / "dclint", COMPOSE)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "warning" not in result.stdout


def test_compose_runs_the_whole_stack_on_one_host() -> None:
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    assert services["server"]["deploy"]["replicas"] >= 2
    assert services["worker"]["command"] == ["worker"] and services["server"]["command"] == ["serve"]
    assert services["edge"]["volumes"] == ["./envoy/compose.yaml:/etc/envoy/envoy.yaml:ro"]
    members = [name for name, service in services.items() if "--replSet" in service.get("command", [])]
    assert len(members) == 3
    environment = services["server"]["environment"]
    assert all(f"{member}:27017" in environment["MONGODB_URI"] for member in members)
    assert "replicaSet=rs0" in environment["MONGODB_URI"]
    # The one secret comes from the operator's shell or .env, and compose refuses to start without it.
    assert environment["JWT_SECRET"].startswith("${JWT_SECRET:?")
    settings = Settings.from_env({**environment, "JWT_SECRET": "x" * 48})
    assert settings.smtp is not None and settings.trusted_proxies
    for name in ("server", "worker", "edge"):
        assert services[name]["read_only"] is True and services[name]["cap_drop"] == ["ALL"], name
