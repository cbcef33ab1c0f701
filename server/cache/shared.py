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

log = logging.getLogger(__name__)

CacheListener = Callable[[str, str], None]  # (cache name, "hit" | "miss" | "error")


class SharedCache:
    _RETRY_DOWN_AFTER = 1.0  # seconds to skip Redis after a failure: calls stay fast during an outage

    def __init__(self, client: redis.Redis | None, *, listener: CacheListener | None = None) -> None:
        self.client = client
        self._listener = listener or (lambda cache, result: None)
        # Writes that must not be lost (invalidations, revocation markers), replayed before
        # anything else once Redis answers: key -> (value, or None to delete; ttl).
        self._pending: dict[str, tuple[bytes | None, int]] = {}
        self._lock = threading.Lock()
        self._down_until = 0.0

    @property
    def available(self) -> bool:
        return self.client is not None and time.monotonic() >= self._down_until

    @property
    def prefetch_trusted(self) -> bool:
        """False while a missed write waits: a read prefetched past it may be stale."""
        return not self._pending

    def record(self, cache: str, result: str) -> None:
        self._listener(cache, result)

    def run(self, build: Callable[[redis.client.Pipeline], object]) -> list[Any] | None:
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
        except redis.RedisError as exc:
            self._mark_down(exc)
            return None

    def script(self, source: str) -> Callable[..., Any] | None:
        return self.client.register_script(source) if self.client is not None else None

    def call_script(self, script: Any, keys: Sequence[str], args: Sequence[Any]) -> Any:
        if script is None or not self.available:
            return None
        try:
            self._replay_pending()
            return script(keys=list(keys), args=list(args))
        except redis.RedisError as exc:
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
            except redis.RedisError as exc:
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
