"""taskapi.v1.UserService: the caller's account, and account administration."""

from __future__ import annotations

import grpc

from taskapi.interceptors.context import current_caller
from taskapi.server.api.convert import ROLE_FROM_PROTO, user_to_proto, user_values
from taskapi.server.domain.accounts import Accounts
from taskapi.server.domain.users import ADMIN_EDITABLE, SELF_EDITABLE, Users
from taskapi.v1 import user_pb2, user_pb2_grpc


def _mask(request: user_pb2.UpdateUserRequest | user_pb2.UpdateCurrentUserRequest) -> list[str] | None:
    return list(request.update_mask.paths) if request.HasField("update_mask") else None


class UserServicer(user_pb2_grpc.UserServiceServicer):
    def __init__(self, users: Users, accounts: Accounts) -> None:
        self._users = users
        self._accounts = accounts

    def GetCurrentUser(self, request: user_pb2.GetCurrentUserRequest, context: grpc.ServicerContext) -> user_pb2.User:
        caller = current_caller()
        return user_to_proto(self._users.get(caller, caller.user_id))

    def UpdateCurrentUser(
        self, request: user_pb2.UpdateCurrentUserRequest, context: grpc.ServicerContext
    ) -> user_pb2.User:
        values, present = user_values(request.user)
        user = self._users.update(current_caller().user_id, values, present, _mask(request), editable=SELF_EDITABLE)
        return user_to_proto(user)

    def ChangePassword(
        self, request: user_pb2.ChangePasswordRequest, context: grpc.ServicerContext
    ) -> user_pb2.ChangePasswordResponse:
        caller = current_caller()
        self._accounts.change_password(
            caller.user_id, request.current_password, request.new_password, caller.session_id
        )
        return user_pb2.ChangePasswordResponse()

    def ListUsers(
        self, request: user_pb2.ListUsersRequest, context: grpc.ServicerContext
    ) -> user_pb2.ListUsersResponse:
        role = ROLE_FROM_PROTO.get(request.role) if request.HasField("role") else None
        page = self._users.list_page(current_caller(), role, request.q, request.page_size, request.page_token)
        return user_pb2.ListUsersResponse(
            users=[user_to_proto(u) for u in page.users],
            next_page_token=page.next_page_token,
            total_size=page.total_size,
        )

    def GetUser(self, request: user_pb2.GetUserRequest, context: grpc.ServicerContext) -> user_pb2.User:
        return user_to_proto(self._users.get(current_caller(), request.id))

    def UpdateUser(self, request: user_pb2.UpdateUserRequest, context: grpc.ServicerContext) -> user_pb2.User:
        values, present = user_values(request.user)
        user = self._users.update(request.user.id, values, present, _mask(request), editable=ADMIN_EDITABLE)
        return user_to_proto(user)

    def DeleteUser(
        self, request: user_pb2.DeleteUserRequest, context: grpc.ServicerContext
    ) -> user_pb2.DeleteUserResponse:
        self._users.delete(current_caller(), request.id)
        return user_pb2.DeleteUserResponse()
