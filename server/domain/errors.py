"""The one error tree every handler raises; `ErrorInterceptor` maps it to gRPC status.

This module does not import grpc, so domain code can raise these freely:

    ApiError                    (code_name = gRPC status name)
    ├── InvalidArgument         INVALID_ARGUMENT   + BadRequest.field_violations
    ├── Unauthenticated         UNAUTHENTICATED
    ├── PermissionDenied        PERMISSION_DENIED
    ├── NotFound                NOT_FOUND
    ├── AlreadyExists           ALREADY_EXISTS
    ├── Aborted                 ABORTED            (etag mismatch, concurrent change)
    ├── FailedPrecondition      FAILED_PRECONDITION (a change feed token past retention: resync)
    └── Retryable               (+ RetryInfo: when to try again)
        ├── ResourceExhausted   RESOURCE_EXHAUSTED + QuotaFailure
        └── Unavailable         UNAVAILABLE

Anything else a handler raises is a bug: the chain answers INTERNAL with a fixed message
and logs the traceback (interceptors/status.py).

Every error carries an ErrorInfo `reason` (UPPER_SNAKE_CASE, stable, for programs)
and a `message` (for people). Messages must never contain secrets.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

ERROR_DOMAIN = "taskapi.v1"


@dataclass(frozen=True)
class FieldViolation:
    """One bad field: `field` is a dotted path in proto field names (`task.title`)."""

    field: str
    description: str


@dataclass(frozen=True)
class QuotaViolation:
    """One exhausted quota: `subject` is what was limited (`ip:1.2.3.4`), `description` the policy."""

    subject: str
    description: str


class ApiError(Exception):
    """Base of every error that reaches a client with its own status code."""

    code_name: ClassVar[str] = "UNKNOWN"
    default_reason: ClassVar[str] = "UNKNOWN"

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason or self.default_reason


class InvalidArgument(ApiError):
    code_name = "INVALID_ARGUMENT"
    default_reason = "INVALID_ARGUMENT"

    def __init__(
        self,
        message: str,
        *,
        violations: list[FieldViolation] | None = None,
        reason: str | None = None,
    ) -> None:
        super().__init__(message, reason=reason)
        self.violations = list(violations or [])

    @classmethod
    def field(cls, field_path: str, description: str) -> InvalidArgument:
        """A single bad field, with a message that names it."""
        return cls(f"{field_path}: {description}", violations=[FieldViolation(field_path, description)])


class Unauthenticated(ApiError):
    code_name = "UNAUTHENTICATED"
    default_reason = "UNAUTHENTICATED"


class PermissionDenied(ApiError):
    code_name = "PERMISSION_DENIED"
    default_reason = "PERMISSION_DENIED"


class NotFound(ApiError):
    code_name = "NOT_FOUND"
    default_reason = "NOT_FOUND"


class AlreadyExists(ApiError):
    code_name = "ALREADY_EXISTS"
    default_reason = "ALREADY_EXISTS"


class Aborted(ApiError):
    code_name = "ABORTED"
    default_reason = "ABORTED"


class FailedPrecondition(ApiError):
    code_name = "FAILED_PRECONDITION"
    default_reason = "FAILED_PRECONDITION"


class Unimplemented(ApiError):
    code_name = "UNIMPLEMENTED"
    default_reason = "UNIMPLEMENTED"


class Retryable(ApiError):
    """An error that tells the client when the same call may succeed (RetryInfo, Retry-After)."""

    def __init__(self, message: str, *, retry_after_seconds: float, reason: str | None = None) -> None:
        super().__init__(message, reason=reason)
        self.retry_after_seconds = retry_after_seconds


class ResourceExhausted(Retryable):
    code_name = "RESOURCE_EXHAUSTED"
    default_reason = "RATE_LIMITED"

    def __init__(
        self,
        message: str,
        *,
        retry_after_seconds: float,
        quota_violations: list[QuotaViolation] | None = None,
        reason: str | None = None,
    ) -> None:
        super().__init__(message, retry_after_seconds=retry_after_seconds, reason=reason)
        self.quota_violations = list(quota_violations or [])


class Unavailable(Retryable):
    code_name = "UNAVAILABLE"
    default_reason = "UNAVAILABLE"

    def __init__(
        self, message: str, *, retry_after_seconds: float = 1.0, nothing_done: bool = False, reason: str | None = None
    ) -> None:
        super().__init__(message, retry_after_seconds=retry_after_seconds, reason=reason)
        # True when the call was refused before it changed anything (shed under load), so
        # any call, a write included, may be retried: the status then says so in a header.
        self.nothing_done = nothing_done
