"""Live-session entries in Redis: the domain's SessionCache.

Per session, Redis holds "<user id>:<role>" (live, as of the store), "revoked", or
"recheck:<nonce>" (re-read the store). A fill replaces only the value its reader saw,
so a store read that raced a revocation can never overwrite the "revoked" marker, and
the marker outlives any "live" entry (same TTL, set later).
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence

from taskapi.server.cache.reads import Command, delivered_reply
from taskapi.server.cache.shared import SharedCache
from taskapi.server.domain.ports import CachedSession

LIVE_SESSION_TTL = 60  # seconds a "session is live" answer is trusted from Redis
_REVOKED = b"revoked"
_RECHECK = b"recheck:"
_FILL_SESSION = """
local current = redis.call('GET', KEYS[1]) or ''
if current ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
return 1
"""


def live_session_key(family: str) -> str:
    return f"taskapi:session:{family}"


class RedisSessionCache:
    def __init__(self, cache: SharedCache) -> None:
        self._cache = cache
        self._fill = cache.script(_FILL_SESSION)

    @staticmethod
    def command(family: str) -> Command:
        """The read behind `lookup`, for the read plan (it rides the rate limiter's round trip)."""
        return ("GET", live_session_key(family))

    def lookup(self, family: str) -> CachedSession:
        command = self.command(family)
        have, cached = delivered_reply(command)
        if not have:
            result = self._cache.run(lambda pipe: pipe.get(command[1]))
            cached = result[0] if result else None
        if cached == _REVOKED:
            return CachedSession(revoked=True)
        if cached is not None and not cached.startswith(_RECHECK):
            user_id, role = cached.decode().split(":")
            return CachedSession(user_id=user_id, role=role)
        return CachedSession(seen=cached or b"")

    def remember(self, family: str, seen: CachedSession, user_id: str, role: str) -> None:
        self._cache.call_script(
            self._fill, [live_session_key(family)], [seen.seen, f"{user_id}:{role}", LIVE_SESSION_TTL]
        )

    def revoke(self, families: Sequence[str]) -> None:
        self._cache.put({live_session_key(family): _REVOKED for family in families}, LIVE_SESSION_TTL)

    def recheck(self, families: Sequence[str]) -> None:
        marker = _RECHECK + secrets.token_hex(8).encode()
        self._cache.put({live_session_key(family): marker for family in families}, LIVE_SESSION_TTL)
