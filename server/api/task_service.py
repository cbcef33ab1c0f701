"""taskapi.v1.TaskService, with the shared read cache in front of GetTask and ListTasks."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from typing import Any, Protocol, TypeVar

import grpc

from taskapi.interceptors.context import current_caller
from taskapi.server.api.convert import change_to_proto, task_filter, task_to_proto, task_values
from taskapi.server.domain.caller import Caller
from taskapi.server.domain.errors import Unavailable, Unimplemented
from taskapi.server.domain.tasks import Tasks
from taskapi.v1 import task_pb2, task_pb2_grpc

Response = TypeVar("Response")
# (request, caller) -> the read-cache field a call is served from; None: not cached.
EntryOf = Callable[[Any, Caller], str | None]


class ReadCache(Protocol):
    """The shared read cache (taskapi.server.cache.tasks.TaskCache, handed over at wiring)."""

    def cached(
        self,
        caller: Caller,
        entry_of: Callable[[], str | None],
        build: Callable[[], tuple[Response, bool]],
        parse: Callable[[bytes], Response],
        serialize: Callable[[Response], bytes],
    ) -> Response: ...


GET_TASK = "/taskapi.v1.TaskService/GetTask"
LIST_TASKS = "/taskapi.v1.TaskService/ListTasks"


def get_entry(request: object, caller: Caller) -> str | None:
    # Not a GetTaskRequest: undecodable bytes, which Validation refuses after the plan is made.
    return f"get:{request.id}" if isinstance(request, task_pb2.GetTaskRequest) else None


def list_entry(request: object, caller: Caller) -> str | None:
    if not isinstance(request, task_pb2.ListTasksRequest) or request.owner not in ("", caller.user_id):
        return None  # undecodable, or an admin listing others' tasks: not cached
    return "list:" + hashlib.sha256(request.SerializeToString(deterministic=True)).hexdigest()[:32]


# The cached reads, declared here where they are served: the read plan (built at wiring)
# reads their entries in the rate limiter's round trip.
CACHED_READS: dict[str, EntryOf] = {GET_TASK: get_entry, LIST_TASKS: list_entry}


# Room a ListTaskChanges page leaves under the message limit for what is not a change
# (next_token, field framing): a page is cut by bytes before grpc would refuse to send it.
PAGE_HEADROOM_BYTES = 4096


class TaskServicer(task_pb2_grpc.TaskServiceServicer):
    def __init__(self, tasks: Tasks, cache: ReadCache, *, max_message_bytes: int) -> None:
        self._tasks = tasks
        self._page_bytes = max(max_message_bytes - PAGE_HEADROOM_BYTES, 1)
        self._cache = cache

    def CreateTask(self, request: task_pb2.CreateTaskRequest, context: grpc.ServicerContext) -> task_pb2.Task:
        task = self._tasks.create(current_caller(), task_values(request.task), request.request_id)
        return task_to_proto(task)

    def GetTask(self, request: task_pb2.GetTaskRequest, context: grpc.ServicerContext) -> task_pb2.Task:
        caller = current_caller()

        def build() -> tuple[task_pb2.Task, bool]:
            task = self._tasks.get(caller, request.id)
            return task_to_proto(task), task.owner == caller.user_id  # admins reading others': not cached

        return self._cache.cached(
            caller, lambda: get_entry(request, caller), build, task_pb2.Task.FromString, task_pb2.Task.SerializeToString
        )

    def ListTasks(
        self, request: task_pb2.ListTasksRequest, context: grpc.ServicerContext
    ) -> task_pb2.ListTasksResponse:
        caller = current_caller()

        def build() -> tuple[task_pb2.ListTasksResponse, bool]:
            page = self._tasks.list_page(caller, task_filter(request), request.page_size, request.page_token)
            response = task_pb2.ListTasksResponse(
                tasks=[task_to_proto(t) for t in page.tasks],
                next_page_token=page.next_page_token,
                total_size=page.total_size,
            )
            return response, True

        return self._cache.cached(
            caller,
            lambda: list_entry(request, caller),
            build,
            task_pb2.ListTasksResponse.FromString,
            task_pb2.ListTasksResponse.SerializeToString,
        )

    def UpdateTask(self, request: task_pb2.UpdateTaskRequest, context: grpc.ServicerContext) -> task_pb2.Task:
        mask = list(request.update_mask.paths) if request.HasField("update_mask") else None
        task = self._tasks.update(current_caller(), request.task.id, task_values(request.task), mask, request.task.etag)
        return task_to_proto(task)

    def ListTaskChanges(
        self, request: task_pb2.ListTaskChangesRequest, context: grpc.ServicerContext
    ) -> task_pb2.ListTaskChangesResponse:
        changes = self._tasks.changes
        if changes is None:
            raise Unavailable("the change feed is off on this deployment (it needs Redis)")
        delivered, next_token = changes.page(current_caller(), request.since_token, request.page_size)
        page: list[task_pb2.TaskChange] = []
        size = 0
        for item in delivered:  # 1,000 changes of large tasks would pass the message limit
            change = change_to_proto(item)
            size += change.ByteSize() + 8  # the field's tag and length prefix
            if page and size > self._page_bytes:
                next_token = page[-1].resume_token  # the rest comes on the next page
                break
            page.append(change)
        return task_pb2.ListTaskChangesResponse(changes=page, next_token=next_token)

    def WatchTasks(self, request: task_pb2.WatchTasksRequest, context: grpc.ServicerContext) -> Iterator[Any]:
        # Streams are served by the replica's asyncio server (api/watch_service.py, TASKAPI_WATCH_PORT),
        # where they hold no worker thread; Envoy routes them there.
        raise Unimplemented("WatchTasks is served on the replica's watch port (TASKAPI_WATCH_PORT)")

    def DeleteTask(
        self, request: task_pb2.DeleteTaskRequest, context: grpc.ServicerContext
    ) -> task_pb2.DeleteTaskResponse:
        self._tasks.delete(current_caller(), request.id, request.etag)
        return task_pb2.DeleteTaskResponse()
