"""The shared read cache for GetTask and ListTasks, with exact invalidation.

Each user's cached responses live in one Redis hash (`get:<id>` and
`list:<digest>` fields), next to a version counter. A write to any of the
user's tasks bumps the version and drops the hash, so no read after a write
sees the old data, on any replica. A reader notes the version before reading
the store and fills the cache only if it is unchanged (one Lua call), so a slow
reader cannot put back data that a concurrent write already replaced.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from taskapi.server.cache.reads import delivered_reply, delivered_task_entry
from taskapi.server.cache.shared import SharedCache
from taskapi.server.domain.caller import Caller

Response = TypeVar("Response")

_FILL = """
local current = redis.call('GET', KEYS[2]) or '0'
if current ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], ARGV[2], ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[4])
return 1
"""

_INVALIDATE = """
redis.call('INCR', KEYS[2])
redis.call('EXPIRE', KEYS[2], ARGV[1])
redis.call('DEL', KEYS[1])
return 1
"""


def _keys(owner: str) -> tuple[str, str]:
    return f"taskapi:tasks:{owner}", f"taskapi:tasks:{owner}:version"


class TaskCache:
    """The one owner of the read cache: read, fill (`cached`) and invalidate (the domain's
    TaskCacheInvalidation port, called after every write)."""

    def __init__(self, cache: SharedCache, ttl_seconds: int) -> None:
        self._cache = cache
        self._ttl = ttl_seconds
        self._fill = cache.script(_FILL)
        self._invalidate = cache.script(_INVALIDATE)

    @staticmethod
    def commands(owner: str, entry: str) -> list[tuple[str, ...]]:
        """The reads behind `read`, for the read plan (they ride the rate limiter's round trip)."""
        data, version_key = _keys(owner)
        return [("HGET", data, entry), ("GET", version_key)]

    def cached(
        self,
        caller: Caller,
        entry_of: Callable[[], str | None],
        build: Callable[[], tuple[Response, bool]],
        parse: Callable[[bytes], Response],
        serialize: Callable[[Response], bytes],
    ) -> Response:
        """The cached response for this call, or `build()`'s, stored unless it says not to.

        `entry_of` names the cache field (None: not cached); the read plan worked it out
        already when the call was planned. `build` returns (response, cacheable)."""
        entry = delivered_task_entry() or entry_of()
        if entry is None:
            return build()[0]
        value, version = self.read(caller.user_id, entry)
        if value is not None:
            return parse(value)
        response, cacheable = build()
        if cacheable:
            self.fill(caller.user_id, entry, serialize(response), version)
        return response

    def read(self, owner: str, entry: str) -> tuple[bytes | None, str | None]:
        """(cached bytes or None, the version to fill with or None if Redis is unavailable)."""
        get_entry, get_version = self.commands(owner, entry)
        (have_entry, entry_value), (have_version, version_value) = (
            delivered_reply(get_entry),
            delivered_reply(get_version),
        )
        if have_entry and have_version:
            result: list[Any] | None = [entry_value, version_value]
        else:
            result = self._cache.run(lambda pipe: (pipe.hget(*get_entry[1:]), pipe.get(get_version[1])))
        if result is None:
            self._cache.record("task", "error")
            return None, None
        value, version = result
        self._cache.record("task", "hit" if value is not None else "miss")
        return value, (version or b"0").decode()

    def fill(self, owner: str, entry: str, value: bytes, version: str | None) -> None:
        if version is not None:
            self._cache.call_script(self._fill, _keys(owner), [version, entry, value, self._ttl])

    def invalidate(self, owner: str) -> None:
        done = self._cache.call_script(self._invalidate, _keys(owner), [self._ttl * 2])
        if done is None:  # Redis unreachable: at least make sure the stale hash goes when it returns
            self._cache.delete(_keys(owner)[0])
