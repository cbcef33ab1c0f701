"""Account management: the caller's own account, and every account for admins."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from taskapi.server.domain.accounts import Accounts
from taskapi.server.domain.caller import ROLE_USER, Caller
from taskapi.server.domain.entities import User, now
from taskapi.server.domain.errors import NotFound, PermissionDenied
from taskapi.server.domain.events import user_deleted
from taskapi.server.domain.page_tokens import PageTokens, query_digest
from taskapi.server.domain.ports import SessionStore, UserStore
from taskapi.server.domain.updates import UpdateRule

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
    users: list[User]
    next_page_token: str
    total_size: int


class Users:
    def __init__(
        self,
        users: UserStore,
        sessions: SessionStore,
        accounts: Accounts,
        page_tokens: PageTokens,
        *,
        local_task_cleanup: Callable[[str], None] | None = None,
    ) -> None:
        self._users = users
        self._sessions = sessions
        self._accounts = accounts
        self._page_tokens = page_tokens
        # The task side's cleanup, when this process serves tasks too (the single layout): a
        # deletion's tasks go at once. Either way the deletion event's consumer removes them.
        self._local_task_cleanup = local_task_cleanup

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
        """A partial update of `user_id` by the rule of domain/updates.py (AIP-134), limited to
        the fields `editable` by this caller (a field sent unchanged is not an edit)."""
        user = self._users.find(user_id)
        if user is None:
            raise NotFound(_NOT_FOUND)
        paths = USER_UPDATES.paths(mask, present, editable)
        changes = USER_UPDATES.changes(paths, values, user, editable)
        if not changes:
            return user
        changes["update_time"] = now()
        updated = self._users.update(user.id, changes)
        if updated is None:
            raise NotFound(_NOT_FOUND)
        if changes.get("disabled") and not user.disabled:
            self._accounts.end_sessions(user.id, self._sessions.families(user.id))
        elif "role" in changes:
            self._accounts.forget_user_sessions(user.id, self._sessions.families(user.id), updated)
        return updated

    def delete(self, caller: Caller, user_id: str) -> None:
        if user_id != caller.user_id and not caller.is_admin:
            raise PermissionDenied("only admins may delete other accounts", reason="ADMIN_ONLY")
        user = self._users.find(user_id)
        if user is None:
            raise NotFound(_NOT_FOUND)
        # The event lets the task side (its own service, with its own store) remove the tasks;
        # the sessions end now, so the user's tokens fail everywhere before that.
        families = self._users.delete_cascade(user.id, event=user_deleted(user.id))
        self._accounts.forget_user_sessions(user.id, families)
        if self._local_task_cleanup is not None:
            self._local_task_cleanup(user.id)

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
