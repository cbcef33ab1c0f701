"""Typed errors for every failed call, carrying the server's `google.rpc` details.

    TaskApiError                 any failed call (.code, .message, .reason, .retry_delay)
    ├── InvalidArgument          .field_violations: {field: description}
    ├── Unauthenticated          no, expired or revoked token; or a wrong password
    ├── PermissionDenied         authenticated, but not allowed (admin-only RPC)
    ├── NotFound                 missing, or another user's
    ├── AlreadyExists            the email is taken
    ├── Aborted                  stale etag
    ├── FailedPrecondition       reason RESYNC_REQUIRED: a change feed token past retention; list again
    ├── ResourceExhausted        rate limited; .retry_delay says when to come back
    └── Unavailable              the server or its store is down (idempotent calls are retried first)

Details come from the `grpc-status-details-bin` trailer the server sends (a serialized
google.rpc.Status), not from the message text.
"""

from __future__ import annotations

from typing import Any

import grpc
from google.rpc import error_details_pb2, status_pb2


class TaskApiError(Exception):
    """A failed call. `reason` is the ErrorInfo reason (a stable, machine-readable
    string such as "TASK_NOT_FOUND"); `retry_delay` the RetryInfo delay in seconds."""

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        *,
        reason: str = "",
        domain: str = "",
        metadata: dict[str, str] | None = None,
        field_violations: dict[str, str] | None = None,
        retry_delay: float | None = None,
    ) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message
        self.reason = reason
        self.domain = domain
        self.metadata = metadata or {}
        self.field_violations = field_violations or {}
        self.retry_delay = retry_delay


class InvalidArgument(TaskApiError):
    """A field breaks a rule; `field_violations` maps each field path to why."""


class Unauthenticated(TaskApiError):
    pass


class PermissionDenied(TaskApiError):
    pass


class NotFound(TaskApiError):
    pass


class AlreadyExists(TaskApiError):
    pass


class Aborted(TaskApiError):
    pass


class FailedPrecondition(TaskApiError):
    pass


class ResourceExhausted(TaskApiError):
    pass


class Unavailable(TaskApiError):
    pass


_BY_CODE: dict[grpc.StatusCode, type[TaskApiError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExists,
    grpc.StatusCode.ABORTED: Aborted,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
}


STATUS_DETAILS_KEY = "grpc-status-details-bin"


def _status_details(call: grpc.Call) -> status_pb2.Status | None:
    """The google.rpc.Status trailer, or None (absent, unreadable, or disagreeing with the call's code)."""
    for key, value in call.trailing_metadata() or ():
        if key == STATUS_DETAILS_KEY and isinstance(value, bytes):
            try:
                status = status_pb2.Status.FromString(value)
            except Exception:  # noqa: BLE001 - a malformed trailer only loses the details
                return None
            return status if status.code == call.code().value[0] else None
    return None


def from_rpc_error(error: grpc.RpcError) -> TaskApiError:
    """The typed error for a failed call, with its google.rpc details unpacked."""
    call: grpc.Call = error  # type: ignore[assignment]  # sync stubs raise errors that are also Calls
    code, message = call.code(), call.details() or ""
    fields: dict[str, Any] = {}
    status = _status_details(call)
    for any_detail in status.details if status is not None else ():
        if any_detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad_request = error_details_pb2.BadRequest()
            any_detail.Unpack(bad_request)
            fields["field_violations"] = {v.field: v.description for v in bad_request.field_violations}
        elif any_detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            any_detail.Unpack(info)
            fields.update(reason=info.reason, domain=info.domain, metadata=dict(info.metadata))
        elif any_detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry = error_details_pb2.RetryInfo()
            any_detail.Unpack(retry)
            fields["retry_delay"] = retry.retry_delay.ToTimedelta().total_seconds()
    return _BY_CODE.get(code, TaskApiError)(code, message, **fields)
