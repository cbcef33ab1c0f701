"""The shared read cache for GetTask and ListTasks, with exact invalidation.

Each user's cached responses live in one Redis hash (`get:<id>` and
`list:<digest>` fields), next to a version counter. A write to any of the
user's tasks bumps the version and drops the hash, so no read after a write
sees the old data, on any replica. A reader notes the version before reading
the store and fills the cache only if it is unchanged (one Lua call), so a slow
reader cannot put back data that a concurrent write already replaced.

Failovers: each response is stored behind the epoch of the node that wrote it, and a
read returns the epoch of the node serving it (`taskapi.server.cache.shared`); an entry
from another epoch is a miss, and a fill whose reader saw another epoch is dropped. An
invalidation that a failover lost cannot bring old data back: the promoted replica's
entries all predate its epoch. Keys carry the owner's hash tag (`taskapi:{u:<id>}:tasks`),
the tag of the owner's session entries and rate-limit budget (one Cluster slot per user).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from taskapi.server.cache.reads import delivered_read, delivered_task_entry
from taskapi.server.cache.shared import EPOCH_LUA, SharedCache, untag
from taskapi.server.domain.caller import Caller

Response = TypeVar("Response")

# KEYS: the hash, the version; ARGV: the version seen, the field, the value, the TTL, the epoch seen.
_FILL = (
    EPOCH_LUA
    + """
if epoch == '' or epoch ~= ARGV[5] then return 0 end
local current = redis.call('GET', KEYS[2]) or '0'
if current ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], ARGV[2], epoch .. ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[4])
return 1
"""
)

_INVALIDATE = """
redis.call('INCR', KEYS[2])
redis.call('EXPIRE', KEYS[2], ARGV[1])
redis.call('DEL', KEYS[1])
return 1
"""


def _keys(owner: str) -> tuple[str, str]:
    return f"taskapi:{{u:{owner}}}:tasks", f"taskapi:{{u:{owner}}}:tasks:version"


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
        value, seen = self.read(caller.user_id, entry)
        if value is not None:
            return parse(value)
        response, cacheable = build()
        if cacheable:
            self.fill(caller.user_id, entry, serialize(response), seen)
        return response

    def read(self, owner: str, entry: str) -> tuple[bytes | None, str | None]:
        """(cached bytes or None, what to fill with: "<epoch>/<version>", None if Redis is unavailable)."""
        get_entry, get_version = self.commands(owner, entry)
        have_entry, entry_value, epoch = delivered_read(get_entry)
        have_version, version_value, version_epoch = delivered_read(get_version)
        if have_entry and have_version and epoch == version_epoch:
            result: tuple[str, list[Any]] | None = epoch, [entry_value, version_value]
        else:
            result = self._cache.read([get_entry, get_version])
        if result is None:
            self._cache.record("task", "error")
            return None, None
        epoch, (stored, version) = result
        value = untag(epoch, stored)  # another epoch's entry: written before a failover, a miss
        self._cache.record("task", "hit" if value is not None else "miss")
        return value, f"{epoch}/{(version or b'0').decode()}"

    def fill(self, owner: str, entry: str, value: bytes, seen: str | None) -> None:
        if seen is not None:
            epoch, _, version = seen.partition("/")
            self._cache.call_script(self._fill, _keys(owner), [version, entry, value, self._ttl, epoch])

    def invalidate(self, owner: str) -> None:
        done = self._cache.call_script(self._invalidate, _keys(owner), [self._ttl * 2])
        if done is None:  # Redis unreachable: at least make sure the stale hash goes when it returns
            self._cache.delete(_keys(owner)[0])
