"""The change feed over real servers: WatchTasks on each replica's asyncio server, ListTaskChanges
on the sync one, one Redis (a private database) shared by two replicas."""

from __future__ import annotations

import asyncio
import functools
import queue
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
import redis

from taskapi.server.app import App, Replica
from taskapi.server.cache.watchers import RedisWatcherLeases
from taskapi.server.domain.changes import CREATED
from taskapi.v1 import task_pb2, task_pb2_grpc
from tests.conftest import make_settings, private_database
from tests.integration.api import Api, User, error_details, fails

T = task_pb2
GRACE = 0.5
LEASE = 1.5


@dataclass
class Feed:
    app: App
    writer: Api  # replica A (the sync server)
    watch_a: task_pb2_grpc.TaskServiceStub  # replica A's watch server
    watch_b: task_pb2_grpc.TaskServiceStub  # replica B's watch server
    replicas: list[Replica] = field(default_factory=list)


@pytest.fixture(scope="module")
def feed(redis_url: str) -> Iterator[Feed]:
    settings = make_settings(
        private_database(redis_url),
        changes_gap_grace_seconds=GRACE,
        watch_heartbeat_seconds=0.5,
        watchers_per_user=3,
        watch_lease_seconds=LEASE,
    )
    app = App(settings)
    a, b = app.start_replica(0), app.start_replica(0)
    channels = [grpc.insecure_channel(address) for address in (a.address, a.watch_address, b.watch_address)]
    try:
        yield Feed(
            app,
            Api(channels[0]),
            task_pb2_grpc.TaskServiceStub(channels[1]),
            task_pb2_grpc.TaskServiceStub(channels[2]),
            [a, b],
        )
    finally:
        for channel in channels:
            channel.close()
        app.close(grace=1.0)


class Watcher:
    """A WatchTasks stream read on a thread: changes (heartbeats left out) arrive on a queue."""

    def __init__(self, stub: task_pb2_grpc.TaskServiceStub, user: User, token: str = "") -> None:
        self.call = stub.WatchTasks(T.WatchTasksRequest(resume_token=token), metadata=user.auth, timeout=30)
        self.changes: queue.Queue[T.TaskChange] = queue.Queue()
        self.last_token = ""
        self.error: grpc.RpcError | None = None
        self.ended = threading.Event()
        self.started = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()
        assert self.started.wait(10), "the stream sent no first heartbeat"

    def _read(self) -> None:
        try:
            for change in self.call:
                self.last_token = change.resume_token
                self.started.set()
                if change.kind:
                    self.changes.put(change)
        except grpc.RpcError as error:
            self.error = error
        finally:
            self.started.set()
            self.ended.set()

    def take(self, count: int) -> list[T.TaskChange]:
        return [self.changes.get(timeout=10) for _ in range(count)]

    def close(self) -> None:
        self.call.cancel()
        self.ended.wait(5)


def _first(stub: task_pb2_grpc.TaskServiceStub, metadata: tuple[tuple[str, str], ...], token: str = "") -> T.TaskChange:
    """The first message of a fresh stream (raises the stream's error)."""
    return next(iter(stub.WatchTasks(T.WatchTasksRequest(resume_token=token), metadata=metadata, timeout=10)))


def _create(feed: Feed, user: User, title: str) -> T.Task:
    return feed.writer.tasks.CreateTask(T.CreateTaskRequest(task=T.Task(title=title)), metadata=user.auth)


def test_a_watcher_on_one_replica_sees_writes_through_the_other_in_order(feed: Feed) -> None:
    user = feed.writer.register("watcher")
    watcher = Watcher(feed.watch_b, user)
    try:
        task = _create(feed, user, "first")
        updated = feed.writer.tasks.UpdateTask(
            T.UpdateTaskRequest(task=T.Task(id=task.id, status=T.COMPLETED)), metadata=user.auth
        )
        feed.writer.tasks.DeleteTask(T.DeleteTaskRequest(id=task.id), metadata=user.auth)
        created, changed, deleted = watcher.take(3)
    finally:
        watcher.close()
    assert (created.kind, created.task) == (T.TaskChange.CREATED, task)
    assert (changed.kind, changed.task) == (T.TaskChange.UPDATED, updated)
    assert (deleted.kind, deleted.task) == (T.TaskChange.DELETED, T.Task(id=task.id))  # a tombstone
    assert deleted.HasField("change_time") and len({created.resume_token, deleted.resume_token}) == 2


