"""Checks every request against its proto field rules (protovalidate) before the handler."""

from __future__ import annotations

from typing import Any

import grpc
import protovalidate
from google.protobuf.descriptor import Descriptor
from google.protobuf.message import Message
from grpc_interceptor import ServerInterceptor

from taskapi.interceptors.context import Continuation
from taskapi.interceptors.decoding import UndecodableRequest
from taskapi.server.domain.errors import FieldViolation, InvalidArgument


def field_path(violation: protovalidate.Violation, request: Message) -> str:
    """`task.tags[2]` style path of the offending field.

    Convention for CEL rules on a message field: a rule id `<subfield>.<name>` (say
    `title.required` on CreateTaskRequest.task) is about that subfield, so the
    violation names `task.title`, not `task`: clients map violations to inputs.
    """
    parts = []
    descriptor: Descriptor | None = request.DESCRIPTOR  # type: ignore[assignment]  # upb's and the pure type
    path = violation.proto.field
    for element in path.elements if path is not None else ():
        part = element.field_name
        subscript = element.subscript  # protobuf-py oneof: None, or (field, value)
        if subscript is not None:
            part += f"[{subscript.value}]"
        parts.append(part)
        field = descriptor.fields_by_name.get(element.field_name) if descriptor else None
        descriptor = field.message_type if field is not None else None
    rule = violation.proto.rule.elements if violation.proto.rule is not None else ()
    subfield = violation.proto.rule_id.partition(".")[0]
    if rule and rule[0].field_name == "cel" and descriptor is not None and subfield in descriptor.fields_by_name:
        parts.append(subfield)
    return ".".join(parts)


class ValidationInterceptor(ServerInterceptor):
    def __init__(self) -> None:
        self._validator = protovalidate.Validator()  # caches compiled rules: build once

    def intercept(self, method: Continuation, request: Any, context: grpc.ServicerContext, method_name: str) -> Any:
        if isinstance(request, Message):
            violations = self._validator.collect_violations(request)
            if violations:
                fields = [FieldViolation(field_path(v, request), v.proto.message) for v in violations]
                message = "; ".join(f"{f.field}: {f.description}" for f in fields)
                raise InvalidArgument(f"invalid request: {message}", violations=fields)
        elif isinstance(request, UndecodableRequest):  # refused here, after auth and the rate limit
            raise request.error()
        # Otherwise a streaming call (reflection) passes an iterator: nothing to check up front.
        return method(request, context)
