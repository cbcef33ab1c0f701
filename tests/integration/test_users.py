"""UserService over a real channel: self-service, admin management, cascade delete."""

from __future__ import annotations

import functools

import grpc
import pytest
from google.protobuf import field_mask_pb2

from taskapi.server.app import App
from taskapi.v1 import auth_pb2, task_pb2, user_pb2
from tests.conftest import unique_email
from tests.integration.api import PASSWORD, Api, User, fails, violated_fields

U = user_pb2


@pytest.fixture
def api(channel: grpc.Channel) -> Api:
    return Api(channel)


@pytest.fixture
def admin(app: App, api: Api) -> User:
    email = unique_email("admin")
    app.accounts.create_user(email, PASSWORD, "Admin", role="ADMIN")
    session = api.auth.Login(auth_pb2.LoginRequest(email=email, password=PASSWORD))
    return User(session=session, email=email, password=PASSWORD)


def test_me_and_rename(api: Api) -> None:
    user = api.register()
    me = api.users.GetCurrentUser(U.GetCurrentUserRequest(), metadata=user.auth)
    assert (me.id, me.email, me.role) == (user.id, user.email, U.USER)
    renamed = api.users.UpdateCurrentUser(U.UpdateCurrentUserRequest(user=U.User(name="New Name")), metadata=user.auth)
    assert renamed.name == "New Name" and renamed.update_time.ToNanoseconds() >= me.update_time.ToNanoseconds()
    for request in (
        U.UpdateCurrentUserRequest(user=U.User(role=U.ADMIN)),
        U.UpdateCurrentUserRequest(user=U.User(name="x"), update_mask=field_mask_pb2.FieldMask(paths=["email"])),
        U.UpdateCurrentUserRequest(user=U.User(disabled=True)),
    ):
        error = fails(
            functools.partial(api.users.UpdateCurrentUser, request, metadata=user.auth),
            grpc.StatusCode.INVALID_ARGUMENT,
        )
        assert violated_fields(error) == {"update_mask"}
    assert api.users.GetCurrentUser(U.GetCurrentUserRequest(), metadata=user.auth).role == U.USER
    # Sending back what was read, with a new name, is fine: unchanged and output-only fields are no change.
    whole = api.users.GetCurrentUser(U.GetCurrentUserRequest(), metadata=user.auth)
    whole.name = "Third Name"
    again = api.users.UpdateCurrentUser(U.UpdateCurrentUserRequest(user=whole), metadata=user.auth)
    assert (again.name, again.email, again.role) == ("Third Name", user.email, U.USER)


