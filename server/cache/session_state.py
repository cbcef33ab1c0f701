"""Session state the account services publish to Redis for the task service: the domain's
SessionState (docs/services.md).

Per session (refresh-token family), `taskapi:session-state:<family>` holds "<user id>:<role>"
while the session is live, or "revoked" once it ended (logout, reuse, password change, the
account disabled or deleted). Every access token of a family is minted by a sign-in or a
refresh, and each of those republishes the entry for longer than the token lives, so an
entry outlives every access token it vouches for. A live entry never overwrites "revoked"
(a refresh racing a logout cannot bring the session back).

The task service reads only this key, with no call to the account services or their store:
its read rides the rate limiter's round trip like the account side's session read.
"""

from __future__ import annotations

from collections.abc import Sequence

from taskapi.server.cache.reads import Command, delivered_reply
from taskapi.server.cache.shared import SharedCache
from taskapi.server.domain.ports import PublishedSession

# Longer than an access token lives by this much (clock skew between the services).
TTL_MARGIN_SECONDS = 60
_REVOKED = b"revoked"
_PUBLISH_LIVE = """
if redis.call('GET', KEYS[1]) == 'revoked' then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return 1
"""


def session_state_key(family: str) -> str:
    return f"taskapi:session-state:{family}"


class RedisSessionState:
    def __init__(self, cache: SharedCache, *, access_ttl_seconds: int) -> None:
        self._cache = cache
        self._ttl = access_ttl_seconds + TTL_MARGIN_SECONDS
        self._publish = cache.script(_PUBLISH_LIVE)

    @staticmethod
    def command(family: str) -> Command:
        """The read behind `lookup`, for the read plan (it rides the rate limiter's round trip)."""
        return ("GET", session_state_key(family))

    def lookup(self, family: str) -> PublishedSession | None:
        """What the account services published for `family`; None when Redis cannot be read."""
        command = self.command(family)
        have, value = delivered_reply(command)
        if not have:
            result = self._cache.run(lambda pipe: pipe.get(command[1]))
            if result is None:
                return None
            value = result[0]
        if value is None:
            return PublishedSession(known=False)
        if value == _REVOKED:
            return PublishedSession(revoked=True)
        user_id, _, role = bytes(value).decode().partition(":")
        return PublishedSession(user_id=user_id, role=role)

    def publish_live(self, families: Sequence[str], user_id: str, role: str) -> None:
        for family in families:
            self._cache.call_script(self._publish, [session_state_key(family)], [f"{user_id}:{role}", self._ttl])

    def publish_revoked(self, families: Sequence[str]) -> None:
        # Through the shared cache's pending writes: retried until Redis takes it.
        self._cache.put({session_state_key(family): _REVOKED for family in families}, self._ttl)
