"""The services split by configuration (docs/services.md), in this process: an App serving the
account services and an App serving the task service, each on its own replica and its own
store, sharing only Redis (the session state the account side publishes, the job queue).

The split as separate processes (`taskapi dev --split`, `taskapi serve --services`) is tested
end to end in tests/e2e.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import grpc
import mongoengine as me
import pytest
import redis
from grpc_health.v1 import health_pb2, health_pb2_grpc

from taskapi.server import store
from taskapi.server.app import App, Replica
from taskapi.server.cache.session_state import session_state_key
from taskapi.server.cache.shared import EPOCH_BYTES
from taskapi.server.config import ConfigError, Settings, parse_services
from taskapi.server.dev import LocalRedis
from taskapi.server.domain.caller import ROLE_ADMIN
from taskapi.server.domain.events import Event, user_deleted
from taskapi.server.jobs.delivery import DeliveryLedger
from taskapi.server.jobs.queue import USER_DELETED_CLEANUP
from taskapi.v1 import auth_pb2, task_pb2, user_pb2
from tests.conftest import make_settings
from tests.integration.api import PASSWORD, Api, User, error_details, fails
from tests.support.jobs import FAST_JOBS, namespace

ACCOUNTS, TASKS = ("auth", "users"), ("tasks",)


@dataclass
class Split:
    accounts_app: App
    tasks_app: App
    accounts: Api  # a channel to the account services' replica
    tasks: Api  # a channel to the task service's replica
    tasks_replica: Replica


@contextmanager
def connected(replica: Replica) -> Iterator[Api]:
    with grpc.insecure_channel(replica.address) as channel:
        grpc.channel_ready_future(channel).result(timeout=10)
        yield Api(channel)


@contextmanager
def running_split(settings: Settings, **task_overrides: Any) -> Iterator[Split]:
    accounts_app = App(make_settings(settings.redis_url, **_jobs(settings), services=ACCOUNTS))
    tasks_app = App(make_settings(settings.redis_url, **_jobs(settings), services=TASKS, **task_overrides))
    try:
        accounts_replica, tasks_replica = accounts_app.start_replica(0), tasks_app.start_replica(0)
        with connected(accounts_replica) as accounts, connected(tasks_replica) as tasks:
            yield Split(accounts_app, tasks_app, accounts, tasks, tasks_replica)
    finally:
        tasks_app.close(grace=1.0)
        accounts_app.close(grace=1.0)


def _jobs(settings: Settings) -> dict[str, Any]:
    return {
        "outbox_relay": settings.outbox_relay,
        "jobs_namespace": settings.jobs_namespace,
        **{key: getattr(settings, key) for key in FAST_JOBS},
    }


@pytest.fixture
def split(redis_url: str) -> Iterator[Split]:
    with running_split(make_settings(redis_url)) as running:
        yield running


def create_task(api: Api, user: User, title: str = "mine") -> task_pb2.Task:
    task: task_pb2.Task = api.tasks.CreateTask(
        task_pb2.CreateTaskRequest(task=task_pb2.Task(title=title)), metadata=user.auth, timeout=10
    )
    return task


def list_tasks(api: Api, user: User, owner: str = "") -> list[task_pb2.Task]:
    reply = api.tasks.ListTasks(task_pb2.ListTasksRequest(owner=owner, page_size=100), metadata=user.auth, timeout=10)
    return list(reply.tasks)


def health(replica_address: str, service: str) -> int:
    with grpc.insecure_channel(replica_address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            status: int = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status
        except grpc.RpcError as error:
            assert error.code() == grpc.StatusCode.NOT_FOUND, error
            return -1
        return status


def test_services_parse_from_the_flag_and_the_environment() -> None:
    assert parse_services("users, auth") == ("auth", "users")
    assert parse_services("all") == parse_services("tasks,auth,users") == ("auth", "tasks", "users")
    for bad in ("", "billing", "tasks,billing", "all,tasks"):
        with pytest.raises(ConfigError, match="--services must be 'all' or services from auth, tasks, users"):
            parse_services(bad)
    settings = Settings.from_env({"TASKAPI_SERVICES": "tasks", "TASKS_MONGODB_URI": "mongodb://t/db"})
    assert (settings.services, settings.serves_tasks, settings.serves_accounts) == (("tasks",), True, False)
    assert (settings.tasks_store_uri, settings.accounts_store_uri) == ("mongodb://t/db", "")
    fallback = Settings.from_env({"MONGODB_URI": "mongodb://m/db"})
    assert fallback.tasks_store_uri == fallback.accounts_store_uri == "mongodb://m/db"
    with pytest.raises(ConfigError, match="TASKAPI_SERVICES must be"):
        Settings.from_env({"TASKAPI_SERVICES": "everything"})
    with pytest.raises(ConfigError, match="TASKS_SESSION_FALLBACK must be one of token, refuse"):
        Settings.from_env({"TASKS_SESSION_FALLBACK": "maybe"})


def test_a_replica_serves_and_reports_exactly_its_services(split: Split) -> None:
    accounts = split.accounts_app.replicas[0].address
    tasks = split.tasks_replica.address
    serving = health_pb2.HealthCheckResponse.SERVING
    assert [health(accounts, s) for s in ("", "taskapi.v1.AuthService", "taskapi.v1.UserService")] == [serving] * 3
    assert health(accounts, "taskapi.v1.TaskService") == -1  # unknown here: NOT_FOUND
    assert [health(tasks, s) for s in ("", "taskapi.v1.TaskService")] == [serving] * 2
    assert health(tasks, "taskapi.v1.AuthService") == health(tasks, "taskapi.v1.UserService") == -1
    user = split.accounts.register()
    # A service served elsewhere is UNIMPLEMENTED here (not a 401: the access policy knows every RPC).
    fails(
        lambda: split.tasks.auth.Login(auth_pb2.LoginRequest(email=user.email, password=PASSWORD)),
        grpc.StatusCode.UNIMPLEMENTED,
    )
    fails(lambda: create_task(split.accounts, user), grpc.StatusCode.UNIMPLEMENTED)


def test_the_task_service_follows_the_session_state_the_account_services_publish(split: Split) -> None:
    user = split.accounts.register()
    assert create_task(split.tasks, user).owner == user.id
    # Promoted: the task service sees the new role at once (an admin lists across owners).
    admin = split.accounts.register("admin")
    fails(lambda: list_tasks(split.tasks, admin, owner="-"), grpc.StatusCode.PERMISSION_DENIED)
    split.accounts_app.users.update(admin.id, {"role": ROLE_ADMIN}, {"role"}, ["role"], editable=("role",))
    assert user.id in {task.owner for task in list_tasks(split.tasks, admin, owner="-")}
    # Logged out: its access token fails on the task service too.
    split.accounts.auth.Logout(auth_pb2.LogoutRequest(refresh_token=user.session.refresh_token), timeout=10)
    error = fails(lambda: list_tasks(split.tasks, user), grpc.StatusCode.UNAUTHENTICATED)
    assert error_details(error)["ErrorInfo"].reason == "SESSION_REVOKED"
    # Disabled by an admin: every session of the account ends, on both sides.
    other = split.accounts.register("other")
    create_task(split.tasks, other)
    mask = user_pb2.UpdateUserRequest(user=user_pb2.User(id=other.id, disabled=True))
    mask.update_mask.paths.append("disabled")
    split.accounts.users.UpdateUser(mask, metadata=admin.auth, timeout=10)
    fails(lambda: list_tasks(split.tasks, other), grpc.StatusCode.UNAUTHENTICATED)


def test_session_state_from_before_a_failover_is_not_trusted(split: Split, redis_url: str) -> None:
    """A failover may lose the primary's last writes, a "revoked" among them: a live entry
    written under another primary (another replication id) reads as unknown, a 401 the
    client's refresh settles against the account store."""
    user = split.accounts.register()
    client = redis.Redis.from_url(redis_url)
    family = split.tasks_app.tokens.verify(user.session.access_token).session_id
    key = session_state_key(user.id, family)
    live = cast(bytes | None, client.get(key))  # redis-py types replies loosely
    assert live is not None and live.endswith(f"{user.id}:USER".encode())
    client.set(key, b"f" * EPOCH_BYTES + f"{user.id}:USER".encode(), ex=600)  # another primary's
    client.close()
    error = fails(lambda: list_tasks(split.tasks, user), grpc.StatusCode.UNAUTHENTICATED)
    assert error_details(error)["ErrorInfo"].reason == "SESSION_UNKNOWN"


