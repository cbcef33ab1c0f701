"""Accounts in MongoDB: the domain's UserStore."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime
from typing import Any

import mongoengine as me

from taskapi.server.domain.entities import NewUser, User
from taskapi.server.domain.events import NewEvent
from taskapi.server.store import audit
from taskapi.server.store.audit import StoreQuery
from taskapi.server.store.documents import OutboxDoc, PendingEventDoc, RefreshTokenDoc, UserDoc
from taskapi.server.store.ids import object_id


def to_user(doc: UserDoc) -> User:
    return User(
        id=str(doc.id),
        email=doc.email,
        name=doc.name,
        password_hash=doc.password_hash,
        role=doc.role,
        disabled=bool(doc.disabled),
        create_time=doc.create_time,
        update_time=doc.update_time,
    )


def pending_event(event: NewEvent, traceparent: str = "") -> PendingEventDoc:
    return PendingEventDoc(
        event_id=event.id,
        type=event.type,
        occur_time=event.occur_time,
        payload=event.payload,
        traceparent=traceparent or None,
    )


def _untraced() -> str:
    return ""


class MongoUserStore:
    def __init__(
        self, on_event: Callable[[], None] | None = None, *, traceparent: Callable[[], str] | None = None
    ) -> None:
        # Called after a write that recorded an event: this process's relay hands it out at once.
        self._on_event = on_event or (lambda: None)
        # The current trace context, recorded with each event (taskapi.server.tracing, when on).
        self._traceparent = traceparent or _untraced

    def find(self, user_id: str) -> User | None:
        oid = object_id(user_id)
        doc = UserDoc.objects(id=oid).first() if oid else None
        return to_user(doc) if doc is not None else None

    def find_by_email(self, email: str) -> User | None:
        # A lowercased key field: mongomock has no collations.
        doc = UserDoc.objects(email_key=email.lower()).first()
        return to_user(doc) if doc is not None else None

    def insert(self, user: NewUser, *, event: NewEvent | None = None) -> User | None:
        doc = UserDoc(
            email=user.email,
            email_key=user.email.lower(),
            name=user.name,
            password_hash=user.password_hash,
            role=user.role,
            disabled=False,
            create_time=user.create_time,
            update_time=user.create_time,
            pending_events=[pending_event(event, self._traceparent())] if event is not None else [],
        )
        try:
            doc.save(force_insert=True)  # the user and its event: one document, one atomic write
        except me.NotUniqueError:  # the email is taken
            return None
        if event is not None:
            self._on_event()
        return to_user(doc)

    def update(self, user_id: str, changes: dict[str, Any], *, event: NewEvent | None = None) -> User | None:
        oid = object_id(user_id)
        if oid is None:
            return None
        updates: dict[str, Any] = {f"set__{k}": v for k, v in changes.items()}
        if event is not None:
            updates["push__pending_events"] = pending_event(event, self._traceparent())  # in the same atomic update
        doc = UserDoc.objects(id=oid).modify(new=True, **updates)
        if doc is not None and event is not None:
            self._on_event()
        return to_user(doc) if doc is not None else None

    def delete_cascade(self, user_id: str, *, event: NewEvent | None = None) -> list[str]:
        oid = object_id(user_id)
        if oid is None:
            return []
        families: list[str] = list(RefreshTokenDoc.objects(user_id=oid).distinct("family"))
        if event is not None:
            # First, so no crash leaves a deleted user without its event. The relay hands it out
            # only once the user document is gone (store/outbox.py): a crash before the delete
            # below leaves the user in place, and the event is voided instead.
            OutboxDoc.objects(event_id=event.id).update_one(
                upsert=True,
                set__type=event.type,
                set__subject=user_id,
                set__occur_time=event.occur_time,
                set__payload=event.payload,
                set__traceparent=self._traceparent() or None,
                set__state="pending",
            )
        # The user first: from then on the event goes out. The tasks are the task service's
        # (a store of its own): its consumer of the event removes them.
        UserDoc.objects(id=oid).delete()
        RefreshTokenDoc.objects(user_id=oid).delete()
        if event is not None:
            self._on_event()
        return families

    def find_page(
        self, role: str | None, q: str, after: tuple[datetime, str] | None, limit: int
    ) -> tuple[list[User], int]:
        query: dict[str, Any] = {}
        if role:
            query["role"] = role
        if q:
            pattern = {"$regex": re.escape(q), "$options": "i"}
            query["$or"] = [{"email": pattern}, {"name": pattern}]
        total = UserDoc.objects(__raw__=query).count()
        if after is not None:
            time, last_id = after
            oid = object_id(last_id)
            query = {
                "$and": [query, {"$or": [{"create_time": {"$gt": time}}, {"create_time": time, "_id": {"$gt": oid}}]}]
            }
        audit.record(StoreQuery("users", "find", query, limit))
        page = [to_user(doc) for doc in UserDoc.objects(__raw__=query).order_by("create_time", "id").limit(limit)]
        return page, total