def test_resuming_gets_exactly_the_missed_changes(feed: Feed) -> None:
    user = feed.writer.register("resumer")
    watcher = Watcher(feed.watch_a, user)
    (seen,) = (_create(feed, user, "seen"), watcher.take(1))[1]
    watcher.close()
    missed = [_create(feed, user, f"missed {n}") for n in range(3)]
    again = Watcher(feed.watch_b, user, seen.resume_token)  # on the other replica
    try:
        resumed = again.take(3)
        later = _create(feed, user, "later")
        (live,) = again.take(1)
    finally:
        again.close()
    assert [c.task.id for c in resumed] == [t.id for t in missed]
    assert live.task.id == later.id and again.changes.empty()


def test_list_task_changes_pages_with_the_same_tokens(feed: Feed) -> None:
    user = feed.writer.register("poller")
    start = feed.writer.tasks.ListTaskChanges(T.ListTaskChangesRequest(), metadata=user.auth)
    assert not start.changes and start.next_token  # "from now"
    tasks = [_create(feed, user, f"polled {n}") for n in range(3)]
    first = feed.writer.tasks.ListTaskChanges(
        T.ListTaskChangesRequest(since_token=start.next_token, page_size=2), metadata=user.auth
    )
    assert [c.task.id for c in first.changes] == [t.id for t in tasks[:2]]
    assert first.next_token == first.changes[-1].resume_token
    rest = feed.writer.tasks.ListTaskChanges(T.ListTaskChangesRequest(since_token=first.next_token), metadata=user.auth)
    assert [c.task.id for c in rest.changes] == [tasks[2].id]
    # A page's token resumes a stream, too.
    watcher = Watcher(feed.watch_b, user, first.changes[0].resume_token)
    try:
        assert [c.task.id for c in watcher.take(2)] == [t.id for t in tasks[1:]]
    finally:
        watcher.close()


