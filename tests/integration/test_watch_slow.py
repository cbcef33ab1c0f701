"""A watcher that stops reading, over a real gRPC channel with a small flow-control window:
the replica's writes stall on it, and after WATCH_WRITE_TIMEOUT_SECONDS it is dropped with
UNAVAILABLE / SLOW_CONSUMER (RetryInfo), its slot freed; its last token resumes the rest."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import grpc
import pytest

from taskapi.server.app import App, Replica
from taskapi.server.domain.changes import CREATED
from taskapi.server.domain.entities import Task
from taskapi.v1 import task_pb2, task_pb2_grpc
from tests.conftest import make_settings, private_database
from tests.integration.api import Api, User, error_details

T = task_pb2
WRITE_TIMEOUT = 1.0
BIG = "x" * 60_000  # one change ≈ 60 KB: a few fill any window


@pytest.fixture(scope="module")
def slow(redis_url: str) -> Iterator[tuple[App, Replica]]:
    settings = make_settings(
        private_database(redis_url),
        watch_write_timeout_seconds=WRITE_TIMEOUT,
        watch_heartbeat_seconds=0.5,
        changes_retention=100_000,
    )
    app = App(settings)
    try:
        yield app, app.start_replica(0)
    finally:
        app.close(grace=1.0)


def publish(app: App, owner: str, count: int) -> list[str]:
    """`count` large changes in `owner`'s log, as a write publishes them; their task ids."""
    changes = app.changes
    assert changes is not None
    ids = []
    for n in range(count):
        seq = changes.reserve(owner)
        assert seq is not None
        moment = datetime.now(UTC)
        task = Task(
            id=f"slow-{seq}",
            owner=owner,
            title=f"big {n}",
            description=BIG,
            status=1,
            priority=2,
            due_time=None,
            tags=(),
            request_id=None,
            version=1,
            create_time=moment,
            update_time=moment,
            complete_time=None,
        )
        changes.publish(owner, seq, CREATED, task.id, task, moment)
        ids.append(task.id)
    return ids


def wait_for(condition: Callable[[], bool], seconds: float) -> float:
    """Seconds until `condition()` held (fails after `seconds`)."""
    start = time.monotonic()
    while not condition():
        assert time.monotonic() - start < seconds, "not within the bound"
        time.sleep(0.05)
    return time.monotonic() - start


def test_a_watcher_that_stops_reading_is_dropped_and_resumes_without_a_gap(slow: tuple[App, Replica]) -> None:
    app, replica = slow
    assert replica.watch is not None
    servicer = replica.watch.servicer
    user: User = Api(grpc.insecure_channel(replica.address)).register("stalled")
    # A client whose window stays small: its transport takes little unless the application reads.
    options = [("grpc.http2.lookahead_bytes", 16 << 10), ("grpc.http2.bdp_probe", 0)]
    with grpc.insecure_channel(replica.watch_address, options=options) as channel:
        stub = task_pb2_grpc.TaskServiceStub(channel)
        call = stub.WatchTasks(T.WatchTasksRequest(), metadata=user.auth)
        first = next(call)  # open, with a token; from here on the client reads nothing
        assert first.resume_token and servicer.watchers == 1
        ids = publish(app, user.id, 200)  # ≈ 12 MB the client never takes
        took = wait_for(lambda: servicer.watchers == 0, WRITE_TIMEOUT + 5)
        assert app.change_tail is not None and app.change_tail.followed == 0
        # Now the client reads what reached it: some changes, then the slow-consumer status.
        received: list[T.TaskChange] = []
        with pytest.raises(grpc.RpcError) as ended:
            for change in call:
                received.append(change)
        error = ended.value
    assert error.code() == grpc.StatusCode.UNAVAILABLE, error
    assert "stopped reading" in (error.details() or "")  # the write timed out (the queue never overflowed)
    details = error_details(error)
    assert details["ErrorInfo"].reason == "SLOW_CONSUMER" and details["RetryInfo"].retry_delay.ToTimedelta()
    delivered = [c.task.id for c in received if c.kind]
    assert len(delivered) < len(ids) / 2, "the stalled client was not stalled"  # the window held it back
    assert delivered == ids[: len(delivered)]
    last = (received[-1] if received else first).resume_token
    # Resuming with the last token it did receive gets exactly what it missed.
    with grpc.insecure_channel(replica.watch_address) as channel:
        again = task_pb2_grpc.TaskServiceStub(channel).WatchTasks(
            T.WatchTasksRequest(resume_token=last), metadata=user.auth, timeout=30
        )
        rest: list[str] = []
        for change in again:
            if change.kind:
                rest.append(change.task.id)
            if len(rest) == len(ids) - len(delivered):
                break
        again.cancel()
    assert delivered + rest == ids
    assert took < WRITE_TIMEOUT + 5
