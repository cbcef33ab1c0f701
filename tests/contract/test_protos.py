"""The contract: the descriptor Envoy loads matches API.md, field rules hold, and
the proto toolchain (generation freshness, buf lint/format, breaking) is clean."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import protovalidate
import pytest
from google.api import annotations_pb2
from google.protobuf import descriptor_pb2
from google.protobuf.message import Message

from taskapi.v1 import access_pb2, auth_pb2, task_pb2, user_pb2

ROOT = Path(__file__).resolve().parents[2]
BUF = ROOT / "node_modules" / ".bin" / "buf"

# Every RPC of API.md: (service, method) -> (verb, path, body).
API_SURFACE = {
    ("AuthService", "Register"): ("post", "/api/v1/auth/register", "*"),
    ("AuthService", "Login"): ("post", "/api/v1/auth/login", "*"),
    ("AuthService", "Refresh"): ("post", "/api/v1/auth/refresh", "*"),
    ("AuthService", "Logout"): ("post", "/api/v1/auth/logout", "*"),
    ("TaskService", "CreateTask"): ("post", "/api/v1/tasks", "task"),
    ("TaskService", "GetTask"): ("get", "/api/v1/tasks/{id}", ""),
    ("TaskService", "ListTasks"): ("get", "/api/v1/tasks", ""),
    ("TaskService", "UpdateTask"): ("patch", "/api/v1/tasks/{task.id}", "task"),
    ("TaskService", "DeleteTask"): ("delete", "/api/v1/tasks/{id}", ""),
    ("TaskService", "WatchTasks"): ("get", "/api/v1/tasks:watch", ""),
    ("TaskService", "ListTaskChanges"): ("get", "/api/v1/tasks:changes", ""),
    ("UserService", "GetCurrentUser"): ("get", "/api/v1/users/me", ""),
    ("UserService", "UpdateCurrentUser"): ("patch", "/api/v1/users/me", "user"),
    ("UserService", "ChangePassword"): ("post", "/api/v1/users/me:changePassword", "*"),
    ("UserService", "ListUsers"): ("get", "/api/v1/users", ""),
    ("UserService", "GetUser"): ("get", "/api/v1/users/{id}", ""),
    ("UserService", "UpdateUser"): ("patch", "/api/v1/users/{user.id}", "user"),
    ("UserService", "DeleteUser"): ("delete", "/api/v1/users/{id}", ""),
}
ADMIN_ONLY = {("UserService", "ListUsers"), ("UserService", "UpdateUser")}
PUBLIC = {("AuthService", m) for m in ("Register", "Login", "Refresh", "Logout")}


@pytest.fixture(scope="module")
def descriptor_set() -> descriptor_pb2.FileDescriptorSet:
    fds = descriptor_pb2.FileDescriptorSet()
    fds.ParseFromString((ROOT / "envoy" / "taskapi.binpb").read_bytes())
    return fds


def _methods(
    fds: descriptor_pb2.FileDescriptorSet,
) -> Iterator[tuple[str, descriptor_pb2.MethodDescriptorProto]]:
    for file in fds.file:
        if file.package != "taskapi.v1":
            continue
        for service in file.service:
            for method in service.method:
                yield service.name, method


def test_descriptor_has_every_rpc_with_its_http_rule(descriptor_set: descriptor_pb2.FileDescriptorSet) -> None:
    found = {}
    for service, method in _methods(descriptor_set):
        rule = method.options.Extensions[annotations_pb2.http]
        verb = rule.WhichOneof("pattern")
        found[(service, method.name)] = (verb, getattr(rule, verb), rule.body)
    assert found == API_SURFACE


def test_descriptor_carries_error_detail_types_and_source_docs(
    descriptor_set: descriptor_pb2.FileDescriptorSet,
) -> None:
    names = {f.name for f in descriptor_set.file}
    assert {"google/rpc/status.proto", "google/rpc/error_details.proto"} <= names
    task_file = next(f for f in descriptor_set.file if f.name == "taskapi/v1/task.proto")
    assert task_file.source_code_info.location, "descriptor lacks source info (comments)"


def test_access_level_is_declared_on_every_rpc(descriptor_set: descriptor_pb2.FileDescriptorSet) -> None:
    for service, method in _methods(descriptor_set):
        # The generated access_pb2.pyi types the extension as a plain FieldDescriptor (as taskapi_client.policy notes).
        level: int = method.options.Extensions[access_pb2.access]  # type: ignore[index]
        key = (service, method.name)
        expected = (
            access_pb2.ACCESS_LEVEL_PUBLIC
            if key in PUBLIC
            else access_pb2.ACCESS_LEVEL_ADMIN
            if key in ADMIN_ONLY
            else access_pb2.ACCESS_LEVEL_USER
        )
        assert level == expected, key


def _violations(message: Message) -> dict[str, str]:
    found = {}
    for v in protovalidate.collect_violations(message):
        assert v.proto.field is not None, v.proto  # every rule under test is a field rule
        found[".".join(e.field_name for e in v.proto.field.elements)] = v.proto.rule_id
    return found


def test_field_rules_fail_with_the_field_named() -> None:
    bad = task_pb2.CreateTaskRequest(
        task=task_pb2.Task(title="x" * 101, tags=["ok", "ok", ""]),
        request_id="not an id!",
    )
    assert _violations(bad) == {
        "task.title": "string.max_len",
        "task.tags": "string.min_len",
        "request_id": "string.pattern",
    }
    assert _violations(task_pb2.CreateTaskRequest(task=task_pb2.Task())) == {"task": "title.required"}
    assert _violations(task_pb2.ListTasksRequest(page_size=-1)) == {"page_size": "int32.gte"}
    assert _violations(task_pb2.GetTaskRequest(id="nope")) == {"id": "string.pattern"}


def test_password_and_email_rules() -> None:
    too_long = "p" * 73
    violations = _violations(auth_pb2.RegisterRequest(email="not-an-email", password=too_long, name="A"))
    assert violations == {"email": "string.email", "password": "string.max_bytes"}
    # 72 multi-byte characters are more than 72 bytes: rejected, never truncated.
    assert "password" in _violations(auth_pb2.RegisterRequest(email="a@b.co", password="é" * 40, name="A"))
    assert _violations(auth_pb2.RegisterRequest(email="a@b.co", password="p" * 72, name="A")) == {}


def test_enum_rules_reject_undefined_values() -> None:
    task = task_pb2.Task(title="t")
    task.status = 99  # type: ignore[assignment]
    assert _violations(task_pb2.CreateTaskRequest(task=task)) == {"task.status": "enum.defined_only"}
    assert _violations(user_pb2.UpdateUserRequest(user=user_pb2.User(id="0" * 24, role=user_pb2.ROLE_UNSPECIFIED))) == {
        "user.role": "enum.not_in"
    }


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_generated_code_is_fresh() -> None:
    result = _run(sys.executable, "scripts/protos.py", "check")
    assert result.returncode == 0, result.stdout + result.stderr


def test_buf_format_is_clean() -> None:
    result = _run(str(BUF), "format", "--diff", "--exit-code", "protos")
    assert result.returncode == 0, result.stdout + result.stderr


def test_buf_lint_is_clean(tmp_path: Path) -> None:
    image = tmp_path / "image.binpb"
    assert _run(sys.executable, "scripts/protos.py", "image", str(image)).returncode == 0
    result = _run(str(BUF), "lint", str(image), "--path", "taskapi")
    assert result.returncode == 0, result.stdout + result.stderr


def _breaking_base() -> str | None:
    """The protos to compare with: HEAD when protos/ has uncommitted changes, else the
    parent of the newest commit that touched protos/ (so a clean CI checkout still
    checks the latest proto change). None when there is no earlier version."""
    if _run("git", "status", "--porcelain", "--", "protos").stdout.strip():
        has_protos = _run("git", "ls-tree", "-d", "HEAD", "protos/taskapi").stdout.strip()
        return "HEAD" if has_protos else None
    last = _run("git", "log", "-1", "--format=%H", "--", "protos").stdout.strip()
    if not last:
        return None
    parent = _run("git", "rev-parse", "--verify", "--quiet", f"{last}^").stdout.strip()
    if not parent or not _run("git", "ls-tree", "-d", parent, "protos/taskapi").stdout.strip():
        return None
    return parent


def test_no_breaking_change_against_previous_protos(tmp_path: Path) -> None:
    base = _breaking_base()
    if base is None:
        pytest.skip("no earlier version of protos/ in git history to compare with")
    old_source = tmp_path / "old"
    old_source.mkdir()
    archive = subprocess.run(["git", "archive", base, "protos"], cwd=ROOT, capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(old_source)], input=archive.stdout, check=True)
    old, new = tmp_path / "old.binpb", tmp_path / "new.binpb"
    assert (
        _run(sys.executable, "scripts/protos.py", "image", str(old), "--source", str(old_source / "protos")).returncode
        == 0
    )
    assert _run(sys.executable, "scripts/protos.py", "image", str(new)).returncode == 0
    result = _run(str(BUF), "breaking", str(new), "--against", str(old), "--path", "taskapi")
    assert result.returncode == 0, f"breaking change against {base}:\n{result.stdout}{result.stderr}"


def test_every_read_declares_no_side_effects_and_the_policy_is_shared() -> None:
    """Retries are derived from `idempotency_level` (taskapi_client.policy): a new Get/List RPC
    without it would silently lose its retries at the edge and in the SDK."""
    from taskapi.server import edge
    from taskapi_client.policy import rpc_policies

    policies = rpc_policies()
    for policy in policies.values():
        if policy.name.startswith(("Get", "List")):
            assert policy.repeatable, f"{policy.path} should declare idempotency_level = NO_SIDE_EFFECTS"
    assert set(edge.IDEMPOTENT_METHODS) == {p.path for p in policies.values() if p.repeatable}
    assert "/taskapi.v1.AuthService/Logout" in edge.IDEMPOTENT_METHODS
