"""Checks every request against its proto field rules (protovalidate) before the handler."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
import protovalidate
from grpc_interceptor import ServerInterceptor

from interceptors.errors import FieldViolation, InvalidArgument


def field_path(violation: protovalidate.Violation) -> str:
    """`task.tags[2]` style path of the offending field."""
    parts = []
    for element in violation.proto.field.elements:
        part = element.field_name
        subscript = element.WhichOneof("subscript") if hasattr(element, "WhichOneof") else None
        if subscript is not None:
            part += f"[{getattr(element, subscript)}]"
        parts.append(part)
    return ".".join(parts)


class ValidationInterceptor(ServerInterceptor):
    def __init__(self) -> None:
        self._validator = protovalidate.Validator()  # caches compiled rules: build once

    def intercept(self, method: Callable, request: Any, context: grpc.ServicerContext, method_name: str) -> Any:
        violations = self._validator.collect_violations(request)
        if violations:
            fields = [FieldViolation(field_path(v), v.proto.message) for v in violations]
            message = "; ".join(f"{f.field}: {f.description}" for f in fields)
            raise InvalidArgument(f"invalid request: {message}", violations=fields)
        return method(request, context)
