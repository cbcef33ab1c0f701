"""One JSON log line per call, and the JSON formatter the entry point installs.

The line carries only what operators need to find a call: method, status code,
duration, request id, caller id and client IP. Never tokens, passwords, emails or
request bodies: nothing from the request message or its metadata is read here.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import grpc
from grpc_interceptor import ServerInterceptor

from interceptors.context import current_call
from interceptors.metrics import final_code

log = logging.getLogger(__name__)

# Server-side faults are worth a look; client mistakes (NOT_FOUND, INVALID_ARGUMENT, ...)
# and rate-limit rejections are ordinary traffic.
_ERROR_CODES = frozenset({grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL, grpc.StatusCode.DATA_LOSS})
_WARNING_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})


class LoggingInterceptor(ServerInterceptor):
    """Logs each call once, after it ends, at a level that follows its status code.

    Sits inside CallState (it reads the request id, caller and client IP from it) and
    outside Errors, so the code it logs is the one the client receives, rejections included.
    """

    def __init__(self, logger: logging.Logger = log) -> None:
        self._log = logger

    def intercept(self, method: Callable, request: Any, context: grpc.ServicerContext, method_name: str) -> Any:
        start = time.perf_counter()
        try:
            response = method(request, context)
        except BaseException as exc:
            self._emit(method_name, final_code(context, exc), start)
            raise
        self._emit(method_name, final_code(context, None), start)
        return response

    def _emit(self, method_name: str, code: grpc.StatusCode, start: float) -> None:
        level = logging.ERROR if code in _ERROR_CODES else logging.WARNING if code in _WARNING_CODES else logging.INFO
        if not self._log.isEnabledFor(level):
            return
        duration_ms = round((time.perf_counter() - start) * 1000.0, 3)
        try:
            state = current_call()
        except RuntimeError:  # wired outside CallState by mistake: still log the call
            request_id = client_ip = user_id = None
        else:
            request_id, client_ip = state.request_id, state.client_ip
            user_id = state.caller.user_id if state.caller is not None else None
        # makeRecord + handle is what Logger.log does, minus findCaller: walking the stack
        # for a call site that is always this line costs more than the rest of the record.
        logger = self._log
        record = logger.makeRecord(
            logger.name,
            level,
            __file__,
            0,
            "%s %s %.1f ms",
            (method_name, code.name, duration_ms),
            None,
            "_emit",
            {
                "grpc_method": method_name,
                "grpc_code": code.name,
                "duration_ms": duration_ms,
                "request_id": request_id,
                "user_id": user_id,
                "client_ip": client_ip,
            },
        )
        logger.handle(record)


# Attributes every LogRecord has; anything else on a record came from `extra=` and is
# emitted as a JSON field. Computed once, not per record.
_RECORD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
}


# default=str: an odd extra value must never turn a log call into an exception. Built
# once: json.dumps with any option builds a new encoder per call.
_ENCODER = json.JSONEncoder(default=str, separators=(",", ":"))


class JsonFormatter(logging.Formatter):
    """Formats each record as one JSON object: time, level, logger, message, extras."""

    def __init__(self) -> None:
        super().__init__()
        self._second: tuple[int, str] = (-1, "")  # the last whole second and its ISO text

    def _time(self, created: float) -> str:
        """ISO 8601 UTC with milliseconds, as datetime.isoformat; the seconds part cached."""
        whole = int(created)
        micros = round((created - whole) * 1e6)  # datetime rounds to microseconds too
        if micros == 1_000_000:
            whole, micros = whole + 1, 0
        second, text = self._second  # one tuple: threads never see a half-updated pair
        if second != whole:
            text = datetime.fromtimestamp(whole, UTC).strftime("%Y-%m-%dT%H:%M:%S")
            self._second = (whole, text)
        return f"{text}.{micros // 1000:03d}+00:00"

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "time": self._time(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _RECORD_ATTRS:
                payload[key] = value
        if record.exc_info:
            payload["exc_info"] = self.formatException(record.exc_info)
        if record.stack_info:
            payload["stack_info"] = self.formatStack(record.stack_info)
        return _ENCODER.encode(payload)


# grpc's Cython layer logs a metadata value that is not UTF-8 at ERROR, verbatim, bytes
# and all: `_decode` in grpc_string.pyx.pxi, "Invalid encoding on b'Bearer eyJ...'".
GRPC_CYTHON_LOGGER = "grpc._cython.cygrpc"


class RedactGrpcMetadata(logging.Filter):
    """Replaces each bytes argument of a grpc log record with its length: grpc passes raw
    metadata (a bearer token, say) to its logger as bytes. Its traceback goes too: the
    exception it carries holds the same bytes."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and any(isinstance(arg, bytes | bytearray) for arg in args):
            record.args = tuple(
                f"<{len(arg)} bytes, redacted>" if isinstance(arg, bytes | bytearray) else arg for arg in args
            )
            record.exc_info, record.exc_text = None, None
        return True


def redact_grpc_metadata() -> None:
    """Puts RedactGrpcMetadata on grpc's logger, once; the entry point's logging setup calls it."""
    logger = logging.getLogger(GRPC_CYTHON_LOGGER)
    if not any(isinstance(existing, RedactGrpcMetadata) for existing in logger.filters):
        logger.addFilter(RedactGrpcMetadata())
