"""Redis Cluster, for real: three masters on free ports (tests/support/redis_ha.py), the
server configured with REDIS_CLUSTER.

One user's rate-limit budget, session entries and read cache share a hash tag, so the
limiter's one script (decision + planned reads) runs on the user's node; the IP's and the
email's budgets live on their own slots, decided in the same pipelined round trip and
refunded when another slot refuses the call.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from taskapi.server.app import App
from taskapi.server.cache.changes import stream_key
from taskapi.server.config import Settings
from taskapi.server.domain.limits import RateLimit
from taskapi.v1 import auth_pb2, task_pb2, task_pb2_grpc, user_pb2
from tests.conftest import make_settings
from tests.integration.api import Api, User, error_details, fails
from tests.integration.test_watch import Watcher
from tests.support.redis_ha import Cluster, redis_cluster, serving

pytestmark = pytest.mark.redis_ha
HOUR = 3600


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with redis_cluster(tmp_path_factory.mktemp("cluster")) as running:
        yield running


def cluster_settings(cluster: Cluster, **overrides: object) -> Settings:
    nodes = tuple(("127.0.0.1", node.port) for node in cluster.masters)
    return make_settings("", redis_cluster=nodes, **overrides)


def sample(app: App, name: str, **labels: str) -> float:
    return app.metrics.registry.get_sample_value(name, labels) or 0.0


def me(api: Api, auth: tuple[tuple[str, str], ...], ip: str = "") -> user_pb2.User:
    metadata = (*auth, ("x-forwarded-for", ip)) if ip else auth
    return api.users.GetCurrentUser(user_pb2.GetCurrentUserRequest(), metadata=metadata, timeout=5)


def unique_ip() -> str:
    return f"2001:db8::{uuid.uuid4().hex[:4]}:{uuid.uuid4().hex[:4]}"


def test_one_users_keys_share_a_node_and_reads_are_cached(cluster: Cluster) -> None:
    # A user budget with a long interval, so its key is still there to look at.
    with serving(cluster_settings(cluster, rate_limit_user=RateLimit(requests=100, window_seconds=HOUR))) as (app, api):
        user = api.register()
        task = api.tasks.CreateTask(task_pb2.CreateTaskRequest(task=task_pb2.Task(title="t")), metadata=user.auth)
        for _ in range(3):
            assert api.tasks.GetTask(task_pb2.GetTaskRequest(id=task.id), metadata=user.auth).title == "t"
        assert sample(app, "taskapi_cache_requests_total", cache="task", result="hit") == 2
        assert sample(app, "taskapi_ratelimit_decisions_total", decision="allowed", backend="local") == 0
        tag = f"{{u:{user.id}}}"
        node = cluster.node_of(f"taskapi:{tag}:ratelimit")
        keys = node.client().keys(f"taskapi:{tag}:*")
        names = [key.decode() if isinstance(key, bytes) else key for key in keys]
        kinds = {name.removeprefix(f"taskapi:{tag}:").split(":")[0] for name in names}
        assert {"ratelimit", "session", "tasks"} <= kinds, kinds  # all on the user's node
        others = [n for n in cluster.masters if n.port != node.port]
        assert not any(n.client().keys(f"taskapi:{tag}:*") for n in others)
        # Writes still invalidate: the next read is the new title.
        api.tasks.UpdateTask(task_pb2.UpdateTaskRequest(task=task_pb2.Task(id=task.id, title="t2")), metadata=user.auth)
        assert api.tasks.GetTask(task_pb2.GetTaskRequest(id=task.id), metadata=user.auth).title == "t2"


def test_a_call_refused_by_its_ip_spends_nothing_of_its_users_budget(cluster: Cluster) -> None:
    limits = dict(
        rate_limit_ip=RateLimit(requests=2, window_seconds=HOUR),
        rate_limit_user=RateLimit(requests=10, window_seconds=HOUR),
    )
    with serving(cluster_settings(cluster, **limits)) as (app, api):
        register_ip, ip = unique_ip(), unique_ip()
        email = f"cluster-{uuid.uuid4().hex[:8]}@example.com"
        session = api.auth.Register(
            auth_pb2.RegisterRequest(email=email, password="correct horse battery", name="C"),
            metadata=(("x-forwarded-for", register_ip),),
        )
        user = User(session=session, email=email, password="correct horse battery")
        user_key = f"taskapi:{{u:{user.id}}}:ratelimit"
        user_node = cluster.node_of(user_key).client()
        for _ in range(2):
            me(api, user.auth, ip)
        spent = float(user_node.get(user_key) or 0)
        error = fails(lambda: me(api, user.auth, ip), grpc.StatusCode.RESOURCE_EXHAUSTED)
        violations = error_details(error)["QuotaFailure"].violations
        assert [v.subject for v in violations] == [f"ip:{ip}"]  # the IP's slot refused, the user's allowed...
        assert float(user_node.get(user_key) or 0) == pytest.approx(spent, abs=1.0)  # refunded
        assert sample(app, "taskapi_ratelimit_decisions_total", decision="rejected", backend="redis") == 1
        # The user's own budget still decides, from any address: 10 in all, 2 spent.
        others = [me(api, user.auth, unique_ip()) for _ in range(8)]
        assert len(others) == 8
        fails(lambda: me(api, user.auth, unique_ip()), grpc.StatusCode.RESOURCE_EXHAUSTED)


def test_sign_in_throttle_and_revocation_on_the_cluster(cluster: Cluster) -> None:
    with serving(cluster_settings(cluster)) as (app, api):
        user = api.register()
        ip = unique_ip()
        wrong = auth_pb2.LoginRequest(email=user.email, password="not the password")
        fails(lambda: api.auth.Login(wrong, metadata=(("x-forwarded-for", ip),)), grpc.StatusCode.UNAUTHENTICATED)
        assert sample(app, "taskapi_ratelimit_decisions_total", decision="allowed", backend="local") == 0
        failures = [key for node in cluster.masters for key in node.client().keys("taskapi:{e:*}:login-ip:*")]
        assert failures  # the failed sign-in was recorded, on the email's slot
        session = api.auth.Login(auth_pb2.LoginRequest(email=user.email, password=user.password))
        auth = (("authorization", f"Bearer {session.access_token}"),)
        assert me(api, auth).id == user.id
        api.auth.Logout(auth_pb2.LogoutRequest(refresh_token=session.refresh_token))
        fails(lambda: me(api, auth), grpc.StatusCode.UNAUTHENTICATED)
        assert me(api, user.auth).id == user.id  # the other session lives on


def test_scripts_are_loaded_again_on_every_node_after_a_flush(cluster: Cluster) -> None:
    settings = cluster_settings(cluster, rate_limit_user=RateLimit(requests=100, window_seconds=HOUR))
    with serving(settings) as (app, api):
        user = api.register()
        me(api, user.auth)
        for node in cluster.masters:
            node.client().script_flush()
        for _ in range(3):
            me(api, user.auth, unique_ip())
        assert sample(app, "taskapi_ratelimit_decisions_total", decision="allowed", backend="local") == 0
        assert sample(app, "taskapi_ratelimit_decisions_total", decision="allowed", backend="redis") >= 5


def test_a_dead_master_costs_its_users_nothing_but_the_shared_state(tmp_path: Path) -> None:
    """A master without a replica dies: its slots are gone. Calls of users on it (and, once
    the cluster declares itself down, of everyone) are served from the store with per-process
    limits, each within its deadline; nothing hangs, nothing fails."""
    with redis_cluster(tmp_path / "cluster") as doomed, serving(cluster_settings(doomed)) as (app, api):
        users = [api.register() for _ in range(6)]
        for user in users:
            me(api, user.auth)
        victim = doomed.node_of(f"taskapi:{{u:{users[0].id}}}:ratelimit")
        victim.kill()
        for _ in range(3):
            for user in users:
                assert me(api, user.auth).id == user.id
        task = api.tasks.CreateTask(
            task_pb2.CreateTaskRequest(task=task_pb2.Task(title="t")), metadata=users[0].auth, timeout=5
        )
        assert api.tasks.GetTask(task_pb2.GetTaskRequest(id=task.id), metadata=users[0].auth, timeout=5).title == "t"
        assert sample(app, "taskapi_ratelimit_decisions_total", decision="allowed", backend="local") > 0


def test_watchers_see_live_writes_on_a_cluster(cluster: Cluster) -> None:
    """The change tail on a Cluster: the followed streams span nodes and slots (one XREAD each
    per slot, pipelined per node), and each watcher gets its own user's writes, in order."""
    with serving(cluster_settings(cluster, watch_heartbeat_seconds=0.5, watchers_per_user=1)) as (app, api):
        users = [api.register() for _ in range(6)]
        assert len({cluster.node_of(stream_key(user.id)).port for user in users}) >= 2
        with grpc.insecure_channel(app.replicas[0].watch_address) as channel:
            stub = task_pb2_grpc.TaskServiceStub(channel)
            watchers = [Watcher(stub, user) for user in users]
            try:
                # The lease of each (one per user here) lives on the user's node too.
                error = fails(
                    lambda: next(
                        iter(stub.WatchTasks(task_pb2.WatchTasksRequest(), metadata=users[0].auth, timeout=5))
                    ),
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                )
                assert error_details(error)["ErrorInfo"].reason == "TOO_MANY_WATCHERS"
                written = {
                    user.id: [
                        api.tasks.CreateTask(
                            task_pb2.CreateTaskRequest(task=task_pb2.Task(title=f"t{n}")), metadata=user.auth
                        ).id
                        for n in range(3)
                    ]
                    for user in users
                }
                started = time.monotonic()
                for user, watcher in zip(users, watchers, strict=True):
                    assert [c.task.id for c in watcher.take(3)] == written[user.id]
                assert time.monotonic() - started < 5
                assert all(watcher.changes.empty() for watcher in watchers)
            finally:
                for watcher in watchers:
                    watcher.close()
