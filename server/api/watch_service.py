"""TaskService.WatchTasks on the replica's asyncio server (docs/api.md "Live changes").

A watcher is a coroutine waiting on a queue, never a worker thread: the process's one
change tail (cache/changes.py) reads every watched stream in one blocking XREAD and hands
each watcher its changes. The unary interceptor chain does not run here (grpc's sync
interceptors cannot wrap an asyncio server), so this module does what a stream needs of
it: the token and the live session (the same Authenticator), the access level (USER),
watcher limits per user (across replicas: leases in Redis) and per replica instead of the
per-call rate limit, and the error mapping (interceptors.status.to_status).

Every message is written under WATCH_WRITE_TIMEOUT_SECONDS: a client that stops reading fills
its flow-control window, the write waits, and the stream ends with SLOW_CONSUMER, its slot free.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable
from typing import Any, Protocol

import grpc
from google.rpc import status_pb2

from taskapi.interceptors.auth import Authenticator, bearer_token
from taskapi.interceptors.decoding import UndecodableRequest, tolerant
from taskapi.interceptors.status import to_status
from taskapi.server.api.convert import change_to_proto
from taskapi.server.domain.caller import Caller
from taskapi.server.domain.changes import Change, Changes, Cursor
from taskapi.server.domain.errors import ApiError, ResourceExhausted, Unavailable
from taskapi.server.domain.errors import QuotaViolation as Quota
from taskapi.v1 import task_pb2

log = logging.getLogger(__name__)
WATCH_TASKS = "/taskapi.v1.TaskService/WatchTasks"
CATCH_UP_BATCH = 500
SLOW_CONSUMER = "SLOW_CONSUMER"
TOO_MANY_WATCHERS = "TOO_MANY_WATCHERS"


Context = grpc.aio.ServicerContext[task_pb2.WatchTasksRequest, task_pb2.TaskChange]


class Tail(Protocol):
    """The process's change tail (taskapi.server.cache.changes.ChangeTail)."""

    def follow(self, owner: str, position: str, deliver: Callable[[list[Change]], None]) -> Any: ...

    def unfollow(self, follower: Any) -> None: ...


class Leases(Protocol):
    """Watcher leases shared by every replica (taskapi.server.cache.watchers.RedisWatcherLeases)."""

    def acquire(self, owner: str, limit: int) -> str | None: ...

    def release(self, owner: str, lease: str) -> None: ...

    def refresh(self, leases: Iterable[tuple[str, str]]) -> None: ...


class WatchLimits:
    """Watchers per replica (counted here: one event loop, no locks) and per user, across
    every replica (a lease each in Redis, refreshed while the stream is open)."""

    def __init__(self, leases: Leases, per_user: int, per_replica: int, *, lease_seconds: float) -> None:
        self.leases = leases
        self.per_user, self.per_replica = per_user, per_replica
        self.lease_seconds = lease_seconds
        self.held: dict[str, str] = {}  # lease -> its owner, for the refresh
        self.total = 0

    async def acquire(self, user_id: str) -> str:
        """The stream's lease; raises RESOURCE_EXHAUSTED at a limit, UNAVAILABLE without Redis."""
        if self.total >= self.per_replica:
            raise ResourceExhausted(
                "this replica holds as many watchers as it may; retry (another replica may take it)",
                retry_after_seconds=1.0,
                reason=TOO_MANY_WATCHERS,
                quota_violations=[Quota("replica", f"{self.per_replica} watchers per replica")],
            )
        self.total += 1  # held while the lease is asked for
        try:
            lease = await asyncio.to_thread(self.leases.acquire, user_id, self.per_user)
        except BaseException:
            self.total -= 1
            raise
        if lease is None:
            self.total -= 1
            raise ResourceExhausted(
                "too many watchers open for this user; close one first",
                retry_after_seconds=5.0,
                reason=TOO_MANY_WATCHERS,
                quota_violations=[Quota(f"user:{user_id}", f"{self.per_user} watchers per user")],
            )
        self.held[lease] = user_id
        return lease

    def release(self, user_id: str, lease: str) -> None:
        """Never waits (it runs as a cancelled stream unwinds): the lease goes on a thread."""
        self.total -= 1
        self.held.pop(lease, None)
        asyncio.get_running_loop().run_in_executor(None, self.leases.release, user_id, lease)

    async def refresh_forever(self) -> None:
        """Keep this replica's leases alive (every third of their life) while it runs."""
        while True:
            await asyncio.sleep(self.lease_seconds / 3)
            try:
                await asyncio.to_thread(self.leases.refresh, [(o, lease) for lease, o in self.held.items()])
            except Unavailable:
                log.warning("cannot refresh the watcher leases; retrying", exc_info=True)


