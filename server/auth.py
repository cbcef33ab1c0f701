"""Accounts and sessions: passwords, JWT access tokens, rotating refresh tokens.

A session is a refresh-token *family*: each Refresh rotates the token within the
family, presenting a rotated token again revokes the whole family (it was
stolen, or the client is broken), and Logout revokes it. Access tokens carry the
family id (`sid`), so ending a session also ends its access tokens: the
Authenticator checks the session is live on every call, through a short-lived
Redis entry, or the store when Redis has none.

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

import jwt
from bson import ObjectId

from interceptors.context import ROLE_ADMIN, ROLE_USER, Caller, prefetched
from interceptors.errors import AlreadyExists, InvalidArgument, Unauthenticated, Unavailable
from interceptors.policy import LOGIN_FAILED_REASON
from server import store
from server.config import Settings
from server.passwords import PasswordHasher
from server.shared_cache import SharedCache

log = logging.getLogger(__name__)

ALGORITHM = "HS256"  # pinned: the decoder accepts nothing else (no "none", no key confusion)
LOGIN_FAILED = "email or password is incorrect"
SESSION_ENDED = "the session has ended; sign in again"
LIVE_SESSION_TTL = 60  # seconds a "session is live" answer is trusted from Redis
VERIFIED_TOKENS_CACHED = 10_000


def now() -> datetime:
    """Store times are naive UTC with millisecond precision (what BSON keeps)."""
    moment = datetime.now(UTC).replace(tzinfo=None)
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def _hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Session:
    access_token: str
    refresh_token: str
    expires_in: int
    user: store.UserDoc


class Tokens:
    """Issues and verifies access tokens."""

    def __init__(self, settings: Settings) -> None:
        self._secret = settings.jwt_secret
        self._issuer = settings.jwt_issuer
        self._audience = settings.jwt_audience
        self.ttl = settings.access_token_ttl_seconds
        self._verified: dict[str, tuple[Caller, float]] = {}

    def issue(self, user: store.UserDoc, family: str, *, issued: int | None = None, jti: str | None = None) -> str:
        """A signed access token; the same arguments give the same token (HS256 is deterministic)."""
        issued = int(datetime.now(UTC).timestamp()) if issued is None else issued
        claims = {
            "sub": str(user.id),
            "role": user.role,
            "sid": family,
            "jti": jti or uuid.uuid4().hex,
            "iat": issued,
            "exp": issued + self.ttl,
            "iss": self._issuer,
            "aud": self._audience,
        }
        return jwt.encode(claims, self._secret, algorithm=ALGORITHM)

    def verify(self, token: str) -> Caller:
        """The caller a valid token names. Verified tokens are remembered until they expire:
        a client sends the same token on every call, and the signature check costs ~50 µs.
        Revocation is not decided here (see Authenticator.confirm), so caching is safe."""
        hit = self._verified.get(token)
        if hit is not None and hit[1] > time.time():
            return hit[0]
        caller, expires = self._decode(token)
        if len(self._verified) >= VERIFIED_TOKENS_CACHED:
            self._verified.clear()  # crude but bounded; refills with the live tokens at once
        self._verified[token] = (caller, expires)
        return caller

    def _decode(self, token: str) -> tuple[Caller, float]:
        try:
            claims = jwt.decode(
                token,
                self._secret,
                algorithms=[ALGORITHM],
                audience=self._audience,
                issuer=self._issuer,
                options={"require": ["sub", "sid", "role", "exp", "iat", "iss", "aud", "jti"]},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("the access token has expired", reason="TOKEN_EXPIRED") from None
        except jwt.InvalidTokenError:
            raise Unauthenticated("the access token is invalid", reason="TOKEN_INVALID") from None
        if claims["role"] not in (ROLE_USER, ROLE_ADMIN) or not ObjectId.is_valid(claims["sub"]):
            raise Unauthenticated("the access token is invalid", reason="TOKEN_INVALID")
        caller = Caller(user_id=claims["sub"], role=claims["role"], session_id=claims["sid"], issued_at=claims["iat"])
        return caller, float(claims["exp"])


# Redis holds, per session, "<user id>:<role>" (live, as of the store), "revoked", or
# "recheck:<nonce>" (re-read the store). A fill replaces only the value its reader saw,
# so a store read that raced a revocation can never overwrite the "revoked" marker.
_REVOKED = b"revoked"
_RECHECK = b"recheck:"
_FILL_SESSION = """
local current = redis.call('GET', KEYS[1]) or ''
if current ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
return 1
"""


class Authenticator:
    """The auth interceptors' hooks: verify the token, then confirm its session is live."""

    def __init__(self, tokens: Tokens, cache: SharedCache) -> None:
        self._tokens = tokens
        self._cache = cache
        self._fill = cache.script(_FILL_SESSION)

    def authenticate(self, token: str) -> Caller:
        return self._tokens.verify(token)

    @staticmethod
    def prefetch(caller: Caller) -> tuple[str, ...]:
        """The Redis read `confirm` needs, for the rate limiter's round trip."""
        return ("GET", live_session_key(caller.session_id))

    def confirm(self, caller: Caller) -> Caller:
        command = self.prefetch(caller)
        have, cached = prefetched(command)
        if not have:
            result = self._cache.run(lambda pipe: pipe.get(command[1]))
            cached = result[0] if result else None
        if cached == _REVOKED:
            raise Unauthenticated(SESSION_ENDED, reason="SESSION_REVOKED")
        if cached is not None and not cached.startswith(_RECHECK):
            user_id, role = cached.decode().split(":")
        else:
            user_id, role = self._live_session_from_store(caller)
            value = f"{user_id}:{role}"
            self._cache.call_script(self._fill, [command[1]], [cached or b"", value, LIVE_SESSION_TTL])
        if user_id != caller.user_id:
            raise Unauthenticated(SESSION_ENDED, reason="SESSION_REVOKED")
        # The role is the account's current one, not the one minted into the token.
        return Caller(user_id=user_id, role=role, session_id=caller.session_id, issued_at=caller.issued_at)

    @staticmethod
    def _live_session_from_store(caller: Caller) -> tuple[str, str]:
        user = store.find_user(caller.user_id)
        if user is None or user.disabled or not store.family_is_live(caller.session_id, user.id):
            raise Unauthenticated(SESSION_ENDED, reason="SESSION_REVOKED")
        return str(user.id), user.role


