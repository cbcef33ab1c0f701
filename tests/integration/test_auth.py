"""AuthService and token handling over a real channel to a real server."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import jwt
import pytest

from taskapi.server import cli
from taskapi.server.app import App
from taskapi.server.cache.sessions import live_session_key
from taskapi.server.domain.entities import User as DomainUser
from taskapi.server.store.documents import RefreshTokenDoc
from taskapi.server.store.users import MongoUserStore
from taskapi.v1 import auth_pb2, task_pb2, user_pb2
from tests.conftest import TEST_SECRET, unique_email
from tests.integration.api import PASSWORD, Api, error_details, violated_fields


@pytest.fixture
def api(channel: grpc.Channel) -> Api:
    return Api(channel)


def _code(call: Callable[[], object]) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value.code()


def test_register_returns_a_session_without_secrets(api: Api) -> None:
    email = unique_email()
    session = api.auth.Register(auth_pb2.RegisterRequest(email=email, password=PASSWORD, name="Ann"))
    assert session.token_type == "Bearer" and session.expires_in == 900
    assert session.access_token and session.refresh_token
    assert session.user.email == email and session.user.role == user_pb2.USER and not session.user.disabled
    assert "hash" not in str(session.user).lower() and PASSWORD not in str(session)
    claims = jwt.decode(session.access_token, TEST_SECRET, algorithms=["HS256"], audience="taskapi")
    assert {"sub", "role", "jti", "iat", "exp", "iss", "aud", "sid"} <= claims.keys()
    assert claims["sub"] == session.user.id and claims["exp"] - claims["iat"] == 900


def test_email_is_unique_case_insensitively(api: Api) -> None:
    user = api.register()
    with pytest.raises(grpc.RpcError) as info:
        api.auth.Register(auth_pb2.RegisterRequest(email=user.email.upper(), password=PASSWORD, name="Dup"))
    assert info.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert error_details(info.value)["ErrorInfo"].reason == "EMAIL_TAKEN"


@pytest.mark.parametrize(
    ("password", "field"),
    [("short", "password"), ("x" * 73, "password"), ("é" * 37, "password")],  # 74 bytes in 37 characters
)
def test_password_limits_are_bytes_and_never_truncated(api: Api, password: str, field: str) -> None:
    with pytest.raises(grpc.RpcError) as info:
        api.auth.Register(auth_pb2.RegisterRequest(email=unique_email(), password=password, name="P"))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violated_fields(info.value) == {field}


def test_bad_fields_are_all_named(api: Api) -> None:
    with pytest.raises(grpc.RpcError) as info:
        api.auth.Register(auth_pb2.RegisterRequest(email="nope", password="x", name=""))
    assert violated_fields(info.value) == {"email", "password", "name"}


def test_login_failure_is_the_same_for_unknown_email_and_wrong_password(api: Api) -> None:
    user = api.register()
    errors = []
    for email, password in ((user.email, "wrong password!"), (unique_email("ghost"), PASSWORD)):
        with pytest.raises(grpc.RpcError) as info:
            api.auth.Login(auth_pb2.LoginRequest(email=email, password=password))
        errors.append((info.value.code(), info.value.details(), error_details(info.value)["ErrorInfo"].reason))
    assert errors[0] == errors[1] == (grpc.StatusCode.UNAUTHENTICATED, "email or password is incorrect", "LOGIN_FAILED")
    session = api.auth.Login(auth_pb2.LoginRequest(email=user.email.lower(), password=PASSWORD))
    assert session.user.id == user.id


def _me(api: Api, token: str) -> user_pb2.User:
    return api.users.GetCurrentUser(user_pb2.GetCurrentUserRequest(), metadata=(("authorization", f"Bearer {token}"),))


def _token(claims: dict[str, object], secret: str = TEST_SECRET, algorithm: str = "HS256") -> str:
    now = int(time.time())
    base = {
        "sub": "0" * 24,
        "role": "USER",
        "sid": "x",
        "jti": "j",
        "iat": now,
        "exp": now + 60,
        "iss": "taskapi",
        "aud": "taskapi",
    }
    return jwt.encode(base | claims, secret, algorithm=algorithm)


def test_missing_forged_expired_and_alg_none_tokens_are_rejected(api: Api) -> None:
    user = api.register()
    claims = jwt.decode(user.session.access_token, TEST_SECRET, algorithms=["HS256"], audience="taskapi")
    forged = _token(claims, secret="another-secret-that-is-long-enough-for-hs256!!")
    expired = _token(claims | {"iat": int(time.time()) - 3600, "exp": int(time.time()) - 60})
    alg_none = jwt.encode(claims, None, algorithm="none")
    wrong_audience = _token(claims | {"aud": "someone-else"})
    tampered = user.session.access_token[:-4] + ("AAAA" if not user.session.access_token.endswith("AAAA") else "BBBB")
    for token in (forged, expired, alg_none, wrong_audience, tampered, "garbage"):
        assert _code(functools.partial(_me, api, token)) == grpc.StatusCode.UNAUTHENTICATED, token
    with pytest.raises(grpc.RpcError) as info:
        _me(api, expired)
    assert error_details(info.value)["ErrorInfo"].reason == "TOKEN_EXPIRED"
    assert _code(lambda: api.users.GetCurrentUser(user_pb2.GetCurrentUserRequest())) == grpc.StatusCode.UNAUTHENTICATED
    assert _me(api, user.session.access_token).id == user.id


def test_logout_ends_refresh_and_access_tokens(api: Api) -> None:
    user = api.register()
    assert _me(api, user.session.access_token).id == user.id  # warms the session cache
    api.auth.Logout(auth_pb2.LogoutRequest(refresh_token=user.session.refresh_token))
    assert _code(lambda: _me(api, user.session.access_token)) == grpc.StatusCode.UNAUTHENTICATED
    assert (
        _code(lambda: api.auth.Refresh(auth_pb2.RefreshRequest(refresh_token=user.session.refresh_token)))
        == grpc.StatusCode.UNAUTHENTICATED
    )
    api.auth.Logout(auth_pb2.LogoutRequest(refresh_token=user.session.refresh_token))  # idempotent


def test_change_password_revokes_other_sessions_only(api: Api) -> None:
    user = api.register()
    other = api.auth.Login(auth_pb2.LoginRequest(email=user.email, password=PASSWORD))
    assert _me(api, other.access_token).id == user.id
    with pytest.raises(grpc.RpcError) as info:
        api.users.ChangePassword(
            user_pb2.ChangePasswordRequest(current_password="not it at all", new_password="new password 1"),
            metadata=user.auth,
        )
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and violated_fields(info.value) == {"current_password"}
    api.users.ChangePassword(
        user_pb2.ChangePasswordRequest(current_password=PASSWORD, new_password="new password 1"), metadata=user.auth
    )
    assert _me(api, user.session.access_token).id == user.id
    assert _code(lambda: _me(api, other.access_token)) == grpc.StatusCode.UNAUTHENTICATED
    assert (
        _code(lambda: api.auth.Login(auth_pb2.LoginRequest(email=user.email, password=PASSWORD)))
        == grpc.StatusCode.UNAUTHENTICATED
    )
    assert api.auth.Login(auth_pb2.LoginRequest(email=user.email, password="new password 1")).user.id == user.id


def test_create_admin_without_mongodb_refuses(tmp_path: Path) -> None:
    """Without MONGODB_URI every server keeps accounts in its own memory: an admin written
    by this command would vanish with it, so it refuses instead of pretending."""
    env = {k: v for k, v in os.environ.items() if k != "MONGODB_URI"} | {"TASKAPI_ADMIN_PASSWORD": PASSWORD}
    taskapi = Path(sys.executable).with_name("taskapi")
    done = subprocess.run(
        [str(taskapi), "create-admin", "--email", unique_email("admin")],
        env=env,
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done
    assert "MONGODB_URI is not set" in done.stderr and "taskapi dev --admin-email" in done.stderr, done.stderr
    assert "created admin" not in done.stdout


@pytest.mark.skipif(
    not os.environ.get("MONGODB_URI"), reason="needs a real MongoDB (MONGODB_URI) shared with the server"
)
def test_create_admin_command_makes_an_admin(
    api: Api, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    email = unique_email("admin")
    monkeypatch.setenv("TASKAPI_ADMIN_PASSWORD", PASSWORD)
    monkeypatch.setenv("BCRYPT_ROUNDS", "4")
    monkeypatch.setattr(cli, "configure_logging", lambda *args: None)  # keep pytest's log capture
    assert cli.main(["create-admin", "--email", email, "--name", "Root"]) == 0
    assert "created admin" in capsys.readouterr().out
    session = api.auth.Login(auth_pb2.LoginRequest(email=email, password=PASSWORD))
    assert session.user.role == user_pb2.ADMIN
    # A second admin with the same email is refused; nobody becomes admin by request.
    assert cli.main(["create-admin", "--email", email]) == 1
    task = api.tasks.CreateTask(
        task_pb2.CreateTaskRequest(task=task_pb2.Task(title="t")),
        metadata=(("authorization", f"Bearer {session.access_token}"),),
    )
    assert task.owner == session.user.id


def test_a_session_check_that_raced_a_logout_cannot_revive_it(app: App, api: Api) -> None:
    """A confirm that read the store just before a logout fills Redis just after it."""
    user = api.register()
    caller = app.tokens.verify(user.session.access_token)
    key = live_session_key(caller.user_id, caller.session_id)
    seen = app.session_cache.lookup(caller.user_id, caller.session_id).seen  # the slow reader's view...
    api.auth.Logout(auth_pb2.LogoutRequest(refresh_token=user.session.refresh_token))
    epoch, _, value = seen.partition(b"|")
    stale_fill = app.shared_cache.call_script(
        app.session_cache._fill, [key], [value, f"{user.id}:USER", 60, epoch]
    )  # ...and what it would write after the logout
    client = app.shared_cache.client
    assert client is not None  # the session app runs with Redis
    assert stale_fill == 0 and client.get(key) == b"revoked"
    assert _code(lambda: _me(api, user.session.access_token)) == grpc.StatusCode.UNAUTHENTICATED


def test_a_refresh_that_raced_a_logout_leaves_nothing_alive(
    app: App, api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The logout is injected between the refresh's rotation and its new token (a real race window)."""
    user = api.register()
    find_user = MongoUserStore.find

    def logout_first(self: MongoUserStore, user_id: str) -> DomainUser | None:
        monkeypatch.setattr(MongoUserStore, "find", find_user)
        app.accounts.logout(user.session.refresh_token)
        return find_user(self, user_id)

    monkeypatch.setattr(MongoUserStore, "find", logout_first)
    assert (
        _code(lambda: api.auth.Refresh(auth_pb2.RefreshRequest(refresh_token=user.session.refresh_token)))
        == grpc.StatusCode.UNAUTHENTICATED
    )
    family = app.tokens.verify(user.session.access_token).session_id
    assert not RefreshTokenDoc.objects(family=family, revoked=False).count()
    assert _code(lambda: _me(api, user.session.access_token)) == grpc.StatusCode.UNAUTHENTICATED
