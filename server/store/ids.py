"""Ids at the store boundary: strings above it, ObjectIds in MongoDB."""

from __future__ import annotations

from bson import ObjectId
from pymongo import ReadPreference

# Session state and idempotency reads go to the primary whatever MONGODB_READ_PREFERENCE
# says: a lagging secondary could show a revoked session as live, or miss a task just created.
PRIMARY = ReadPreference.PRIMARY


def object_id(value: str) -> ObjectId | None:
    """The ObjectId for `value`, or None when it is not one (a malformed id finds nothing)."""
    return ObjectId(value) if ObjectId.is_valid(value) else None