class WatchServicer:
    def __init__(
        self,
        changes: Changes,
        tail: Tail,
        authenticator: Authenticator,
        limits: WatchLimits,
        *,
        heartbeat_seconds: float,
        buffer: int,
        write_timeout_seconds: float,
    ) -> None:
        self._changes = changes
        self._tail = tail
        self._authenticator = authenticator
        self._limits = limits
        self._heartbeat = heartbeat_seconds
        self._buffer = buffer
        self._write_timeout = write_timeout_seconds
        self.draining = asyncio.Event()  # set on the server's loop: every watcher ends with its token

    @property
    def limits(self) -> WatchLimits:
        return self._limits

    @property
    def watchers(self) -> int:
        """Streams open on this server now."""
        return self._limits.total

    def handler(self) -> grpc.GenericRpcHandler:
        return grpc.method_handlers_generic_handler(
            "taskapi.v1.TaskService",
            {
                # Bytes that are not a WatchTasksRequest (REST: `?resumeToken=%ff`) come as an
                # UndecodableRequest, a 400 below, not grpcio's UNKNOWN with a traceback.
                "WatchTasks": tolerant(
                    grpc.unary_stream_rpc_method_handler(
                        self.watch,  # a coroutine writing its messages: grpc.aio serves it
                        request_deserializer=task_pb2.WatchTasksRequest.FromString,
                        response_serializer=task_pb2.TaskChange.SerializeToString,
                    )
                )
            },
        )

    async def watch(self, request: task_pb2.WatchTasksRequest | UndecodableRequest, context: Context) -> None:
        try:
            if self.draining.is_set():
                raise Unavailable("this replica is stopping; watch again (another replica answers)")
            metadata = tuple(context.invocation_metadata() or ())
            caller = await asyncio.to_thread(self._caller, metadata)
            if isinstance(request, UndecodableRequest):  # after the token, as on the unary path
                raise request.error()
            lease = await self._limits.acquire(caller.user_id)
        except ApiError as error:
            await self._abort(context, error)
            return
        try:
            # Over REST a reconnecting EventSource-style client sends its last SSE id as Last-Event-ID.
            token = request.resume_token or next(
                (value for key, value in metadata if key == "last-event-id" and isinstance(value, str)), ""
            )
            async with contextlib.aclosing(self._stream(caller, token)) as stream:  # unfollows at once
                async for change in stream:
                    await self._write(context, change)
        except ApiError as error:
            await self._abort(context, error)
        finally:
            self._limits.release(caller.user_id, lease)

    async def _write(self, context: Context, change: task_pb2.TaskChange) -> None:
        """One message, or SLOW_CONSUMER once it has waited `write_timeout` on the client.

        A write completes when the client's flow-control window takes it; one that stops
        reading fills the window (and the edge's small buffers, see the taskapi_watch cluster)
        and the write waits: bounded here, so a stalled client never keeps its slot."""
        try:
            await asyncio.wait_for(context.write(change), self._write_timeout)
        except TimeoutError:
            raise _slow("this watcher stopped reading and was dropped") from None

    async def _abort(self, context: Context, error: ApiError) -> None:
        # A stalled client may never take the status either: give up on it after the same bound.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(_abort(context, error), self._write_timeout)

    def _caller(self, metadata: tuple[tuple[str, str | bytes], ...]) -> Caller:
        return self._authenticator.confirm(self._authenticator.authenticate(bearer_token(metadata)))

    async def _stream(self, caller: Caller, token: str) -> AsyncGenerator[task_pb2.TaskChange, None]:
        field = "resume_token"
        cursor = await asyncio.to_thread(self._changes.start, caller, token, field)
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[list[Change]] = asyncio.Queue(maxsize=self._buffer)
        overflow = asyncio.Event()

        def put(batch: list[Change]) -> None:
            if queue.full():
                overflow.set()
            else:
                queue.put_nowait(batch)

        def deliver(batch: list[Change]) -> None:  # on the tail's thread
            loop.call_soon_threadsafe(put, batch)

        follower = self._tail.follow(cursor.owner, cursor.position, deliver)
        try:
            yield self._heartbeat_of(cursor)  # at once: the client has a token before any change
            # What lies between the token and the tail's place (the tail dedups by number).
            while True:
                batch = await asyncio.to_thread(self._changes.log.read, cursor.owner, cursor.position, CATCH_UP_BATCH)
                for delivered in self._changes.accept(cursor, batch):
                    yield change_to_proto(delivered)
                if len(batch) < CATCH_UP_BATCH:
                    break
            async for change in self._live(cursor, queue, overflow):
                yield change
        finally:
            self._tail.unfollow(follower)

    async def _live(
        self, cursor: Cursor, queue: asyncio.Queue[list[Change]], overflow: asyncio.Event
    ) -> AsyncIterator[task_pb2.TaskChange]:
        loop = asyncio.get_running_loop()
        drained = asyncio.ensure_future(self.draining.wait())
        getter: asyncio.Future[list[Change]] | None = None
        beat_at = loop.time() + self._heartbeat
        try:
            while True:
                # A hole in the numbers is checked again soon: it either fills or outlives its grace.
                wait = min(0.25, self._heartbeat) if cursor.pending else max(0.0, beat_at - loop.time())
                getter = getter or asyncio.ensure_future(queue.get())
                waiting: set[asyncio.Future[Any]] = {getter, drained}
                done, _ = await asyncio.wait(waiting, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
                if overflow.is_set():  # slower than the feed: end with a token, never buffer without bound
                    yield self._heartbeat_of(cursor)
                    raise _slow("this watcher fell behind and was dropped")
                if drained in done:  # the replica is stopping: end cleanly with the token
                    yield self._heartbeat_of(cursor)
                    return
                batch: list[Change] = []
                if getter in done:
                    batch, getter = getter.result(), None
                delivered = self._changes.accept(cursor, batch)
                for item in delivered:
                    yield change_to_proto(item)
                if delivered:
                    beat_at = loop.time() + self._heartbeat
                elif loop.time() >= beat_at:  # idle: a heartbeat keeps proxies from closing the stream
                    yield self._heartbeat_of(cursor)
                    beat_at = loop.time() + self._heartbeat
        finally:
            drained.cancel()
            if getter is not None:
                getter.cancel()

    def _heartbeat_of(self, cursor: Cursor) -> task_pb2.TaskChange:
        return task_pb2.TaskChange(resume_token=self._changes.token(cursor))


def _slow(what: str) -> Unavailable:
    return Unavailable(f"{what}; resume with the last token it received", reason=SLOW_CONSUMER)


async def _abort(context: Context, error: ApiError) -> None:
    # No initial metadata first: over REST the transcoder would commit a 200 with it. RetryInfo
    # in the details says when to come back.
    status: status_pb2.Status = to_status(error)
    await context.abort(
        _code(status.code),
        status.message,
        trailing_metadata=(("grpc-status-details-bin", status.SerializeToString()),),
    )


def _code(number: int) -> grpc.StatusCode:
    return next((code for code in grpc.StatusCode if code.value[0] == number), grpc.StatusCode.UNKNOWN)
