"""Account management: the caller's own account, and every account for admins."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from interceptors.context import ROLE_USER, Caller
from interceptors.errors import NotFound, PermissionDenied
from server import store
from server.auth import Accounts, now
from server.page_tokens import PageTokens, query_digest
from server.task_cache import TaskCache
from server.updates import UpdateRule

DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE = 20, 100
SELF_EDITABLE = ("name",)
ADMIN_EDITABLE = ("name", "role", "disabled")
# A masked field the body leaves out is reset to these; name has none (it is required).
USER_UPDATES = UpdateRule(
    resource="user",
    type_name="User",
    fields=ADMIN_EDITABLE,
    defaults={"role": ROLE_USER, "disabled": False},
    output_only=frozenset({"id", "email", "create_time", "update_time"}),
)
_NOT_FOUND = "user not found"


@dataclass(frozen=True)
class UserPage:
    users: list[store.UserDoc]
    next_page_token: str
    total_size: int


class Users:
    def __init__(self, accounts: Accounts, task_cache: TaskCache, page_tokens: PageTokens) -> None:
        self._accounts = accounts
        self._task_cache = task_cache
        self._page_tokens = page_tokens

    def get(self, caller: Caller, user_id: str) -> store.UserDoc:
        if user_id != caller.user_id and not caller.is_admin:
            raise PermissionDenied("only admins may read other accounts", reason="ADMIN_ONLY")
        user = store.find_user(user_id)
        if user is None:
            raise NotFound(_NOT_FOUND)
        return user

    def update(
        self,
        user_id: str,
        values: dict[str, Any],
        present: set[str],
        mask: list[str] | None,
        *,
        editable: tuple[str, ...],
    ) -> store.UserDoc:
        """A partial update of `user_id` by the rule of server/updates.py (AIP-134), limited to
        the fields `editable` by this caller (a field sent unchanged is not an edit)."""
        user = store.find_user(user_id)
        if user is None:
            raise NotFound(_NOT_FOUND)
        paths = USER_UPDATES.paths(mask, present, editable)
        changes = USER_UPDATES.changes(paths, values, user, editable)
        if not changes:
            return user
        changes["update_time"] = now()
        updated = store.update_user(user.id, changes)
        if updated is None:
            raise NotFound(_NOT_FOUND)
        if changes.get("disabled") and not user.disabled:
            self._accounts.end_sessions(store.user_families(user.id))
        elif "role" in changes:
            self._accounts.forget_user_sessions(store.user_families(user.id))
        return updated

    def delete(self, caller: Caller, user_id: str) -> None:
        if user_id != caller.user_id and not caller.is_admin:
            raise PermissionDenied("only admins may delete other accounts", reason="ADMIN_ONLY")
        user = store.find_user(user_id)
        if user is None:
            raise NotFound(_NOT_FOUND)
        families = store.delete_user_cascade(user.id)
        self._accounts.forget_user_sessions(families)
        self._task_cache.invalidate(user_id)

    def list(self, caller: Caller, role: str | None, q: str, page_size: int, page_token: str) -> UserPage:
        query: dict[str, Any] = {}
        if role:
            query["role"] = role
        if q:
            pattern = {"$regex": re.escape(q), "$options": "i"}
            query["$or"] = [{"email": pattern}, {"name": pattern}]
        digest = query_digest("users", caller.user_id, role, q)
        after = None
        if page_token:
            time, oid = self._page_tokens.decode(page_token, digest)
            after = (time, oid)
        limit = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        users, total = store.list_users(query, after, limit + 1)
        next_token = ""
        if len(users) > limit:
            users = users[:limit]
            next_token = self._page_tokens.encode([users[-1].create_time, users[-1].id], digest)
        return UserPage(users=users, next_page_token=next_token, total_size=total)
