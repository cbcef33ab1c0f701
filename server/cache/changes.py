"""The change feed in Redis: one stream per user, and the thread that tails them all.

Keys carry the owner's hash tag, like every per-user key:
- `taskapi:{u:<id>}:changes:seq`  the last sequence number reserved (INCR, before the store write);
- `taskapi:{u:<id>}:changes`      the stream (XADD after the write, MAXLEN ~ retention), each entry
  `seq`, `kind`, `id`, `time` and `task` (JSON; empty for a tombstone).
Both keys expire `ttl` after the user's last write. Trimming is seen through the stream's
first entry: a reader positioned before it, whose next number is not that entry's, lost changes.

ChangeTail is one thread per process that multiplexes every followed stream in one blocking
XREAD, so a watcher costs a dict entry here, never a connection or a thread. On Redis Cluster
one command cannot span slots: the tail polls instead, every `poll_ms`, one pipelined round
trip per node holding one non-blocking XREAD per slot it follows there.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import redis
from redis.cluster import RedisCluster
from redis.exceptions import RedisClusterException

from taskapi.server.cache.client import AnyRedis
from taskapi.server.domain.changes import Change, LogHead
from taskapi.server.domain.entities import Task
from taskapi.server.domain.errors import Unavailable

log = logging.getLogger(__name__)
_MAX_SEQ = 18446744073709551615
_TASK_FIELDS = ("id", "owner", "title", "description", "status", "priority", "tags", "request_id", "version")
_TIME_FIELDS = ("due_time", "create_time", "update_time", "complete_time")


def stream_key(owner: str) -> str:
    return f"taskapi:{{u:{owner}}}:changes"


def _seq_key(owner: str) -> str:
    return f"taskapi:{{u:{owner}}}:changes:seq"


def _before(position: str) -> str:
    ms, seq = (int(part) for part in position.split("-"))
    return f"{ms}-{seq - 1}" if seq else f"{ms - 1}-{_MAX_SEQ}"


def _task_json(task: Task) -> str:
    data: dict[str, Any] = {name: getattr(task, name) for name in _TASK_FIELDS}
    data["tags"] = list(task.tags)
    for name in _TIME_FIELDS:
        value = getattr(task, name)
        data[name] = value.isoformat() if value is not None else None
    return json.dumps(data, separators=(",", ":"))


def _task_from_json(text: str) -> Task:
    data = json.loads(text)
    for name in _TIME_FIELDS:
        data[name] = datetime.fromisoformat(data[name]) if data[name] else None
    data["tags"] = tuple(data["tags"])
    return Task(**data)


def parse_entry(entry_id: bytes | str, fields: dict[bytes, bytes]) -> Change:
    position = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    task = fields.get(b"task", b"")
    return Change(
        seq=int(fields[b"seq"]),
        kind=int(fields[b"kind"]),
        task_id=fields.get(b"id", b"").decode(),
        task=_task_from_json(task.decode()) if task else None,
        time=datetime.fromisoformat(fields[b"time"].decode()),
        published_at=float(fields[b"at"]),
        position=position,
        before=_before(position),
    )


class RedisChangeLog:
    """The domain's ChangeLog port on Redis Streams."""

    def __init__(self, client: AnyRedis, *, retention: int, ttl_seconds: int) -> None:
        self._redis = client
        self._retention = retention
        self._ttl = ttl_seconds

    def reserve(self, owner: str) -> int:
        try:
            pipe = self._redis.pipeline(transaction=True)
            pipe.incr(_seq_key(owner))
            pipe.expire(_seq_key(owner), self._ttl)
            seq, _ = pipe.execute()
        except redis.RedisError as error:
            raise Unavailable("the change feed is unavailable") from error
        return int(seq)

    def publish(self, owner: str, seq: int, kind: int, task_id: str, task: Task | None, time_: datetime) -> None:
        fields = {
            "seq": seq,
            "kind": kind,
            "id": task_id,
            "time": time_.isoformat(),
            "at": repr(time.time()),
            "task": _task_json(task) if task is not None else "",
        }
        try:
            pipe = self._redis.pipeline(transaction=True)
            pipe.xadd(stream_key(owner), fields, maxlen=self._retention, approximate=True)  # type: ignore[arg-type]
            pipe.expire(stream_key(owner), self._ttl)
            pipe.execute()
        except redis.RedisError:
            # The write is done; its number stays a hole that readers see (RESYNC_REQUIRED).
            log.warning("a change of seq %s could not be published; readers will resync", seq, exc_info=True)

    def head(self, owner: str) -> LogHead:
        try:
            pipe = self._redis.pipeline(transaction=True)
            pipe.get(_seq_key(owner))
            pipe.xrevrange(stream_key(owner), count=1)
            seq, last = pipe.execute()
        except redis.RedisError as error:
            raise Unavailable("the change feed is unavailable; retry") from error
        position = last[0][0].decode() if last else "0-0"
        return LogHead(seq=int(seq or 0), position=position)

    def read(self, owner: str, after: str, count: int) -> list[Change]:
        try:
            entries = self._redis.xrange(stream_key(owner), min=f"({after}", count=count)
        except redis.RedisError as error:
            raise Unavailable("the change feed is unavailable; retry") from error
        return [parse_entry(entry_id, fields) for entry_id, fields in entries or ()]  # type: ignore[arg-type]

    def lost_after(self, owner: str, position: str, seq: int) -> bool:
        try:
            reserved = int(self._redis.get(_seq_key(owner)) or 0)
            try:
                info = self._redis.xinfo_stream(stream_key(owner))
            except redis.ResponseError:  # no such key
                info = None
        except redis.RedisError as error:
            raise Unavailable("the change feed is unavailable; retry") from error
        if reserved < seq:  # the log restarted (expired, flushed): it no longer knows this token's changes
            return True
        if info is None:
            return seq < reserved  # numbers were handed out after the token, yet nothing is kept
        first = info.get("first-entry")
        if not first:
            return seq < reserved
        first_change = parse_entry(first[0], first[1])
        # Trimmed past the token: the oldest kept change is after its place, and not the next one.
        return _key(position) < _key(first_change.position) and first_change.seq > seq + 1


