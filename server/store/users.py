"""Accounts in MongoDB: the domain's UserStore."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

import mongoengine as me

from taskapi.server.domain.entities import NewUser, User
from taskapi.server.store.documents import RefreshTokenDoc, TaskDoc, UserDoc
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


class MongoUserStore:
    def find(self, user_id: str) -> User | None:
        oid = object_id(user_id)
        doc = UserDoc.objects(id=oid).first() if oid else None
        return to_user(doc) if doc is not None else None

    def find_by_email(self, email: str) -> User | None:
        # A lowercased key field: mongomock has no collations.
        doc = UserDoc.objects(email_key=email.lower()).first()
        return to_user(doc) if doc is not None else None

    def insert(self, user: NewUser) -> User | None:
        doc = UserDoc(
            email=user.email,
            email_key=user.email.lower(),
            name=user.name,
            password_hash=user.password_hash,
            role=user.role,
            disabled=False,
            create_time=user.create_time,
            update_time=user.create_time,
        )
        try:
            doc.save(force_insert=True)
        except me.NotUniqueError:  # the email is taken
            return None
        return to_user(doc)

    def update(self, user_id: str, changes: dict[str, Any]) -> User | None:
        oid = object_id(user_id)
        if oid is None:
            return None
        doc = UserDoc.objects(id=oid).modify(new=True, **{f"set__{k}": v for k, v in changes.items()})
        return to_user(doc) if doc is not None else None

    def delete_cascade(self, user_id: str) -> list[str]:
        oid = object_id(user_id)
        if oid is None:
            return []
        families: list[str] = list(RefreshTokenDoc.objects(user_id=oid).distinct("family"))
        TaskDoc.objects(owner=oid).delete()
        RefreshTokenDoc.objects(user_id=oid).delete()
        UserDoc.objects(id=oid).delete()
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
        page = [to_user(doc) for doc in UserDoc.objects(__raw__=query).order_by("create_time", "id").limit(limit)]
        return page, total
