"""RateLimitInterceptor through a real gRPC server and a real redis-server."""

from __future__ import annotations

import logging
import math
import socket
import time
from importlib import resources
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_interceptor import ServerInterceptor
from grpc_status import rpc_status
from prometheus_client import CollectorRegistry

from taskapi.interceptors.metrics import Metrics
from taskapi.interceptors.ratelimit import LocalLimiter, RateLimitInterceptor
from taskapi.interceptors.ratelimit_redis import Budget
from taskapi.server.cache.client import connect_redis
from taskapi.server.cache.reads import ReadPlan, delivered_read
from taskapi.server.cache.shared import SharedCache
from taskapi.server.domain.limits import RateLimit
from taskapi.v1 import auth_pb2, auth_pb2_grpc, task_pb2, task_pb2_grpc
from tests.conftest import RedisProcess, private_database
from tests.integration.api import as_call
from tests.integration.api import headers as api_headers
from tests.integration.chain_server import TASK_ID, make_chain, run_server, stubs, unique_prefix

GENEROUS = RateLimit(requests=1000, window_seconds=60)


def limiter(url: str | None, **kwargs: Any) -> RateLimitInterceptor:
    client = connect_redis(url, 500) if url else None
    kwargs.setdefault("key_prefix", unique_prefix())
    kwargs.setdefault("user", GENEROUS)  # GetTask needs a caller; most tests look at other budgets
    return RateLimitInterceptor(client, **kwargs)


def get_task(stub: task_pb2_grpc.TaskServiceStub, user: str = "1", **metadata: str) -> tuple[task_pb2.Task, grpc.Call]:
    headers = (("authorization", f"Bearer user-{user}"), *metadata.items())
    return stub.GetTask.with_call(task_pb2.GetTaskRequest(id=TASK_ID), metadata=headers)


def login(stub: auth_pb2_grpc.AuthServiceStub, email: str, ip: str) -> tuple[auth_pb2.AuthSession, grpc.Call]:
    request = auth_pb2.LoginRequest(email=email, password="correct horse battery")
    return stub.Login.with_call(request, metadata=(("x-forwarded-for", ip),))


def decisions(metrics: Metrics, decision: str, backend: str) -> float:
    value = metrics.registry.get_sample_value(
        "taskapi_ratelimit_decisions_total", {"decision": decision, "backend": backend}
    )
    return value or 0.0


def test_limit_is_shared_by_two_servers(redis_url: str) -> None:
    prefix = unique_prefix()
    ip = RateLimit(requests=3, window_seconds=60)
    chain_a = make_chain(ratelimit=limiter(redis_url, ip=ip, key_prefix=prefix))
    chain_b = make_chain(ratelimit=limiter(redis_url, ip=ip, key_prefix=prefix))
    with run_server(chain_a) as (_, port_a), run_server(chain_b) as (_, port_b):
        with stubs(port_a) as (_, tasks_a), stubs(port_b) as (_, tasks_b):
            get_task(tasks_a)
            get_task(tasks_b)
            get_task(tasks_a)
            for stub in (tasks_b, tasks_a):  # the fourth call is over budget on either replica
                with pytest.raises(grpc.RpcError) as err:
                    get_task(stub)
                assert err.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED


def test_rejection_carries_details_and_headers(redis_url: str) -> None:
    ip = RateLimit(requests=2, window_seconds=60)
    with run_server(make_chain(ratelimit=limiter(redis_url, ip=ip))) as (_, port):
        with stubs(port) as (_, tasks):
            _, call = get_task(tasks)
            headers = api_headers(call)
            assert headers["ratelimit-policy"] == "2;w=60, 1000;w=60"
            assert headers["ratelimit"] == "limit=2, remaining=1, reset=30"
            assert "retry-after" not in headers
            get_task(tasks)
            with pytest.raises(grpc.RpcError) as err:
                get_task(tasks)

    rejected = err.value
    assert rejected.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    headers = api_headers(rejected)
    assert headers["retry-after"] == "30"
    assert [key for key, _ in as_call(rejected).initial_metadata()].count("retry-after") == 1  # the limiter's only
    assert headers["ratelimit-policy"] == "2;w=60, 1000;w=60"
    assert headers["ratelimit"] == "limit=2, remaining=0, reset=60"
    status = rpc_status.from_call(rejected)
    assert status is not None
    retry, quota = error_details_pb2.RetryInfo(), error_details_pb2.QuotaFailure()
    assert any(d.Unpack(retry) for d in status.details)
    assert any(d.Unpack(quota) for d in status.details)
    assert retry.retry_delay.seconds == 30
    assert [v.subject for v in quota.violations] == ["ip:127.0.0.1"]
    assert quota.violations[0].description == "2 requests per 60 s per client IP"