def test_a_session_the_task_service_has_no_state_for_is_401_until_a_refresh_publishes_it(
    split: Split, redis_url: str
) -> None:
    """A Redis that lost its data (restarted empty): the task service cannot tell a live session
    from an ended one, so it refuses it; the client's refresh publishes the state again."""
    user = split.accounts.register()
    client = redis.Redis.from_url(redis_url)
    family = split.tasks_app.tokens.verify(user.session.access_token).session_id
    assert client.delete(session_state_key(user.id, family)) == 1
    client.close()
    error = fails(lambda: list_tasks(split.tasks, user), grpc.StatusCode.UNAUTHENTICATED)
    assert error_details(error)["ErrorInfo"].reason == "SESSION_UNKNOWN"
    refreshed = split.accounts.auth.Refresh(
        auth_pb2.RefreshRequest(refresh_token=user.session.refresh_token), timeout=10
    )
    again = User(session=refreshed, email=user.email, password=user.password)
    assert list_tasks(split.tasks, again) == []


@pytest.mark.parametrize("fallback", ["token", "refuse"])
def test_redis_down_the_task_service_serves_by_the_token_or_refuses_as_configured(
    fallback: str, tmp_path: Path
) -> None:
    """TASKS_SESSION_FALLBACK (docs/services.md): with the session state unreadable, `token`
    serves signed-in users as their access token says until it expires; `refuse` answers
    UNAVAILABLE. Its own redis-server, stopped mid-test."""
    own = LocalRedis(tmp_path / "redis").start()
    try:
        with running_split(make_settings(own.url), tasks_session_fallback=fallback) as split:
            user = split.accounts.register()
            task = create_task(split.tasks, user)
            own.stop()
            time.sleep(1.1)  # past the shared cache's "Redis is down" memory, so it asks again
            if fallback == "token":
                assert [t.id for t in list_tasks(split.tasks, user)] == [task.id]
                assert create_task(split.tasks, user, "while Redis is down").owner == user.id
            else:
                error = fails(lambda: list_tasks(split.tasks, user), grpc.StatusCode.UNAVAILABLE)
                assert error_details(error)["ErrorInfo"].reason == "SESSION_STATE_UNAVAILABLE"
            # Whatever the policy, a bad token stays a 401: the signature needs no Redis.
            forged = User(session=auth_pb2.AuthSession(access_token="not.a.token"), email="", password="")
            fails(lambda: list_tasks(split.tasks, forged), grpc.StatusCode.UNAUTHENTICATED)
    finally:
        own.stop()


