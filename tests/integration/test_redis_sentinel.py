"""Redis high availability with Sentinel, for real: a primary, a replica and three
`redis-sentinel`s on free ports (tests/support/redis_ha.py), the server configured with
REDIS_SENTINELS. The primary is killed (SIGKILL) while calls run; the sentinels promote
the replica within a few seconds.

What must hold: calls keep succeeding through the failover (the limiter and the caches
fall back to the store and per-process limits, each call bounded by its deadline), limits
are enforced through the new primary afterwards, revoked sessions stay revoked, and no
stale cache entry is served, even when the failover lost the invalidation itself.
"""

from __future__ import annotations

import dataclasses
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import redis

from taskapi.server.app import App
from taskapi.server.config import Settings
from taskapi.server.domain.limits import RateLimit
from taskapi.v1 import auth_pb2, task_pb2, user_pb2
from tests.conftest import make_settings
from tests.integration.api import Api, User, fails
from tests.support.redis_ha import MASTER_NAME, SentinelSet, sentinel_set, serving, wait_for

pytestmark = pytest.mark.redis_ha
CALL_DEADLINE = 5.0  # seconds: a call that hangs on Redis fails with DEADLINE_EXCEEDED


@pytest.fixture
def topology(tmp_path: Path) -> Iterator[SentinelSet]:
    with sentinel_set(tmp_path / "sentinel") as running:
        yield running


def sentinel_settings(topology: SentinelSet, **overrides: object) -> Settings:
    return make_settings(
        "",
        redis_sentinels=tuple(("127.0.0.1", s.port) for s in topology.sentinels),
        redis_sentinel_master=MASTER_NAME,
        **overrides,
    )


def redis_decisions(app: App, decision: str) -> float:
    sample = app.metrics.registry.get_sample_value(
        "taskapi_ratelimit_decisions_total", {"decision": decision, "backend": "redis"}
    )
    return sample or 0.0


def get(api: Api, user: User, task_id: str) -> task_pb2.Task:
    return api.tasks.GetTask(task_pb2.GetTaskRequest(id=task_id), metadata=user.auth, timeout=CALL_DEADLINE)


def rename(api: Api, user: User, task_id: str, title: str) -> task_pb2.Task:
    request = task_pb2.UpdateTaskRequest(task=task_pb2.Task(id=task_id, title=title))
    return api.tasks.UpdateTask(request, metadata=user.auth, timeout=CALL_DEADLINE)


class Load:
    """Threads that read and rename their own task in a loop, recording every outcome."""

    def __init__(self, api: Api, user: User, threads: int = 3) -> None:
        self.api, self.user = api, user
        self.stop = threading.Event()
        self.outcomes: Counter[str] = Counter()
        self.stale: list[str] = []
        self._lock = threading.Lock()
        self.tasks = [
            api.tasks.CreateTask(task_pb2.CreateTaskRequest(task=task_pb2.Task(title="0")), metadata=user.auth).id
            for _ in range(threads)
        ]
        self._threads = [threading.Thread(target=self._run, args=(task_id,)) for task_id in self.tasks]

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self._threads:
            thread.join()

    def ok_calls(self) -> int:
        with self._lock:
            return self.outcomes["OK"]

    def _run(self, task_id: str) -> None:
        written, i = "0", 0
        while not self.stop.is_set():
            i += 1
            try:
                if i % 3 == 0:
                    written = rename(self.api, self.user, task_id, str(i)).title
                else:
                    seen = get(self.api, self.user, task_id).title
                    if seen != written:  # only this thread writes this task: anything else is stale
                        self.stale.append(f"{task_id}: read {seen!r} after writing {written!r}")
                outcome = "OK"
            except grpc.RpcError as error:
                outcome = error.code().name
            with self._lock:
                self.outcomes[outcome] += 1


def test_killing_the_primary_under_load(topology: SentinelSet) -> None:
    settings = sentinel_settings(topology)
    limited = dataclasses.replace(settings, rate_limit_user=RateLimit(requests=3, window_seconds=3600))
    with serving(settings) as (app, api), serving(limited) as (limited_app, limited_api):
        user, signed_out, revoked_in_the_window = api.register(), api.register(), api.register()
        api.auth.Logout(auth_pb2.LogoutRequest(refresh_token=signed_out.session.refresh_token))
        me(api, revoked_in_the_window.auth)  # its session checked once: cached as live
        with Load(api, user) as load:
            wait_for(lambda: load.ok_calls() >= 30, 30, "the load to run")
            topology.primary.kill()
            # Inside the failover window: a logout reaches the store; its cache marker waits for Redis.
            api.auth.Logout(
                auth_pb2.LogoutRequest(refresh_token=revoked_in_the_window.session.refresh_token),
                timeout=CALL_DEADLINE,
            )
            topology.wait_failed_over()
            before = redis_decisions(app, "allowed")
            # Back on Redis (the new primary): decisions are made there again.
            wait_for(lambda: redis_decisions(app, "allowed") > before + 20, 30, "decisions on the new primary")
            settled = load.ok_calls()
            wait_for(lambda: load.ok_calls() >= settled + 30, 30, "more calls after the failover")
        print(f"\ncalls through the failover: {dict(load.outcomes)}")
        assert not load.stale
        # Bounded errors, and no hang: nothing waited out its deadline, and the only failures are UNAVAILABLE.
        assert set(load.outcomes) <= {"OK", "UNAVAILABLE"}, load.outcomes
        assert load.outcomes["OK"] > 60

        fails(lambda: me(api, signed_out.auth), grpc.StatusCode.UNAUTHENTICATED)
        fails(lambda: me(api, revoked_in_the_window.auth), grpc.StatusCode.UNAUTHENTICATED)

        fresh = api.register()
        for _ in range(3):
            me(limited_api, fresh.auth)
        fails(lambda: me(limited_api, fresh.auth), grpc.StatusCode.RESOURCE_EXHAUSTED)
        rejected = limited_app.metrics.registry.get_sample_value(
            "taskapi_ratelimit_decisions_total", {"decision": "rejected", "backend": "redis"}
        )
        assert rejected == 1  # refused by the shared budget on the new primary, not a local fallback