def register(stub: auth_pb2_grpc.AuthServiceStub, email: str, ip: str) -> tuple[auth_pb2.AuthSession, grpc.Call]:
    request = auth_pb2.RegisterRequest(email=email, password="correct horse battery", name="Ann")
    return stub.Register.with_call(request, metadata=(("x-forwarded-for", ip),))


def test_register_limit_per_email_across_ips(redis_url: str) -> None:
    auth = RateLimit(requests=2, window_seconds=60)
    chain = make_chain(ratelimit=limiter(redis_url, ip=GENEROUS, auth=auth))
    with run_server(chain) as (_, port), stubs(port) as (auth_stub, _):
        register(auth_stub, "Ann@Example.com", "10.0.0.1")
        register(auth_stub, "ann@EXAMPLE.com", "10.0.0.2")  # same email, other case, other IP
        with pytest.raises(grpc.RpcError) as err:
            register(auth_stub, "ANN@example.com", "10.0.0.3")
        assert err.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        status = rpc_status.from_call(err.value)
        assert status is not None
        quota = error_details_pb2.QuotaFailure()
        assert any(d.Unpack(quota) for d in status.details)
        assert [v.subject.split(":")[0] for v in quota.violations] == ["auth-email"]
        assert "example.com" not in str(status)  # the email is hashed, never echoed

        _, call = register(auth_stub, "bob@example.com", "10.0.0.3")  # another email is unaffected
        assert dict(call.initial_metadata())["ratelimit-policy"] == "2;w=60, 1000;w=60"


def test_successful_logins_spend_no_per_email_budget(redis_url: str) -> None:
    """A per-email budget on every Login is a lockout anyone can hand the owner: Login has none
    (its per-email limit counts failures only: tests/integration/test_login_throttle.py)."""
    auth = RateLimit(requests=2, window_seconds=60)
    chain = make_chain(ratelimit=limiter(redis_url, ip=GENEROUS, auth=auth))
    with run_server(chain) as (_, port), stubs(port) as (auth_stub, _):
        for ip in ("10.0.1.1", "10.0.1.2", "10.0.1.3", "10.0.1.4"):
            _, call = login(auth_stub, "ann@example.com", ip)  # the canned Login always succeeds
            assert dict(call.initial_metadata())["ratelimit-policy"] == "2;w=60, 1000;w=60"


def test_login_limit_per_ip_across_emails(redis_url: str) -> None:
    auth = RateLimit(requests=2, window_seconds=60)
    chain = make_chain(ratelimit=limiter(redis_url, ip=GENEROUS, auth=auth))
    with run_server(chain) as (_, port), stubs(port) as (auth_stub, tasks):
        login(auth_stub, "a@example.com", "10.0.0.9")
        login(auth_stub, "b@example.com", "10.0.0.9")
        with pytest.raises(grpc.RpcError) as err:
            login(auth_stub, "c@example.com", "10.0.0.9")
        assert err.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        get_task(tasks, **{"x-forwarded-for": "10.0.0.9"})  # the auth budget is for auth methods only


def test_rejected_call_spends_no_other_budget(redis_url: str) -> None:
    ip, user = RateLimit(requests=3, window_seconds=60), RateLimit(requests=2, window_seconds=60)
    chain = make_chain(ratelimit=limiter(redis_url, ip=ip, user=user))
    with run_server(chain) as (_, port), stubs(port) as (_, tasks):
        get_task(tasks, user="1")
        get_task(tasks, user="1")
        with pytest.raises(grpc.RpcError) as err:  # user 1 is out of budget, the IP is not
            get_task(tasks, user="1")
        assert err.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert api_headers(err.value)["ratelimit-policy"] == "2;w=60, 3;w=60"
        # Had the rejection spent the IP budget, this third IP call would be the fourth.
        _, call = get_task(tasks, user="2")
        assert api_headers(call)["ratelimit"].startswith("limit=3, remaining=0,")


def test_script_reloaded_after_flush(redis_url: str) -> None:
    interceptor = limiter(redis_url)
    with run_server(make_chain(ratelimit=interceptor)) as (_, port):
        with stubs(port) as (_, tasks):
            get_task(tasks)
            client = connect_redis(redis_url, 500)
            assert client is not None
            client.script_flush()
            client.close()
            _, call = get_task(tasks)
            assert api_headers(call)["ratelimit"].startswith("limit=100, remaining=98,")