def test_delete_user_under_the_split_removes_the_tasks_by_the_event(redis_url: str) -> None:
    """The account side deletes the account and records the event; the task service's
    consumer removes the tasks (it alone reaches their store), and the tokens fail at once."""
    store.connect(make_settings(redis_url))
    outbox = store.MongoOutbox()  # this process's embedded outbox: leftovers of other tests out
    while events := outbox.pending(1000):
        for event in events:
            outbox.sent(event)
    settings = make_settings(redis_url, outbox_relay=True, jobs_namespace=namespace(), **FAST_JOBS)
    with running_split(settings) as split:
        admin = split.accounts.register("admin")
        split.accounts_app.users.update(admin.id, {"role": ROLE_ADMIN}, {"role"}, ["role"], editable=("role",))
        leaving = split.accounts.register("leaving")
        for title in ("one", "two"):
            create_task(split.tasks, leaving, title)
        split.accounts.users.DeleteUser(user_pb2.DeleteUserRequest(id=leaving.id), metadata=leaving.auth, timeout=10)
        fails(lambda: list_tasks(split.tasks, leaving), grpc.StatusCode.UNAUTHENTICATED)  # before the cleanup
        deadline = time.monotonic() + 10
        while any(t.owner == leaving.id for t in list_tasks(split.tasks, admin, owner="-")):
            assert time.monotonic() < deadline, "the deleted user's tasks are still listed"
            time.sleep(0.1)
        assert list_tasks(split.tasks, admin, owner=leaving.id) == []
        queue = split.tasks_app.job_queue
        assert queue is not None
        ledger = DeliveryLedger(queue.client, settings.jobs_namespace, lease_ms=queue.config.lease_ms)
        deletion = user_deleted(leaving.id)
        assert ledger.state(f"{USER_DELETED_CLEANUP}:{deletion.id}") == "done"
        # Idempotent: the event delivered again (a relay that died before marking it sent) is skipped.
        split.tasks_app.remove_tasks_of(leaving.id)  # and the cleanup itself is harmless to repeat
        queue.enqueue(Event(id=deletion.id, type=deletion.type, occur_time=deletion.occur_time, subject=leaving.id))
        registry = split.tasks_app.metrics.registry
        deadline = time.monotonic() + 10
        while not registry.get_sample_value("taskapi_jobs_duplicates_total", {"type": USER_DELETED_CLEANUP}):
            assert time.monotonic() < deadline, "the redelivered deletion was not skipped"
            time.sleep(0.05)


