"""Events as job arguments: JSON, the shape the queue stores and every worker version reads."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from taskapi.server.domain.events import Event

# Far above any event this service records (ids are 32 hex digits, payloads an email and a
# name within the API's limits): a job argument beyond these was not written by this service.
_MAX_FIELD = 1024
_MAX_PAYLOAD_KEYS = 16


class MalformedEvent(ValueError):
    """A job argument that is not an event this service wrote. Its message names the field,
    never its value (a forged argument may carry anything)."""


def to_json(event: Event) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": event.id,
        "type": event.type,
        "subject": event.subject,
        "occur_time": event.occur_time.isoformat(timespec="milliseconds") + "Z",  # naive UTC in the store
        "payload": dict(event.payload),
    }
    if event.trace_parent:  # only when traced: older workers ignore the key
        data["traceparent"] = event.trace_parent
    return data


def from_json(data: object) -> Event:
    """The event in a job argument; raises MalformedEvent for anything else."""
    if not isinstance(data, dict):
        raise MalformedEvent("the job argument is not an object")
    payload = data.get("payload", {})
    if not isinstance(payload, dict) or len(payload) > _MAX_PAYLOAD_KEYS:
        raise MalformedEvent("payload: not an object of strings")
    try:
        occur_time = datetime.fromisoformat(_text(data, "occur_time").removesuffix("Z"))
    except ValueError:
        raise MalformedEvent("occur_time: not an ISO 8601 time") from None
    return Event(
        id=_text(data, "id"),
        type=_text(data, "type"),
        subject=_text(data, "subject"),
        occur_time=occur_time if occur_time.tzinfo is None else occur_time.astimezone(UTC).replace(tzinfo=None),
        payload={_checked(key, "payload"): _checked(value, key, empty=True) for key, value in payload.items()},
        # The trace of the call that recorded the event, if any (W3C traceparent; "" for none).
        trace_parent=_traceparent(data.get("traceparent")),
    )


def _text(data: dict[Any, Any], key: str) -> str:
    return _checked(data.get(key), key)


def _checked(value: object, name: str, *, empty: bool = False) -> str:
    if not isinstance(value, str) or len(value) > _MAX_FIELD or not (value or empty):
        raise MalformedEvent(f"{name}: not a string of at most {_MAX_FIELD} characters")
    return value


def _traceparent(value: object) -> str:
    """A W3C traceparent is 55 characters; anything else here starts no trace."""
    return value if isinstance(value, str) and len(value) <= 64 else ""
