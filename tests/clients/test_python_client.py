"""taskapi_client.TaskApiClient against a live server: sessions, paging, typed errors, retries."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Generic, ParamSpec, TypeVar

import grpc
import pymongo.errors
import pytest

from taskapi.server.app import App
from taskapi.server.dev import free_port
from taskapi.server.store.sessions import MongoSessionStore
from taskapi.server.store.tasks import MongoTaskStore
from taskapi.v1 import auth_pb2, task_pb2, user_pb2
from taskapi_client import (
    AlreadyExists,
    InvalidArgument,
    NotFound,
    TaskApiClient,
    Unauthenticated,
    Unavailable,
)
from tests.conftest import unique_email

PASSWORD = "correct horse battery"
P = ParamSpec("P")
R = TypeVar("R")


@pytest.fixture
def api(grpc_target: str) -> Iterator[TaskApiClient]:
    with TaskApiClient(grpc_target) as client:
        client.register(unique_email("sdk"), PASSWORD, "SDK User")
        yield client


def session(api: TaskApiClient) -> auth_pb2.AuthSession:
    """The client's current session (the `api` fixture signs in)."""
    assert api.session is not None
    return api.session


def test_register_login_and_current_user(grpc_target: str) -> None:
    email = unique_email("sdk")
    with TaskApiClient(grpc_target) as first:
        user = first.register(email, PASSWORD, "Ada")
    with TaskApiClient(grpc_target) as second:
        assert second.login(email, PASSWORD).id == user.id
        assert second.current_user().name == "Ada"
        second.logout()
        assert second.session is None
        with pytest.raises(Unauthenticated):
            second.current_user()


def test_iter_tasks_walks_every_page(api: TaskApiClient) -> None:
    for i in range(7):
        api.create_task(title=f"task {i}", tags=["paged"])
    api.create_task(title="other")
    titles = [t.title for t in api.iter_tasks(page_size=3, tag=["paged"], order_by="createTime")]
    assert titles == [f"task {i}" for i in range(7)]
    first_page = api.list_tasks(page_size=3, tag=["paged"])
    assert (len(first_page.tasks), first_page.total_size, bool(first_page.next_page_token)) == (3, 7, True)


def test_create_with_the_same_request_id_returns_the_first_task(api: TaskApiClient) -> None:
    first = api.create_task(title="once", request_id="sdk-retry-1")
    again = api.create_task(title="once", request_id="sdk-retry-1")
    assert again.id == first.id
    assert [t.id for t in api.iter_tasks()] == [first.id]


def test_update_and_delete(api: TaskApiClient) -> None:
    task = api.create_task(title="draft")
    updated = api.update_task(task_pb2.Task(id=task.id, status=task_pb2.COMPLETED), ["status"])
    assert updated.status == task_pb2.COMPLETED and updated.title == "draft"
    api.delete_task(task.id)
    with pytest.raises(NotFound):
        api.get_task(task.id)


def test_errors_are_typed_and_carry_details(api: TaskApiClient, grpc_target: str) -> None:
    with pytest.raises(InvalidArgument) as invalid:
        api.create_task(title="x" * 101, tags=["ok", ""])
    assert set(invalid.value.field_violations) >= {"task.title"}
    assert invalid.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert invalid.value.reason  # ErrorInfo.reason: a stable machine-readable string

    with pytest.raises(NotFound) as missing:
        api.get_task("0" * 24)
    assert missing.value.reason

    email = session(api).user.email
    with TaskApiClient(grpc_target) as other, pytest.raises(AlreadyExists):
        other.register(email.upper(), PASSWORD, "Twin")  # emails compare case-insensitively


def test_an_unusable_access_token_is_refreshed_once(api: TaskApiClient) -> None:
    old_refresh = session(api).refresh_token
    session(api).access_token = "not-a-jwt"  # forged, as far as the server can tell
    assert api.current_user().email == session(api).user.email
    assert session(api).refresh_token != old_refresh  # rotated


def test_responses_are_the_resources_themselves(api: TaskApiClient) -> None:
    """Register/Login/Refresh return the AuthSession, task and user RPCs the Task or User."""
    assert isinstance(api.session, auth_pb2.AuthSession) and api.session.token_type == "Bearer"
    old = api.session
    api.refresh()
    assert isinstance(api.session, auth_pb2.AuthSession)
    assert api.session.refresh_token != old.refresh_token and api.session.user.id == old.user.id
    task = api.create_task(title="resource")
    assert isinstance(task, task_pb2.Task)
    assert task.owner == api.session.user.id
    assert api.get_task(task.id) == task
    assert isinstance(api.current_user(), user_pb2.User)


