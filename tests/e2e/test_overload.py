"""Overload at the edge: calls beyond what the replicas run at once wait in Envoy's bounded
queue; calls beyond the queue are shed at once with 503 UNAVAILABLE, Retry-After and
RetryInfo, never grpcio's own 429. Real Envoy in front of a stand-in replica whose every call
takes a fixed time, so how many calls fit is arithmetic, not a race."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import cast

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from taskapi.server.app import App
from taskapi.v1 import task_pb2
from taskapi_client import TaskApiClient
from tests.conftest import make_settings
from tests.e2e.conftest import running_stack
from tests.support.edge import RestClient, cluster_stats, running_edge

CALL_SECONDS = 0.6


class SlowReplica:
    """A gRPC server with the real health service, answering every other call with an empty
    message after CALL_SECONDS; it counts the calls it received."""

    def __init__(self) -> None:
        self.calls = 0
        self._lock = threading.Lock()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=32))
        health_servicer = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, self.server)
        self.server.add_generic_rpc_handlers((_Everything(self),))
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()
        health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)

    def answer(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        with self._lock:
            self.calls += 1
        time.sleep(CALL_SECONDS)
        return b""


class _Everything(grpc.GenericRpcHandler):
    def __init__(self, replica: SlowReplica) -> None:
        self._replica = replica

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler[bytes, bytes] | None:
        if details.method.startswith("/grpc.health."):
            return None
        return grpc.unary_unary_rpc_method_handler(self._replica.answer)


@pytest.fixture
def replica() -> Iterator[SlowReplica]:
    stand_in = SlowReplica()
    yield stand_in
    stand_in.server.stop(0)


def test_a_burst_waits_in_the_edge_queue_and_what_does_not_fit_is_a_clean_503(
    replica: SlowReplica, tmp_path: Path
) -> None:
    """2 calls at a time per replica, 3 waiting: of 10 simultaneous calls, 5 succeed (the
    queued ones a moment later) and 5 are shed, each as the JSON error with Retry-After."""
    with running_edge([("127.0.0.1", replica.port)], tmp_path, replica_concurrency=2, queue_size=3) as envoy:
        client = RestClient(f"http://127.0.0.1:{envoy.config.rest_port}/api/v1/")
        # One call first, so Envoy holds a ready connection to the replica: calls that arrive
        # while a connection is still being made wait as pending too, and on a busy machine
        # that made fewer than 3 of the burst fit the queue.
        assert client.get("tasks/0123456789abcdef01234567").status == 200
        replica.calls = 0
        start = threading.Barrier(10)

        def call(_: int) -> tuple[int, dict[str, str], object]:
            start.wait()
            response = client.get("tasks/0123456789abcdef01234567")
            return response.status, dict(response.headers), response.json()

        with futures.ThreadPoolExecutor(10) as pool:
            results = list(pool.map(call, range(10)))
        served = [r for r in results if r[0] == 200]
        shed = [r for r in results if r[0] != 200]
        outcomes = [(status, _reason(body)) for status, _, body in results]
        stats = cluster_stats(envoy, "")
        assert len(served) == 5 and replica.calls == 5, (outcomes, replica.calls, stats)
        for status, headers, body in shed:
            assert status == 503 and headers["retry-after"] == "1" and headers["x-retry-safe"] == "true"
            assert headers["content-type"] == "application/json"
            assert body == {
                "code": 14,
                "message": "the service is busy: retry in 1 s",
                "details": [
                    {
                        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                        "reason": "OVERLOADED",
                        "domain": "taskapi.v1",
                    },
                    {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "1s"},
                ],
            }
        assert stats["upstream_rq_pending_overflow"] == 5  # counted, for dashboards


def _reason(body: object) -> str:
    details = body.get("details", []) if isinstance(body, dict) else []
    return str(details[0].get("reason", "")) if details else ""


def test_a_shed_grpc_call_is_unavailable_and_the_sdk_retries_even_a_write(replica: SlowReplica, tmp_path: Path) -> None:
    """On the gRPC port the shed call is UNAVAILABLE marked retry-safe (nothing was done), so
    the SDK retries even CreateTask, which it never retries otherwise; it runs exactly once."""
    with running_edge([("127.0.0.1", replica.port)], tmp_path, replica_concurrency=1, queue_size=1) as envoy:
        target = f"127.0.0.1:{envoy.config.grpc_port}"
        with grpc.insecure_channel(target) as channel:
            grpc.channel_ready_future(channel).result(timeout=10)
            get: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary("/taskapi.v1.TaskService/GetTask")

            def occupied() -> list[grpc.Future[bytes]]:
                """One call running, one waiting: the edge is full."""
                calls: list[grpc.Future[bytes]] = [get.future(b"", timeout=10)]
                time.sleep(CALL_SECONDS / 4)
                calls.append(get.future(b"", timeout=10))
                time.sleep(CALL_SECONDS / 4)
                return calls

            calls = occupied()
            with pytest.raises(grpc.RpcError) as refused:
                list_tasks: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(
                    "/taskapi.v1.TaskService/ListTasks"
                )
                list_tasks(b"", timeout=10)
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
            assert refused.value.details() == "the service is busy: retry in 1 s"
            trailing = cast(tuple[tuple[str, str], ...], refused.value.trailing_metadata())  # grpc types it loosely
            assert ("x-retry-safe", "true") in trailing
            for call in calls:
                call.result()

            sleeps: list[float] = []

            def wait_out(delay: float) -> None:  # long enough for the edge to have room
                sleeps.append(delay)
                time.sleep(2 * CALL_SECONDS)

            before = replica.calls
            calls = occupied()
            with TaskApiClient(target, sleep=wait_out) as sdk:
                sdk.call(sdk.tasks.CreateTask, task_pb2.CreateTaskRequest(), authenticated=False)
            for call in calls:
                call.result()
            assert (
                len(sleeps) == 1 and replica.calls == before + 3
            )  # the two occupying calls, and the SDK's: shed once, then run once


class StormReplica:
    """A stand-in replica during a login storm: every Login is shed after LOGIN_SECONDS (503
    UNAVAILABLE marked `x-retry-safe`, as the server sheds one while its password-hashing
    slots are busy), and each GetTask's first attempt is refused UNAVAILABLE (nothing done,
    a repeatable read: the edge retries it; the retry is answered). It counts both."""

    LOGIN_SECONDS = 0.3

    def __init__(self) -> None:
        self.logins = self.reads = 0
        self._seen: set[str] = set()
        self._lock = threading.Lock()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=64))
        health_servicer = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, self.server)
        self.server.add_generic_rpc_handlers((_Storm(self),))
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()
        health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)

    def login(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        with self._lock:
            self.logins += 1
        time.sleep(self.LOGIN_SECONDS)
        context.set_trailing_metadata((("x-retry-safe", "true"),))
        context.abort(grpc.StatusCode.UNAVAILABLE, "the server is busy checking passwords; retry shortly")

    def get(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        request_id = str(dict(context.invocation_metadata())["x-request-id"])  # the same on every attempt
        with self._lock:
            self.reads += 1
            first = request_id not in self._seen
            self._seen.add(request_id)
        if first:
            context.abort(grpc.StatusCode.UNAVAILABLE, "refused before it ran")
        return task_pb2.Task(id="0123456789abcdef01234567", title="read").SerializeToString()


class _Storm(grpc.GenericRpcHandler):
    def __init__(self, replica: StormReplica) -> None:
        self._replica = replica

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler[bytes, bytes] | None:
        if details.method == "/taskapi.v1.AuthService/Login":
            return grpc.unary_unary_rpc_method_handler(self._replica.login)
        if details.method == "/taskapi.v1.TaskService/GetTask":
            return grpc.unary_unary_rpc_method_handler(self._replica.get)
        return None


def test_a_login_storm_does_not_take_the_retries_other_calls_need(tmp_path: Path) -> None:
    """48 clients log in over and over while every Login is shed (retry-safe, so the edge
    retries each twice): far more retries at once than the old cap of 16 the whole cluster
    shared. Reads whose first attempt a replica refused are still retried and answered 200,
    never a 503, and no retry is refused for lack of a slot (upstream_rq_retry_overflow)."""
    replica = StormReplica()
    try:
        with running_edge([("127.0.0.1", replica.port)], tmp_path, replica_concurrency=64) as envoy:
            client = RestClient(f"http://127.0.0.1:{envoy.config.rest_port}/api/v1/")
            stop = threading.Event()
            login_statuses: list[int] = []

            def storm() -> None:
                while not stop.is_set():
                    response = client.post("auth/login", {"email": "storm@example.com", "password": "wrong password"})
                    login_statuses.append(response.status)

            with futures.ThreadPoolExecutor(48) as stormers:
                for _ in range(48):
                    stormers.submit(storm)
                try:
                    time.sleep(2 * StormReplica.LOGIN_SECONDS)  # the storm's retries under way
                    with futures.ThreadPoolExecutor(8) as readers:
                        reads = list(
                            readers.map(lambda _: client.get("tasks/0123456789abcdef01234567").status, range(40))
                        )
                finally:
                    stop.set()
            stats = cluster_stats(envoy, "")
        assert reads == [200] * 40, reads
        assert replica.reads == 80  # each read refused once, then retried and answered
        assert login_statuses and set(login_statuses) == {503}  # the storm was shed throughout
        assert stats["upstream_rq_retry"] >= 2 * len(login_statuses)  # every shed Login retried twice
        assert stats["upstream_rq_retry_overflow"] == 0, stats
    finally:
        replica.server.stop(0)


class HashingPlacesTaken:
    """Every password-hashing place of `app` taken by the test (as a crowd of sign-ins would),
    until `free()` or the end of the block: a Login in between is shed."""

    def __init__(self, app: App | None) -> None:
        assert app is not None  # an App in this process (the single layout)
        self._waiting = app.accounts._hasher._waiting
        self._held = 0

    def __enter__(self) -> HashingPlacesTaken:
        while self._waiting.acquire(blocking=False):
            self._held += 1
        return self

    def free(self) -> None:
        for _ in range(self._held):
            self._waiting.release()
        self._held = 0

    def __exit__(self, *exc: object) -> None:
        self.free()


SIGN_IN = {"email": "shed@example.com", "password": "a long password"}  # no such account: 401 when served


def test_a_sign_in_shed_by_the_server_carries_retry_after_through_the_edge(redis_url: str, tmp_path: Path) -> None:
    """The real server refusing a Login while every password-hashing place is taken (held by
    the test): over REST, 503 with the RetryInfo delay as `Retry-After` too, and x-retry-safe,
    like the edge's own 503s, so a plain HTTP client knows when to come back."""
    with running_stack(make_settings(redis_url), tmp_path, replicas=1) as stack:
        with HashingPlacesTaken(stack.app):
            response = stack.client.post("auth/login", SIGN_IN)
        body = response.json()
        assert response.status == 503, body
        assert response.headers["retry-after"] == "1"
        assert response.headers["x-retry-safe"] == "true"
        assert _reason(body) == "PASSWORD_HASHING_BUSY"
        assert {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "1s"} in body["details"]
        assert stack.client.post("auth/login", SIGN_IN).status == 401  # a place free again: served


def test_a_shed_sign_in_is_retried_by_the_edge_once_the_delay_it_names_has_passed(
    redis_url: str, tmp_path: Path
) -> None:
    """Three sign-ins at once on one replica: the third finds every password-hashing place
    taken and is shed with Retry-After: 1. The edge waits that long before its retry (not
    25 ms), by when a place is free again: the client sees its answer, not a 503. Here the
    places are held by the test and freed 0.3 s after the call."""
    with running_stack(make_settings(redis_url), tmp_path, replicas=1) as stack:
        with HashingPlacesTaken(stack.app) as places, futures.ThreadPoolExecutor(1) as pool:
            started = time.monotonic()
            login = pool.submit(stack.client.post, "auth/login", SIGN_IN)
            time.sleep(0.3)
            places.free()
            response = login.result(timeout=10)
            elapsed = time.monotonic() - started
        assert response.status == 401, response.json()  # served: an unknown account
        assert 0.9 < elapsed < 3.0, elapsed  # one retry, after the 1 s (1-1.5 s jittered) it was told
        stats = cluster_stats(stack.envoy, "")
        assert stats.get("upstream_rq_retry", 0) >= 1, stats
