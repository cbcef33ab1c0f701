"""Load balancing and failover through Envoy across real replicas."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from tests.conftest import make_settings
from tests.e2e.conftest import LAYOUTS, Stack, register, request_id, resource, running_stack
from tests.support.edge import HEALTH_CHECK_INTERVAL_SECONDS, Response, RestClient, upstream_requests


def test_requests_spread_across_both_replicas(stack: Stack, client: RestClient) -> None:
    account = register(client)
    before = upstream_requests(stack.envoy)
    for _ in range(30):
        assert client.get("tasks", token=account.token).status == 200
    after = upstream_requests(stack.envoy)
    served = {port: after[port] - before.get(port, 0) for port in after}
    # Every replica serving tasks took some (split: the task service's only; the account
    # services' took none), and nothing was retried.
    assert {port for port, count in served.items() if count > 0} == stack.task_replica_ports, served
    assert sum(served.values()) == 30


@pytest.mark.parametrize("layout", LAYOUTS)
def test_stopping_a_replica_fails_no_idempotent_request(layout: str, redis_url: str, tmp_path: Path) -> None:
    """Reads and creates that carry a requestId keep succeeding while a replica drains and dies
    (split: a replica of the task service, which has two)."""
    # Drain long enough for Envoy's health checks (unhealthy after 2 failures) to notice.
    settings = make_settings(redis_url, drain_seconds=3 * HEALTH_CHECK_INTERVAL_SECONDS)
    with running_stack(settings, tmp_path, layout=layout) as stack:
        client = stack.client
        account = register(client)
        task = resource(client.post("tasks", {"title": "survivor"}, token=account.token))

        failures: list[Response] = []
        done = threading.Event()
        calls = {"count": 0}
        created: dict[str, str] = {}

        def traffic() -> None:
            while not done.is_set():
                rid = request_id()
                responses = [
                    client.get(f"tasks/{task['id']}", token=account.token),
                    client.get("tasks", token=account.token, query={"pageSize": 5}),
                    client.post("tasks", {"title": f"create {rid}"}, token=account.token, query={"requestId": rid}),
                ]
                calls["count"] += len(responses)
                failures.extend(r for r in responses if r.status != 200)
                if responses[2].status == 200:
                    created[rid] = responses[2].json()["id"]

        worker = threading.Thread(target=traffic, name="traffic")
        worker.start()
        try:
            _wait_for_calls(calls, 30)
            victim = next(r for r in stack.replicas if r.port in stack.task_replica_ports)
            victim.stop(1.0)  # drain: NOT_SERVING, then in-flight calls finish, then gone
            start = calls["count"]
            _wait_for_calls(calls, start + 60)
        finally:
            done.set()
            worker.join(timeout=60)
        assert not failures, failures[:5]
        assert stack.envoy.healthy_upstreams() == stack.envoy.endpoints - 1
        # Every create that returned 200 is there exactly once.
        listed = client.get("tasks", token=account.token, query={"pageSize": 100, "q": "create "}).json()
        assert listed["totalSize"] == len(created)


def _wait_for_calls(calls: dict[str, int], target: int) -> None:
    import time

    deadline = time.monotonic() + 60
    while calls["count"] < target:
        assert time.monotonic() < deadline, f"traffic stalled at {calls['count']} calls"
        time.sleep(0.05)
