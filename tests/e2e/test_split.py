"""The split layout end to end: the account and task services as `taskapi serve --services`
processes behind a real Envoy with a cluster per service (docs/services.md).

DeleteUser runs on the session's `taskapi dev --split` stack; the tests that stop a service
start a split of their own and SIGKILL one side.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from taskapi.server import edge
from taskapi.server.edge import Envoy
from tests.conftest import GENEROUS, TEST_SECRET
from tests.e2e.conftest import Account, Stack, assert_error, login, register, resource
from tests.e2e.test_watch_sse import Curl
from tests.support.edge import RestClient, edge_config, running_edge
from tests.support.jobs import Process, namespace, running

UNAVAILABLE = 14


@pytest.mark.parametrize("stack", ["split"], indirect=True)
def test_delete_user_removes_the_tasks_within_seconds_and_no_admin_sees_an_orphan(
    client: RestClient, admin: Account
) -> None:
    leaving = register(client)
    for title in ("one", "two", "three"):
        resource(client.post("tasks", {"title": title}, token=leaving.token))
    mine = {"owner": leaving.user["id"], "pageSize": 100}
    assert resource(client.get("tasks", token=admin.token, query=mine))["totalSize"] == 3

    assert client.delete(f"users/{leaving.user['id']}", token=admin.token).status == 200
    # The tokens fail at once, on the task service too, before any cleanup.
    assert_error(client.get("tasks", token=leaving.token), 401, 16)
    deadline = time.monotonic() + 10
    while (left := resource(client.get("tasks", token=admin.token, query=mine))["totalSize"]) != 0:
        assert time.monotonic() < deadline, f"{left} tasks still listed 10 s after DeleteUser"
        time.sleep(0.1)
    # Nor in the listing across every owner, page by page.
    token = ""
    while True:
        page = resource(
            client.get("tasks", token=admin.token, query={"owner": "-", "pageSize": 100, "pageToken": token})
        )
        assert not [t for t in page["tasks"] if t["owner"] == leaving.user["id"]], page
        if not (token := page["nextPageToken"]):
            break


@dataclass
class ProcessSplit:
    accounts: Process
    tasks: Process
    envoy: Envoy
    client: RestClient


@contextmanager
def running_process_split(redis_url: str, workdir: Path) -> Iterator[ProcessSplit]:
    rate = f"{GENEROUS.requests}/{GENEROUS.window_seconds}"
    env = dict(os.environ) | {
        "JWT_SECRET": TEST_SECRET,
        "REDIS_URL": redis_url,
        "JOBS_NAMESPACE": namespace(),
        "BCRYPT_ROUNDS": "4",
        "RATE_LIMIT_IP": rate,
        "RATE_LIMIT_USER": rate,
        "RATE_LIMIT_AUTH": rate,
        "TASKAPI_GRPC_PORT": "0",
        "TASKAPI_METRICS_PORT": "0",
        "TASKAPI_DRAIN_SECONDS": "0",
        "TASKAPI_SHUTDOWN_GRACE_SECONDS": "1",
    }
    with ExitStack() as stack:
        accounts = stack.enter_context(running(["serve", "--services", "auth,users"], env))
        tasks = stack.enter_context(running(["serve", "--services", "tasks"], env))
        account_port = int(accounts.wait_for(r"serving gRPC on \S+:(\d+)"))
        task_port = int(tasks.wait_for(r"serving gRPC on \S+:(\d+)"))
        upstreams = {
            "auth": [("127.0.0.1", account_port)],
            "users": [("127.0.0.1", account_port)],
            "tasks": [("127.0.0.1", task_port)],
        }
        envoy = stack.enter_context(running_edge([], workdir, service_upstreams=upstreams))
        yield ProcessSplit(accounts, tasks, envoy, RestClient(envoy.rest_url))


def _unavailable_soon(client: RestClient, path: str, body: dict[str, str] | None = None) -> None:
    """The stopped side's calls fail fast as UNAVAILABLE (Envoy has no healthy replica for it)."""
    deadline = time.monotonic() + 10
    while True:
        response = client.post(path, body) if body is not None else client.get(path)
        if response.status == 503:
            reply: dict[str, Any] = response.json()
            assert reply["code"] == UNAVAILABLE, response
            # Envoy's own reply, in ours: when to come back, and none of its wording.
            assert response.headers["retry-after"] == "1", response
            assert {d["@type"].rsplit(".", 1)[-1]: d for d in reply["details"]}["RetryInfo"]["retryDelay"] == "1s"
            assert "upstream" not in reply["message"], reply
            return
        assert time.monotonic() < deadline, response
        time.sleep(0.1)


def test_with_the_account_services_down_signed_in_users_keep_reading_and_writing_tasks(
    redis_url: str, tmp_path: Path
) -> None:
    with running_process_split(redis_url, tmp_path) as split:
        client = split.client
        account = register(client)
        first = resource(client.post("tasks", {"title": "before"}, token=account.token))

        split.accounts.kill()  # SIGKILL: nothing of it answers any more

        assert resource(client.get(f"tasks/{first['id']}", token=account.token))["title"] == "before"
        second = resource(client.post("tasks", {"title": "during"}, token=account.token))
        changed = client.patch(
            f"tasks/{second['id']}", {"status": "COMPLETED"}, token=account.token, query={"updateMask": "status"}
        )
        assert resource(changed)["status"] == "COMPLETED"
        listed = resource(client.get("tasks", token=account.token))
        assert {t["title"] for t in listed["tasks"]} == {"before", "during"}
        assert client.delete(f"tasks/{first['id']}", token=account.token).status == 200
        # Only the account services' own calls fail.
        _unavailable_soon(client, "auth/login", {"email": account.email, "password": account.password})


