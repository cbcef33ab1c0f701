"""Account management: the caller's own account, and every account for admins."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from taskapi.server.domain.accounts import Accounts
from taskapi.server.domain.caller import ROLE_USER, Caller
from taskapi.server.domain.entities import User, now
from taskapi.server.domain.errors import InvalidArgument, NotFound, PermissionDenied
from taskapi.server.domain.page_tokens import PageTokens, query_digest
from taskapi.server.domain.ports import SessionStore, TaskCacheInvalidation, UserStore

DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE = 20, 100
SELF_EDITABLE = ("name",)
ADMIN_EDITABLE = ("name", "role", "disabled")
USER_FIELDS = ("id", "email", "name", "role", "disabled", "create_time", "update_time")
_NOT_FOUND = "user not found"


@dataclass(frozen=True)
class UserPage:
    users: list[User]
    next_page_token: str
    total_size: int


class Users:
    def __init__(
        self,
        users: UserStore,
        sessions: SessionStore,
        accounts: Accounts,
        task_cache: TaskCacheInvalidation,
        page_tokens: PageTokens,
    ) -> None:
        self._users = users
        self._sessions = sessions
        self._accounts = accounts
        self._task_cache = task_cache
        self._page_tokens = page_tokens

    def get(self, caller: Caller, user_id: str) -> User:
        if user_id != caller.user_id and not caller.is_admin:
            raise PermissionDenied("only admins may read other accounts", reason="ADMIN_ONLY")
        user = self._users.find(user_id)
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
    ) -> User:
        """Change the fields of `user_id` that the request names, if all are `editable`.

        Without a mask, a field sent with its current value is not a change: a client may
        send back the User it read, with a new name, even where it may not edit the role.
        """
        user = self._users.find(user_id)
        if user is None:
            raise NotFound(_NOT_FOUND)
        if not mask:
            present = {path for path in present if values[path] != getattr(user, path)}
        paths = _paths(values, present, mask, editable)
        changes: dict[str, Any] = {path: values[path] for path in paths}
        if "role" in changes:
            changes["role"] = changes["role"] or ROLE_USER
        if not changes:
            return user
        changes["update_time"] = now()
        updated = self._users.update(user.id, changes)
        if updated is None:
            raise NotFound(_NOT_FOUND)
        if changes.get("disabled") and not user.disabled:
            self._accounts.end_sessions(self._sessions.families(user.id))
        elif "role" in changes and changes["role"] != user.role:
            self._accounts.forget_user_sessions(self._sessions.families(user.id))
        return updated

    def delete(self, caller: Caller, user_id: str) -> None:
        if user_id != caller.user_id and not caller.is_admin:
            raise PermissionDenied("only admins may delete other accounts", reason="ADMIN_ONLY")
        user = self._users.find(user_id)
        if user is None:
            raise NotFound(_NOT_FOUND)
        families = self._users.delete_cascade(user.id)
        self._accounts.forget_user_sessions(families)
        self._task_cache.invalidate(user_id)

    def list_page(self, caller: Caller, role: str | None, q: str, page_size: int, page_token: str) -> UserPage:
        digest = query_digest("users", caller.user_id, role, q)
        after = None
        if page_token:
            time, oid = self._page_tokens.decode(page_token, digest)
            after = (time, oid)
        limit = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        users, total = self._users.find_page(role or None, q, after, limit + 1)
        next_token = ""
        if len(users) > limit:
            users = users[:limit]
            next_token = self._page_tokens.encode([users[-1].create_time, users[-1].id], digest)
        return UserPage(users=users, next_page_token=next_token, total_size=total)


def _paths(values: dict[str, Any], present: set[str], mask: list[str] | None, editable: tuple[str, ...]) -> set[str]:
    if not mask:
        requested = present & set(ADMIN_EDITABLE)
    elif mask == ["*"]:
        requested = set(editable)
    else:
        requested = set()
        for raw in mask:
            path = re.sub(r"(?<!^)(?=[A-Z])", "_", raw).lower()  # JSON spelling -> proto path
            if path not in USER_FIELDS:
                raise InvalidArgument.field("update_mask", f"{raw!r} is not a field of User")
            requested.add(path)
    refused = sorted(requested - set(editable))
    if refused:
        raise InvalidArgument.field("update_mask", f"{', '.join(refused)} cannot be changed here")
    if "name" in requested and not values.get("name"):
        raise InvalidArgument.field("user.name", "must be 1 to 100 characters")
    return requested
