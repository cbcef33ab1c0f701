"""Is the caller's session still live? Checked on every authenticated call.

The token alone says who signed in (Tokens.verify, no I/O). Whether that session was
revoked, the account disabled, or its role changed since is the store's to say; the shared
cache remembers the answer for a short while (`SessionCache`), and its read travels in the
rate limiter's round trip, so the hot path costs no extra I/O.
"""

from __future__ import annotations

import logging

from taskapi.server.domain.caller import Caller
from taskapi.server.domain.errors import Unauthenticated, Unavailable
from taskapi.server.domain.ports import SessionCache, SessionState, SessionStore, UserStore
from taskapi.server.domain.tokens import Tokens

log = logging.getLogger(__name__)

SESSION_ENDED = "the session has ended; sign in again"
SESSION_UNKNOWN = "the session is not known to this service; refresh the access token"
# TASKS_SESSION_FALLBACK: what the task service does when it cannot read the session state.
SERVE_BY_TOKEN, REFUSE = "token", "refuse"


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


class PublishedSessions:
    """The task service's authenticator: the token, then the session state the account
    services publish (`SessionState`); never their store or an RPC to them.

    When the state cannot be read (Redis down), `fallback` decides (TASKS_SESSION_FALLBACK):
    SERVE_BY_TOKEN serves the call as the access token says (its user and role) until the
    token expires, at most ACCESS_TOKEN_TTL_SECONDS: a session revoked meanwhile keeps
    working on tasks for that long, and nowhere else; REFUSE answers UNAVAILABLE.
    """

    def __init__(self, tokens: Tokens, state: SessionState, *, fallback: str = SERVE_BY_TOKEN) -> None:
        self._tokens = tokens
        self._state = state
        self._fallback = fallback

    def authenticate(self, token: str) -> Caller:
        return self._tokens.verify(token)

    def confirm(self, caller: Caller) -> Caller:
        published = self._state.lookup(caller.user_id, caller.session_id)
        if published is None:
            if self._fallback == REFUSE:
                raise Unavailable("session state is unavailable; retry shortly", reason="SESSION_STATE_UNAVAILABLE")
            log.debug("session state unreadable: serving by the access token until it expires")
            return caller
        if published.revoked:
            raise Unauthenticated(SESSION_ENDED, reason="SESSION_REVOKED")
        if not published.known or published.role is None:
            # Never published, or lost (a Redis that restarted empty): a refresh publishes it again.
            raise Unauthenticated(SESSION_UNKNOWN, reason="SESSION_UNKNOWN")
        if published.user_id != caller.user_id:
            raise Unauthenticated(SESSION_ENDED, reason="SESSION_REVOKED")
        return Caller(
            user_id=caller.user_id, role=published.role, session_id=caller.session_id, issued_at=caller.issued_at
        )
