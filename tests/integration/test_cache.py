"""The shared read cache: filled on reads, exactly invalidated on writes, optional."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import redis

from taskapi.server.app import App, run_server
from taskapi.server.cache.tasks import TaskCache
from taskapi.v1 import task_pb2 as T
from tests.conftest import RedisProcess, make_settings
from tests.integration.api import Api


def _cache_fields(redis_url: str, user_id: str) -> set[str]:
    fields = redis.Redis.from_url(redis_url).hkeys(f"taskapi:{{u:{user_id}}}:tasks")
    return {(f.decode() if isinstance(f, bytes) else f).split(":")[0] for f in fields}


def test_reads_are_cached_and_writes_invalidate(channel: grpc.Channel, redis_url: str) -> None:
    api = Api(channel)
    user = api.register()
    task = api.tasks.CreateTask(T.CreateTaskRequest(task=T.Task(title="v1")), metadata=user.auth)
    api.tasks.GetTask(T.GetTaskRequest(id=task.id), metadata=user.auth)
    api.tasks.ListTasks(T.ListTasksRequest(), metadata=user.auth)
    assert _cache_fields(redis_url, user.id) == {"get", "list"}
    api.tasks.UpdateTask(T.UpdateTaskRequest(task=T.Task(id=task.id, title="v2")), metadata=user.auth)
    assert _cache_fields(redis_url, user.id) == set()
    assert api.tasks.GetTask(T.GetTaskRequest(id=task.id), metadata=user.auth).title == "v2"
    assert [t.title for t in api.tasks.ListTasks(T.ListTasksRequest(), metadata=user.auth).tasks] == ["v2"]
    api.tasks.CreateTask(T.CreateTaskRequest(task=T.Task(title="second")), metadata=user.auth)
    assert api.tasks.ListTasks(T.ListTasksRequest(), metadata=user.auth).total_size == 2
    api.tasks.DeleteTask(T.DeleteTaskRequest(id=task.id), metadata=user.auth)
    with pytest.raises(grpc.RpcError) as info:
        api.tasks.GetTask(T.GetTaskRequest(id=task.id), metadata=user.auth)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


def test_no_stale_read_across_replicas(channel: grpc.Channel, redis_url: str) -> None:
    """Two Apps (two replica processes' worth of state) share Redis and the store."""
    other_app = App(make_settings(redis_url))
    other = other_app.start_replica(0)
    try:
        with grpc.insecure_channel(other.address) as other_channel:
            a, b = Api(channel), Api(other_channel)
            user = a.register()
            task = a.tasks.CreateTask(T.CreateTaskRequest(task=T.Task(title="before")), metadata=user.auth)
            for _ in range(2):  # second read is served from the cache
                assert b.tasks.GetTask(T.GetTaskRequest(id=task.id), metadata=user.auth).title == "before"
                assert b.tasks.ListTasks(T.ListTasksRequest(), metadata=user.auth).tasks[0].title == "before"
            a.tasks.UpdateTask(T.UpdateTaskRequest(task=T.Task(id=task.id, title="after")), metadata=user.auth)
            assert b.tasks.GetTask(T.GetTaskRequest(id=task.id), metadata=user.auth).title == "after"
            assert b.tasks.ListTasks(T.ListTasksRequest(), metadata=user.auth).tasks[0].title == "after"
    finally:
        other_app.close(grace=0.5)


def test_a_fill_that_raced_a_write_is_dropped(app: App, redis_url: str) -> None:
    cache: TaskCache = app.task_cache
    owner = "f" * 24
    _, version = cache.read(owner, "get:x")  # a reader notes the version, then reads the store...
    cache.invalidate(owner)  # ...while a writer changes the task
    cache.fill(owner, "get:x", b"old data", version)  # the slow reader's fill must not land
    assert cache.read(owner, "get:x")[0] is None
    _, version = cache.read(owner, "get:x")
    cache.fill(owner, "get:x", b"new data", version)
    assert cache.read(owner, "get:x")[0] == b"new data"


def test_a_fill_read_under_another_epoch_is_dropped(app: App) -> None:
    """A reader that saw the version before a failover (another replication id) cannot fill
    after it: what it read from the store may predate a write whose invalidation was lost."""
    cache: TaskCache = app.task_cache
    owner = "e" * 24
    _, seen = cache.read(owner, "get:x")
    assert seen is not None
    epoch, _, version = seen.partition("/")
    assert len(epoch) == 40  # the node's replication id
    cache.fill(owner, "get:x", b"from before", "0" * 40 + "/" + version)
    assert cache.read(owner, "get:x")[0] is None
    cache.fill(owner, "get:x", b"current", seen)
    assert cache.read(owner, "get:x")[0] == b"current"


def test_an_entry_of_another_epoch_is_a_miss(app: App, redis_url: str) -> None:
    """What a promoted replica holds from before its promotion is never served."""
    cache: TaskCache = app.task_cache
    owner = "d" * 24
    with redis.Redis.from_url(redis_url) as client:
        client.hset(f"taskapi:{{u:{owner}}}:tasks", "get:x", b"0" * 40 + b"old data")
    assert cache.read(owner, "get:x")[0] is None


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisProcess]:
    process = RedisProcess(tmp_path)
    process.start()
    yield process
    process.stop()


