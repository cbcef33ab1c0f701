"""Events as job arguments: JSON, the shape the queue stores and every worker version reads."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from taskapi.server.domain.events import Event


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


def from_json(data: dict[str, Any]) -> Event:
    return Event(
        id=str(data["id"]),
        type=str(data["type"]),
        subject=str(data["subject"]),
        occur_time=datetime.fromisoformat(str(data["occur_time"]).removesuffix("Z")),
        payload={str(k): str(v) for k, v in dict(data.get("payload") or {}).items()},
        trace_parent=str(data.get("traceparent") or ""),
    )
