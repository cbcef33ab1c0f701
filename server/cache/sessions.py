"""Live-session entries in Redis: the domain's SessionCache.

Per session, Redis holds "<epoch><user id>:<role>" (live, as of the store, written under
that epoch: see `taskapi.server.cache.shared`), "revoked", or "recheck:<nonce>" (re-read
the store). A fill replaces only the value its reader saw, under the epoch it saw, so a
store read that raced a revocation can never overwrite the "revoked" marker, not even
across a failover that lost the marker, and the marker outlives any "live" entry (same
TTL, set later). A live entry from another epoch is not trusted: the store is asked again.

Keys carry the user's hash tag (`taskapi:{u:<user id>}:session:<family>`), the tag of the
user's rate-limit budget and read cache, so the check rides the limiter's script on Cluster.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence

from taskapi.server.cache.reads import Command, delivered_read
from taskapi.server.cache.shared import EPOCH_LUA, SharedCache, untag
from taskapi.server.domain.ports import CachedSession

LIVE_SESSION_TTL = 60  # seconds a "session is live" answer is trusted from Redis
_REVOKED = b"revoked"
_RECHECK = b"recheck:"
_SEEN_SEPARATOR = b"|"  # `seen` is "<epoch>|<value read>": what a fill must still find
# KEYS[1]: the entry; ARGV: the value seen, the live value, the TTL, the epoch seen.
_FILL_SESSION = (
    EPOCH_LUA
    + """
if epoch == '' or epoch ~= ARGV[4] then return 0 end
local current = redis.call('GET', KEYS[1]) or ''
if current ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], epoch .. ARGV[2], 'EX', ARGV[3])
return 1
"""
)


def live_session_key(user_id: str, family: str) -> str:
    return f"taskapi:{{u:{user_id}}}:session:{family}"


class RedisSessionCache:
    def __init__(self, cache: SharedCache) -> None:
        self._cache = cache
        self._fill = cache.script(_FILL_SESSION)

    @staticmethod
    def command(user_id: str, family: str) -> Command:
        """The read behind `lookup`, for the read plan (it rides the rate limiter's round trip)."""
        return ("GET", live_session_key(user_id, family))

    def lookup(self, user_id: str, family: str) -> CachedSession:
        command = self.command(user_id, family)
        have, cached, epoch = delivered_read(command)
        if not have:
            result = self._cache.read([command])
            epoch, cached = (result[0], result[1][0]) if result is not None else ("", None)
        if cached == _REVOKED:
            return CachedSession(revoked=True)
        live = None if cached is None or cached.startswith(_RECHECK) else untag(epoch, cached)
        if live is not None:
            user, role = live.decode().split(":")
            return CachedSession(user_id=user, role=role)
        return CachedSession(seen=epoch.encode() + _SEEN_SEPARATOR + (cached or b""))

    def remember(self, user_id: str, family: str, seen: CachedSession, live_user: str, role: str) -> None:
        epoch, _, value = seen.seen.partition(_SEEN_SEPARATOR)
        if not epoch:
            return  # read while Redis was unavailable: nothing to fill against
        self._cache.call_script(
            self._fill,
            [live_session_key(user_id, family)],
            [value, f"{live_user}:{role}", LIVE_SESSION_TTL, epoch],
        )

    def revoke(self, user_id: str, families: Sequence[str]) -> None:
        # Untagged: true under any epoch (a session never comes back).
        self._cache.put({live_session_key(user_id, family): _REVOKED for family in families}, LIVE_SESSION_TTL)

    def recheck(self, user_id: str, families: Sequence[str]) -> None:
        marker = _RECHECK + secrets.token_hex(8).encode()
        self._cache.put({live_session_key(user_id, family): marker for family in families}, LIVE_SESSION_TTL)
