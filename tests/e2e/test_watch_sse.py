"""The change feed through real Envoy: Server-Sent Events with a plain HTTP client (`curl -N`),
Last-Event-ID resuming, the polling endpoint, and errors as HTTP statuses."""

from __future__ import annotations

import json
import queue
import subprocess
import threading
import urllib.parse
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from taskapi.v1 import task_pb2
from taskapi_client import TaskApiClient, TaskApiError
from tests.conftest import make_settings, private_database
from tests.e2e.conftest import Account, Stack, register, resource, running_stack


@pytest.fixture(scope="module")
def sse_stack(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    settings = make_settings(private_database(redis_url), watch_heartbeat_seconds=1.0)
    with running_stack(settings, tmp_path_factory.mktemp("sse")) as stack:
        yield stack


class Curl:
    """`curl -sN` following the feed: each SSE event's `data:` payload, parsed, on a queue, with
    the event's `id:` under "sseId" (None when the event had no id line)."""

    def __init__(self, stack: Stack, account: Account, *headers: str) -> None:
        client = stack.client
        url = f"http://{client.host}:{client.port}/api/v1/tasks:watch"
        args = ["curl", "-sN", "-H", f"Authorization: Bearer {account.token}"]
        for header in headers:
            args += ["-H", header]
        self.process = subprocess.Popen([*args, url], stdout=subprocess.PIPE, text=True)  # noqa: S603
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        fields: dict[str, str] = {}
        for line in self.process.stdout:
            name, _, value = line.rstrip("\n").partition(": ")
            if name:
                fields[name] = value
            elif "data" in fields:  # a blank line ends the event
                self.events.put(json.loads(fields["data"]) | {"sseId": fields.get("id")})
                fields = {}

    def changes(self, count: int) -> list[dict[str, Any]]:
        """The next `count` changes, heartbeats (kind KIND_UNSPECIFIED) skipped."""
        found: list[dict[str, Any]] = []
        while len(found) < count:
            event = self.events.get(timeout=10)
            if event["kind"] != "KIND_UNSPECIFIED":
                found.append(event)
        return found

    def heartbeat(self) -> dict[str, Any]:
        while True:
            event = self.events.get(timeout=10)
            if event["kind"] == "KIND_UNSPECIFIED":
                return event

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(5)
        self._reader.join(5)
        assert self.process.stdout is not None
        self.process.stdout.close()


def test_curl_follows_the_feed_and_resumes_with_last_event_id(sse_stack: Stack) -> None:
    client = sse_stack.client
    account = register(client)
    follower = Curl(sse_stack, account)
    try:
        first = follower.heartbeat()  # at once: a token before any change
        assert first["resumeToken"]
        task = resource(client.post("tasks", {"title": "live"}, token=account.token))
        (created,) = follower.changes(1)
        assert created["kind"] == "CREATED" and created["task"]["id"] == task["id"]
        assert follower.heartbeat()["resumeToken"] == created["resumeToken"]  # idle: heartbeats
    finally:
        follower.close()
    assert client.patch(f"tasks/{task['id']}", {"title": "missed"}, token=account.token).status == 200
    assert client.delete(f"tasks/{task['id']}", token=account.token).status == 200
    resumed = Curl(sse_stack, account, f"Last-Event-ID: {created['resumeToken']}")
    try:
        updated, deleted = resumed.changes(2)
    finally:
        resumed.close()
    assert (updated["kind"], updated["task"]["title"]) == ("UPDATED", "missed")
    assert deleted["kind"] == "DELETED" and deleted["task"]["id"] == task["id"]


def test_every_sse_event_has_its_resume_token_as_id_and_last_event_id_gets_exactly_the_missed(
    sse_stack: Stack,
) -> None:
    """`id:` is what a browser keeps as its last event id: every event has one, equal to the
    token in its data, heartbeats included; sent back as Last-Event-ID it resumes right after
    that event, with nothing missed and nothing repeated."""
    client = sse_stack.client
    account = register(client)
    follower = Curl(sse_stack, account)
    try:
        first = follower.heartbeat()
        titles = [f"seen {n}" for n in range(3)]
        seen = [resource(client.post("tasks", {"title": title}, token=account.token)) for title in titles]
        changes = follower.changes(3)
        beat = follower.heartbeat()
    finally:
        follower.close()
    for event in (first, *changes, beat):
        assert event["resumeToken"] and event["sseId"] == event["resumeToken"], event
    assert [c["task"]["title"] for c in changes] == titles
    last_id = changes[-1]["sseId"]
    missed = [client.patch(f"tasks/{seen[0]['id']}", {"title": "renamed"}, token=account.token)]
    missed.append(client.delete(f"tasks/{seen[1]['id']}", token=account.token))
    missed.append(client.post("tasks", {"title": "new"}, token=account.token))
    assert [r.status for r in missed] == [200, 200, 200]
    resumed = Curl(sse_stack, account, f"Last-Event-ID: {last_id}")
    try:
        events = [resumed.events.get(timeout=10) for _ in range(4)]
        after = resumed.heartbeat()
    finally:
        resumed.close()
    assert events[0]["kind"] == "KIND_UNSPECIFIED" and events[0]["sseId"] == last_id  # where it resumed
    created = json.loads(missed[2].body)
    assert [(e["kind"], e["task"]["id"]) for e in events[1:]] == [
        ("UPDATED", seen[0]["id"]),
        ("DELETED", seen[1]["id"]),
        ("CREATED", created["id"]),
    ]
    assert events[1]["task"]["title"] == "renamed"
    assert all(e["sseId"] == e["resumeToken"] for e in events)
    assert after["sseId"] == events[-1]["sseId"]  # then nothing more: idle heartbeats at the same place


def test_polling_changes_over_rest(sse_stack: Stack) -> None:
    client = sse_stack.client
    account = register(client)
    start = client.get("tasks:changes", token=account.token)
    assert start.status == 200
    token = json.loads(start.body)["nextToken"]
    task = resource(client.post("tasks", {"title": "polled"}, token=account.token))
    page = json.loads(client.get("tasks:changes", token=account.token, query={"sinceToken": token}).body)
    assert [(c["kind"], c["task"]["id"]) for c in page["changes"]] == [("CREATED", task["id"])]
    assert page["nextToken"] == page["changes"][0]["resumeToken"]


def test_feed_errors_are_http_statuses(sse_stack: Stack) -> None:
    client = sse_stack.client
    account = register(client)
    assert client.get("tasks:watch").status == 401
    bad = client.get("tasks:watch", token=account.token, headers={"last-event-id": "not.ours"})
    assert bad.status == 400 and json.loads(bad.body)["details"][0]["reason"] == "INVALID_ARGUMENT"
    other = register(client)
    theirs = json.loads(client.get("tasks:changes", token=other.token).body)["nextToken"]
    assert client.get("tasks:changes", token=account.token, query={"sinceToken": theirs}).status == 400


def test_an_expired_token_over_rest_is_400_resync_required(sse_stack: Stack) -> None:
    client = sse_stack.client
    account = register(client)
    token = json.loads(client.get("tasks:changes", token=account.token).body)["nextToken"]
    app = sse_stack.app
    assert app is not None
    changes = app.changes
    assert changes is not None
    user_id = account.user["id"]
    for _ in range(app.settings.changes_retention + 300):
        seq = changes.reserve(user_id)
        assert seq is not None
        changes.fill(user_id, seq)
    for response in (
        client.get("tasks:changes", token=account.token, query={"sinceToken": token}),
        client.get("tasks:watch", token=account.token, headers={"last-event-id": token}),
    ):
        assert response.status == 400, response.body
        body = json.loads(response.body)
        assert body["code"] == 9 and body["details"][0]["reason"] == "RESYNC_REQUIRED"


def test_the_sdk_watch_follows_a_drain_to_the_other_replica(redis_url: str, tmp_path: Path) -> None:
    """TaskApiClient.watch_tasks over Envoy's gRPC port: the replica holding the stream drains,
    the stream ends with its token, and the SDK resumes on the other replica without a gap."""
    settings = make_settings(private_database(redis_url), watch_heartbeat_seconds=0.5)
    with running_stack(settings, tmp_path) as stack, TaskApiClient(stack.envoy.grpc_target) as sdk:
        sdk.register(f"sdk-{uuid.uuid4().hex[:8]}@example.com", "correct horse battery", "Sdk")
        seen: queue.Queue[task_pb2.TaskChange] = queue.Queue()
        stream = sdk.watch_tasks(heartbeats=True)
        threading.Thread(target=_follow, args=(stream, seen), daemon=True).start()
        while seen.get(timeout=10).kind:  # the first heartbeat: the stream is open
            pass
        first = sdk.create_task(title="before")
        assert _next_change(seen).task.id == first.id
        holding = [r for r in stack.replicas if r.watch is not None and r.watch.servicer.watchers]
        assert len(holding) == 1
        assert holding[0].watch is not None
        holding[0].watch.drain()
        created = [sdk.create_task(title=f"during {n}") for n in range(3)]
        assert [_next_change(seen).task.id for _ in created] == [t.id for t in created]
        assert seen.empty() or all(not c.kind for c in list(seen.queue))


def _follow(stream: Iterator[task_pb2.TaskChange], seen: queue.Queue[task_pb2.TaskChange]) -> None:
    try:
        for change in stream:
            seen.put(change)
    except TaskApiError as error:  # the client closing its channel at the end of the test
        assert error.code == grpc.StatusCode.CANCELLED, error


def _next_change(seen: queue.Queue[task_pb2.TaskChange]) -> task_pb2.TaskChange:
    while True:
        change = seen.get(timeout=15)
        if change.kind:
            return change


HOSTILE_TOKENS = {
    "garbage bytes": b"\xff\xfe\x00\x80",
    "huge": b"A" * 20_000,
    "three dots": b"a.b.c.d",
    "wrong alphabet": b"!!!!.????",
    "empty signature": b"eyJ1IjoiYSJ9.",
}


@pytest.mark.parametrize("value", HOSTILE_TOKENS.values(), ids=HOSTILE_TOKENS.keys())
def test_hostile_resume_tokens_are_4xx_json_and_harm_no_one(sse_stack: Stack, value: bytes) -> None:
    """Last-Event-ID, resumeToken and sinceToken are new inputs: anything that is not a token this service
    signed is a 4xx in the JSON error shape (never a 5xx), and the next caller is served."""
    client = sse_stack.client
    account = register(client)
    for response in (
        client.get("tasks:watch", token=account.token, headers={"last-event-id": value}),
        client.request("GET", f"tasks:changes?sinceToken={urllib.parse.quote_from_bytes(value)}", token=account.token),
        # In the query the bytes reach the watch server as they are: 0xff is no UTF-8 string.
        client.request("GET", f"tasks:watch?resumeToken={urllib.parse.quote_from_bytes(value)}", token=account.token),
    ):
        assert 400 <= response.status < 500, (response.status, response.body[:200])
        body = json.loads(response.body)
        assert isinstance(body["code"], int) and body["code"] != 0 and "message" in body
    assert client.get("tasks:changes", token=account.token).status == 200
