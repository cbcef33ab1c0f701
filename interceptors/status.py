"""The one place errors become gRPC statuses with google.rpc details.

Details travel in `grpc-status-details-bin`, which Envoy's transcoder renders
as the JSON body `{code, message, details}`. Anything unexpected becomes
INTERNAL with a fixed message; the traceback goes to the log only.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable
from typing import Any

import grpc
from google.protobuf import duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_interceptor import ServerInterceptor
from grpc_interceptor.exceptions import GrpcException
from grpc_status import rpc_status

from taskapi.interceptors.context import Continuation, current_call, recorded_code
from taskapi.server.domain.errors import (
    ERROR_DOMAIN,
    ApiError,
    InvalidArgument,
    ResourceExhausted,
    Retryable,
    Unavailable,
)

log = logging.getLogger(__name__)

# On a refusal that changed nothing (Unavailable(nothing_done=True)): a balancer or client
# may retry any call, a write included. Sent as initial metadata, so Envoy sees a header.
RETRY_SAFE_HEADER = "x-retry-safe"
RETRY_AFTER_HEADER = "retry-after"
INTERNAL_MESSAGE = "internal error; the request id identifies it in the server log"
# Turns a library's exception (say, a database driver's) into an ApiError, or None to pass.
Translator = Callable[[BaseException], ApiError | None]


def to_status(error: ApiError) -> status_pb2.Status:
    code = getattr(code_pb2, error.code_name)
    status = status_pb2.Status(code=code, message=error.message)
    info = error_details_pb2.ErrorInfo(reason=error.reason, domain=ERROR_DOMAIN)
    status.details.add().Pack(info)
    if isinstance(error, InvalidArgument) and error.violations:
        bad_request = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description)
                for v in error.violations
            ]
        )
        status.details.add().Pack(bad_request)
    if isinstance(error, Retryable):
        delay = duration_pb2.Duration()
        delay.FromMilliseconds(int(error.retry_after_seconds * 1000))
        status.details.add().Pack(error_details_pb2.RetryInfo(retry_delay=delay))
    if isinstance(error, ResourceExhausted) and error.quota_violations:
        quota = error_details_pb2.QuotaFailure(
            violations=[
                error_details_pb2.QuotaFailure.Violation(subject=v.subject, description=v.description)
                for v in error.quota_violations
            ]
        )
        status.details.add().Pack(quota)
    return status


class ErrorInterceptor(ServerInterceptor):
    def __init__(self, translators: Iterable[Translator] = ()) -> None:
        self._translators = tuple(translators)

    def intercept(self, method: Continuation, request: Any, context: grpc.ServicerContext, method_name: str) -> Any:
        try:
            return method(request, context)
        except ApiError as error:
            self._abort(context, error)
        except GrpcException as error:  # grpc_interceptor.exceptions raised by a handler
            self._abort_plain(context, error.status_code, error.details)
        except Exception as error:  # noqa: BLE001 - the last line of defence
            if recorded_code(context) not in (None, grpc.StatusCode.OK):
                raise  # already aborted by context.abort further in
            translated = next(filter(None, (t(error) for t in self._translators)), None)
            if translated is not None:
                self._abort(context, translated)
            log.exception("unhandled error in %s", method_name)
            self._abort_plain(context, grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE)

    def _abort(self, context: grpc.ServicerContext, error: ApiError) -> None:
        extra: tuple[tuple[str, str], ...] = ()
        if isinstance(error, Retryable):
            # The RetryInfo delay as HTTP's Retry-After too (whole seconds, at least 1): a rate
            # limit's 429 and a shed call's 503, as on Envoy's own 503s.
            extra = ((RETRY_AFTER_HEADER, str(max(1, math.ceil(error.retry_after_seconds)))),)
        if isinstance(error, Unavailable) and error.nothing_done:
            extra += ((RETRY_SAFE_HEADER, "true"),)
        _send_metadata(context, extra)
        context.abort_with_status(rpc_status.to_status(to_status(error)))

    def _abort_plain(self, context: grpc.ServicerContext, code: grpc.StatusCode, message: str) -> None:
        status = status_pb2.Status(code=code.value[0], message=message)
        status.details.add().Pack(error_details_pb2.ErrorInfo(reason=code.name, domain=ERROR_DOMAIN))
        _send_metadata(context)
        context.abort_with_status(rpc_status.to_status(status))


def _send_metadata(context: grpc.ServicerContext, extra: tuple[tuple[str, str], ...] = ()) -> None:
    try:
        state = current_call()
    except RuntimeError:
        if extra:
            context.send_initial_metadata(extra)
        return
    state.response_metadata.extend(extra)
    state.send_response_metadata(context)