def _key(position: str) -> tuple[int, int]:
    ms, seq = position.split("-")
    return int(ms), int(seq)


@dataclass(eq=False)
class Follower:
    owner: str
    deliver: Callable[[list[Change]], None]


class ChangeTail:
    """One thread following many users' streams with one blocking XREAD.

    `follow(owner, position, deliver)` calls `deliver(changes)` (on this thread) for every
    change after `position`; a second follower of the same owner shares the owner's place,
    so it must first read what lies between its own position and now (the caller does).
    """

    def __init__(self, client: AnyRedis, *, block_ms: int = 250, batch: int = 100, poll_ms: int = 100) -> None:
        self._redis = client
        self._block_ms = block_ms
        self._poll_ms = poll_ms
        self._batch = batch
        self._lock = threading.Lock()
        self._followers: dict[str, set[Follower]] = {}
        self._positions: dict[str, str] = {}
        self._wake = threading.Event()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="change-tail", daemon=True)
        self._thread.start()

    def follow(self, owner: str, position: str, deliver: Callable[[list[Change]], None]) -> Follower:
        follower = Follower(owner, deliver)
        with self._lock:
            if owner not in self._followers:
                self._followers[owner] = set()
                self._positions[stream_key(owner)] = position
            self._followers[owner].add(follower)
        self._wake.set()
        return follower

    def unfollow(self, follower: Follower) -> None:
        with self._lock:
            followers = self._followers.get(follower.owner)
            if followers is None:
                return
            followers.discard(follower)
            if not followers:
                del self._followers[follower.owner]
                self._positions.pop(stream_key(follower.owner), None)

    @property
    def followed(self) -> int:
        with self._lock:
            return sum(len(f) for f in self._followers.values())

    def stop(self) -> None:
        self._stopped.set()
        self._wake.set()
        self._thread.join(timeout=5)
        self._redis.close()  # its own client (see App): nothing else uses it

    def _run(self) -> None:
        while not self._stopped.is_set():
            with self._lock:
                streams = dict(self._positions)
            if not streams:
                self._wake.wait(1.0)
                self._wake.clear()
                continue
            try:
                if isinstance(self._redis, RedisCluster):
                    replies = self._poll_cluster(self._redis, streams)
                else:
                    replies = self._redis.xread(streams, count=self._batch, block=self._block_ms) or []  # type: ignore[arg-type, assignment]
            except (redis.RedisError, RedisClusterException):  # the latter: a slot no node serves now
                log.warning("the change tail cannot read Redis; retrying", exc_info=True)
                if isinstance(self._redis, RedisCluster):  # a slot may have moved: ask for the map again
                    self._redis.nodes_manager.initialize()
                self._stopped.wait(0.5)
                continue
            for key, entries in replies:  # [[key, entries], ...]
                self._dispatch(key.decode() if isinstance(key, bytes) else str(key), entries)

    def _poll_cluster(self, cluster: RedisCluster, streams: dict[str, str]) -> list[Any]:
        """One pass over every followed stream; waits `poll_ms` when none had anything new."""
        by_node: dict[str, tuple[redis.Redis, dict[int, dict[str, str]]]] = {}
        for key, position in streams.items():
            node = cluster.get_node_from_key(key)  # type: ignore[no-untyped-call]
            client = node.redis_connection
            assert client is not None  # noqa: S101 - the node map gives connected nodes
            by_node.setdefault(node.name, (client, {}))[1].setdefault(cluster.keyslot(key), {})[key] = position  # type: ignore[no-untyped-call]
        replies: list[Any] = []
        for client, slots in by_node.values():
            pipe = client.pipeline(transaction=False)
            for group in slots.values():
                pipe.xread(group, count=self._batch)  # type: ignore[arg-type]
            replies += [reply for result in pipe.execute() for reply in result or ()]
        if not replies:
            self._stopped.wait(self._poll_ms / 1000)
        return replies

    def _dispatch(self, key: str, entries: list[Any]) -> None:
        changes = [parse_entry(entry_id, fields) for entry_id, fields in entries]
        if not changes:
            return
        with self._lock:
            if key not in self._positions:
                return
            self._positions[key] = changes[-1].position
            owner = key[len("taskapi:{u:") : -len("}:changes")]
            followers = list(self._followers.get(owner, ()))
        for follower in followers:
            try:
                follower.deliver(changes)
            except Exception:  # one broken watcher never stops the others
                log.exception("a watcher failed to take changes")