def live_session_key(family: str) -> str:
    return f"taskapi:session:{family}"


class Accounts:
    """Register, sign in, rotate and end sessions."""

    def __init__(self, settings: Settings, hasher: PasswordHasher, tokens: Tokens, cache: SharedCache) -> None:
        self._hasher = hasher
        self._tokens = tokens
        self._cache = cache
        self._refresh_ttl = timedelta(seconds=settings.refresh_token_ttl_seconds)
        self._reuse_grace = timedelta(seconds=settings.refresh_reuse_grace_seconds)
        # A key of its own for deriving successors, so no other use of JWT_SECRET can produce one.
        self._successor_key = hmac.digest(settings.jwt_secret.encode(), b"taskapi refresh-token successor", "sha256")

    def register(self, email: str, password: str, name: str, *, role: str = ROLE_USER) -> Session:
        user = self.create_user(email, password, name, role=role)
        return self._start_session(user, family=uuid.uuid4().hex)

    def create_user(self, email: str, password: str, name: str, *, role: str = ROLE_USER) -> store.UserDoc:
        moment = now()
        user = store.UserDoc(
            email=email,
            email_key=email.lower(),
            name=name,
            password_hash=self._hasher.hash(password),
            role=role,
            disabled=False,
            create_time=moment,
            update_time=moment,
        )
        if not store.insert_user(user):
            raise AlreadyExists("an account with this email already exists", reason="EMAIL_TAKEN")
        return user

    def login(self, email: str, password: str) -> Session:
        user = store.find_user_by_email(email)
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
            record = store.find_refresh_token(_hash_token(refresh_token))
            if record is None or record.revoked or record.expire_time <= now():
                raise Unauthenticated("the refresh token is invalid or expired", reason="REFRESH_INVALID")
            issued = store.find_refresh_token(_hash_token(successor))
            if issued is not None:  # rotated already: a second tab, or a replayed stolen token
                return self._replay(record, issued, successor)
            if record.rotated:  # rotated to a successor we cannot derive (an older token scheme)
                self._reused(record)
            user = self._live_user(record)
            moment = now()
            if store.insert_refresh_token(self._token_doc(successor, record.family, user, moment)):
                store.mark_rotated(record.id)  # informational: the successor's existence is the rotation
                session = self._session(user, record.family, successor, moment)
                if store.family_revoked(record.family):  # a logout raced us: our new token must die with it
                    self.end_sessions([record.family])
                    raise Unauthenticated(SESSION_ENDED, reason="SESSION_REVOKED")
                return session
        raise Unavailable("the session is being refreshed concurrently; retry", nothing_done=True)

    def _replay(self, record: store.RefreshTokenDoc, issued: store.RefreshTokenDoc, successor: str) -> Session:
        """The pair the rotation of `record` issued, within the grace window; after it, reuse."""
        if issued.family != record.family or now() - issued.create_time >= self._reuse_grace:
            self._reused(record)
        return self._session(self._live_user(record), record.family, successor, issued.create_time)

    def _reused(self, record: store.RefreshTokenDoc) -> NoReturn:
        self.end_sessions([record.family])
        log.warning("refresh token reuse: revoked session family of user %s", record.user_id)
        raise Unauthenticated("the refresh token was already used; the session is revoked", reason="REFRESH_REUSED")

    @staticmethod
    def _live_user(record: store.RefreshTokenDoc) -> store.UserDoc:
        user = store.find_user(str(record.user_id))
        if user is None or user.disabled:
            raise Unauthenticated(SESSION_ENDED, reason="SESSION_REVOKED")
        return user

    def _successor(self, refresh_token: str) -> str:
        """The token that rotating `refresh_token` issues: unpredictable without JWT_SECRET."""
        digest = hmac.digest(self._successor_key, refresh_token.encode(), "sha256")
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()  # the shape of token_urlsafe(32)

    def logout(self, refresh_token: str) -> None:
        """Idempotent: an unknown or already revoked token is not an error."""
        record = store.find_refresh_token(_hash_token(refresh_token))
        if record is not None:
            self.end_sessions([record.family])

    def change_password(self, user_id: str, current: str, new: str, keep_family: str) -> None:
        user = store.find_user(user_id)
        if user is None or not self._hasher.verify(current, user.password_hash):
            # Not UNAUTHENTICATED: the token is fine, and clients refresh on that code.
            raise InvalidArgument.field("current_password", "is incorrect")
        store.update_user(user.id, {"password_hash": self._hasher.hash(new), "update_time": now()})
        others = [family for family in store.user_families(user.id) if family != keep_family]
        self.end_sessions(others)

    def end_sessions(self, families: list[str]) -> None:
        store.revoke_families(families)
        # The marker outlives any "live" entry (same TTL, set later), so no racing fill wins.
        self._cache.put({live_session_key(family): _REVOKED for family in families}, LIVE_SESSION_TTL)

    def forget_user_sessions(self, families: list[str]) -> None:
        """Make the next call of these sessions re-read the account (role change, deletion)."""
        marker = _RECHECK + secrets.token_hex(8).encode()
        self._cache.put({live_session_key(family): marker for family in families}, LIVE_SESSION_TTL)

    def _start_session(self, user: store.UserDoc, family: str) -> Session:
        """A new family's first pair (sign-up, sign-in): a random refresh token."""
        refresh_token = secrets.token_urlsafe(32)
        store.insert_refresh_token(self._token_doc(refresh_token, family, user, now()))
        return Session(
            access_token=self._tokens.issue(user, family),
            refresh_token=refresh_token,
            expires_in=self._tokens.ttl,
            user=user,
        )

    def _token_doc(
        self, refresh_token: str, family: str, user: store.UserDoc, moment: datetime
    ) -> store.RefreshTokenDoc:
        return store.RefreshTokenDoc(
            token_hash=_hash_token(refresh_token),
            family=family,
            user_id=user.id,
            create_time=moment,
            expire_time=moment + self._refresh_ttl,
        )

    def _session(self, user: store.UserDoc, family: str, refresh_token: str, issued: datetime) -> Session:
        """The pair a rotation issued at `issued`: rebuilt identically from the same inputs."""
        issued_at = int(issued.replace(tzinfo=UTC).timestamp())
        jti = hmac.digest(self._successor_key, b"jti:" + refresh_token.encode(), "sha256").hex()[:32]
        return Session(
            access_token=self._tokens.issue(user, family, issued=issued_at, jti=jti),
            refresh_token=refresh_token,
            expires_in=max(1, issued_at + self._tokens.ttl - int(time.time())),
            user=user,
        )
