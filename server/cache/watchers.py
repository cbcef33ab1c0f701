"""Watcher leases in Redis: the per-user watcher limit across every replica.

`taskapi:{u:<id>}:watchers` is a sorted set of the user's open streams, each member a lease
(`<replica>:<n>`) scored with the time (ms since the epoch) it expires. Acquiring prunes the
expired leases and adds one if fewer than the limit remain, in one script (one round trip, on
the user's node under Redis Cluster: one key, the user's hash tag). Each replica refreshes the
leases of its open streams every third of their life; a crashed replica's lapse on their own.
"""

from __future__ import annotations

import itertools
import time
import uuid
from collections.abc import Iterable

import redis

from taskapi.server.cache.client import AnyRedis
from taskapi.server.domain.errors import Unavailable

# KEYS[1] the user's set; ARGV: lease, limit, now (ms), lease ms. 1: acquired, 0: at the limit.
_ACQUIRE = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[3])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then
  return 0
end
redis.call('ZADD', KEYS[1], tonumber(ARGV[3]) + tonumber(ARGV[4]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1
"""


def watchers_key(owner: str) -> str:
    return f"taskapi:{{u:{owner}}}:watchers"


class RedisWatcherLeases:
    """The watch servicer's Leases port: one sorted set per user."""

    def __init__(self, client: AnyRedis, *, lease_seconds: float) -> None:
        self._redis = client
        self._lease_ms = max(1, int(lease_seconds * 1000))
        self._acquire = client.register_script(_ACQUIRE)
        self._name, self._count = uuid.uuid4().hex[:12], itertools.count()  # next() is atomic

    def acquire(self, owner: str, limit: int) -> str | None:
        """A new lease, or None when `owner` holds `limit` live ones already."""
        lease = f"{self._name}:{next(self._count)}"
        try:
            acquired = self._acquire(keys=[watchers_key(owner)], args=[lease, limit, _now_ms(), self._lease_ms])
        except redis.RedisError as error:
            raise Unavailable("the change feed is unavailable; retry") from error
        return lease if acquired else None

    def release(self, owner: str, lease: str) -> None:
        try:
            self._redis.zrem(watchers_key(owner), lease)
        except redis.RedisError:
            pass  # it lapses on its own

    def refresh(self, leases: Iterable[tuple[str, str]]) -> None:
        """Keep `(owner, lease)` alive another lease period; raises Unavailable without Redis."""
        by_owner: dict[str, list[str]] = {}
        for owner, lease in leases:
            by_owner.setdefault(owner, []).append(lease)
        if not by_owner:
            return
        until = _now_ms() + self._lease_ms
        try:
            pipe = self._redis.pipeline(transaction=False)  # split per node under Redis Cluster
            for owner, names in by_owner.items():
                pipe.zadd(watchers_key(owner), dict.fromkeys(names, until), xx=True)
                pipe.pexpire(watchers_key(owner), self._lease_ms)
            pipe.execute()
        except redis.RedisError as error:
            raise Unavailable("the change feed is unavailable") from error


def _now_ms() -> int:
    # The replicas' clocks (NTP) order the leases: a skew far below the lease period is harmless.
    return int(time.time() * 1000)