def test_neither_side_can_reach_the_others_collections(tmp_path: Path) -> None:
    """A fresh process serving tasks only has no connection to the account store at all (and
    the other way round): reading the other side's documents fails, it does not find nothing."""
    probe = """
import sys
import mongoengine
from taskapi.server.app import App
from taskapi.server.config import Settings
from taskapi.server.store.documents import TaskDoc, UserDoc
services, other = sys.argv[1], sys.argv[2]
app = App(Settings(services=tuple(services.split(",")), metrics_port=0, jwt_secret="x" * 32))
own = {"tasks": TaskDoc, "users": UserDoc}
print("own", own["tasks" if services == "tasks" else "users"].objects.count())
try:
    own[other].objects.count()
except mongoengine.connection.ConnectionFailure:
    print("unreachable")
app.close(grace=0)
"""
    for services, other in (("tasks", "users"), ("auth,users", "tasks")):
        result = subprocess.run(
            [sys.executable, "-c", probe, services, other], capture_output=True, text=True, timeout=60, cwd=tmp_path
        )
        assert result.stdout.split() == ["own", "0", "unreachable"], result.stdout + result.stderr
    # In one process (the single layout) both sides are connected, each to a database of its own.
    store.connect(make_settings())
    assert set(me.get_db(store.TASKS).list_collection_names()) <= {"tasks"}
    assert set(me.get_db(store.ACCOUNTS).list_collection_names()) <= {"users", "refresh_tokens", "outbox"}


def test_taskapi_jobs_sees_and_retries_the_task_services_dead_letters(redis_url: str) -> None:
    """The task service's queue is one of `taskapi jobs`' queues: a cleanup that failed for
    good is listed with the email jobs' dead letters, and a retry goes back to that queue."""
    from prometheus_client import CollectorRegistry

    from taskapi.server import worker
    from taskapi.server.jobs.admin import JobsAdmin

    settings = make_settings(redis_url, jobs_namespace=namespace(), **(FAST_JOBS | {"jobs_max_retries": 0}))
    queue = worker.job_queue(settings, worker.job_metrics(CollectorRegistry()))
    removed: list[str] = []

    def broken(owner: str) -> None:
        raise RuntimeError("the task store is gone")

    event = Event(
        id="e" * 32, type="user.deleted", occur_time=user_deleted("x").occur_time, subject="6b0ad69f3e182fdd97bd66ce"
    )
    failing = worker.task_side_jobs(settings, queue, broken)
    failing.start()
    try:
        queue.enqueue(event)
        deadline = time.monotonic() + 10
        while not (dead := JobsAdmin(queue).dead()):
            assert time.monotonic() < deadline, "the failing cleanup never reached the dead letters"
            time.sleep(0.05)
    finally:
        failing.stop()
    assert [(job.job_type, job.subject) for job in dead] == [(USER_DELETED_CLEANUP, event.subject)]
    assert JobsAdmin(queue).counts().dead == 1
    fixed_queue = worker.job_queue(settings, worker.job_metrics(CollectorRegistry()))
    fixed = worker.task_side_jobs(settings, fixed_queue, removed.append)
    fixed.start()
    try:
        assert [job.job_id for job in JobsAdmin(queue).retry(None)] == [event.id]
        deadline = time.monotonic() + 10
        while removed != [event.subject]:
            assert time.monotonic() < deadline, "the retried cleanup never ran"
            time.sleep(0.05)
        assert JobsAdmin(queue).counts().dead == 0
    finally:
        fixed.stop()
        queue.client.close()
        fixed_queue.client.close()
