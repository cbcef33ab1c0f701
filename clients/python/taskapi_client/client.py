"""TaskApiClient: the Task API over gRPC, with sessions, deadlines and retries handled.

    with TaskApiClient("127.0.0.1:50051") as api:
        api.login("ada@example.com", "correct horse battery")
        task = api.create_task(title="Write the report", tags=["work"])
        for t in api.iter_tasks(status=task_pb2.PENDING):
            print(t.title)

What it does for the caller, and why:
- Sessions: register/login store the AuthSession; every call sends its access token.
  On UNAUTHENTICATED it refreshes once and retries once. Refresh tokens rotate and a
  reused one revokes the whole family, so concurrent callers must not refresh twice:
  only the first thread whose token failed refreshes; the others reuse its result.
- Deadlines: every attempt has `timeout` seconds (API.md: every call has a deadline).
- Retries: only UNAVAILABLE, and only for calls that are safe to repeat, as the
  protos declare them (taskapi_client.policy: reads and Logout by `idempotency_level`,
  CreateTask when it carries a request_id, AIP-155), with exponential
  backoff and full jitter (never less than the server's RetryInfo). The server may
  answer UNAVAILABLE after a write was half done, so other calls are never retried:
  a retried Refresh looks like token reuse and revokes the session, a retried
  Register answers ALREADY_EXISTS. The exception is a refusal the server marks
  `x-retry-safe: true` (shed before doing anything, e.g. a Login while password
  hashing is saturated): any call is retried then. CreateTask always sends a
  request_id, so a retried create never duplicates. RESOURCE_EXHAUSTED is not retried: the caller
  sees `retry_delay` and decides.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Self, TypeVar

import grpc
from google.protobuf import field_mask_pb2

from taskapi.v1 import auth_pb2, auth_pb2_grpc, task_pb2, task_pb2_grpc, user_pb2, user_pb2_grpc

from .errors import TaskApiError, Unauthenticated, Unavailable, from_rpc_error
from .policy import RpcPolicy, rpc_policies

# Set by the server on a refusal that changed nothing (interceptors/status.py).
RETRY_SAFE_HEADER = "x-retry-safe"

Response = TypeVar("Response")


class TaskApiClient:
    """A client for one target (a server replica or Envoy's gRPC port).

    The stubs `auth`, `tasks` and `users` are public: any RPC without a helper here
    goes through `call(stub.Method, request)` and gets the same session and retries.
    """

    def __init__(
        self,
        target: str,
        *,
        credentials: grpc.ChannelCredentials | None = None,
        channel: grpc.Channel | None = None,
        watch_channel: grpc.Channel | None = None,
        timeout: float = 10.0,
        max_attempts: int = 4,
        backoff_initial: float = 0.1,
        backoff_max: float = 5.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if channel is None:
            channel = grpc.secure_channel(target, credentials) if credentials else grpc.insecure_channel(target)
        self._channel = channel
        self.auth = auth_pb2_grpc.AuthServiceStub(channel)
        self.tasks = task_pb2_grpc.TaskServiceStub(channel)
        self.users = user_pb2_grpc.UserServiceStub(channel)
        # WatchTasks: through Envoy the same target; straight to a replica, its watch port.
        self._watch_channel = watch_channel
        self._watch = task_pb2_grpc.TaskServiceStub(watch_channel) if watch_channel is not None else self.tasks
        self.last_resume_token = ""  # of the last change (or heartbeat) watch_tasks saw
        stubs = {
            "taskapi.v1.AuthService": self.auth,
            "taskapi.v1.TaskService": self.tasks,
            "taskapi.v1.UserService": self.users,
        }
        # The stubs' own callables (created once per stub), matched by identity.
        self._policies: dict[int, RpcPolicy] = {
            id(getattr(stubs[policy.service], policy.name)): policy for policy in rpc_policies().values()
        }
        self.timeout = timeout
        self._max_attempts = max_attempts
        self._backoff = (backoff_initial, backoff_max)
        self._sleep = sleep
        self._session: auth_pb2.AuthSession | None = None
        self._session_lock = threading.Lock()

    # --- lifecycle -----------------------------------------------------------------

    def close(self) -> None:
        self._channel.close()
        if self._watch_channel is not None:
            self._watch_channel.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def session(self) -> auth_pb2.AuthSession | None:
        """The current session (tokens and user), or None before a sign-in."""
        return self._session

    # --- auth ------------------------------------------------------------------------

    def register(self, email: str, password: str, name: str) -> user_pb2.User:
        request = auth_pb2.RegisterRequest(email=email, password=password, name=name)
        self._session = self.call(self.auth.Register, request, authenticated=False)
        return self._session.user

    def login(self, email: str, password: str) -> user_pb2.User:
        request = auth_pb2.LoginRequest(email=email, password=password)
        self._session = self.call(self.auth.Login, request, authenticated=False)
        return self._session.user

    def refresh(self) -> None:
        """Rotate the session now (calls also do it on their own when a token expired)."""
        with self._session_lock:
            self._refresh_locked()

    def logout(self) -> None:
        if self._session is not None:
            request = auth_pb2.LogoutRequest(refresh_token=self._session.refresh_token)
            self.call(self.auth.Logout, request, authenticated=False)
        self._session = None

    # --- tasks -------------------------------------------------------------------------

    def create_task(
        self, task: task_pb2.Task | None = None, /, *, request_id: str = "", **fields: Any
    ) -> task_pb2.Task:
        """Create a task from a Task or from its fields (`title=..., tags=[...]`)."""
        task = task if task is not None else task_pb2.Task(**fields)
        # One id for every retry of this create: the server returns the first task.
        request = task_pb2.CreateTaskRequest(task=task, request_id=request_id or uuid.uuid4().hex)
        return self.call(self.tasks.CreateTask, request)

    def get_task(self, task_id: str) -> task_pb2.Task:
        return self.call(self.tasks.GetTask, task_pb2.GetTaskRequest(id=task_id))

    def update_task(self, task: task_pb2.Task, update_mask: Iterable[str] | None = None) -> task_pb2.Task:
        """Change the fields named in `update_mask` (proto names), or without it the
        fields set on `task`. Set `task.etag` to fail with Aborted on a concurrent change."""
        request = task_pb2.UpdateTaskRequest(task=task)
        if update_mask is not None:
            request.update_mask.CopyFrom(field_mask_pb2.FieldMask(paths=list(update_mask)))
        return self.call(self.tasks.UpdateTask, request)

    def delete_task(self, task_id: str, *, etag: str = "") -> None:
        self.call(self.tasks.DeleteTask, task_pb2.DeleteTaskRequest(id=task_id, etag=etag))

    def list_tasks(self, **filters: Any) -> task_pb2.ListTasksResponse:
        """One page; `filters` are ListTasksRequest fields (status, tag, q, order_by, ...)."""
        return self.call(self.tasks.ListTasks, task_pb2.ListTasksRequest(**filters))

    def iter_tasks(self, *, page_size: int = 100, **filters: Any) -> Iterator[task_pb2.Task]:
        """Every matching task, fetching page after page as the caller iterates."""
        request = task_pb2.ListTasksRequest(page_size=page_size, **filters)
        while True:
            page = self.call(self.tasks.ListTasks, request)
            yield from page.tasks
            if not page.next_page_token:
                return
            request.page_token = page.next_page_token

    def list_task_changes(self, since_token: str = "", *, page_size: int = 0) -> task_pb2.ListTaskChangesResponse:
        """The changes after `since_token` (empty: none, and a token for now), for polling."""
        request = task_pb2.ListTaskChangesRequest(since_token=since_token, page_size=page_size)
        return self.call(self.tasks.ListTaskChanges, request)

    def watch_tasks(
        self, resume_token: str = "", *, heartbeats: bool = False, max_reconnects: int | None = None
    ) -> Iterator[task_pb2.TaskChange]:
        """The caller's task changes as they happen, from `resume_token` (empty: from now).

        A stream that ends (the replica drains, a slow consumer is dropped, the network
        fails: UNAVAILABLE) is reopened from the last token, with backoff, so the caller sees
        every change once and in order. An expired session is refreshed. FailedPrecondition
        with reason RESYNC_REQUIRED is raised: the changes after the token are gone, so list
        the tasks again and watch from now. `max_reconnects` in a row (None: no limit)."""
        token, failures = resume_token, 0
        while True:
            session = self._session
            stream = self._watch.WatchTasks(task_pb2.WatchTasksRequest(resume_token=token), metadata=_bearer(session))
            try:
                for change in stream:
                    failures = 0
                    token = change.resume_token or token
                    self.last_resume_token = token
                    if change.kind or heartbeats:
                        yield change
                error: TaskApiError | None = None  # ended cleanly (a drain): reopen at once
            except grpc.RpcError as rpc_error:
                error = from_rpc_error(rpc_error)
            finally:
                stream.cancel()
            if isinstance(error, Unauthenticated) and session is not None and self._refresh_after(session):
                continue
            if error is not None and not isinstance(error, Unavailable):
                raise error
            failures += 1
            if max_reconnects is not None and failures > max_reconnects:
                raise error or Unavailable(grpc.StatusCode.UNAVAILABLE, "the change feed keeps ending")
            if error is not None:
                initial, cap = self._backoff
                delay = random.uniform(0, min(cap, initial * 2 ** (failures - 1)))
                self._sleep(max(delay, error.retry_delay or 0.0))

    # --- users ---------------------------------------------------------------------------

    def current_user(self) -> user_pb2.User:
        return self.call(self.users.GetCurrentUser, user_pb2.GetCurrentUserRequest())

    # --- the call path -------------------------------------------------------------------

    def call(
        self,
        method: Callable[..., Response],
        request: Any,
        *,
        authenticated: bool = True,
        timeout: float | None = None,
        idempotent: bool | None = None,
    ) -> Response:
        """Call one RPC with the session's token, refreshing once on UNAUTHENTICATED
        (which means the call was rejected before it did anything, so repeating it is safe).

        UNAVAILABLE is retried only if the call is idempotent: by default when `method`
        is one of this client's stub methods whose proto declares it repeatable (a
        CreateTask only with a request_id); pass `idempotent` to decide for a call yourself."""
        if idempotent is None:
            idempotent = self._is_idempotent(method, request)
        attempts = self._max_attempts if idempotent else 1
        if not authenticated:
            return self._with_retries(method, request, timeout, metadata=(), attempts=attempts)
        session = self._session
        try:
            return self._with_retries(method, request, timeout, metadata=_bearer(session), attempts=attempts)
        except Unauthenticated:
            if session is None or not self._refresh_after(session):
                raise
        return self._with_retries(method, request, timeout, metadata=_bearer(self._session), attempts=attempts)

    def _is_idempotent(self, method: Callable[..., Any], request: Any) -> bool:
        policy = self._policies.get(id(method))
        return policy is not None and policy.repeatable_with(request)  # unknown: never retried

    def _with_retries(
        self,
        method: Callable[..., Response],
        request: Any,
        timeout: float | None,
        metadata: tuple[tuple[str, str], ...],
        *,
        attempts: int,
    ) -> Response:
        """Up to `attempts` tries (1: no retry), retrying only UNAVAILABLE. A refusal the
        server marks `x-retry-safe: true` changed nothing, so it is retried for any call."""
        attempt = 0
        while True:
            try:
                return method(request, timeout=timeout or self.timeout, metadata=metadata)
            except grpc.RpcError as rpc_error:
                error = from_rpc_error(rpc_error)
                attempt += 1
                allowed = max(attempts, self._max_attempts if _retry_safe(rpc_error) else 1)
                if not isinstance(error, Unavailable) or attempt >= allowed:
                    raise error from None
            initial, cap = self._backoff
            delay = random.uniform(0, min(cap, initial * 2 ** (attempt - 1)))  # full jitter
            self._sleep(max(delay, error.retry_delay or 0.0))

    def _refresh_after(self, failed: auth_pb2.AuthSession) -> bool:
        """Refresh unless another thread already replaced the failed session. True if
        there is a newer session to retry with."""
        with self._session_lock:
            if self._session is not failed:
                return self._session is not None
            try:
                self._refresh_locked()
            except TaskApiError:
                return False  # the refresh token is dead too: surface the original error
            return True

    def _refresh_locked(self) -> None:
        if self._session is None:
            raise Unauthenticated(grpc.StatusCode.UNAUTHENTICATED, "not signed in")
        request = auth_pb2.RefreshRequest(refresh_token=self._session.refresh_token)
        # Never retried: if the first attempt rotated the token before failing, a
        # second one would present a rotated token, which revokes the whole session.
        self._session = self._with_retries(self.auth.Refresh, request, None, metadata=(), attempts=1)


def _retry_safe(rpc_error: grpc.RpcError) -> bool:
    """The server refused the call before doing anything (say, shed under load)."""
    # The server sends it as initial metadata; Envoy, shedding a call itself, in a
    # trailers-only response, which grpc reports as trailing metadata.
    initial = rpc_error.initial_metadata() if hasattr(rpc_error, "initial_metadata") else None
    trailing = rpc_error.trailing_metadata() if hasattr(rpc_error, "trailing_metadata") else None
    return any(key == RETRY_SAFE_HEADER and value == "true" for key, value in (*(initial or ()), *(trailing or ())))


def _bearer(session: auth_pb2.AuthSession | None) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {session.access_token}"),) if session else ()