def test_another_users_changes_never_appear(feed: Feed) -> None:
    alice, bob = feed.writer.register("alice"), feed.writer.register("bob")
    watcher = Watcher(feed.watch_a, alice)
    try:
        _create(feed, bob, "bob's")
        mine = _create(feed, alice, "alice's")
        (change,) = watcher.take(1)
    finally:
        watcher.close()
    assert change.task.id == mine.id and watcher.changes.empty()
    # Nor does a token of one user serve another.
    error = fails(
        lambda: feed.writer.tasks.ListTaskChanges(
            T.ListTaskChangesRequest(since_token=change.resume_token), metadata=bob.auth
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert "since_token" in (error.details() or "")


def test_a_token_past_retention_answers_resync_required(feed: Feed) -> None:
    user = feed.writer.register("expired")
    token = feed.writer.tasks.ListTaskChanges(T.ListTaskChangesRequest(), metadata=user.auth).next_token
    changes = feed.app.changes
    assert changes is not None
    retention = feed.app.settings.changes_retention
    for _ in range(retention + 300):  # MAXLEN ~ trims whole stream nodes (100 entries): well past it
        seq = changes.reserve(user.id)
        assert seq is not None
        changes.fill(user.id, seq)
    for call in (
        lambda: feed.writer.tasks.ListTaskChanges(T.ListTaskChangesRequest(since_token=token), metadata=user.auth),
        functools.partial(_first, feed.watch_a, user.auth, token),
    ):
        error = fails(call, grpc.StatusCode.FAILED_PRECONDITION)
        assert error_details(error)["ErrorInfo"].reason == "RESYNC_REQUIRED"


def test_a_lost_change_is_a_gap_that_answers_resync_required(feed: Feed) -> None:
    """A crash between the store write and its event: the reserved number never appears."""
    user = feed.writer.register("gap")
    token = feed.writer.tasks.ListTaskChanges(T.ListTaskChangesRequest(), metadata=user.auth).next_token
    changes = feed.app.changes
    assert changes is not None
    changes.reserve(user.id)  # a write that reserved its number, then died before publishing
    _create(feed, user, "after the crash")
    watcher = Watcher(feed.watch_b, user, token)
    assert watcher.ended.wait(10 + GRACE)
    assert watcher.error is not None and watcher.error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_details(watcher.error)["ErrorInfo"].reason == "RESYNC_REQUIRED"
    assert watcher.changes.empty()  # nothing after the hole was delivered as if nothing were missing
    time.sleep(GRACE)  # the hole has outlived its grace period for the poller too
    error = fails(
        lambda: feed.writer.tasks.ListTaskChanges(T.ListTaskChangesRequest(since_token=token), metadata=user.auth),
        grpc.StatusCode.FAILED_PRECONDITION,
    )
    assert error_details(error)["ErrorInfo"].reason == "RESYNC_REQUIRED"


def test_a_retried_create_fills_its_number(feed: Feed) -> None:
    """A create answered from its request_id changed nothing: readers step over its number."""
    user = feed.writer.register("retry")
    watcher = Watcher(feed.watch_a, user)
    try:
        request = T.CreateTaskRequest(task=T.Task(title="once"), request_id="same-request-id-1")
        first = feed.writer.tasks.CreateTask(request, metadata=user.auth)
        assert feed.writer.tasks.CreateTask(request, metadata=user.auth) == first
        after = _create(feed, user, "after the retry")
        assert [(c.kind, c.task.id) for c in watcher.take(2)] == [(CREATED, first.id), (CREATED, after.id)]
    finally:
        watcher.close()
    assert watcher.error is None or watcher.error.code() == grpc.StatusCode.CANCELLED


def test_the_per_user_watcher_limit_spans_replicas(feed: Feed) -> None:
    """Leases in Redis: watchers of one user on both replicas count together."""
    user = feed.writer.register("many")
    watchers = [Watcher(feed.watch_a, user), Watcher(feed.watch_b, user), Watcher(feed.watch_a, user)]
    try:
        time.sleep(2 * LEASE)  # leases outlive their period while their streams are open (refreshed)
        for stub in (feed.watch_a, feed.watch_b):
            error = fails(functools.partial(_first, stub, user.auth), grpc.StatusCode.RESOURCE_EXHAUSTED)
            details = error_details(error)
            assert details["ErrorInfo"].reason == "TOO_MANY_WATCHERS" and details["RetryInfo"].retry_delay.seconds
        # Closing one on A frees a place, on B too.
        watchers.pop().close()
        watchers.append(_eventually_watch(feed.watch_b, user))
        assert all(w.error is None for w in watchers)
    finally:
        for watcher in watchers:
            watcher.close()


def test_a_crashed_replicas_leases_expire(feed: Feed) -> None:
    """A replica that took leases and died never refreshes or releases them: they lapse."""
    user = feed.writer.register("orphaned")
    redis_client = redis.Redis.from_url(feed.app.settings.redis_url)
    crashed = RedisWatcherLeases(redis_client, lease_seconds=1.0)
    try:
        assert all(crashed.acquire(user.id, limit=3) for _ in range(3))
        fails(functools.partial(_first, feed.watch_a, user.auth), grpc.StatusCode.RESOURCE_EXHAUSTED)
        time.sleep(1.2)
        _eventually_watch(feed.watch_a, user).close()
    finally:
        redis_client.close()


def test_watching_without_redis_is_unavailable_at_once(redis_url: str) -> None:
    """Redis unreachable: the lease (and the feed) cannot be had; UNAVAILABLE within the deadline."""
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        dead = f"redis://127.0.0.1:{unused.getsockname()[1]}/0"
    app = App(make_settings(dead))
    try:
        replica = app.start_replica(0)
        with grpc.insecure_channel(replica.address) as unary, grpc.insecure_channel(replica.watch_address) as channel:
            user = Api(unary).register("no-redis")  # the service serves without Redis
            started = time.monotonic()
            fails(
                functools.partial(_first, task_pb2_grpc.TaskServiceStub(channel), user.auth),
                grpc.StatusCode.UNAVAILABLE,
            )
        assert time.monotonic() - started < 5
    finally:
        app.close(grace=0.5)


def _eventually_watch(stub: task_pb2_grpc.TaskServiceStub, user: User) -> Watcher:
    """A watcher once the server has seen a closed one go (cancellation reaches it asynchronously)."""
    for _ in range(50):
        watcher = Watcher(stub, user)
        if watcher.error is None:
            return watcher
        time.sleep(0.1)
    raise AssertionError("the closed watcher's place was never freed")


def test_watching_needs_a_valid_token(feed: Feed) -> None:
    for metadata in ((), (("authorization", "Bearer not-a-jwt"),)):
        fails(functools.partial(_first, feed.watch_a, metadata), grpc.StatusCode.UNAUTHENTICATED)
    user = feed.writer.register("forger")
    fails(
        functools.partial(_first, feed.watch_a, user.auth, "forged.token"),
        grpc.StatusCode.INVALID_ARGUMENT,
    )


def test_the_sync_server_points_streams_to_the_watch_port(feed: Feed) -> None:
    user = feed.writer.register("lost")
    fails(
        functools.partial(_first, feed.writer.tasks, user.auth),
        grpc.StatusCode.UNIMPLEMENTED,
    )


def test_draining_ends_streams_cleanly_with_a_token(feed: Feed) -> None:
    replica = feed.app.start_replica(0)
    user = feed.writer.register("drained")
    with grpc.insecure_channel(replica.watch_address) as channel:
        watcher = Watcher(task_pb2_grpc.TaskServiceStub(channel), user)
        task = _create(feed, user, "before the drain")
        watcher.take(1)
        assert replica.watch is not None
        replica.watch.drain()
        assert watcher.ended.wait(10)
        assert watcher.error is None  # ended with OK, after a last heartbeat carrying the token
        missed = _create(feed, user, "while away")
        resumed = Watcher(feed.watch_a, user, watcher.last_token)
        try:
            assert [c.task.id for c in resumed.take(1)] == [missed.id] and task.id != missed.id
        finally:
            resumed.close()
        fails(
            functools.partial(_first, task_pb2_grpc.TaskServiceStub(channel), user.auth),
            grpc.StatusCode.UNAVAILABLE,
        )
    feed.app.replicas.remove(replica)
    replica.stop(0.5)


def test_200_watchers_leave_the_workers_to_unary_calls(feed: Feed) -> None:
    """200 open streams on one replica (its sync server has 8 workers): unary calls still run,
    and a write reaches every watcher of its owner."""
    per_user = feed.app.settings.watchers_per_user
    users = [feed.writer.register(f"crowd{n}") for n in range(-(-200 // per_user))]
    replica = feed.replicas[0]
    assert replica.watch is not None
    loop = asyncio.new_event_loop()
    runner = threading.Thread(target=loop.run_forever, daemon=True)
    runner.start()

    async def open_all() -> tuple[grpc.aio.Channel, list[Any]]:
        channel = grpc.aio.insecure_channel(replica.watch_address)
        stub = task_pb2_grpc.TaskServiceStub(channel)
        streams = [(user, n) for user in users for n in range(per_user)][:200]
        calls: list[Any] = [stub.WatchTasks(T.WatchTasksRequest(), metadata=user.auth) for user, _ in streams]
        for call in calls:
            first: T.TaskChange = await call.read()
            assert first.resume_token  # the first heartbeat: open
        return channel, calls

    channel, calls = asyncio.run_coroutine_threadsafe(open_all(), loop).result(60)
    try:
        assert replica.watch.servicer.watchers >= 200
        for _ in range(3 * feed.app.settings.workers):  # more calls than workers, one after another
            feed.writer.tasks.ListTasks(T.ListTasksRequest(), metadata=users[1].auth, timeout=10)
        task = _create(feed, users[0], "to the crowd")

        async def next_change(call: Any) -> T.TaskChange:
            while True:
                change: T.TaskChange = await call.read()
                if change.kind:
                    return change

        owned = [asyncio.run_coroutine_threadsafe(next_change(c), loop) for c in calls[:per_user]]
        assert [f.result(10).task.id for f in owned] == [task.id] * per_user
    finally:

        async def close_all() -> None:
            for call in calls:
                call.cancel()
            await channel.close()

        asyncio.run_coroutine_threadsafe(close_all(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        runner.join(5)
        loop.close()