def test_concurrent_failures_refresh_only_once(api: TaskApiClient) -> None:
    """Two refreshes of one token would look like token reuse and revoke the family."""
    session(api).access_token = "not-a-jwt"
    errors: list[BaseException] = []

    def call() -> None:
        try:
            api.current_user()
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=call) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert api.list_tasks().total_size == 0  # the session still works: its family was not revoked


def test_unavailable_is_retried_with_backoff_then_raised() -> None:
    delays: list[float] = []
    closed = f"127.0.0.1:{free_port()}"  # nothing listens there
    with (
        TaskApiClient(
            closed, timeout=5, max_attempts=3, backoff_initial=0.01, backoff_max=0.04, sleep=delays.append
        ) as api,
        pytest.raises(Unavailable),
    ):
        api.get_task("0" * 24)  # a read: safe to repeat
    assert len(delays) == 2  # three attempts, two pauses
    assert all(0 <= d <= 0.04 for d in delays)


def test_non_idempotent_calls_are_not_retried_even_when_unreachable() -> None:
    delays: list[float] = []
    closed = f"127.0.0.1:{free_port()}"  # nothing listens there
    with TaskApiClient(closed, timeout=5, max_attempts=3, sleep=delays.append) as api:
        with pytest.raises(Unavailable):
            api.login("nobody@example.com", PASSWORD)
        with pytest.raises(Unavailable):
            api.register("nobody@example.com", PASSWORD, "Nobody")
        with pytest.raises(Unavailable):
            api.call(api.tasks.DeleteTask, task_pb2.DeleteTaskRequest(id="0" * 24))
    assert delays == []


def test_create_without_request_id_is_not_retried_through_call() -> None:
    """`create_task` always sends a request_id; a raw CreateTask without one is not idempotent."""
    delays: list[float] = []
    with TaskApiClient(f"127.0.0.1:{free_port()}", timeout=5, max_attempts=3, sleep=delays.append) as api:
        with pytest.raises(Unavailable):
            api.call(api.tasks.CreateTask, task_pb2.CreateTaskRequest(task=task_pb2.Task(title="t")))
        assert delays == []
        with pytest.raises(Unavailable):
            api.create_task(title="t")
        assert len(delays) == 2


class _FailOnce(Generic[P, R]):
    """Wraps a store method: the first call raises AutoReconnect (a MongoDB connection
    failure, injected by the test), later calls run the real method."""

    def __init__(self, real: Callable[P, R]) -> None:
        self.real = real
        self.calls = 0

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        self.calls += 1
        if self.calls == 1:
            raise pymongo.errors.AutoReconnect("injected by the test: connection lost mid-write")
        return self.real(*args, **kwargs)


def test_refresh_that_fails_mid_write_is_not_retried(api: TaskApiClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """The real server (taskapi.server.app's App, `replica` fixture) rotates the old refresh
    token, then fails to insert the new one. A retry would present the rotated token,
    which the server treats as reuse and answers by revoking the whole session."""
    delays: list[float] = []
    api._sleep = delays.append
    failing = _FailOnce(MongoSessionStore.insert)
    monkeypatch.setattr(MongoSessionStore, "insert", lambda self, **kw: failing(self, **kw))  # injected failure
    with pytest.raises(Unavailable):
        api.refresh()
    assert failing.calls == 1  # one attempt reached the server; no retry
    assert delays == []


def test_read_that_fails_once_is_retried(api: TaskApiClient, monkeypatch: pytest.MonkeyPatch) -> None:
    task = api.create_task(title="read me")
    delays: list[float] = []
    api._sleep = delays.append
    failing = _FailOnce(MongoTaskStore.find)
    monkeypatch.setattr(MongoTaskStore, "find", lambda self, *a: failing(self, *a))  # injected failure
    assert api.get_task(task.id).id == task.id
    assert failing.calls == 2 and len(delays) == 1


def test_other_errors_are_not_retried(api: TaskApiClient) -> None:
    delays: list[float] = []
    api._sleep = delays.append
    with pytest.raises(NotFound):
        api.get_task("0" * 24)
    assert delays == []


def test_a_login_shed_under_load_is_retried(api: TaskApiClient, app: App, monkeypatch: pytest.MonkeyPatch) -> None:
    """The password-hashing slots of the real server are full once (held by the test), so the
    server refuses the first Login before doing anything, marked `x-retry-safe`: the SDK retries
    even though Login is not idempotent."""
    delays: list[float] = []
    hasher = app.accounts._hasher
    waiting = hasher._waiting
    held = 0
    while waiting.acquire(blocking=False):  # take every queue place: the next check is shed
        held += 1

    def release_after_first_refusal(seconds: float) -> None:
        delays.append(seconds)
        for _ in range(held):
            waiting.release()

    api._sleep = release_after_first_refusal
    email = api.current_user().email
    assert api.login(email, PASSWORD).email == email  # login returns the signed-in user
    assert len(delays) == 1  # refused once, retried once
