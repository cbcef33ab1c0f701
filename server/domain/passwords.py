"""Password hashing with bcrypt, kept from starving the server.

bcrypt at cost 12 burns ~230 ms of CPU (it releases the GIL while it does). Two
limits keep a burst of sign-ins from taking the server down with it:
- at most `concurrency` hashes run at once, leaving cores for every other call;
- at most `max_waiting` calls queue for a slot; past that the call is refused
  with UNAVAILABLE and a retry delay instead of holding one more worker thread.

`load()` reports how many hashes run and wait, and how many calls were refused since the
start, for /metrics (the wiring turns them into taskapi_password_hashing_* metrics).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager

import bcrypt

from taskapi.server.domain.errors import InvalidArgument, Unavailable

MIN_PASSWORD_BYTES = 8  # the proto rule for requests; the CLI checks it too
MAX_PASSWORD_BYTES = 72  # bcrypt ignores what follows; we reject instead of truncating


def waiting_allowed(workers: int, concurrency: int) -> int:
    """How many password checks may queue for a slot so that, running and waiting together,
    they hold at most half of a server's `workers` threads: the rest serve every other call."""
    return max(0, workers // 2 - concurrency)


class PasswordHasher:
    def __init__(
        self,
        *,
        rounds: int,
        concurrency: int,
        max_waiting: int = 8,
        hashing_context: Callable[[], AbstractContextManager[None]] = contextlib.nullcontext,
    ) -> None:
        self._rounds = rounds
        # Entered around each hash, on the thread doing it (the wiring keeps it off the CPUs
        # that serve calls when the process is pinned: server/affinity.py).
        self._hashing_context = hashing_context
        self._slots = threading.BoundedSemaphore(concurrency)
        self._waiting = threading.BoundedSemaphore(concurrency + max_waiting)
        # For load(): holders of a waiting permit (running or queued), running, refused.
        self._lock = threading.Lock()
        self._held = self._running = self._refused = 0
        # Checked against for unknown emails, so a miss costs what a hit costs.
        self._dummy_hash = bcrypt.hashpw(b"timing-equalizer", bcrypt.gensalt(rounds))

    def hash(self, password: str) -> str:
        secret = password.encode()
        if len(secret) > MAX_PASSWORD_BYTES:
            raise InvalidArgument.field("password", f"must be at most {MAX_PASSWORD_BYTES} bytes")
        with self._slot(), self._hashing_context():
            return bcrypt.hashpw(secret, bcrypt.gensalt(self._rounds)).decode()

    def verify(self, password: str, password_hash: str | None) -> bool:
        """Constant work whether or not the user exists (`password_hash=None`)."""
        secret = password.encode()
        acceptable = password_hash is not None and len(secret) <= MAX_PASSWORD_BYTES
        stored = password_hash.encode() if password_hash is not None and acceptable else self._dummy_hash
        with self._slot(), self._hashing_context():
            matches = bcrypt.checkpw(secret[:MAX_PASSWORD_BYTES], stored)
        return matches and acceptable

    def load(self) -> tuple[int, int, int]:
        """(running, waiting for a slot, refused since start)."""
        with self._lock:
            return self._running, self._held - self._running, self._refused

    def _count(self, *, held: int = 0, running: int = 0, refused: int = 0) -> None:
        with self._lock:
            self._held += held
            self._running += running
            self._refused += refused

    def _slot(self) -> _Slot:
        if not self._waiting.acquire(blocking=False):
            self._count(refused=1)
            raise Unavailable(
                "the server is busy checking passwords; retry shortly",
                retry_after_seconds=1.0,
                nothing_done=True,
                reason="PASSWORD_HASHING_BUSY",
            )
        self._count(held=1)
        return _Slot(self)


class _Slot:
    def __init__(self, hasher: PasswordHasher) -> None:
        self._hasher = hasher

    def __enter__(self) -> None:
        self._hasher._slots.acquire()
        self._hasher._count(running=1)

    def __exit__(self, *exc: object) -> None:
        self._hasher._count(held=-1, running=-1)
        self._hasher._slots.release()
        self._hasher._waiting.release()
