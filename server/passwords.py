"""Password hashing with bcrypt, kept from starving the server.

bcrypt at cost 12 burns ~230 ms of CPU while holding no lock Python cares about;
a semaphore caps how many run at once so that a burst of logins leaves worker
threads (and cores) for every other call.
"""

from __future__ import annotations

import threading

import bcrypt

from interceptors.errors import InvalidArgument

MAX_PASSWORD_BYTES = 72  # bcrypt ignores what follows; we reject instead of truncating


class PasswordHasher:
    def __init__(self, *, rounds: int, concurrency: int) -> None:
        self._rounds = rounds
        self._slots = threading.BoundedSemaphore(concurrency)
        # Checked against for unknown emails, so a miss costs what a hit costs.
        self._dummy_hash = bcrypt.hashpw(b"timing-equalizer", bcrypt.gensalt(rounds))

    def hash(self, password: str) -> str:
        secret = _encode(password, "password")
        with self._slots:
            return bcrypt.hashpw(secret, bcrypt.gensalt(self._rounds)).decode()

    def verify(self, password: str, password_hash: str | None) -> bool:
        """Constant work whether or not the user exists (`password_hash=None`)."""
        secret = password.encode()
        acceptable = password_hash is not None and len(secret) <= MAX_PASSWORD_BYTES
        stored = password_hash.encode() if acceptable else self._dummy_hash
        with self._slots:
            matches = bcrypt.checkpw(secret[:MAX_PASSWORD_BYTES], stored)
        return matches and acceptable


def _encode(password: str, field: str) -> bytes:
    secret = password.encode()
    if len(secret) > MAX_PASSWORD_BYTES:
        raise InvalidArgument.field(field, f"must be at most {MAX_PASSWORD_BYTES} bytes")
    return secret
