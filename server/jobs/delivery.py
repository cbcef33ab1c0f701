"""Delivery keys: each job's handling of an event happens once, however often it is delivered.

The queue delivers at least once: a worker killed mid-job, a relay that queued an event
twice (it died between queueing and marking it sent), a dead letter retried by hand, all
deliver again. Each (job type, event id) has a key in Redis:

    running:{token}   an attempt holds it, for `lease_ms` (longer than a job may run)
    done              handled; kept RETENTION_SECONDS, far longer than any redelivery comes

An attempt claims the key atomically (SET NX) before it acts and marks it done right after;
a delivery finding `done` does nothing, one finding another attempt's lease waits it out.
No queue can close the window between acting and marking (docs/background-work.md): a
worker killed after the SMTP server accepted a message, before `done` was written, leaves
a lease that expires, and the email is sent again (with the same Message-ID). The key
narrows that window from the whole job to the moment between the server's reply and one
Redis write.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import redis

RETENTION_SECONDS = 30 * 24 * 3600
_DONE = b"done"
# Delete the key only if this attempt still holds it (its lease may have passed to another).
_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"


@dataclass(frozen=True)
class Claim:
    token: str | None  # this attempt holds the key: go ahead
    done: bool = False  # handled already: a duplicate, do nothing
    retry_ms: int = 0  # another attempt holds it this much longer


class DeliveryLedger:
    def __init__(self, client: redis.Redis, namespace: str, *, lease_ms: int) -> None:
        self._client = client
        self._namespace = namespace
        self._lease_ms = lease_ms
        self._release = client.register_script(_RELEASE)

    def key(self, delivery_key: str) -> str:
        return f"{self._namespace}:delivery:{delivery_key}"

    def claim(self, delivery_key: str) -> Claim:
        key = self.key(delivery_key)
        token = uuid.uuid4().hex
        for _ in range(3):  # the other holder's lease can end between our two reads
            if self._client.set(key, f"running:{token}", nx=True, px=self._lease_ms):
                return Claim(token)
            pipe = self._client.pipeline()
            pipe.get(key)
            pipe.pttl(key)
            value, ttl = pipe.execute()
            if value == _DONE:
                return Claim(None, done=True)
            if value is not None:
                return Claim(None, retry_ms=max(int(ttl), 100))
        return Claim(None, retry_ms=100)

    def done(self, delivery_key: str, job_type: str) -> None:
        pipe = self._client.pipeline(transaction=True)
        pipe.set(self.key(delivery_key), _DONE, ex=RETENTION_SECONDS)
        pipe.hincrby(f"{self._namespace}:succeeded", job_type, 1)  # for `taskapi jobs`
        pipe.execute()

    def release(self, delivery_key: str, token: str) -> None:
        """After a failed attempt: the retry may claim the key at once."""
        self._release(keys=[self.key(delivery_key)], args=[f"running:{token}"])

    def state(self, delivery_key: str) -> str | None:
        """`done`, `running:...` or None (never claimed, or forgotten)."""
        value = self._client.get(self.key(delivery_key))
        return value.decode() if isinstance(value, bytes) else None
