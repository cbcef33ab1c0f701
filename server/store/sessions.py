"""Refresh tokens in MongoDB: the domain's SessionStore. Session state is always read from
the primary: a lagging secondary could show a revoked session as live, or miss a token
just rotated."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

import mongoengine as me
from bson import ObjectId

from taskapi.server.domain.entities import RefreshToken
from taskapi.server.store.documents import RefreshTokenDoc
from taskapi.server.store.ids import PRIMARY, object_id


def to_refresh_token(doc: RefreshTokenDoc) -> RefreshToken:
    return RefreshToken(
        id=str(doc.id),
        token_hash=doc.token_hash,
        family=doc.family,
        user_id=str(doc.user_id),
        rotated=bool(doc.rotated),
        revoked=bool(doc.revoked),
        expire_time=doc.expire_time,
        create_time=doc.create_time,
    )


class MongoSessionStore:
    def insert(
        self, *, token_hash: str, family: str, user_id: str, create_time: datetime, expire_time: datetime
    ) -> bool:
        doc = RefreshTokenDoc(
            token_hash=token_hash,
            family=family,
            user_id=ObjectId(user_id),
            create_time=create_time,
            expire_time=expire_time,
        )
        try:
            doc.save(force_insert=True)
        except me.NotUniqueError:  # a racing rotation inserted this very token
            return False
        return True

    def find(self, token_hash: str) -> RefreshToken | None:
        doc = RefreshTokenDoc.objects(token_hash=token_hash).read_preference(PRIMARY).first()
        return to_refresh_token(doc) if doc is not None else None

    def mark_rotated(self, token_id: str) -> bool:
        query = RefreshTokenDoc.objects(id=ObjectId(token_id), rotated=False, revoked=False)
        return bool(query.update_one(set__rotated=True) == 1)

    def revoke_families(self, families: Iterable[str]) -> None:
        families = list(families)
        if families:
            RefreshTokenDoc.objects(family__in=families).update(set__revoked=True)

    def families(self, user_id: str, *, live_only: bool = True) -> list[str]:
        oid = object_id(user_id)
        if oid is None:
            return []
        query = RefreshTokenDoc.objects(user_id=oid)
        if live_only:
            query = query.filter(revoked=False)
        return list(query.distinct("family"))

    def family_revoked(self, family: str) -> bool:
        """Revocation marks every token of the family, so one revoked token means a revoked family."""
        return RefreshTokenDoc.objects(family=family, revoked=True).read_preference(PRIMARY).first() is not None

    def family_is_live(self, family: str, user_id: str) -> bool:
        oid = object_id(user_id)
        if oid is None:
            return False
        exists = RefreshTokenDoc.objects(family=family, user_id=oid).read_preference(PRIMARY).first() is not None
        return exists and not self.family_revoked(family)