def test_a_failover_that_lost_the_last_writes_serves_nothing_stale(topology: SentinelSet) -> None:
    """The primary acknowledges an invalidation and a revocation, then dies before its replica
    has them (replication really cut). The promoted replica still holds the old cache entry and
    the session's "live" entry; the epoch (the primary's replication id) keeps both unserved."""
    with serving(sentinel_settings(topology)) as (app, api):
        user = api.register()
        second = api.auth.Login(auth_pb2.LoginRequest(email=user.email, password=user.password))
        second_auth = (("authorization", f"Bearer {second.access_token}"),)
        task = api.tasks.CreateTask(task_pb2.CreateTaskRequest(task=task_pb2.Task(title="old")), metadata=user.auth)
        for _ in range(2):
            assert get(api, user, task.id).title == "old"  # cached, and replicated
            api.tasks.ListTasks(task_pb2.ListTasksRequest(), metadata=user.auth, timeout=CALL_DEADLINE)
            me(api, second_auth)  # the second session: "live", cached
        tasks_key = f"taskapi:{{u:{user.id}}}:tasks"
        replica = topology.replica.client()
        wait_for(lambda: replica.hlen(tasks_key) == 2, 10, "the cached Get and List to reach the replica")
        session_keys = [k for k in replica.keys(f"taskapi:{{u:{user.id}}}:session:*")]
        assert len(session_keys) == 2 and not any(_value(replica, k) == b"revoked" for k in session_keys)

        topology.cut_replication()
        assert rename(api, user, task.id, "new").title == "new"  # store written, cache invalidated on the primary
        api.auth.Logout(auth_pb2.LogoutRequest(refresh_token=second.refresh_token))
        primary = topology.primary.client()
        assert primary.hlen(tasks_key) == 0 and b"revoked" in [_value(primary, k) for k in session_keys]
        # The writes the replica never got: the old response and both sessions "live" are still there.
        assert replica.hlen(tasks_key) > 0
        assert not any(_value(replica, k) == b"revoked" for k in session_keys)

        topology.primary.kill()
        topology.wait_failed_over()
        wait_for(lambda: _answers_through_redis(app, api, user), 30, "the server to reach the new primary")
        assert replica.hlen(tasks_key) == 2  # the stale Get and List are there, on the primary now...
        assert get(api, user, task.id).title == "new"  # ...and not served
        listed = api.tasks.ListTasks(task_pb2.ListTasksRequest(), metadata=user.auth, timeout=CALL_DEADLINE)
        assert [t.title for t in listed.tasks] == ["new"]
        fails(lambda: me(api, second_auth), grpc.StatusCode.UNAUTHENTICATED)
        assert get(api, user, task.id).title == "new"  # filled again under the new epoch, and served
        hits = app.metrics.registry.get_sample_value("taskapi_cache_requests_total", {"cache": "task", "result": "hit"})
        assert hits is not None and hits > 0


def _value(client: redis.Redis, key: bytes | str) -> bytes:
    value = client.get(key)
    assert isinstance(value, bytes), (key, value)
    return value


def _answers_through_redis(app: App, api: Api, user: User) -> bool:
    before = redis_decisions(app, "allowed")
    me(api, user.auth)
    return redis_decisions(app, "allowed") > before


def me(api: Api, auth: tuple[tuple[str, str], ...]) -> user_pb2.User:
    return api.users.GetCurrentUser(user_pb2.GetCurrentUserRequest(), metadata=auth, timeout=CALL_DEADLINE)


def test_no_sentinel_answering_costs_calls_nothing_but_the_shared_state() -> None:
    """Sentinels all down (nothing listens): every call is served from the store with
    per-process limits, each within its deadline; nothing hangs, nothing fails."""
    from taskapi.server.dev import free_port

    settings = make_settings(
        "", redis_sentinels=tuple(("127.0.0.1", free_port()) for _ in range(3)), redis_sentinel_master=MASTER_NAME
    )
    with serving(settings) as (app, api):
        user = api.register()
        task = api.tasks.CreateTask(task_pb2.CreateTaskRequest(task=task_pb2.Task(title="t")), metadata=user.auth)
        for _ in range(5):
            assert get(api, user, task.id).title == "t"
        assert rename(api, user, task.id, "u").title == "u" and get(api, user, task.id).title == "u"
        assert me(api, user.auth).id == user.id
        local = app.metrics.registry.get_sample_value(
            "taskapi_ratelimit_decisions_total", {"decision": "allowed", "backend": "local"}
        )
        assert local is not None and local >= 9 and redis_decisions(app, "allowed") == 0
