"""TaskService over a real channel: CRUD, ownership, idempotency, etags, listing."""

from __future__ import annotations

import functools
import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from google.protobuf import field_mask_pb2, timestamp_pb2

from taskapi.v1 import task_pb2
from tests.integration.api import Api, User, error_details, fails, violated_fields

T = task_pb2


@pytest.fixture
def api(channel: grpc.Channel) -> Api:
    return Api(channel)


def _ts(moment: datetime) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(moment)
    return ts


def test_create_get_update_delete(api: Api) -> None:
    user = api.register()
    due = datetime(2031, 1, 2, 3, 4, 5, tzinfo=UTC)
    created = api.tasks.CreateTask(
        T.CreateTaskRequest(
            task=T.Task(title="Write", description="the spec", due_time=_ts(due), tags=["work", "docs"])
        ),
        metadata=user.auth,
    )
    assert (created.status, created.priority, created.owner) == (T.PENDING, T.MEDIUM, user.id)
    assert created.etag and created.create_time == created.update_time and not created.HasField("complete_time")
    assert created.due_time.ToDatetime(tzinfo=UTC) == due
    got = api.tasks.GetTask(T.GetTaskRequest(id=created.id), metadata=user.auth)
    assert got == created
    updated = api.tasks.UpdateTask(
        T.UpdateTaskRequest(task=T.Task(id=created.id, status=T.COMPLETED)), metadata=user.auth
    )
    assert updated.status == T.COMPLETED and updated.title == "Write" and updated.tags == ["work", "docs"]
    assert updated.HasField("complete_time") and updated.etag != created.etag
    reopened = api.tasks.UpdateTask(
        T.UpdateTaskRequest(task=T.Task(id=created.id, status=T.IN_PROGRESS)), metadata=user.auth
    )
    assert not reopened.HasField("complete_time")
    api.tasks.DeleteTask(T.DeleteTaskRequest(id=created.id), metadata=user.auth)
    fails(lambda: api.tasks.GetTask(T.GetTaskRequest(id=created.id), metadata=user.auth), grpc.StatusCode.NOT_FOUND)
    fails(
        lambda: api.tasks.DeleteTask(T.DeleteTaskRequest(id=created.id), metadata=user.auth), grpc.StatusCode.NOT_FOUND
    )


