"""Access tokens: short-lived HS256 JWTs naming the caller and their session."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime

import jwt

from taskapi.server.domain.caller import ROLES, Caller
from taskapi.server.domain.entities import User
from taskapi.server.domain.errors import Unauthenticated

ALGORITHM = "HS256"  # pinned: the decoder accepts nothing else (no "none", no key confusion)
VERIFIED_TOKENS_CACHED = 10_000
_HEX = frozenset("0123456789abcdef")


class Tokens:
    """Issues and verifies access tokens."""

    def __init__(self, *, secret: str, issuer: str, audience: str, ttl_seconds: int) -> None:
        self._secret = secret
        self._issuer = issuer
        self._audience = audience
        self.ttl = ttl_seconds
        self._verified: dict[str, tuple[Caller, float]] = {}

    def issue(self, user: User, family: str, *, issued: int | None = None, jti: str | None = None) -> str:
        """A signed access token; the same arguments give the same token (HS256 is deterministic)."""
        issued = int(datetime.now(UTC).timestamp()) if issued is None else issued
        claims = {
            "sub": user.id,
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
        Revocation is not decided here (see Sessions.confirm), so caching is safe."""
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
        subject = claims["sub"]
        # A user id is 24 hex digits (the store's id format): anything else was never issued by us.
        if claims["role"] not in ROLES or not (
            isinstance(subject, str) and len(subject) == 24 and set(subject) <= _HEX
        ):
            raise Unauthenticated("the access token is invalid", reason="TOKEN_INVALID")
        caller = Caller(user_id=subject, role=claims["role"], session_id=claims["sid"], issued_at=claims["iat"])
        return caller, float(claims["exp"])
