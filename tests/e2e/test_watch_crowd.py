"""200 watchers through real Envoy (gRPC streams on its gRPC port and SSE with `curl -N` on its
REST port, over two replicas) stay attached while a REST workload of several users runs on
the same stack: every REST call answers 2xx, and every watcher gets exactly its own user's
changes, in order, none of another user's."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest

from taskapi.v1 import task_pb2, task_pb2_grpc
from tests.conftest import make_settings, private_database
from tests.e2e.conftest import Account, Stack, register, resource, running_stack
from tests.e2e.test_watch_sse import Curl

USERS, PER_USER, SSE_PER_USER = 25, 8, 1  # 200 watchers; 25 of them SSE
STREAMS_PER_CHANNEL = 50  # Envoy's listener takes 100 streams a connection


@pytest.fixture(scope="module")
def crowd_stack(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    settings = make_settings(private_database(redis_url), watch_heartbeat_seconds=1.0, watchers_per_user=PER_USER)
    with running_stack(settings, tmp_path_factory.mktemp("crowd")) as stack:
        yield stack


def workload(stack: Stack, account: Account) -> list[tuple[str, str]]:
    """One user's REST calls, in order; the changes they make, as (kind, task id)."""
    client, token = stack.client, account.token
    made: list[tuple[str, str]] = []
    ids = []
    for n in range(4):
        task = resource(client.post("tasks", {"title": f"crowd {n}"}, token=token))
        ids.append(task["id"])
        made.append(("CREATED", task["id"]))
    for task_id in ids[:2]:
        assert client.patch(f"tasks/{task_id}", {"status": "COMPLETED"}, token=token).status == 200
        made.append(("UPDATED", task_id))
        assert client.get(f"tasks/{task_id}", token=token).status == 200
    assert client.delete(f"tasks/{ids[3]}", token=token).status == 200
    made.append(("DELETED", ids[3]))
    listed = client.get("tasks", token=token)
    assert listed.status == 200 and len(listed.json()["tasks"]) == 3
    assert client.get("tasks:changes", token=token).status == 200
    return made


def test_200_watchers_stay_attached_while_rest_traffic_runs(crowd_stack: Stack) -> None:
    stack = crowd_stack
    accounts = [register(stack.client) for _ in range(USERS)]
    loop = asyncio.new_event_loop()
    runner = threading.Thread(target=loop.run_forever, daemon=True)
    runner.start()
    grpc_per_user = PER_USER - SSE_PER_USER
    channels: list[grpc.aio.Channel] = []

    async def open_all() -> list[tuple[int, Any]]:
        # Each channel a connection of its own (no shared subchannel), within Envoy's stream limit.
        for _ in range(-(-USERS * grpc_per_user // STREAMS_PER_CHANNEL)):
            options = [("grpc.use_local_subchannel_pool", 1)]
            channels.append(grpc.aio.insecure_channel(stack.envoy.grpc_target, options=options))
        opened: list[tuple[int, Any]] = []
        for n, (user, _) in enumerate((u, k) for u in range(USERS) for k in range(grpc_per_user)):
            stub = task_pb2_grpc.TaskServiceStub(channels[n // STREAMS_PER_CHANNEL])
            call = stub.WatchTasks(
                task_pb2.WatchTasksRequest(), metadata=(("authorization", f"Bearer {accounts[user].token}"),)
            )
            opened.append((user, call))
        for _, call in opened:
            first = await call.read()
            assert (
                isinstance(first, task_pb2.TaskChange) and first.resume_token and not first.kind
            )  # open, with a token
        return opened

    async def changes_of(call: Any, count: int) -> list[tuple[str, str]]:
        found: list[tuple[str, str]] = []
        while len(found) < count:
            change = await call.read()
            assert isinstance(change, task_pb2.TaskChange), "the stream ended"
            if change.kind:
                found.append((task_pb2.TaskChange.Kind.Name(change.kind), change.task.id))
        return found

    async def only_heartbeats(call: Any, seconds: float) -> list[tuple[str, str]]:
        """The changes a stream brings for `seconds` (its heartbeats, every second, wake the read)."""
        found: list[tuple[str, str]] = []
        end = loop.time() + seconds
        while loop.time() < end:
            change = await call.read()
            assert isinstance(change, task_pb2.TaskChange), "the stream ended"
            if change.kind:
                found.append((task_pb2.TaskChange.Kind.Name(change.kind), change.task.id))
        return found

    streams = asyncio.run_coroutine_threadsafe(open_all(), loop).result(120)
    followers = [(user, Curl(stack, accounts[user])) for user in range(USERS) for _ in range(SSE_PER_USER)]
    try:
        for _, follower in followers:
            follower.heartbeat()  # open
        assert sum(r.watch.servicer.watchers for r in stack.replicas if r.watch is not None) == USERS * PER_USER
        with futures.ThreadPoolExecutor(8) as pool:
            expected = list(pool.map(lambda account: workload(stack, account), accounts))
        got = [asyncio.run_coroutine_threadsafe(changes_of(call, len(expected[user])), loop) for user, call in streams]
        for (user, _), future in zip(streams, got, strict=True):
            assert future.result(30) == expected[user]
        for user, follower in followers:
            assert [(e["kind"], e["task"]["id"]) for e in follower.changes(len(expected[user]))] == expected[user]
        # Nothing more arrives (another user's changes included): only heartbeats.
        quiet = [asyncio.run_coroutine_threadsafe(only_heartbeats(call, 2.0), loop) for _, call in streams]
        assert [future.result(30) for future in quiet] == [[]] * len(streams)
        for _, follower in followers:  # meanwhile, on SSE too
            assert all(e["kind"] == "KIND_UNSPECIFIED" for e in list(follower.events.queue))
        # All still attached.
        assert sum(r.watch.servicer.watchers for r in stack.replicas if r.watch is not None) == USERS * PER_USER
    finally:
        for _, follower in followers:
            follower.close()

        async def close_all() -> None:
            for _, call in streams:
                call.cancel()
            for channel in channels:
                await channel.close()

        asyncio.run_coroutine_threadsafe(close_all(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        runner.join(5)
        loop.close()
