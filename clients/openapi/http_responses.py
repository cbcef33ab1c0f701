"""The responses of the OpenAPI document: every status an RPC can answer, from its access level
and its `(taskapi.v1.errors)` option, with the error body and the rate-limit headers."""

from __future__ import annotations

from typing import Any


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


# The HTTP status Envoy's transcoder gives each gRPC code (google.rpc.Code's own mapping).
HTTP_STATUS = {
    "INVALID_ARGUMENT": 400,
    "FAILED_PRECONDITION": 400,
    "OUT_OF_RANGE": 400,
    "UNAUTHENTICATED": 401,
    "PERMISSION_DENIED": 403,
    "NOT_FOUND": 404,
    "ALREADY_EXISTS": 409,
    "ABORTED": 409,
    "RESOURCE_EXHAUSTED": 429,
    "CANCELLED": 499,
    "INTERNAL": 500,
    "UNKNOWN": 500,
    "DATA_LOSS": 500,
    "UNIMPLEMENTED": 501,
    "UNAVAILABLE": 503,
    "DEADLINE_EXCEEDED": 504,
}
# Every RPC can fail so (docs/api.md, "Errors"): a field that breaks a rule or a malformed
# request, the rate limit, a bug, the store or cache down or the service overloaded, the deadline.
COMMON_ERRORS = ("INVALID_ARGUMENT", "RESOURCE_EXHAUSTED", "INTERNAL", "UNAVAILABLE", "DEADLINE_EXCEEDED")
RATE_LIMIT_HEADERS = {
    "RateLimit-Policy": {"$ref": "#/components/headers/RateLimit-Policy"},
    "RateLimit": {"$ref": "#/components/headers/RateLimit"},
}


def operation(response: str, access: str, errors: list[str], *, has_body: bool) -> dict[str, Any]:
    """200 with the output message, then every status the RPC can answer: the common failures,
    UNAUTHENTICATED unless public, PERMISSION_DENIED for admins' RPCs, the RPC's own
    (`taskapi.v1.errors`), and 413 from the edge for a body over the size limit."""
    codes = [*COMMON_ERRORS, *errors]
    if access != "ACCESS_LEVEL_PUBLIC":
        codes.append("UNAUTHENTICATED")
    if access == "ACCESS_LEVEL_ADMIN":
        codes.append("PERMISSION_DENIED")
    by_status: dict[int, list[str]] = {}
    for code in codes:
        by_status.setdefault(HTTP_STATUS[code], [])
        if code not in by_status[HTTP_STATUS[code]]:
            by_status[HTTP_STATUS[code]].append(code)
    if has_body:
        by_status[413] = ["RESOURCE_EXHAUSTED"]
    responses: dict[str, Any] = {
        "200": {
            "description": "OK",
            "headers": RATE_LIMIT_HEADERS,
            "content": {"application/json": {"schema": _ref(response)}},
        }
    }
    for status in sorted(by_status):
        name = {429: "RateLimited", 503: "Unavailable", 413: "TooLarge"}.get(status)
        if name:
            responses[str(status)] = {"$ref": f"#/components/responses/{name}"}
        else:
            responses[str(status)] = {
                "description": " or ".join(by_status[status]) + ", as the JSON error body.",
                "headers": RATE_LIMIT_HEADERS,
                "content": {"application/json": {"schema": _ref("google.rpc.Status")}},
            }
    return responses


def components() -> dict[str, Any]:
    """The shared headers and responses the operations refer to."""
    return {
        "headers": {
            "RateLimit-Policy": {
                "description": "The IETF RateLimit-Policy field: the quota that applies, e.g. `100;w=900`.",
                "schema": {"type": "string"},
            },
            "RateLimit": {
                "description": (
                    "The IETF RateLimit field: what is left of it, e.g. `limit=100, remaining=94, reset=54`."
                ),
                "schema": {"type": "string"},
            },
            "Retry-After": {
                "description": "Seconds to wait before trying again (RFC 9110).",
                "schema": {"type": "integer", "minimum": 0},
            },
        },
        "responses": {
            "RateLimited": {
                "description": ("RESOURCE_EXHAUSTED: too many requests. `details` carries RetryInfo and QuotaFailure."),
                "headers": {"Retry-After": {"$ref": "#/components/headers/Retry-After"}, **RATE_LIMIT_HEADERS},
                "content": {"application/json": {"schema": _ref("google.rpc.Status")}},
            },
            "Unavailable": {
                "description": (
                    "UNAVAILABLE: the store or cache is down, no replica is healthy, or the service is "
                    "overloaded (then with RetryInfo and Retry-After). Safe to retry later."
                ),
                "headers": {"Retry-After": {"$ref": "#/components/headers/Retry-After"}, **RATE_LIMIT_HEADERS},
                "content": {"application/json": {"schema": _ref("google.rpc.Status")}},
            },
            "TooLarge": {
                "description": "The body is over the edge's size limit (1 MiB by default), answered by Envoy.",
                "content": {"application/json": {"schema": _ref("google.rpc.Status")}},
            },
        },
    }
