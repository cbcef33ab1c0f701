"""taskapi_client.TaskApiClient against a live server: sessions, paging, typed errors, retries."""

from __future__ import annotations

import threading

import grpc
import pytest

from taskapi.v1 import auth_pb2, task_pb2, user_pb2
from taskapi_client import (
    AlreadyExists,
    InvalidArgument,
    NotFound,
    TaskApiClient,
    Unauthenticated,
    Unavailable,
)
from tests.conftest import free_port, unique_email

PASSWORD = "correct horse battery"


@pytest.fixture
def api(grpc_target) -> TaskApiClient:
    with TaskApiClient(grpc_target) as client:
        client.register(unique_email("sdk"), PASSWORD, "SDK User")
        yield client


def test_register_login_and_current_user(grpc_target):
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


def test_iter_tasks_walks_every_page(api):
    for i in range(7):
        api.create_task(title=f"task {i}", tags=["paged"])
    api.create_task(title="other")
    titles = [t.title for t in api.iter_tasks(page_size=3, tag=["paged"], order_by="createTime")]
    assert titles == [f"task {i}" for i in range(7)]
    first_page = api.list_tasks(page_size=3, tag=["paged"])
    assert (len(first_page.tasks), first_page.total_size, bool(first_page.next_page_token)) == (3, 7, True)


def test_create_with_the_same_request_id_returns_the_first_task(api):
    first = api.create_task(title="once", request_id="sdk-retry-1")
    again = api.create_task(title="once", request_id="sdk-retry-1")
    assert again.id == first.id
    assert [t.id for t in api.iter_tasks()] == [first.id]


def test_update_and_delete(api):
    task = api.create_task(title="draft")
    updated = api.update_task(task_pb2.Task(id=task.id, status=task_pb2.COMPLETED), ["status"])
    assert updated.status == task_pb2.COMPLETED and updated.title == "draft"
    api.delete_task(task.id)
    with pytest.raises(NotFound):
        api.get_task(task.id)


def test_errors_are_typed_and_carry_details(api, grpc_target):
    with pytest.raises(InvalidArgument) as invalid:
        api.create_task(title="x" * 101, tags=["ok", ""])
    assert set(invalid.value.field_violations) >= {"task.title"}
    assert invalid.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert invalid.value.reason  # ErrorInfo.reason: a stable machine-readable string

    with pytest.raises(NotFound) as missing:
        api.get_task("0" * 24)
    assert missing.value.reason

    email = api.session.user.email
    with TaskApiClient(grpc_target) as other, pytest.raises(AlreadyExists):
        other.register(email.upper(), PASSWORD, "Twin")  # emails compare case-insensitively


def test_an_unusable_access_token_is_refreshed_once(api):
    old_refresh = api.session.refresh_token
    api.session.access_token = "not-a-jwt"  # forged, as far as the server can tell
    assert api.current_user().email == api.session.user.email
    assert api.session.refresh_token != old_refresh  # rotated


def test_responses_are_the_resources_themselves(api):
    """Register/Login/Refresh return the AuthSession, task and user RPCs the Task or User."""
    assert isinstance(api.session, auth_pb2.AuthSession) and api.session.token_type == "Bearer"
    old = api.session
    api.refresh()
    assert isinstance(api.session, auth_pb2.AuthSession)
    assert api.session.refresh_token != old.refresh_token and api.session.user.id == old.user.id
    task = api.create_task(title="resource")
    assert isinstance(task, task_pb2.Task) and task.owner == api.session.user.id
    assert api.get_task(task.id) == task
    assert isinstance(api.current_user(), user_pb2.User)


def test_concurrent_failures_refresh_only_once(api):
    """Two refreshes of one token would look like token reuse and revoke the family."""
    api.session.access_token = "not-a-jwt"
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


def test_unavailable_is_retried_with_backoff_then_raised():
    delays: list[float] = []
    closed = f"127.0.0.1:{free_port()}"  # nothing listens there
    with (
        TaskApiClient(
            closed, timeout=5, max_attempts=3, backoff_initial=0.01, backoff_max=0.04, sleep=delays.append
        ) as api,
        pytest.raises(Unavailable),
    ):
        api.login("nobody@example.com", PASSWORD)
    assert len(delays) == 2  # three attempts, two pauses
    assert all(0 <= d <= 0.04 for d in delays)


def test_other_errors_are_not_retried(api):
    delays: list[float] = []
    api._sleep = delays.append
    with pytest.raises(NotFound):
        api.get_task("0" * 24)
    assert delays == []
