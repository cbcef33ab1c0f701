"""Accounts and sessions: sign-up, sign-in, rotating refresh tokens, sign-out.

A session is a refresh-token *family*: each Refresh rotates the token within the
family, presenting a rotated token again revokes the whole family (it was
stolen, or the client is broken), and Logout revokes it. Access tokens carry the
family id (`sid`), so ending a session also ends its access tokens: `Sessions`
checks the session is live on every call (the shared cache, else the store).
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import uuid
from dataclasses import dataclass
from datetime import timedelta

from taskapi.server.domain.caller import ROLE_USER
from taskapi.server.domain.entities import NewUser, User, now
from taskapi.server.domain.errors import AlreadyExists, InvalidArgument, Unauthenticated
from taskapi.server.domain.passwords import PasswordHasher
from taskapi.server.domain.ports import SessionCache, SessionStore, UserStore
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
    ) -> None:
        self._users = users
        self._sessions = sessions
        self._session_cache = session_cache
        self._hasher = hasher
        self._tokens = tokens
        self._refresh_ttl = timedelta(seconds=refresh_ttl_seconds)

    def register(self, email: str, password: str, name: str, *, role: str = ROLE_USER) -> Session:
        user = self.create_user(email, password, name, role=role)
        return self._start_session(user, family=uuid.uuid4().hex)

    def create_user(self, email: str, password: str, name: str, *, role: str = ROLE_USER) -> User:
        new = NewUser(email=email, name=name, password_hash=self._hasher.hash(password), role=role, create_time=now())
        user = self._users.insert(new)
        if user is None:
            raise AlreadyExists("an account with this email already exists", reason="EMAIL_TAKEN")
        return user

    def login(self, email: str, password: str) -> Session:
        user = self._users.find_by_email(email)
        # The hash check runs even for unknown emails: same answer, same time.
        valid = self._hasher.verify(password, user.password_hash if user else None)
        if user is None or not valid or user.disabled:
            raise Unauthenticated(LOGIN_FAILED, reason="LOGIN_FAILED")
        return self._start_session(user, family=uuid.uuid4().hex)

    def refresh(self, refresh_token: str) -> Session:
        record = self._sessions.find(_hash_token(refresh_token))
        if record is None or record.revoked or record.expire_time <= now():
            raise Unauthenticated("the refresh token is invalid or expired", reason="REFRESH_INVALID")
        if record.rotated or not self._sessions.mark_rotated(record.id):
            self.end_sessions([record.family])
            log.warning("refresh token reuse: revoked session family of user %s", record.user_id)
            raise Unauthenticated("the refresh token was already used; the session is revoked", reason="REFRESH_REUSED")
        user = self._users.find(record.user_id)
        if user is None or user.disabled:
            raise Unauthenticated(SESSION_ENDED, reason="SESSION_REVOKED")
        session = self._start_session(user, family=record.family)
        if self._sessions.family_revoked(record.family):  # a logout raced us: our new token must die with it
            self.end_sessions([record.family])
            raise Unauthenticated(SESSION_ENDED, reason="SESSION_REVOKED")
        return session

    def logout(self, refresh_token: str) -> None:
        """Idempotent: an unknown or already revoked token is not an error."""
        record = self._sessions.find(_hash_token(refresh_token))
        if record is not None:
            self.end_sessions([record.family])

    def change_password(self, user_id: str, current: str, new: str, keep_family: str) -> None:
        user = self._users.find(user_id)
        if user is None or not self._hasher.verify(current, user.password_hash):
            # Not UNAUTHENTICATED: the token is fine, and clients refresh on that code.
            raise InvalidArgument.field("current_password", "is incorrect")
        self._users.update(user.id, {"password_hash": self._hasher.hash(new), "update_time": now()})
        others = [family for family in self._sessions.families(user.id) if family != keep_family]
        self.end_sessions(others)

    def end_sessions(self, families: list[str]) -> None:
        self._sessions.revoke_families(families)
        self._session_cache.revoke(families)

    def forget_user_sessions(self, families: list[str]) -> None:
        """Make the next call of these sessions re-read the account (role change, deletion)."""
        self._session_cache.recheck(families)

    def _start_session(self, user: User, family: str) -> Session:
        refresh_token = secrets.token_urlsafe(32)
        moment = now()
        self._sessions.insert(
            token_hash=_hash_token(refresh_token),
            family=family,
            user_id=user.id,
            create_time=moment,
            expire_time=moment + self._refresh_ttl,
        )
        return Session(
            access_token=self._tokens.issue(user, family),
            refresh_token=refresh_token,
            expires_in=self._tokens.ttl,
            user=user,
        )
