"""Redis as a shared cache that the service can live without.

Every read degrades to a miss and every write to a no-op when Redis is down or
slow (the client has short timeouts), so callers fall back to the store. A
delete that could not reach Redis is remembered and retried before the next
read, so an invalidation is never silently lost while this process lives.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import redis

from interceptors.ratelimit import redis_client

log = logging.getLogger(__name__)

CacheListener = Callable[[str, str], None]  # (cache name, "hit" | "miss" | "error")


def connect_redis(url: str, timeout_ms: int) -> redis.Redis | None:
    """The process's one Redis client (limiter, session checks, cache), or None without a URL."""
    return redis_client(url, timeout_seconds=timeout_ms / 1000) if url else None


class SharedCache:
    _RETRY_DOWN_AFTER = 1.0  # seconds to skip Redis after a failure: calls stay fast during an outage

    def __init__(self, client: redis.Redis | None, *, listener: CacheListener | None = None) -> None:
        self.client = client
        self._listener = listener or (lambda cache, result: None)
        self._pending_deletes: set[str] = set()
        self._lock = threading.Lock()
        self._down_until = 0.0

    @property
    def available(self) -> bool:
        return self.client is not None and time.monotonic() >= self._down_until

    @property
    def prefetch_trusted(self) -> bool:
        """False while a missed delete waits: a read prefetched past it may be stale."""
        return not self._pending_deletes

    def record(self, cache: str, result: str) -> None:
        self._listener(cache, result)

    def run(self, build: Callable[[redis.client.Pipeline], None]) -> list[Any] | None:
        """Run the commands `build` queues in one round trip; None if Redis is unavailable."""
        if not self.available:
            return None
        assert self.client is not None
        try:
            self._flush_pending_deletes()
            pipe = self.client.pipeline(transaction=False)
            build(pipe)
            return pipe.execute()
        except redis.RedisError as exc:
            self._mark_down(exc)
            return None

    def script(self, source: str) -> Callable[..., Any] | None:
        return self.client.register_script(source) if self.client is not None else None

    def call_script(self, script: Any, keys: Sequence[str], args: Sequence[Any]) -> Any:
        if script is None or not self.available:
            return None
        try:
            return script(keys=list(keys), args=list(args))
        except redis.RedisError as exc:
            self._mark_down(exc)
            return None

    def put(self, values: dict[str, bytes], ttl_seconds: int) -> None:
        """Set `values` with a TTL; if Redis cannot take them, delete them as soon as it can."""
        if self.client is None or not values:
            return
        done = self.run(lambda pipe: [pipe.set(key, value, ex=ttl_seconds) for key, value in values.items()])
        if done is None:
            self.delete(*values)

    def delete(self, *keys: str) -> None:
        """Delete now, or remember to delete as soon as Redis answers again."""
        if self.client is None or not keys:
            return
        with self._lock:
            self._pending_deletes.update(keys)
        if self.available:
            try:
                self._flush_pending_deletes()
            except redis.RedisError as exc:
                self._mark_down(exc)

    def _flush_pending_deletes(self) -> None:
        with self._lock:
            keys = list(self._pending_deletes)
        if not keys:
            return
        assert self.client is not None
        self.client.delete(*keys)
        with self._lock:
            self._pending_deletes.difference_update(keys)

    def _mark_down(self, exc: Exception) -> None:
        if time.monotonic() >= self._down_until:
            log.warning("redis unavailable, serving from the store: %s", exc.__class__.__name__)
        self._down_until = time.monotonic() + self._RETRY_DOWN_AFTER
