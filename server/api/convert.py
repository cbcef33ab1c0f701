"""Proto <-> domain conversion: the only place that knows both shapes."""

from __future__ import annotations

from datetime import datetime
from typing import cast

from google.protobuf import timestamp_pb2

from taskapi.server.domain.changes import DELETED, Delivered
from taskapi.server.domain.entities import Task, User
from taskapi.server.domain.tasks import TaskFilter, TaskValues
from taskapi.v1 import task_pb2, user_pb2

_ROLE_TO_PROTO = {"USER": user_pb2.USER, "ADMIN": user_pb2.ADMIN}
ROLE_FROM_PROTO = {v: k for k, v in _ROLE_TO_PROTO.items()}


def to_datetime(ts: timestamp_pb2.Timestamp) -> datetime:
    """Naive UTC at millisecond precision: what BSON stores, so store and cache agree."""
    moment = ts.ToDatetime()
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def _timestamp(moment: datetime | None) -> timestamp_pb2.Timestamp | None:
    if moment is None:
        return None
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(moment)
    return ts


def task_to_proto(task: Task) -> task_pb2.Task:
    return task_pb2.Task(
        id=task.id,
        title=task.title,
        description=task.description or "",
        # Stored as the enum numbers; the generated stubs type enum fields as their wrappers.
        status=cast("task_pb2.TaskStatus", task.status),
        priority=cast("task_pb2.TaskPriority", task.priority),
        due_time=_timestamp(task.due_time),
        tags=task.tags,
        owner=task.owner,
        create_time=_timestamp(task.create_time),
        update_time=_timestamp(task.update_time),
        complete_time=_timestamp(task.complete_time),
        etag=task.etag,
    )


def task_values(task: task_pb2.Task) -> TaskValues:
    """The values a request sets, and which fields it sets (proto3 presence)."""
    new = TaskValues()
    for name in ("title", "description", "status", "priority"):
        if task.HasField(name):
            new.values[name] = getattr(task, name)
            new.present.add(name)
    if task.HasField("due_time"):
        new.values["due_time"] = to_datetime(task.due_time)
        new.present.add("due_time")
    if task.tags:
        new.values["tags"] = tuple(task.tags)
        new.present.add("tags")
    return new


def task_filter(request: task_pb2.ListTasksRequest) -> TaskFilter:
    return TaskFilter(
        owner=request.owner,
        status=request.status if request.HasField("status") else None,
        priority=request.priority if request.HasField("priority") else None,
        tags=tuple(request.tag),
        due_after=to_datetime(request.due_after) if request.HasField("due_after") else None,
        due_before=to_datetime(request.due_before) if request.HasField("due_before") else None,
        q=request.q,
        order_by=request.order_by,
    )


def user_to_proto(user: User) -> user_pb2.User:
    return user_pb2.User(
        id=user.id,
        email=user.email,
        name=user.name,
        role=_ROLE_TO_PROTO[user.role],
        disabled=bool(user.disabled),
        create_time=_timestamp(user.create_time),
        update_time=_timestamp(user.update_time),
    )


def user_values(user: user_pb2.User) -> tuple[dict[str, object], set[str]]:
    values: dict[str, object] = {}
    if user.HasField("name"):
        values["name"] = user.name
    if user.HasField("role"):
        values["role"] = ROLE_FROM_PROTO.get(user.role)
    if user.HasField("disabled"):
        values["disabled"] = user.disabled
    # email is output only: ignored in a body (AIP-203), refused only when a mask names it.
    return values, set(values)


def change_to_proto(delivered: Delivered) -> task_pb2.TaskChange:
    """A change of the feed; a deletion carries only the task's id (a tombstone)."""
    change = delivered.change
    if change.kind == DELETED or change.task is None:
        task = task_pb2.Task(id=change.task_id)
    else:
        task = task_to_proto(change.task)
    return task_pb2.TaskChange(
        kind=cast("task_pb2.TaskChange.Kind", change.kind),
        task=task,
        change_time=_timestamp(change.time),
        resume_token=delivered.token,
    )
