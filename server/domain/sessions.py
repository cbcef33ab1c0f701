"""Is the caller's session still live? Checked on every authenticated call.

The token alone says who signed in (Tokens.verify, no I/O). Whether that session was
revoked, the account disabled, or its role changed since is the store's to say; the shared
cache remembers the answer for a short while (`SessionCache`), and its read travels in the
rate limiter's round trip, so the hot path costs no extra I/O.
"""

from __future__ import annotations

from taskapi.server.domain.caller import Caller
from taskapi.server.domain.errors import Unauthenticated
from taskapi.server.domain.ports import SessionCache, SessionStore, UserStore
from taskapi.server.domain.tokens import Tokens

SESSION_ENDED = "the session has ended; sign in again"


class Sessions:
    """What the auth interceptors call: verify the token, then confirm its session is live."""

    def __init__(self, tokens: Tokens, users: UserStore, sessions: SessionStore, cache: SessionCache) -> None:
        self._tokens = tokens
        self._users = users
        self._sessions = sessions
        self._cache = cache

    def authenticate(self, token: str) -> Caller:
        return self._tokens.verify(token)

    def confirm(self, caller: Caller) -> Caller:
        """The caller as of now, with the account's current role; raises Unauthenticated."""
        cached = self._cache.lookup(caller.user_id, caller.session_id)
        if cached.revoked:
            raise Unauthenticated(SESSION_ENDED, reason="SESSION_REVOKED")
        if cached.user_id is not None and cached.role is not None:
            user_id, role = cached.user_id, cached.role
        else:
            user_id, role = self._live_from_store(caller)
            self._cache.remember(caller.user_id, caller.session_id, cached, user_id, role)
        if user_id != caller.user_id:
            raise Unauthenticated(SESSION_ENDED, reason="SESSION_REVOKED")
        # The role is the account's current one, not the one minted into the token.
        return Caller(user_id=user_id, role=role, session_id=caller.session_id, issued_at=caller.issued_at)

    def _live_from_store(self, caller: Caller) -> tuple[str, str]:
        user = self._users.find(caller.user_id)
        if user is None or user.disabled or not self._sessions.family_is_live(caller.session_id, user.id):
            raise Unauthenticated(SESSION_ENDED, reason="SESSION_REVOKED")
        return user.id, user.role