def test_field_rules_on_create(api: Api) -> None:
    user = api.register()
    error = fails(
        lambda: api.tasks.CreateTask(T.CreateTaskRequest(task=T.Task()), metadata=user.auth),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert violated_fields(error) == {"task.title"} and "title is required" in (error.details() or "")
    too_many = [f"t{i}" for i in range(21)]
    error = fails(
        lambda: api.tasks.CreateTask(
            T.CreateTaskRequest(task=T.Task(title="x" * 101, description="d" * 2001, tags=too_many)), metadata=user.auth
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert violated_fields(error) == {"task.title", "task.description", "task.tags"}
    error = fails(
        lambda: api.tasks.CreateTask(
            T.CreateTaskRequest(task=T.Task(title="t", tags=["ok", "x" * 33])), metadata=user.auth
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert violated_fields(error) == {"task.tags[1]"}
    fails(
        lambda: api.tasks.GetTask(T.GetTaskRequest(id="not-an-id"), metadata=user.auth),
        grpc.StatusCode.INVALID_ARGUMENT,
    )


def test_create_is_idempotent_with_a_request_id(api: Api) -> None:
    user, other = api.register(), api.register()
    request = T.CreateTaskRequest(task=T.Task(title="Once"), request_id="req-123")
    first = api.tasks.CreateTask(request, metadata=user.auth)
    again = api.tasks.CreateTask(request, metadata=user.auth)
    assert again.id == first.id
    listed = api.tasks.ListTasks(T.ListTasksRequest(), metadata=user.auth)
    assert listed.total_size == 1
    # Request ids are per user.
    assert api.tasks.CreateTask(request, metadata=other.auth).id != first.id


def test_another_users_task_is_not_found_and_unchanged(api: Api) -> None:
    owner, stranger = api.register(), api.register()
    task = api.tasks.CreateTask(T.CreateTaskRequest(task=T.Task(title="Mine")), metadata=owner.auth)
    for call in (
        lambda: api.tasks.GetTask(T.GetTaskRequest(id=task.id), metadata=stranger.auth),
        lambda: api.tasks.UpdateTask(
            T.UpdateTaskRequest(task=T.Task(id=task.id, title="Theirs")), metadata=stranger.auth
        ),
        lambda: api.tasks.DeleteTask(T.DeleteTaskRequest(id=task.id), metadata=stranger.auth),
    ):
        error = fails(call, grpc.StatusCode.NOT_FOUND)
        assert error.details() == "task not found"
    missing = fails(
        lambda: api.tasks.GetTask(T.GetTaskRequest(id="0" * 24), metadata=stranger.auth), grpc.StatusCode.NOT_FOUND
    )
    assert missing.details() == "task not found"
    assert api.tasks.GetTask(T.GetTaskRequest(id=task.id), metadata=owner.auth) == task
    assert api.tasks.ListTasks(T.ListTasksRequest(), metadata=stranger.auth).total_size == 0
    fails(
        lambda: api.tasks.ListTasks(T.ListTasksRequest(owner=owner.id), metadata=stranger.auth),
        grpc.StatusCode.PERMISSION_DENIED,
    )


def test_update_mask_presence_and_etag(api: Api) -> None:
    user = api.register()
    task = api.tasks.CreateTask(
        T.CreateTaskRequest(task=T.Task(title="A", description="keep", tags=["x"], priority=T.HIGH)), metadata=user.auth
    )
    # With a mask, only the named fields change, even if others are in the body.
    masked = api.tasks.UpdateTask(
        T.UpdateTaskRequest(
            task=T.Task(id=task.id, title="B", description="ignored"),
            update_mask=field_mask_pb2.FieldMask(paths=["title"]),
        ),
        metadata=user.auth,
    )
    assert (masked.title, masked.description, masked.priority) == ("B", "keep", T.HIGH)
    # A masked field absent from the body is cleared (AIP-134); tags can only be cleared that way.
    cleared = api.tasks.UpdateTask(
        T.UpdateTaskRequest(
            task=T.Task(id=task.id), update_mask=field_mask_pb2.FieldMask(paths=["tags", "description"])
        ),
        metadata=user.auth,
    )
    assert cleared.tags == [] and cleared.description == ""
    stale = fails(
        lambda: api.tasks.UpdateTask(
            T.UpdateTaskRequest(task=T.Task(id=task.id, title="C", etag=task.etag)), metadata=user.auth
        ),
        grpc.StatusCode.ABORTED,
    )
    assert error_details(stale)["ErrorInfo"].reason == "ETAG_MISMATCH"
    unchanged = api.tasks.UpdateTask(T.UpdateTaskRequest(task=T.Task(id=task.id)), metadata=user.auth)
    assert unchanged == cleared  # an update that names nothing writes nothing
    fresh = api.tasks.UpdateTask(
        T.UpdateTaskRequest(task=T.Task(id=task.id, title="C", etag=cleared.etag)), metadata=user.auth
    )
    assert fresh.title == "C"
    fails(
        lambda: api.tasks.DeleteTask(T.DeleteTaskRequest(id=task.id, etag=cleared.etag), metadata=user.auth),
        grpc.StatusCode.ABORTED,
    )
    for paths in (["owner"], ["nonsense"]):
        error = fails(
            functools.partial(
                api.tasks.UpdateTask,
                T.UpdateTaskRequest(task=T.Task(id=task.id), update_mask=field_mask_pb2.FieldMask(paths=paths)),
                metadata=user.auth,
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
        )
        assert violated_fields(error) == {"update_mask"}
    error = fails(
        lambda: api.tasks.UpdateTask(
            T.UpdateTaskRequest(task=T.Task(id=task.id), update_mask=field_mask_pb2.FieldMask(paths=["title"])),
            metadata=user.auth,
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert violated_fields(error) == {"task.title"}
    assert api.tasks.GetTask(T.GetTaskRequest(id=task.id), metadata=user.auth).title == "C"


def test_page_size_rules(api: Api) -> None:
    user = api.register()
    for i in range(3):
        api.tasks.CreateTask(T.CreateTaskRequest(task=T.Task(title=f"t{i}")), metadata=user.auth)
    fails(
        lambda: api.tasks.ListTasks(T.ListTasksRequest(page_size=-1), metadata=user.auth),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert len(api.tasks.ListTasks(T.ListTasksRequest(page_size=1000), metadata=user.auth).tasks) == 3
    page = api.tasks.ListTasks(T.ListTasksRequest(page_size=2), metadata=user.auth)
    assert len(page.tasks) == 2 and page.next_page_token and page.total_size == 3
    for token in (page.next_page_token[:-3] + "abc", "garbage", page.next_page_token.replace(".", "x.")):
        error = fails(
            functools.partial(
                api.tasks.ListTasks, T.ListTasksRequest(page_size=2, page_token=token), metadata=user.auth
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
        )
        assert violated_fields(error) == {"page_token"}
    # A token is bound to its query: other filters, another order or another user fail.
    for other in (
        T.ListTasksRequest(page_size=2, q="t", page_token=page.next_page_token),
        T.ListTasksRequest(page_size=2, order_by="title", page_token=page.next_page_token),
    ):
        fails(functools.partial(api.tasks.ListTasks, other, metadata=user.auth), grpc.StatusCode.INVALID_ARGUMENT)
    stranger = api.register()
    fails(
        lambda: api.tasks.ListTasks(
            T.ListTasksRequest(page_size=2, page_token=page.next_page_token), metadata=stranger.auth
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    error = fails(
        lambda: api.tasks.ListTasks(T.ListTasksRequest(order_by="owner"), metadata=user.auth),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert violated_fields(error) == {"order_by"}


ManyTasks = tuple[Api, User, list[T.Task]]  # the API, the lister, its tasks as created


@pytest.fixture(scope="module")
def many_tasks(channel: grpc.Channel) -> ManyTasks:
    """260 tasks with varied fields, and the same data as plain dicts to check against."""
    api = Api(channel)
    user = api.register("lister")
    rng = random.Random(7)
    base = datetime(2030, 1, 1, tzinfo=UTC)
    expected: list[T.Task] = []
    for i in range(260):
        due = base + timedelta(hours=rng.randrange(0, 500)) if rng.random() < 0.8 else None
        task = T.Task(
            title=f"{rng.choice(['Alpha', 'beta', 'Gamma'])} task {i:03d}",
            description=rng.choice(["", "needs REVIEW", "plain"]),
            status=rng.choice([T.PENDING, T.IN_PROGRESS, T.COMPLETED]),
            priority=rng.choice([T.LOW, T.MEDIUM, T.HIGH]),
            tags=rng.sample(["a", "b", "c", "d"], rng.randrange(0, 3)),
        )
        if due:
            task.due_time.CopyFrom(_ts(due))
        created = api.tasks.CreateTask(T.CreateTaskRequest(task=task), metadata=user.auth)
        expected.append(created)
    return api, user, expected


def _all_pages(api: Api, user: User, request: T.ListTasksRequest) -> tuple[list[T.Task], set[int]]:
    tasks: list[T.Task] = []
    totals: set[int] = set()
    token = request.page_token
    while True:
        request.page_token = token
        page = api.tasks.ListTasks(request, metadata=user.auth)
        tasks.extend(page.tasks)
        totals.add(page.total_size)
        token = page.next_page_token
        if not token:
            return tasks, totals


def _due_key(task: T.Task) -> tuple[bool, int]:
    return (task.HasField("due_time"), task.due_time.ToNanoseconds() if task.HasField("due_time") else 0)


# name, ListTasksRequest fields (any of their types), which tasks it keeps, their order, reversed
Case = tuple[str, dict[str, Any], Callable[[T.Task], bool] | None, Callable[[T.Task], tuple[object, ...]], bool]
CASES: list[Case] = [
    ("default order", dict(page_size=17), None, lambda t: (t.create_time.ToNanoseconds(), t.id), True),
    (
        "status filter by due",
        dict(page_size=23, status=T.PENDING, order_by="dueTime"),
        lambda t: t.status == T.PENDING,
        lambda t: (*_due_key(t), t.id),
        False,
    ),
    (
        "priority desc then due desc",
        dict(page_size=31, order_by="priority desc, due_time desc"),
        None,
        lambda t: (t.priority, *_due_key(t), t.id),
        True,
    ),
    (
        "tags all",
        dict(page_size=9, tag=["a", "b"], order_by="title"),
        lambda t: {"a", "b"} <= set(t.tags),
        lambda t: (t.title, t.id),
        False,
    ),
    (
        "q and priority",
        dict(page_size=7, q="review", priority=T.HIGH),
        lambda t: "review" in t.description.lower() and t.priority == T.HIGH,
        lambda t: (t.create_time.ToNanoseconds(), t.id),
        True,
    ),
    (
        "due window",
        dict(
            page_size=11,
            due_after=_ts(datetime(2030, 1, 5, tzinfo=UTC)),
            due_before=_ts(datetime(2030, 1, 15, tzinfo=UTC)),
            order_by="dueTime desc",
        ),
        lambda t: t.HasField("due_time")
        and datetime(2030, 1, 5, tzinfo=UTC) <= t.due_time.ToDatetime(tzinfo=UTC) < datetime(2030, 1, 15, tzinfo=UTC),
        lambda t: (*_due_key(t), t.id),
        True,
    ),
]


@pytest.mark.parametrize(("name", "params", "keep", "key", "reverse"), CASES, ids=[c[0] for c in CASES])
def test_pagination_has_no_duplicates_or_gaps(
    many_tasks: ManyTasks,
    name: str,
    params: dict[str, Any],
    keep: Callable[[T.Task], bool] | None,
    key: Callable[[T.Task], tuple[object, ...]],
    reverse: bool,
) -> None:
    api, user, expected = many_tasks
    want = sorted((t for t in expected if keep is None or keep(t)), key=key, reverse=reverse)
    got, totals = _all_pages(api, user, T.ListTasksRequest(**params))
    assert [t.id for t in got] == [t.id for t in want]
    assert totals == {len(want)}
    assert len(want) > 0


def test_pages_stay_consistent_while_tasks_are_added(many_tasks: ManyTasks) -> None:
    api, user, expected = many_tasks
    request = T.ListTasksRequest(page_size=50, order_by="createTime")
    first = api.tasks.ListTasks(request, metadata=user.auth)
    late = api.tasks.CreateTask(T.CreateTaskRequest(task=T.Task(title="late arrival")), metadata=user.auth)
    rest, _ = _all_pages(
        api, user, T.ListTasksRequest(page_size=50, order_by="createTime", page_token=first.next_page_token)
    )
    seen = [t.id for t in first.tasks] + [t.id for t in rest if t.id != late.id]
    assert seen == [t.id for t in sorted(expected, key=lambda t: (t.create_time.ToNanoseconds(), t.id))]
    assert len(set(seen)) == len(seen)
    api.tasks.DeleteTask(T.DeleteTaskRequest(id=late.id), metadata=user.auth)


def test_update_mask_star_replaces_every_updatable_field(api: Api) -> None:
    """AIP-134, the same rule as for users: a masked field absent from the body is reset to its
    default; `*` names every updatable field; a title has no default, so it must be sent."""
    user = api.register()
    due = _ts(datetime(2030, 1, 2, tzinfo=UTC))
    task = api.tasks.CreateTask(
        T.CreateTaskRequest(
            task=T.Task(title="Full", description="d", status=T.IN_PROGRESS, priority=T.HIGH, due_time=due, tags=["a"])
        ),
        metadata=user.auth,
    )

    def update(body: T.Task, *paths: str) -> T.Task:
        request = T.UpdateTaskRequest(task=body, update_mask=field_mask_pb2.FieldMask(paths=list(paths)))
        return api.tasks.UpdateTask(request, metadata=user.auth)

    for paths in (("*",), ("title",), ("title", "status")):
        error = fails(functools.partial(update, T.Task(id=task.id), *paths), grpc.StatusCode.INVALID_ARGUMENT)
        assert violated_fields(error) == {"task.title"}
    reset = update(T.Task(id=task.id), "status", "priority", "dueTime")
    assert (reset.status, reset.priority, reset.HasField("due_time")) == (T.PENDING, T.MEDIUM, False)
    assert (reset.title, reset.description, list(reset.tags)) == ("Full", "d", ["a"])
    replaced = update(T.Task(id=task.id, title="Only"), "*")
    assert (replaced.title, replaced.description, list(replaced.tags)) == ("Only", "", [])
    assert (replaced.status, replaced.priority, replaced.HasField("due_time")) == (T.PENDING, T.MEDIUM, False)
    # Sending back what was read changes nothing, so nothing is written: same etag, same update time.
    assert update(replaced, "*") == replaced
    assert api.tasks.UpdateTask(T.UpdateTaskRequest(task=replaced), metadata=user.auth) == replaced
