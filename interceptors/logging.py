"""One log line per call, and the two formatters an entry point installs one of:
JSON lines (`taskapi serve`, for log collectors) or readable text (`taskapi dev`).

The line carries only what operators need to find a call: method, status code,
duration, request id, caller id and client IP. Every JSON line also carries `trace_id` and
`span_id`: the current span's when tracing is on (interceptors/tracing.py), else, inside a
call, those of the caller's `traceparent` (Envoy's span, so the line still joins Envoy's
access log and any trace Envoy exports); null outside a call. Never tokens, passwords, emails or
request bodies: nothing from the request message or its metadata is read here.
Health checks and reflection are logged at DEBUG: Envoy checks every replica every
2 s, and those lines would bury the requests. Metrics count them like any call.
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
from opentelemetry.trace import get_current_span

from taskapi.interceptors.context import Continuation, current_call, current_call_or_none
from taskapi.interceptors.metrics import call_code

log = logging.getLogger(__name__)

# Server-side faults are worth a look; client mistakes (NOT_FOUND, INVALID_ARGUMENT, ...)
# and rate-limit rejections are ordinary traffic.
_ERROR_CODES = frozenset({grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL, grpc.StatusCode.DATA_LOSS})
_WARNING_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})
# Probes and tooling, not requests: an ordinary outcome of theirs is logged at DEBUG.
_PROBE_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")


class LoggingInterceptor(ServerInterceptor):
    """Logs each call once, after it ends, at a level that follows its status code.

    Sits inside CallState (it reads the request id, caller and client IP from it) and
    outside Errors, so the code it logs is the one the client receives, rejections included.
    """

    def __init__(self, logger: logging.Logger = log) -> None:
        self._log = logger
        # method -> the level of its ordinary outcomes (INFO, DEBUG for probes); bounded by
        # the methods served: only methods with a handler reach an interceptor's intercept().
        self._ordinary_levels: dict[str, int] = {}

    def intercept(self, method: Continuation, request: Any, context: grpc.ServicerContext, method_name: str) -> Any:
        start = time.perf_counter()
        try:
            response = method(request, context)
        except BaseException as exc:
            self._emit(method_name, call_code(context, exc), start)
            raise
        self._emit(method_name, call_code(context, None), start)
        return response

    def _emit(self, method_name: str, code: grpc.StatusCode, start: float) -> None:
        if code in _ERROR_CODES:
            level = logging.ERROR
        elif code in _WARNING_CODES:
            level = logging.WARNING
        else:
            level = self._ordinary_levels.get(method_name) or self._ordinary_level(method_name)
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

    def _ordinary_level(self, method_name: str) -> int:
        level = logging.DEBUG if method_name.startswith(_PROBE_PREFIXES) else logging.INFO
        self._ordinary_levels[method_name] = level  # a racing thread stores the same value
        return level


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


class _Clock:
    """`created` as text to the millisecond; the whole-second part rendered once a second."""

    def __init__(self, second_text: Callable[[int], str], suffix: str = "") -> None:
        self._second_text = second_text
        self._suffix = suffix
        self._second: tuple[int, str] = (-1, "")  # the last whole second and its text

    def text(self, created: float) -> str:
        whole = int(created)
        micros = round((created - whole) * 1e6)  # datetime rounds to microseconds too
        if micros == 1_000_000:
            whole, micros = whole + 1, 0
        second, text = self._second  # one tuple: threads never see a half-updated pair
        if second != whole:
            text = self._second_text(whole)
            self._second = (whole, text)
        return f"{text}.{micros // 1000:03d}{self._suffix}"


_TRACEPARENT_CHARS = 55  # "00-" + 32 hex trace id + "-" + 16 hex parent span id + "-01"


def trace_ids() -> tuple[str | None, str | None]:
    """(trace id, span id) for a log line written now: the current span's when tracing is
    on; in a call that is not traced, the caller's traceparent's; else (None, None).

    Inside an untraced call (tracing off) this is one context lookup and two slices: it runs
    for every call's log line, and the span lookup alone costs ~0.4 us. The traceparent is
    checked for shape only: Envoy replaces one that does not parse, and a direct client's
    odd one is at worst odd text in its own line (the JSON encoder escapes it).
    """
    state = current_call_or_none()
    if state is None or state.traced:
        span_context = get_current_span().get_span_context()
        if span_context.is_valid:
            return f"{span_context.trace_id:032x}", f"{span_context.span_id:016x}"
        if state is None:
            return None, None
    parent = state.traceparent
    if parent is not None and len(parent) == _TRACEPARENT_CHARS and parent[2] == parent[35] == parent[52] == "-":
        return parent[3:35], parent[36:52]
    return None, None


class JsonFormatter(logging.Formatter):
    """Formats each record as one JSON object: time, level, logger, message, extras."""

    def __init__(self) -> None:
        super().__init__()
        # ISO 8601 UTC with milliseconds, as datetime.isoformat.
        self._clock = _Clock(lambda whole: datetime.fromtimestamp(whole, UTC).strftime("%Y-%m-%dT%H:%M:%S"), "+00:00")

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "time": self._clock.text(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        payload["trace_id"], payload["span_id"] = trace_ids()
        for key, value in record.__dict__.items():
            if key not in _RECORD_ATTRS:
                payload[key] = value
        if record.exc_info:
            payload["exc_info"] = self.formatException(record.exc_info)
        if record.stack_info:
            payload["stack_info"] = self.formatStack(record.stack_info)
        return _ENCODER.encode(payload)


class TextFormatter(logging.Formatter):
    """One readable line per record, for a developer's console (`taskapi dev`):

        12:01:02.345 /taskapi.v1.TaskService/GetTask OK 3.1ms user=66f0c1 req=5b1e9a ip=127.0.0.1
        12:01:02.346 ERROR /taskapi.v1.TaskService/ListTasks INTERNAL 2.0ms user=66f0c1 req=77ab20 ip=127.0.0.1
        12:01:03.020 WARNING server.config: JWT_SECRET is not set: ...

    Local time. A call's line (LoggingInterceptor's) names its level only when it is not
    INFO; a traceback follows on the next lines.
    """

    def __init__(self) -> None:
        super().__init__()
        self._clock = _Clock(lambda whole: time.strftime("%H:%M:%S", time.localtime(whole)))

    def format(self, record: logging.LogRecord) -> str:
        when = self._clock.text(record.created)
        fields = record.__dict__
        method = fields.get("grpc_method")
        if method is None:
            line = f"{when} {record.levelname} {record.name}: {record.getMessage()}"
        else:
            level = "" if record.levelno == logging.INFO else f" {record.levelname}"
            line = (
                f"{when}{level} {method} {fields['grpc_code']} {fields['duration_ms']:.1f}ms"
                f" user={fields['user_id'] or '-'} req={fields['request_id'] or '-'} ip={fields['client_ip'] or '-'}"
            )
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        if record.stack_info:
            line += "\n" + self.formatStack(record.stack_info)
        return line


# grpc's Cython layer logs a metadata value that is not UTF-8 at ERROR, verbatim, bytes
# and all: `_decode` in grpc_string.pyx.pxi, "Invalid encoding on b'Bearer eyJ...'".
GRPC_CYTHON_LOGGER = "grpc._cython.cygrpc"


class RedactGrpcMetadata(logging.Filter):
    """Replaces each bytes argument of a grpc log record with its length: grpc passes raw
    metadata (a bearer token, say) to its logger as bytes. Its traceback goes too: the
    exception it carries holds the same bytes.

    The "Invalid encoding" record itself is the client's doing, not the server's (grpc drops
    the value and serves the call without it): it is demoted to DEBUG, so a client sending a
    stray byte in every header cannot fill the log with ERROR lines."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str) and record.msg.startswith("Invalid encoding"):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            if not logging.getLogger(record.name).isEnabledFor(logging.DEBUG):
                return False
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