def test_a_killed_connection_is_retried_once_on_a_fresh_one(redis_url: str) -> None:
    # One server: the limiter's EVALSHA goes straight to a pooled connection. Redis closing
    # that connection (a restart, a proxy's idle timeout) costs the call one retry on a fresh
    # connection, as redis-py's own commands do: still decided in Redis, not locally.
    url = private_database(redis_url)
    metrics = Metrics(CollectorRegistry())
    interceptor = limiter(url, ip=RateLimit(requests=5, window_seconds=60), metrics=metrics)
    admin = connect_redis(url, 500)
    assert admin is not None
    with run_server(make_chain(ratelimit=interceptor)) as (_, port):
        with stubs(port) as (_, tasks):
            get_task(tasks)
            killed = admin.client_kill_filter(_type="normal", skipme=True)
            assert killed >= 1  # the limiter's pooled connection, now dead in its pool
            _, call = get_task(tasks)
            assert api_headers(call)["ratelimit"].startswith("limit=5, remaining=3,")
            assert decisions(metrics, "allowed", "redis") == 2
            assert decisions(metrics, "allowed", "local") == 0
    admin.close()


def test_redis_outage_falls_back_and_recovers(redis_process: RedisProcess, caplog: pytest.LogCaptureFixture) -> None:
    proc = redis_process  # our own server, never REDIS_URL's: this test stops it
    metrics = Metrics(CollectorRegistry())
    ip = RateLimit(requests=3, window_seconds=60)
    interceptor = limiter(proc.url, ip=ip, metrics=metrics, retry_interval_seconds=0.2)
    try:
        with run_server(make_chain(ratelimit=interceptor)) as (_, port):
            with stubs(port) as (_, tasks), caplog.at_level(logging.WARNING, "taskapi.interceptors.ratelimit"):
                get_task(tasks)
                assert decisions(metrics, "allowed", "redis") == 1
                proc.stop()
                for _ in range(3):  # the local limiter, same policy: its own fresh budget of 3
                    get_task(tasks)
                with pytest.raises(grpc.RpcError) as err:
                    get_task(tasks)
                assert err.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
                assert decisions(metrics, "allowed", "local") == 3
                assert decisions(metrics, "rejected", "local") == 1
                down = [r for r in caplog.records if "unreachable" in r.getMessage()]
                assert len(down) == 1  # once per outage, not per call

                proc.start()  # empty again, script cache included: NOSCRIPT path
                time.sleep(0.25)  # past the probe interval
                _, call = get_task(tasks)
                assert decisions(metrics, "allowed", "redis") == 2
                assert api_headers(call)["ratelimit"].startswith("limit=3, remaining=2,")
                assert [r for r in caplog.records if "reachable again" in r.getMessage()]
    finally:
        if proc.process is None:  # restart it for the rest of the session
            proc.start()


def test_slow_redis_falls_back() -> None:
    # A listener that never answers: connect succeeds, the command hits the socket timeout.
    with socket.socket() as blackhole:
        blackhole.bind(("127.0.0.1", 0))
        blackhole.listen(16)
        port = blackhole.getsockname()[1]
        metrics = Metrics(CollectorRegistry())
        client = connect_redis(f"redis://127.0.0.1:{port}/0", 100)
        interceptor = RateLimitInterceptor(client, metrics=metrics)
        with run_server(make_chain(ratelimit=interceptor)) as (_, grpc_port):
            with stubs(grpc_port) as (_, tasks):
                for _ in range(3):
                    get_task(tasks)
        assert decisions(metrics, "allowed", "local") == 3


class _CaptureDelivered(ServerInterceptor):
    """Innermost: records what the caches would find for each planned read during the call."""

    def __init__(self, commands: list[tuple[str, ...]]) -> None:
        self.commands = commands
        self.seen: list[dict[tuple[str, ...], Any]] = []

    def intercept(self, method: Any, request: Any, context: Any, method_name: str) -> Any:
        self.seen.append({command: delivered_read(command) for command in self.commands})
        return method(request, context)


