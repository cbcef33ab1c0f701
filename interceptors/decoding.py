"""Request decoding that hands the chain every call, also one whose bytes do not decode.

grpcio decodes a request with the handler's `request_deserializer` before any interceptor
runs, and when that raises it answers INTERNAL ("Exception deserializing request!") by
itself: the call is then never counted, logged or rate limited, and a client's bad bytes
(REST: `GET /api/v1/tasks/%ff`, which Envoy passes on as the byte 0xff in a string field)
look like a server bug. `tolerant()` wraps the deserializer so that a failure becomes an
`UndecodableRequest`, which flows through the chain like a request until Validation
raises its INVALID_ARGUMENT (interceptors/chain.py, interceptors/validation.py).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.descriptor import Descriptor, FieldDescriptor

from taskapi.server.domain.errors import FieldViolation, InvalidArgument

log = logging.getLogger(__name__)

NOT_UTF8 = "must be valid UTF-8"


@dataclass(frozen=True, slots=True)
class UndecodableRequest:
    """Stands in for a request whose bytes are not a valid message of its type.

    Layers before Validation see it where the request would be; one that reads request
    fields must not mistake it for a request (it has none). It keeps no request bytes.
    """

    message_type: str  # full proto name; "" when the deserializer does not say
    violations: tuple[FieldViolation, ...] = ()

    def error(self) -> InvalidArgument:
        if self.violations:
            detail = "; ".join(f"{v.field}: {v.description}" for v in self.violations)
            return InvalidArgument(f"invalid request: {detail}", violations=list(self.violations))
        return InvalidArgument(f"invalid request: not a valid {self.message_type or 'request'} message")


def tolerant(handler: grpc.RpcMethodHandler[Any, Any]) -> grpc.RpcMethodHandler[Any, Any]:
    """`handler` with a request deserializer that never raises (unary requests only).

    A streaming request is decoded message by message inside grpcio's request iterator,
    where no interceptor can see a failure; those (reflection only, here) keep grpcio's
    own handling. No deserializer means the handler takes raw bytes: nothing to decode.
    """
    decode = handler.request_deserializer
    if handler.request_streaming or decode is None:
        return handler
    descriptor = getattr(getattr(decode, "__self__", None), "DESCRIPTOR", None)  # Message.FromString

    def request_deserializer(data: bytes) -> Any:
        try:  # the only cost on a valid request: one Python frame around the generated FromString
            return decode(data)
        except Exception:  # noqa: BLE001 - whatever the decoder raises, the bytes are at fault
            return diagnose(descriptor, data)

    if handler.response_streaming:
        assert handler.unary_stream is not None  # a unary-request, streaming-response handler
        return grpc.unary_stream_rpc_method_handler(
            handler.unary_stream,
            request_deserializer=request_deserializer,
            response_serializer=handler.response_serializer,
        )
    assert handler.unary_unary is not None
    return grpc.unary_unary_rpc_method_handler(
        handler.unary_unary,
        request_deserializer=request_deserializer,
        response_serializer=handler.response_serializer,
    )


def diagnose(descriptor: Descriptor | None, data: bytes) -> UndecodableRequest:
    """Why `data` is not a `descriptor` message: the first string field that is not UTF-8
    (named as protovalidate names fields: `task.tags[1]`), else just "not a valid message"."""
    if descriptor is None:
        return UndecodableRequest("")
    try:
        field = _bad_string(descriptor, data, "")
    except _Malformed:
        field = None
    except Exception:  # noqa: BLE001 - a bug here must not turn the client's bad bytes into a 500
        log.exception("could not diagnose an undecodable %s", descriptor.full_name)
        field = None
    violations = (FieldViolation(field, NOT_UTF8),) if field else ()
    return UndecodableRequest(descriptor.full_name, violations)


class _Malformed(Exception):
    """The bytes are not protobuf wire format (beyond a bad string)."""


def _bad_string(descriptor: Descriptor, data: bytes, prefix: str) -> str | None:
    """Walks the wire format of one message; the path of the first string that is not UTF-8."""
    seen: dict[int, int] = {}  # field number -> occurrences so far (repeated field index)
    pos, end = 0, len(data)
    while pos < end:
        key, pos = _varint(data, pos)
        number, wire_type = key >> 3, key & 7
        if wire_type == 0:
            _, pos = _varint(data, pos)
        elif wire_type == 1:
            pos += 8
        elif wire_type == 5:
            pos += 4
        elif wire_type == 2:
            size, pos = _varint(data, pos)
            payload, pos = data[pos : pos + size], pos + size
            if pos > end:
                raise _Malformed
            found = _check_field(descriptor.fields_by_number.get(number), payload, prefix, seen)
            if found:
                return found
        else:  # groups (never used by these protos) or an invalid wire type
            raise _Malformed
    if pos > end:
        raise _Malformed
    return None


def _check_field(field: FieldDescriptor | None, payload: bytes, prefix: str, seen: dict[int, int]) -> str | None:
    if field is None:  # an unknown field: kept as bytes, never decoded
        return None
    index = seen.get(field.number, 0)
    seen[field.number] = index + 1
    path = prefix + field.name + (f"[{index}]" if field.is_repeated else "")
    if field.type == FieldDescriptor.TYPE_STRING:
        try:
            payload.decode("utf-8")
        except UnicodeDecodeError:
            return path
        return None
    if field.type == FieldDescriptor.TYPE_MESSAGE and field.message_type is not None:
        return _bad_string(field.message_type, payload, path + ".")
    return None  # bytes, or a packed repeated scalar


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    for i in range(pos, min(pos + 10, len(data))):
        byte = data[i]
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, i + 1
        shift += 7
    raise _Malformed