def test_with_the_task_service_down_registration_and_login_still_work(redis_url: str, tmp_path: Path) -> None:
    with running_process_split(redis_url, tmp_path) as split:
        client = split.client
        existing = register(client)

        split.tasks.kill()

        fresh = register(client)
        assert fresh.user["email"] == fresh.email
        again = login(client, existing.email)
        assert resource(client.get("users/me", token=again.token))["id"] == existing.user["id"]
        refreshed = client.post("auth/refresh", {"refreshToken": again.refresh_token})
        assert refreshed.status == 200, refreshed
        _unavailable_soon(client, "tasks")


def test_the_split_edge_routes_each_service_to_its_own_health_checked_cluster(stack: Stack) -> None:
    """Both layouts: what Envoy's admin says about the clusters matches the layout."""
    clusters = stack.envoy.admin_get("/clusters")
    names = {line.split("::")[0] for line in clusters.splitlines() if "::" in line}
    ours = {name for name in names if name.startswith("taskapi_")}
    if stack.layout == "single":
        assert ours == {"taskapi_replicas", "taskapi_watch"}  # WatchTasks: the replicas' watch servers
    else:
        # WatchTasks: the task process's watch server, on the port it reported bound.
        assert ours == {"taskapi_auth", "taskapi_users", "taskapi_tasks", "taskapi_watch"}
        for name in ours:
            assert f"{name}::127.0.0.1" in clusters and "health_flags::healthy" in clusters


def test_a_watcher_sees_its_changes_in_both_layouts(stack: Stack) -> None:
    """WatchTasks over REST (SSE) on the session's stacks; split, it reaches the task process's
    watch server, whose port the process bound itself and reported (server/readiness.py)."""
    client = stack.client
    account = register(client)
    follower = Curl(stack, account)
    try:
        assert follower.heartbeat()["resumeToken"]  # at once: a token before any change
        task = resource(client.post("tasks", {"title": "watched"}, token=account.token))
        (created,) = follower.changes(1)
    finally:
        follower.close()
    assert created["kind"] == "CREATED" and created["task"]["id"] == task["id"]


SPLIT_UPSTREAMS = {
    "auth": [("127.0.0.1", 1)],
    "users": [("127.0.0.1", 1)],
    "tasks": [("127.0.0.1", 2), ("127.0.0.1", 3)],
}


def test_the_split_config_passes_envoy_validate_and_routes_every_rpc_to_its_service(tmp_path: Path) -> None:
    config = edge_config([], service_upstreams=SPLIT_UPSTREAMS)
    result = edge.validate(edge.write(config, tmp_path))
    assert result.returncode == 0, result.stderr
    rendered = yaml.safe_load(edge.render(config))
    clusters = {c["name"]: c for c in rendered["static_resources"]["clusters"] if c["name"].startswith("taskapi_")}
    assert set(clusters) == {"taskapi_auth", "taskapi_users", "taskapi_tasks"}
    for key, name in (("auth", "AuthService"), ("users", "UserService"), ("tasks", "TaskService")):
        cluster = clusters[f"taskapi_{key}"]
        assert cluster["health_checks"][0]["grpc_health_check"]["service_name"] == f"taskapi.v1.{name}"
        ports = [
            e["endpoint"]["address"]["socket_address"]["port_value"]
            for e in cluster["load_assignment"]["endpoints"][0]["lb_endpoints"]
        ]
        assert ports == [port for _, port in SPLIT_UPSTREAMS[key]]
    for listener in rendered["static_resources"]["listeners"]:
        routes = listener["filter_chains"][0]["filters"][0]["typed_config"]["route_config"]["virtual_hosts"][0][
            "routes"
        ]
        for route in routes:
            match = route["match"].get("path") or route["match"].get("prefix", "")
            for key, name in (("auth", "AuthService"), ("users", "UserService"), ("tasks", "TaskService")):
                if match.startswith(f"/taskapi.v1.{name}/"):
                    assert route["route"]["cluster"] == f"taskapi_{key}", route


@pytest.mark.parametrize(
    "upstreams",
    [{"auth": [("127.0.0.1", 1)], "users": [("127.0.0.1", 1)]}, SPLIT_UPSTREAMS | {"billing": [("127.0.0.1", 4)]}],
    ids=["a service without replicas", "an unknown service"],
)
def test_a_split_config_must_place_every_service_and_only_those(upstreams: dict[str, list[tuple[str, int]]]) -> None:
    with pytest.raises(ValueError, match="service_upstreams needs replicas for each of auth, tasks, users"):
        edge.render(edge_config([], service_upstreams=upstreams))
    with pytest.raises(ValueError, match="at least one upstream"):
        edge.render(edge_config([]))