def test_admin_only_rpcs_refuse_users(api: Api) -> None:
    user, other = api.register(), api.register()
    fails(lambda: api.users.ListUsers(U.ListUsersRequest(), metadata=user.auth), grpc.StatusCode.PERMISSION_DENIED)
    fails(
        lambda: api.users.UpdateUser(U.UpdateUserRequest(user=U.User(id=user.id, role=U.ADMIN)), metadata=user.auth),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    fails(
        lambda: api.users.GetUser(U.GetUserRequest(id=other.id), metadata=user.auth), grpc.StatusCode.PERMISSION_DENIED
    )
    fails(
        lambda: api.users.DeleteUser(U.DeleteUserRequest(id=other.id), metadata=user.auth),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    assert api.users.GetUser(U.GetUserRequest(id=user.id), metadata=user.auth).id == user.id


def test_admin_lists_and_pages_users(api: Api, admin: User) -> None:
    marker = unique_email("pager").split("@")[0]
    ids: list[str] = []
    for _ in range(5):
        email = f"{marker}-{len(ids)}@example.com"
        ids.append(api.auth.Register(auth_pb2.RegisterRequest(email=email, password=PASSWORD, name="P")).user.id)
    seen, token = [], ""
    while True:
        page = api.users.ListUsers(
            U.ListUsersRequest(q=marker.upper(), page_size=2, page_token=token), metadata=admin.auth
        )
        assert page.total_size == 5
        seen += [u.id for u in page.users]
        token = page.next_page_token
        if not token:
            break
    assert seen == ids
    admins = api.users.ListUsers(
        U.ListUsersRequest(role=U.ADMIN, q=admin.email, page_size=100), metadata=admin.auth
    ).users
    assert admin.session.user.id in {u.id for u in admins} and all(u.role == U.ADMIN for u in admins)


def test_admin_reads_any_task_but_changes_none(api: Api, admin: User) -> None:
    user = api.register()
    task = api.tasks.CreateTask(task_pb2.CreateTaskRequest(task=task_pb2.Task(title="private")), metadata=user.auth)
    assert api.tasks.GetTask(task_pb2.GetTaskRequest(id=task.id), metadata=admin.auth) == task
    listed = api.tasks.ListTasks(task_pb2.ListTasksRequest(owner=user.id), metadata=admin.auth)
    assert [t.id for t in listed.tasks] == [task.id]
    everyone = api.tasks.ListTasks(task_pb2.ListTasksRequest(owner="-", page_size=100), metadata=admin.auth)
    assert everyone.total_size >= 1
    fails(
        lambda: api.tasks.DeleteTask(task_pb2.DeleteTaskRequest(id=task.id), metadata=admin.auth),
        grpc.StatusCode.NOT_FOUND,
    )
    fails(
        lambda: api.tasks.UpdateTask(
            task_pb2.UpdateTaskRequest(task=task_pb2.Task(id=task.id, title="admin was here")), metadata=admin.auth
        ),
        grpc.StatusCode.NOT_FOUND,
    )
    assert api.tasks.GetTask(task_pb2.GetTaskRequest(id=task.id), metadata=user.auth) == task


def test_disabling_a_user_stops_their_tokens(api: Api, admin: User) -> None:
    user = api.register()
    assert api.users.GetCurrentUser(U.GetCurrentUserRequest(), metadata=user.auth).id == user.id
    disabled = api.users.UpdateUser(U.UpdateUserRequest(user=U.User(id=user.id, disabled=True)), metadata=admin.auth)
    assert disabled.disabled
    fails(
        lambda: api.users.GetCurrentUser(U.GetCurrentUserRequest(), metadata=user.auth), grpc.StatusCode.UNAUTHENTICATED
    )
    fails(
        lambda: api.auth.Login(auth_pb2.LoginRequest(email=user.email, password=PASSWORD)),
        grpc.StatusCode.UNAUTHENTICATED,
    )
    fails(
        lambda: api.auth.Refresh(auth_pb2.RefreshRequest(refresh_token=user.session.refresh_token)),
        grpc.StatusCode.UNAUTHENTICATED,
    )


def test_role_change_applies_at_once(api: Api, admin: User) -> None:
    user = api.register()
    fails(lambda: api.users.ListUsers(U.ListUsersRequest(), metadata=user.auth), grpc.StatusCode.PERMISSION_DENIED)
    promoted = api.users.UpdateUser(
        U.UpdateUserRequest(
            user=U.User(id=user.id, role=U.ADMIN, name="ignored"), update_mask=field_mask_pb2.FieldMask(paths=["role"])
        ),
        metadata=admin.auth,
    )
    assert promoted.role == U.ADMIN and promoted.name != "ignored"
    assert api.users.ListUsers(U.ListUsersRequest(page_size=1), metadata=user.auth).users


def test_delete_user_cascades(api: Api, admin: User) -> None:
    user = api.register()
    task = api.tasks.CreateTask(task_pb2.CreateTaskRequest(task=task_pb2.Task(title="gone soon")), metadata=user.auth)
    api.users.DeleteUser(U.DeleteUserRequest(id=user.id), metadata=admin.auth)
    fails(
        lambda: api.tasks.GetTask(task_pb2.GetTaskRequest(id=task.id), metadata=admin.auth), grpc.StatusCode.NOT_FOUND
    )
    fails(
        lambda: api.users.GetCurrentUser(U.GetCurrentUserRequest(), metadata=user.auth), grpc.StatusCode.UNAUTHENTICATED
    )
    fails(
        lambda: api.auth.Refresh(auth_pb2.RefreshRequest(refresh_token=user.session.refresh_token)),
        grpc.StatusCode.UNAUTHENTICATED,
    )
    fails(lambda: api.users.GetUser(U.GetUserRequest(id=user.id), metadata=admin.auth), grpc.StatusCode.NOT_FOUND)
    # Self-deletion works too, and the email is free again.
    again = api.auth.Register(auth_pb2.RegisterRequest(email=user.email, password=PASSWORD, name="Back"))
    me = again
    own = (("authorization", f"Bearer {me.access_token}"),)
    api.users.DeleteUser(U.DeleteUserRequest(id=me.user.id), metadata=own)
    fails(lambda: api.users.GetCurrentUser(U.GetCurrentUserRequest(), metadata=own), grpc.StatusCode.UNAUTHENTICATED)
    fails(lambda: api.users.GetUser(U.GetUserRequest(id=me.user.id), metadata=admin.auth), grpc.StatusCode.NOT_FOUND)


def mask(*paths: str) -> field_mask_pb2.FieldMask:
    return field_mask_pb2.FieldMask(paths=list(paths))


def test_admin_update_resets_masked_fields_the_body_leaves_out(api: Api, admin: User) -> None:
    """AIP-134, the same rule as for tasks: a field named in the mask but absent from the body is
    reset to its default (role USER, disabled false); `*` names every field; name has no default."""
    user = api.register()

    def update(body: U.User, *paths: str) -> U.User:
        request = U.UpdateUserRequest(user=body, update_mask=mask(*paths))
        return api.users.UpdateUser(request, metadata=admin.auth)

    update(U.User(id=user.id, role=U.ADMIN, disabled=True))
    assert update(U.User(id=user.id), "disabled").disabled is False
    promoted = update(U.User(id=user.id), "role")
    assert (promoted.role, promoted.disabled) == (U.USER, False)
    update(U.User(id=user.id, role=U.ADMIN, disabled=True))
    replaced = update(U.User(id=user.id, name="Replaced"), "*")
    assert (replaced.name, replaced.role, replaced.disabled) == ("Replaced", U.USER, False)
    for paths in (("*",), ("name",), ("name", "role")):
        error = fails(
            functools.partial(update, U.User(id=user.id, role=U.ADMIN), *paths), grpc.StatusCode.INVALID_ARGUMENT
        )
        assert violated_fields(error) == {"user.name"}
    assert api.users.GetUser(U.GetUserRequest(id=user.id), metadata=admin.auth) == replaced


def test_self_update_follows_the_same_mask_rule(api: Api) -> None:
    user = api.register()

    def update(body: U.User, *paths: str) -> U.User:
        request = U.UpdateCurrentUserRequest(user=body, update_mask=mask(*paths))
        return api.users.UpdateCurrentUser(request, metadata=user.auth)

    for paths in (("*",), ("name",)):
        error = fails(functools.partial(update, U.User(), *paths), grpc.StatusCode.INVALID_ARGUMENT)
        assert violated_fields(error) == {"user.name"}
    # `*` is every field the caller may edit: for one's own account, the name only.
    me = update(U.User(name="Star"), "*")
    assert (me.name, me.role, me.disabled) == ("Star", U.USER, False)
    error = fails(lambda: update(U.User(name="x"), "disabled"), grpc.StatusCode.INVALID_ARGUMENT)
    assert violated_fields(error) == {"update_mask"}


def test_an_update_that_changes_nothing_writes_nothing(api: Api, admin: User) -> None:
    user = api.register()
    me = api.users.GetCurrentUser(U.GetCurrentUserRequest(), metadata=user.auth)
    same = api.users.UpdateCurrentUser(
        U.UpdateCurrentUserRequest(user=U.User(name=me.name), update_mask=mask("name")), metadata=user.auth
    )
    assert same == me
    again = api.users.UpdateUser(U.UpdateUserRequest(user=me, update_mask=mask("*")), metadata=admin.auth)
    assert again == me