@pytest.fixture
def private_api(private_redis: RedisProcess) -> Iterator[Api]:
    """An Api on a server of its own, whose Redis the test may stop or pause."""
    with run_server(make_settings(private_redis.url)) as replica, grpc.insecure_channel(replica.address) as channel:
        yield Api(channel)


def test_service_keeps_answering_when_redis_is_down(private_redis: RedisProcess, private_api: Api) -> None:
    api = private_api
    user = api.register()
    task = api.tasks.CreateTask(T.CreateTaskRequest(task=T.Task(title="cached")), metadata=user.auth)
    api.tasks.GetTask(T.GetTaskRequest(id=task.id), metadata=user.auth)
    private_redis.stop()
    # Everything still works from the store: auth, reads, writes, new sign-ups.
    updated = api.tasks.UpdateTask(T.UpdateTaskRequest(task=T.Task(id=task.id, title="no redis")), metadata=user.auth)
    assert updated.title == "no redis"
    assert api.tasks.GetTask(T.GetTaskRequest(id=task.id), metadata=user.auth, timeout=5).title == "no redis"
    assert api.tasks.ListTasks(T.ListTasksRequest(), metadata=user.auth, timeout=5).total_size == 1
    assert api.register().id
    private_redis.start()
    time.sleep(1.1)  # the cache skips Redis for a second after a failure
    assert api.tasks.GetTask(T.GetTaskRequest(id=task.id), metadata=user.auth).title == "no redis"
    assert _cache_fields(private_redis.url, user.id) == {"get"}


def test_an_invalidation_missed_during_an_outage_is_replayed(private_redis: RedisProcess, private_api: Api) -> None:
    """Redis unresponsive (paused, data kept) during a write: the stale entry is deleted on recovery."""
    api = private_api
    user = api.register()
    task = api.tasks.CreateTask(T.CreateTaskRequest(task=T.Task(title="old")), metadata=user.auth)
    api.tasks.GetTask(T.GetTaskRequest(id=task.id), metadata=user.auth)
    assert _cache_fields(private_redis.url, user.id) == {"get"}
    redis.Redis.from_url(private_redis.url).client_pause(1500, all=True)
    api.tasks.UpdateTask(T.UpdateTaskRequest(task=T.Task(id=task.id, title="new")), metadata=user.auth)
    time.sleep(1.6)  # the pause ends; the entry from before the write is still in Redis
    assert api.tasks.GetTask(T.GetTaskRequest(id=task.id), metadata=user.auth).title == "new"


def test_concurrent_writes_and_reads_never_leave_stale_entries(channel: grpc.Channel) -> None:
    api = Api(channel)
    user = api.register()
    task = api.tasks.CreateTask(T.CreateTaskRequest(task=T.Task(title="0")), metadata=user.auth)
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            api.tasks.GetTask(T.GetTaskRequest(id=task.id), metadata=user.auth)

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for thread in threads:
        thread.start()
    try:
        for i in range(1, 30):
            api.tasks.UpdateTask(T.UpdateTaskRequest(task=T.Task(id=task.id, title=str(i))), metadata=user.auth)
            assert api.tasks.GetTask(T.GetTaskRequest(id=task.id), metadata=user.auth).title == str(i)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert api.tasks.GetTask(T.GetTaskRequest(id=task.id), metadata=user.auth).title == "29"