def test_planned_reads_reach_the_call_and_only_it(redis_url: str) -> None:
    prefix = unique_prefix()
    seed = connect_redis(redis_url, 500)
    assert seed is not None
    seed.set(prefix + "session", b"cached")
    seed.hset(prefix + "h", "f", b"v")
    seed.close()
    session_read = ("GET", prefix + "session")
    task_reads = [("HGET", prefix + "h", "f"), ("GET", prefix + "absent")]
    entries: list[tuple[str, str]] = []

    def entry_of(request: Any, caller: Any) -> str:
        entries.append((request.id, caller.user_id))
        return "entry"

    plan = ReadPlan(
        SharedCache(None),
        session_read=lambda user_id, family: session_read,
        task_reads=lambda owner, entry: task_reads if entry == "entry" else [],
        cached_methods={"/taskapi.v1.TaskService/GetTask": entry_of},
    )
    capture = _CaptureDelivered([session_read, *task_reads])
    chain = [*make_chain(ratelimit=limiter(redis_url, reads=plan)), capture]
    with run_server(chain) as (_, port), stubs(port) as (_, tasks):
        get_task(tasks)
    assert entries == [(TASK_ID, "1")]  # the plan was worked out once, before the call ran
    # Read under the node's epoch (its replication id), which the caches check tagged values against.
    client = connect_redis(redis_url, 500)
    assert client is not None
    info: Any = client.info("replication")
    client.close()
    epoch = info["master_replid"]
    assert capture.seen == [
        {session_read: (True, b"cached", epoch), task_reads[0]: (True, b"v", epoch), task_reads[1]: (True, None, epoch)}
    ]
    assert delivered_read(session_read) == (False, None, "")  # bound to that call only


def test_without_redis_limits_locally() -> None:
    interceptor = limiter(None, ip=RateLimit(requests=1, window_seconds=60))
    with run_server(make_chain(ratelimit=interceptor)) as (_, port):
        with stubs(port) as (_, tasks):
            get_task(tasks)
            with pytest.raises(grpc.RpcError) as err:
                get_task(tasks)
            assert err.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED


# 1 a minute: (now + window) - window is not now on this clock (one ulp over). 9 a minute: the
# interval 6666.666... ms, its sums stored rounded to the µs, lands the 9th call 2.7 µs late.
EXACT_BURSTS = [RateLimit(requests=1, window_seconds=60), RateLimit(requests=9, window_seconds=60)]


@pytest.mark.parametrize("limit", EXACT_BURSTS, ids=lambda limit: f"{limit.requests}-per-minute")
def test_a_burst_of_exactly_the_limit_fits_locally(limit: RateLimit) -> None:
    """All at one instant: every call of the budget passes, the next is refused for the interval."""
    local = LocalLimiter(clock=lambda: 33499.844414)
    budget = Budget("{ip:192.0.2.1}:ratelimit", "ip:192.0.2.1", limit, "per client IP")
    assert [local.decide([budget])[0] for _ in range(limit.requests)] == [True] * limit.requests
    allowed, outcomes, _ = local.decide([budget])
    assert not allowed
    assert outcomes[0].retry_after_seconds == math.ceil(limit.window_seconds / limit.requests)


@pytest.mark.parametrize("limit", EXACT_BURSTS, ids=lambda limit: f"{limit.requests}-per-minute")
def test_a_burst_of_exactly_the_limit_fits_in_redis(redis_url: str, limit: RateLimit) -> None:
    """The script's calls back to back (one pipeline: most runs within one Redis millisecond)."""
    client = connect_redis(redis_url, 500)
    assert client is not None
    script = resources.files("taskapi.interceptors").joinpath("ratelimit.lua").read_text(encoding="utf-8")
    key = unique_prefix() + "{ip:192.0.2.1}:ratelimit"
    pipe = client.pipeline(transaction=False)
    for _ in range(limit.requests + 1):
        pipe.eval(script, 1, key, 1, 0, 0, limit.requests, limit.window_seconds * 1000)
    replies = pipe.execute()
    client.close()
    assert [reply[0] for reply in replies] == [1] * limit.requests + [0]
    assert [reply[1] for reply in replies[:-1]] == list(range(limit.requests - 1, -1, -1))  # remaining


def test_calls_with_a_bad_token_are_counted_by_ip(redis_url: str) -> None:
    """Token guessing spends the IP budget: a refused token is rejected only after the limiter counted it."""
    ip = RateLimit(requests=2, window_seconds=60)
    with run_server(make_chain(ratelimit=limiter(redis_url, ip=ip))) as (_, port):
        with stubs(port) as (_, tasks):
            for remaining in (1, 0):
                with pytest.raises(grpc.RpcError) as err:
                    tasks.GetTask(task_pb2.GetTaskRequest(id=TASK_ID), metadata=(("authorization", "Bearer forged"),))
                assert err.value.code() is grpc.StatusCode.UNAUTHENTICATED
                headers = api_headers(err.value)
                assert headers["ratelimit"].startswith(f"limit=2, remaining={remaining},")
            with pytest.raises(grpc.RpcError) as err:
                tasks.GetTask(task_pb2.GetTaskRequest(id=TASK_ID), metadata=(("authorization", "Bearer forged"),))
            assert err.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
