"""Events: what happened to an account, for the work that runs off the request path.

An event is recorded by the same store write as the change it describes (the outbox), so
there is never a change without its event or an event without its change; a relay hands
recorded events to the job queue and `taskapi worker` handles them (docs/background-work.md).
The shape is general, the CloudEvents attributes by other names: `id` (also the delivery key
that makes handling idempotent), `type`, `subject` (the id of the resource it is about),
`occur_time` and a `payload` of strings.

    user.registered        payload: email, name   -> a welcome email
    user.password_changed  payload: email, name   -> a "your password was changed" notice
    user.deleted           payload: (none)        -> the user's tasks are removed (by the task side)
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime

from taskapi.server.domain.entities import now

USER_REGISTERED = "user.registered"
PASSWORD_CHANGED = "user.password_changed"
USER_DELETED = "user.deleted"
EVENT_TYPES = (USER_REGISTERED, PASSWORD_CHANGED, USER_DELETED)

# Deletion events get ids derived from the user id: a retried DeleteUser records the same one.
_DELETION_IDS = uuid.UUID("5f0b6a43-3c0e-4c1e-9a57-0f6c2b1f8d11")


@dataclass(frozen=True, kw_only=True)
class NewEvent:
    """An event to record with a write. Its subject is the document that write is about,
    which the store names (a new user has no id before it is inserted)."""

    id: str
    type: str
    occur_time: datetime
    # Personal data (an address, a name) only where the handler needs it, never in a log line.
    payload: dict[str, str] = field(default_factory=dict, repr=False)
    # The W3C traceparent of the call that recorded it ("" untraced): the job that handles
    # the event continues that trace. Set by the store, which records it with the event.
    trace_parent: str = ""


@dataclass(frozen=True, kw_only=True)
class Event(NewEvent):
    """A recorded event, as the relay reads it back."""

    subject: str


def user_registered(email: str, name: str) -> NewEvent:
    return _addressed(USER_REGISTERED, email, name)


def password_changed(email: str, name: str) -> NewEvent:
    return _addressed(PASSWORD_CHANGED, email, name)


def _addressed(event_type: str, email: str, name: str) -> NewEvent:
    """An event whose handler writes to the user: their address and name, nothing else."""
    return NewEvent(id=uuid.uuid4().hex, type=event_type, occur_time=now(), payload={"email": email, "name": name})


def user_deleted(user_id: str) -> NewEvent:
    """No payload: the subject (the user id) is all a consumer needs, and the rest is gone."""
    return NewEvent(id=uuid.uuid5(_DELETION_IDS, user_id).hex, type=USER_DELETED, occur_time=now())
