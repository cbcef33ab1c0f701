"""taskapi.v1.TaskService, with the shared read cache in front of GetTask and ListTasks."""

from __future__ import annotations

import hashlib

import grpc

from interceptors.context import Caller, current_call
from interceptors.decoding import UndecodableRequest
from server.services.convert import task_filter, task_to_proto, task_values
from server.task_cache import TaskCache
from server.tasks import Tasks
from taskapi.v1 import task_pb2, task_pb2_grpc

GET_TASK = "/taskapi.v1.TaskService/GetTask"
LIST_TASKS = "/taskapi.v1.TaskService/ListTasks"


def cache_entry(method_name: str, request: object, caller: Caller) -> str | None:
    """The cache field a read is served from; None for calls that are not cached.
    Worked out once per call (the prefetch hook asks first, the handler after)."""
    notes = current_call().notes
    if "cache_entry" not in notes:
        notes["cache_entry"] = _cache_entry(method_name, request, caller)
    return notes["cache_entry"]


def _cache_entry(method_name: str, request: object, caller: Caller) -> str | None:
    if isinstance(request, UndecodableRequest):  # the prefetch hook asks before Validation refuses it
        return None
    if method_name == GET_TASK:
        return f"get:{request.id}"  # type: ignore[attr-defined]
    if method_name == LIST_TASKS and request.owner in ("", caller.user_id):  # type: ignore[attr-defined]
        return "list:" + hashlib.sha256(request.SerializeToString(deterministic=True)).hexdigest()[:32]  # type: ignore[attr-defined]
    return None


class TaskServicer(task_pb2_grpc.TaskServiceServicer):
    def __init__(self, tasks: Tasks, cache: TaskCache) -> None:
        self._tasks = tasks
        self._cache = cache

    def CreateTask(self, request: task_pb2.CreateTaskRequest, context: grpc.ServicerContext) -> task_pb2.Task:
        task = self._tasks.create(current_call().caller, task_values(request.task), request.request_id)
        return task_to_proto(task)

    def GetTask(self, request: task_pb2.GetTaskRequest, context: grpc.ServicerContext) -> task_pb2.Task:
        caller = current_call().caller
        entry = cache_entry(GET_TASK, request, caller)
        cached, version = self._cache.read(caller.user_id, entry)
        if cached is not None:
            return task_pb2.Task.FromString(cached)
        task = self._tasks.get(caller, request.id)
        response = task_to_proto(task)
        if str(task.owner) == caller.user_id:  # admins reading others' tasks are not cached
            self._cache.fill(caller.user_id, entry, response.SerializeToString(), version)
        return response

    def ListTasks(
        self, request: task_pb2.ListTasksRequest, context: grpc.ServicerContext
    ) -> task_pb2.ListTasksResponse:
        caller = current_call().caller
        entry = cache_entry(LIST_TASKS, request, caller)
        version = None
        if entry is not None:
            cached, version = self._cache.read(caller.user_id, entry)
            if cached is not None:
                return task_pb2.ListTasksResponse.FromString(cached)
        page = self._tasks.list(caller, task_filter(request), request.page_size, request.page_token)
        response = task_pb2.ListTasksResponse(
            tasks=[task_to_proto(t) for t in page.tasks],
            next_page_token=page.next_page_token,
            total_size=page.total_size,
        )
        if entry is not None:
            self._cache.fill(caller.user_id, entry, response.SerializeToString(), version)
        return response

    def UpdateTask(self, request: task_pb2.UpdateTaskRequest, context: grpc.ServicerContext) -> task_pb2.Task:
        mask = list(request.update_mask.paths) if request.HasField("update_mask") else None
        task = self._tasks.update(
            current_call().caller, request.task.id, task_values(request.task), mask, request.task.etag
        )
        return task_to_proto(task)

    def DeleteTask(
        self, request: task_pb2.DeleteTaskRequest, context: grpc.ServicerContext
    ) -> task_pb2.DeleteTaskResponse:
        self._tasks.delete(current_call().caller, request.id, request.etag)
        return task_pb2.DeleteTaskResponse()
