"""taskapi.v1.AuthService: sign-up, sign-in and sessions."""

from __future__ import annotations

import grpc

from taskapi.server.api.convert import user_to_proto
from taskapi.server.domain.accounts import Accounts, Session
from taskapi.v1 import auth_pb2, auth_pb2_grpc


def session_to_proto(session: Session) -> auth_pb2.AuthSession:
    return auth_pb2.AuthSession(
        access_token=session.access_token,
        refresh_token=session.refresh_token,
        token_type="Bearer",
        expires_in=session.expires_in,
        user=user_to_proto(session.user),
    )


class AuthServicer(auth_pb2_grpc.AuthServiceServicer):
    def __init__(self, accounts: Accounts) -> None:
        self._accounts = accounts

    def Register(self, request: auth_pb2.RegisterRequest, context: grpc.ServicerContext) -> auth_pb2.AuthSession:
        return session_to_proto(self._accounts.register(request.email, request.password, request.name))

    def Login(self, request: auth_pb2.LoginRequest, context: grpc.ServicerContext) -> auth_pb2.AuthSession:
        return session_to_proto(self._accounts.login(request.email, request.password))

    def Refresh(self, request: auth_pb2.RefreshRequest, context: grpc.ServicerContext) -> auth_pb2.AuthSession:
        return session_to_proto(self._accounts.refresh(request.refresh_token))

    def Logout(self, request: auth_pb2.LogoutRequest, context: grpc.ServicerContext) -> auth_pb2.LogoutResponse:
        self._accounts.logout(request.refresh_token)
        return auth_pb2.LogoutResponse()
