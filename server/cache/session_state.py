"""Session state the account services publish to Redis for the task service: the domain's
SessionState (docs/services.md).

Per session (refresh-token family), `taskapi:{u:<user id>}:session-state:<family>` holds
"<epoch><user id>:<role>" while the session is live, or "revoked" once it ended (logout, reuse, password change, the
account disabled or deleted). Every access token of a family is minted by a sign-in or a
refresh, and each of those republishes the entry for longer than the token lives, so an
entry outlives every access token it vouches for. A live entry never overwrites "revoked"
(a refresh racing a logout cannot bring the session back).

Failover: a live entry carries the epoch of the primary that took it (cache/shared.py). After
a failover that lost the last writes, a revocation may be among them; a live entry from
another epoch is therefore not trusted: the session reads as unknown (a 401 that the client's
refresh, checked against the account store, turns into a fresh entry or a refusal). "revoked"
is untagged: it is true under any epoch. The key carries the user's hash tag, so on Cluster the
read rides the limiter's script beside the user's budget.

The task service reads only this key, with no call to the account services or their store:
its read rides the rate limiter's round trip like the account side's session read.
"""

from __future__ import annotations

from collections.abc import Sequence

from taskapi.server.cache.reads import Command, delivered_read
from taskapi.server.cache.shared import EPOCH_LUA, SharedCache, untag
from taskapi.server.domain.ports import PublishedSession

# Longer than an access token lives by this much (clock skew between the services).
TTL_MARGIN_SECONDS = 60
_REVOKED = b"revoked"
_PUBLISH_LIVE = (
    EPOCH_LUA
    + """
if epoch == '' or redis.call('GET', KEYS[1]) == 'revoked' then return 0 end
redis.call('SET', KEYS[1], epoch .. ARGV[1], 'EX', ARGV[2])
return 1
"""
)


def session_state_key(user_id: str, family: str) -> str:
    return f"taskapi:{{u:{user_id}}}:session-state:{family}"


class RedisSessionState:
    def __init__(self, cache: SharedCache, *, access_ttl_seconds: int) -> None:
        self._cache = cache
        self._ttl = access_ttl_seconds + TTL_MARGIN_SECONDS
        self._publish = cache.script(_PUBLISH_LIVE)

    @staticmethod
    def command(user_id: str, family: str) -> Command:
        """The read behind `lookup`, for the read plan (it rides the rate limiter's round trip)."""
        return ("GET", session_state_key(user_id, family))

    def lookup(self, user_id: str, family: str) -> PublishedSession | None:
        """What the account services published for `family`; None when Redis cannot be read."""
        command = self.command(user_id, family)
        have, value, epoch = delivered_read(command)
        if not have:
            result = self._cache.read([command])
            if result is None:
                return None
            epoch, value = result[0], result[1][0]
        if value == _REVOKED:
            return PublishedSession(revoked=True)
        live = untag(epoch, value)
        if live is None:  # never published, expired, or published under another epoch
            return PublishedSession(known=False)
        owner, _, role = live.decode().partition(":")
        return PublishedSession(user_id=owner, role=role)

    def publish_live(self, families: Sequence[str], user_id: str, role: str) -> None:
        for family in families:
            self._cache.call_script(
                self._publish, [session_state_key(user_id, family)], [f"{user_id}:{role}", self._ttl]
            )

    def publish_revoked(self, user_id: str, families: Sequence[str]) -> None:
        # Through the shared cache's pending writes: retried until Redis takes it.
        self._cache.put({session_state_key(user_id, family): _REVOKED for family in families}, self._ttl)
