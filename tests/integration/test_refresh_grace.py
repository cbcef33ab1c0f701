"""Refresh-token rotation with a reuse grace window, over a real channel to a real server.

Two tabs refreshing the same token at once must not log the user out: the just-rotated
token presented again within REFRESH_REUSE_GRACE_SECONDS returns the same new pair.
Later reuse still revokes the whole family.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager

import grpc
import pytest

from taskapi.server.app import Replica, run_server
from taskapi.server.store.documents import RefreshTokenDoc
from taskapi.server.store.ids import object_id
from taskapi.v1 import auth_pb2, user_pb2
from tests.conftest import make_settings
from tests.integration.api import Api, error_details, fails


@pytest.fixture
def api(channel: grpc.Channel) -> Api:
    return Api(channel)  # the session server: the default grace of 10 s


@pytest.fixture
def api_with_grace(redis_url: str) -> Iterator[Callable[[int], Api]]:
    """A server of its own with REFRESH_REUSE_GRACE_SECONDS = the given value."""
    started: list[tuple[AbstractContextManager[Replica], grpc.Channel]] = []

    def start(seconds: int) -> Api:
        server = run_server(make_settings(redis_url, refresh_reuse_grace_seconds=seconds))
        replica = server.__enter__()
        channel = grpc.insecure_channel(replica.address)
        started.append((server, channel))
        return Api(channel)

    yield start
    for server, channel in started:
        channel.close()
        server.__exit__(None, None, None)


def refresh(api: Api, token: str) -> auth_pb2.AuthSession:
    return api.auth.Refresh(auth_pb2.RefreshRequest(refresh_token=token), timeout=10)


def me(api: Api, access_token: str) -> user_pb2.User:
    return api.users.GetCurrentUser(
        user_pb2.GetCurrentUserRequest(), metadata=(("authorization", f"Bearer {access_token}"),), timeout=10
    )


def pair(session: auth_pb2.AuthSession) -> tuple[str, str]:
    return session.access_token, session.refresh_token


def test_two_tabs_refreshing_at_once_share_one_new_pair(api: Api) -> None:
    user = api.register()
    token = user.session.refresh_token
    for _ in range(5):  # several rounds: each one races two refreshes of the current token
        start = threading.Barrier(2)
        results: list[auth_pb2.AuthSession | grpc.RpcError | None] = [None, None]

        def tab(
            index: int,
            token: str = token,
            start: threading.Barrier = start,
            results: list[auth_pb2.AuthSession | grpc.RpcError | None] = results,
        ) -> None:
            start.wait()
            try:
                results[index] = refresh(api, token)
            except grpc.RpcError as error:
                results[index] = error

        tabs = [threading.Thread(target=tab, args=(i,)) for i in range(2)]
        for thread in tabs:
            thread.start()
        for thread in tabs:
            thread.join(timeout=30)
        first, second = results
        assert isinstance(first, auth_pb2.AuthSession) and isinstance(second, auth_pb2.AuthSession), results
        assert pair(first) == pair(second) and first.refresh_token != token
        assert me(api, first.access_token).id == user.id  # the session is alive
        token = first.refresh_token
    assert me(api, refresh(api, token).access_token).id == user.id


def test_the_rotated_token_again_within_the_window_returns_the_same_pair(api: Api) -> None:
    user = api.register()
    old = user.session.refresh_token
    new = refresh(api, old)
    again = refresh(api, old)
    assert pair(again) == pair(new) and again.user.id == user.id
    assert 0 < again.expires_in <= new.expires_in
    # The new pair is the one live session; tokens are stored only as hashes.
    assert me(api, new.access_token).id == user.id
    assert refresh(api, new.refresh_token).refresh_token != new.refresh_token
    stored = [doc.to_mongo().to_dict() for doc in RefreshTokenDoc.objects(user_id=object_id(user.id))]
    assert stored and not any(token in str(doc) for doc in stored for token in (old, new.refresh_token))


def test_reuse_after_the_window_revokes_the_family(api_with_grace: Callable[[int], Api]) -> None:
    api = api_with_grace(1)
    user = api.register()
    new = refresh(api, user.session.refresh_token)
    time.sleep(1.1)
    error = fails(lambda: refresh(api, user.session.refresh_token), grpc.StatusCode.UNAUTHENTICATED)
    assert error_details(error)["ErrorInfo"].reason == "REFRESH_REUSED"
    fails(lambda: refresh(api, new.refresh_token), grpc.StatusCode.UNAUTHENTICATED)
    fails(lambda: me(api, new.access_token), grpc.StatusCode.UNAUTHENTICATED)


def test_without_a_window_any_reuse_revokes_the_family(api_with_grace: Callable[[int], Api]) -> None:
    api = api_with_grace(0)
    user = api.register()
    new = refresh(api, user.session.refresh_token)
    assert new.refresh_token != user.session.refresh_token and me(api, new.access_token).id == user.id
    error = fails(lambda: refresh(api, user.session.refresh_token), grpc.StatusCode.UNAUTHENTICATED)
    assert error_details(error)["ErrorInfo"].reason == "REFRESH_REUSED"
    fails(lambda: refresh(api, new.refresh_token), grpc.StatusCode.UNAUTHENTICATED)
    fails(lambda: me(api, new.access_token), grpc.StatusCode.UNAUTHENTICATED)
    fails(lambda: me(api, user.session.access_token), grpc.StatusCode.UNAUTHENTICATED)
    # Another sign-in is another family, unaffected.
    other = api.auth.Login(auth_pb2.LoginRequest(email=user.email, password=user.password), timeout=10)
    assert me(api, other.access_token).id == user.id
