"""Redis as a shared cache that the service can live without.

Every read degrades to a miss and every write to a no-op when Redis is down or
slow (the client has short timeouts), so callers fall back to the store. A
delete that could not reach Redis is remembered and retried before the next
read, so an invalidation is never silently lost while this process lives.

Epochs: a failover can lose writes. Replication is asynchronous, so the primary may
acknowledge an invalidation (or a session's revocation) and die before its replica has
it; the promoted replica then still holds the entry the write removed. So every entry
that says "this is current" (a cached response, a live session) is stored with the
replication id of the node that wrote it (INFO replication `master_replid`, 40 hex
characters, read inside the writing script), and read back together with the id of the
node serving it now (inside the same script or the limiter's). A promoted replica serves
a new replication id, so everything written before the failover is a miss until it is
filled again from the store: stale data cannot come back. A fill also carries the epoch
its reader saw and is dropped when the node's epoch changed in between, so a read that
straddles a failover cannot put back what a lost write replaced. Entries that are true
under any epoch (a revocation) are not tagged.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import redis
from redis.cluster import RedisCluster

log = logging.getLogger(__name__)

CacheListener = Callable[[str, str], None]  # (cache name, "hit" | "miss" | "error")
Command = tuple[str, ...]  # ("GET", key) or ("HGET", key, field)
# What an unreachable Redis raises; RedisClusterException (no slots known) is not a RedisError.
REDIS_DOWN = (redis.RedisError, redis.exceptions.RedisClusterException)

EPOCH_BYTES = 40  # a replication id: 40 hex characters
# Lua: the id of the history this node serves (a new one after a promotion).
EPOCH_LUA = "local epoch = string.match(redis.call('INFO', 'replication'), 'master_replid:(%x+)') or ''\n"
# KEYS: keys to read; ARGV[i]: the hash field for KEYS[i], or '' for GET. {epoch, replies...}
_READ = (
    EPOCH_LUA
    + """
local out = {epoch}
for i = 1, #KEYS do
  if ARGV[i] == '' then
    out[i + 1] = redis.call('GET', KEYS[i])
  else
    out[i + 1] = redis.call('HGET', KEYS[i], ARGV[i])
  end
end
return out
"""
)


def untag(epoch: str, value: bytes | None) -> bytes | None:
    """The payload of an entry written under `epoch`; None for a miss or another epoch's entry."""
    if value is None or not epoch or value[:EPOCH_BYTES] != epoch.encode():
        return None
    return value[EPOCH_BYTES:]


class SharedCache:
    _RETRY_DOWN_AFTER = 1.0  # seconds to skip Redis after a failure: calls stay fast during an outage

    def __init__(self, client: redis.Redis | RedisCluster | None, *, listener: CacheListener | None = None) -> None:
        self.client = client
        self._listener = listener or (lambda cache, result: None)
        # Writes that must not be lost (invalidations, revocation markers), replayed before
        # anything else once Redis answers: key -> (value, or None to delete; ttl).
        self._pending: dict[str, tuple[bytes | None, int]] = {}
        self._lock = threading.Lock()
        self._down_until = 0.0
        self._read = self.script(_READ)

    @property
    def available(self) -> bool:
        return self.client is not None and time.monotonic() >= self._down_until

    @property
    def prefetch_trusted(self) -> bool:
        """False while a missed write waits: a read prefetched past it may be stale."""
        return not self._pending

    def record(self, cache: str, result: str) -> None:
        self._listener(cache, result)

    def run(self, build: Callable[[Any], object]) -> list[Any] | None:
        """Run the commands `build` queues on the pipeline (what it returns is ignored) in one
        round trip: their replies, or None if Redis is unavailable."""
        if not self.available:
            return None
        assert self.client is not None
        try:
            self._replay_pending()
            pipe = self.client.pipeline(transaction=False)
            build(pipe)
            return pipe.execute()
        except REDIS_DOWN as exc:
            self._mark_down(exc)
            return None

    def read(self, commands: Sequence[Command]) -> tuple[str, list[Any]] | None:
        """(the node's epoch, the replies to `commands`), in one round trip; None if Redis is
        unavailable. All keys share one hash slot (one user's), as Cluster requires."""
        keys = [command[1] for command in commands]
        fields = [command[2] if command[0] == "HGET" else "" for command in commands]
        result = self.call_script(self._read, keys, fields)
        if result is None:
            return None
        epoch = result[0].decode() if isinstance(result[0], bytes) else str(result[0])
        return epoch, list(result[1:])

    def script(self, source: str) -> Callable[..., Any] | None:
        return self.client.register_script(source) if self.client is not None else None

    def call_script(self, script: Any, keys: Sequence[str], args: Sequence[Any]) -> Any:
        if script is None or not self.available:
            return None
        try:
            self._replay_pending()
            return script(keys=list(keys), args=list(args))
        except REDIS_DOWN as exc:
            self._mark_down(exc)
            return None

    def put(self, values: dict[str, bytes], ttl_seconds: int) -> None:
        """Set `values` with a TTL, now or as soon as Redis answers again."""
        self._write({key: (value, ttl_seconds) for key, value in values.items()})

    def delete(self, *keys: str) -> None:
        """Delete now, or as soon as Redis answers again."""
        self._write(dict.fromkeys(keys, (None, 0)))

    def _write(self, writes: dict[str, tuple[bytes | None, int]]) -> None:
        if self.client is None or not writes:
            return
        with self._lock:
            self._pending.update(writes)
        if self.available:
            try:
                self._replay_pending()
            except REDIS_DOWN as exc:
                self._mark_down(exc)

    def _replay_pending(self) -> None:
        with self._lock:
            writes = dict(self._pending)
        if not writes:
            return
        assert self.client is not None
        pipe = self.client.pipeline(transaction=False)
        for key, (value, ttl) in writes.items():
            if value is None:
                pipe.delete(key)
            else:
                pipe.set(key, value, ex=ttl)
        pipe.execute()
        with self._lock:
            for key, write in writes.items():
                if self._pending.get(key) == write:  # not superseded meanwhile
                    del self._pending[key]

    def _mark_down(self, exc: Exception) -> None:
        if time.monotonic() >= self._down_until:
            log.warning("redis unavailable, serving from the store: %s", exc.__class__.__name__)
        self._down_until = time.monotonic() + self._RETRY_DOWN_AFTER
