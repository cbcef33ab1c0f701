"""Accounts and sessions: sign-up, sign-in, rotating refresh tokens, sign-out.

A session is a refresh-token *family*: each Refresh rotates the token within the
family, presenting a rotated token again revokes the whole family (it was
stolen, or the client is broken), and Logout revokes it. Access tokens carry the
family id (`sid`), so ending a session also ends its access tokens: `Sessions`
checks the session is live on every call (the shared cache, else the store).

Reuse grace (REFRESH_REUSE_GRACE_SECONDS): two tabs refreshing the same token at once
must not end the session, so a rotated token presented again within the grace window
(counted from its rotation) returns the same new pair instead of revoking. To hand back
the same refresh token without ever storing one, a token's successor is derived, not
drawn: HMAC(key from JWT_SECRET, token); the access token is derived the same way (its
`jti` from the successor, `iat` from the rotation time), so a replay returns the very same
pair. The store keeps only SHA-256 hashes, as before; a leaked table grants nothing.
Concurrent rotations of one token all derive the same successor, and the unique index
on its hash lets exactly one of them insert it: the others replay it.
What the window gives an attacker holding a stolen token: if they present it within
the window after the owner's refresh (or the owner refreshes within the window after
theirs), both get the same pair, i.e. they share the owner's session instead of
triggering a revocation; any later use of a rotated token by either side still revokes
the family for both. Outside the window nothing changes.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import secrets
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import NoReturn

from taskapi.server.domain.caller import ROLE_USER
from taskapi.server.domain.entities import NewUser, RefreshToken, User, now
from taskapi.server.domain.errors import AlreadyExists, InvalidArgument, Unauthenticated, Unavailable
from taskapi.server.domain.events import password_changed, user_registered
from taskapi.server.domain.limits import LOGIN_FAILED_REASON
from taskapi.server.domain.passwords import PasswordHasher
from taskapi.server.domain.ports import SessionCache, SessionState, SessionStore, UserStore
from taskapi.server.domain.sessions import SESSION_ENDED
from taskapi.server.domain.tokens import Tokens

log = logging.getLogger(__name__)

LOGIN_FAILED = "email or password is incorrect"


def _hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Session:
    access_token: str
    refresh_token: str
    expires_in: int
    user: User


class Accounts:
    """Register, sign in, rotate and end sessions."""

    def __init__(
        self,
        *,
        users: UserStore,
        sessions: SessionStore,
        session_cache: SessionCache,
        hasher: PasswordHasher,
        tokens: Tokens,
        refresh_ttl_seconds: int,
        reuse_grace_seconds: float,
        secret: str,
        session_state: SessionState | None = None,
    ) -> None:
        self._users = users
        # Published for the task service, which reads no store of ours (docs/services.md).
        self._session_state = session_state
        self._sessions = sessions
        self._session_cache = session_cache
        self._hasher = hasher
        self._tokens = tokens
        self._refresh_ttl = timedelta(seconds=refresh_ttl_seconds)
        self._reuse_grace = timedelta(seconds=reuse_grace_seconds)
        # A key of its own for deriving successors, so no other use of the secret can produce one.
        self._successor_key = hmac.digest(secret.encode(), b"taskapi refresh-token successor", "sha256")

    def register(self, email: str, password: str, name: str, *, role: str = ROLE_USER) -> Session:
        user = self.create_user(email, password, name, role=role)
        return self._start_session(user, family=uuid.uuid4().hex)

    def create_user(self, email: str, password: str, name: str, *, role: str = ROLE_USER) -> User:
        new = NewUser(email=email, name=name, password_hash=self._hasher.hash(password), role=role, create_time=now())
        user = self._users.insert(new, event=user_registered(email, name))  # the welcome email
        if user is None:
            raise AlreadyExists("an account with this email already exists", reason="EMAIL_TAKEN")
        return user

    def login(self, email: str, password: str) -> Session:
        user = self._users.find_by_email(email)
        # The hash check runs even for unknown emails: same answer, same time.
        valid = self._hasher.verify(password, user.password_hash if user else None)
        if user is None or not valid or user.disabled:
            raise Unauthenticated(LOGIN_FAILED, reason=LOGIN_FAILED_REASON)
        return self._start_session(user, family=uuid.uuid4().hex)

    def refresh(self, refresh_token: str) -> Session:
        successor = self._successor(refresh_token)
        # A rotation that loses the successor's insert to a concurrent one goes round again and
        # replays its result. (mongomock can make both inserts lose; a further round settles it.)
        for _ in range(3):
            record = self._sessions.find(_hash_token(refresh_token))
            if record is None or record.revoked or record.expire_time <= now():
                raise Unauthenticated("the refresh token is invalid or expired", reason="REFRESH_INVALID")
            issued = self._sessions.find(_hash_token(successor))
            if issued is not None:  # rotated already: a second tab, or a replayed stolen token
                return self._replay(record, issued, successor)
            if record.rotated:  # rotated to a successor we cannot derive (an older token scheme)
                self._reused(record)
            user = self._live_user(record)
            moment = now()
            if self._insert_token(successor, record.family, user, moment):
                self._sessions.mark_rotated(record.id)  # informational: the successor's existence is the rotation
                session = self._session(user, record.family, successor, moment)
                if self._sessions.family_revoked(record.family):  # a logout raced us: our token dies with it
                    self.end_sessions(record.user_id, [record.family])
                    raise Unauthenticated(SESSION_ENDED, reason="SESSION_REVOKED")
                return session
        raise Unavailable("the session is being refreshed concurrently; retry", nothing_done=True)

    def _replay(self, record: RefreshToken, issued: RefreshToken, successor: str) -> Session:
        """The pair the rotation of `record` issued, within the grace window; after it, reuse."""
        if issued.family != record.family or now() - issued.create_time >= self._reuse_grace:
            self._reused(record)
        return self._session(self._live_user(record), record.family, successor, issued.create_time)

    def _reused(self, record: RefreshToken) -> NoReturn:
        self.end_sessions(record.user_id, [record.family])
        log.warning("refresh token reuse: revoked session family of user %s", record.user_id)
        raise Unauthenticated("the refresh token was already used; the session is revoked", reason="REFRESH_REUSED")

    def _live_user(self, record: RefreshToken) -> User:
        user = self._users.find(record.user_id)
        if user is None or user.disabled:
            raise Unauthenticated(SESSION_ENDED, reason="SESSION_REVOKED")
        return user

    def _successor(self, refresh_token: str) -> str:
        """The token that rotating `refresh_token` issues: unpredictable without the secret."""
        digest = hmac.digest(self._successor_key, refresh_token.encode(), "sha256")
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()  # the shape of token_urlsafe(32)

    def logout(self, refresh_token: str) -> None:
        """Idempotent: an unknown or already revoked token is not an error."""
        record = self._sessions.find(_hash_token(refresh_token))
        if record is not None:
            self.end_sessions(record.user_id, [record.family])

    def change_password(self, user_id: str, current: str, new: str, keep_family: str) -> None:
        user = self._users.find(user_id)
        if user is None or not self._hasher.verify(current, user.password_hash):
            # Not UNAUTHENTICATED: the token is fine, and clients refresh on that code.
            raise InvalidArgument.field("current_password", "is incorrect")
        self._users.update(
            user.id,
            {"password_hash": self._hasher.hash(new), "update_time": now()},
            event=password_changed(user.email, user.name),  # the "your password was changed" notice
        )
        others = [family for family in self._sessions.families(user.id) if family != keep_family]
        self.end_sessions(user.id, others)

    def end_sessions(self, user_id: str, families: list[str]) -> None:
        """End `user_id`'s sessions `families` (the cache keys them by user)."""
        self._sessions.revoke_families(families)
        self._session_cache.revoke(user_id, families)
        if self._session_state is not None:
            self._session_state.publish_revoked(user_id, families)

    def forget_user_sessions(self, user_id: str, families: list[str], user: User | None = None) -> None:
        """Make the next call of these sessions re-read the account: `user` as it is now (a
        role change), or None: the account is gone, and so are its sessions."""
        self._session_cache.recheck(user_id, families)
        if self._session_state is not None:
            if user is None:
                self._session_state.publish_revoked(user_id, families)
            else:
                self._session_state.publish_live(families, user.id, user.role)

    def _publish(self, family: str, user: User) -> None:
        if self._session_state is not None:
            self._session_state.publish_live([family], user.id, user.role)

    def _start_session(self, user: User, family: str) -> Session:
        """A new family's first pair (sign-up, sign-in): a random refresh token."""
        refresh_token = secrets.token_urlsafe(32)
        self._insert_token(refresh_token, family, user, now())
        self._publish(family, user)
        return Session(
            access_token=self._tokens.issue(user, family),
            refresh_token=refresh_token,
            expires_in=self._tokens.ttl,
            user=user,
        )

    def _insert_token(self, refresh_token: str, family: str, user: User, moment: datetime) -> bool:
        return self._sessions.insert(
            token_hash=_hash_token(refresh_token),
            family=family,
            user_id=user.id,
            create_time=moment,
            expire_time=moment + self._refresh_ttl,
        )

    def _session(self, user: User, family: str, refresh_token: str, issued: datetime) -> Session:
        """The pair a rotation issued at `issued`: rebuilt identically from the same inputs."""
        issued_at = int(issued.replace(tzinfo=UTC).timestamp())
        self._publish(family, user)
        jti = hmac.digest(self._successor_key, b"jti:" + refresh_token.encode(), "sha256").hex()[:32]
        return Session(
            access_token=self._tokens.issue(user, family, issued=issued_at, jti=jti),
            refresh_token=refresh_token,
            expires_in=max(1, issued_at + self._tokens.ttl - int(time.time())),
            user=user,
        )
