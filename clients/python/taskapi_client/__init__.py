"""A small hand-written Python SDK for Task API, on top of the generated `taskapi.v1`.

See `TaskApiClient` for the call behavior and `taskapi_client.errors` for the error tree.
"""

from .client import TaskApiClient
from .errors import (
    Aborted,
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    TaskApiError,
    Unauthenticated,
    Unavailable,
    from_rpc_error,
)

__all__ = [
    "Aborted",
    "AlreadyExists",
    "FailedPrecondition",
    "InvalidArgument",
    "NotFound",
    "PermissionDenied",
    "ResourceExhausted",
    "TaskApiClient",
    "TaskApiError",
    "Unauthenticated",
    "Unavailable",
    "from_rpc_error",
]
