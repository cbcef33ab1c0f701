"""Per-RPC call policy, read from the protos: the one source for Envoy, this SDK and the docs.

Each RPC declares in `protos/taskapi/v1/*.proto`:
- `(taskapi.v1.access)`: who may call it (PUBLIC, USER, ADMIN);
- the standard `idempotency_level`: NO_SIDE_EFFECTS (reads) and IDEMPOTENT (Logout)
  may be repeated after any failure;
- AIP-155: a request with a `request_id` field is idempotent when that field is set
  (a repeated CreateTask with the same id returns the first task).

Everything else is retried only when it provably never ran (the server says so with
`x-retry-safe: true`, or the connection failed before the request was sent). The server's
edge (Envoy routes), this SDK's retries and the generated docs all read this module, so
they cannot disagree.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache

from google.protobuf import descriptor_pb2
from google.protobuf.descriptor import FileDescriptor, MethodDescriptor

from taskapi.v1 import access_pb2, auth_pb2, task_pb2, user_pb2

# AIP-155: the field that makes a create idempotent when set.
REQUEST_ID_FIELD = "request_id"
_Idempotency = descriptor_pb2.MethodOptions.IdempotencyLevel
_REPEATABLE = (descriptor_pb2.MethodOptions.NO_SIDE_EFFECTS, descriptor_pb2.MethodOptions.IDEMPOTENT)
FILES: tuple[FileDescriptor, ...] = (auth_pb2.DESCRIPTOR, task_pb2.DESCRIPTOR, user_pb2.DESCRIPTOR)


@dataclass(frozen=True)
class RpcPolicy:
    """What the protos say about one RPC."""

    path: str  # "/taskapi.v1.TaskService/GetTask", the gRPC method path
    service: str  # "taskapi.v1.TaskService"
    name: str  # "GetTask"
    access: int  # access_pb2.ACCESS_LEVEL_*; UNSPECIFIED reads as USER
    idempotency: int  # MethodOptions.IdempotencyLevel
    request_id_field: str | None  # set: idempotent when the request carries this field

    @property
    def repeatable(self) -> bool:
        """Repeating the call cannot change the outcome, whatever the first attempt did."""
        return self.idempotency in _REPEATABLE

    @property
    def access_name(self) -> str:
        level = self.access or access_pb2.ACCESS_LEVEL_USER
        return access_pb2.AccessLevel.Name(level).removeprefix("ACCESS_LEVEL_")

    @property
    def idempotency_name(self) -> str:
        return _Idempotency.Name(self.idempotency)  # type: ignore[arg-type]

    def repeatable_with(self, request: object) -> bool:
        """True when this call, with this request, may be retried after any failure."""
        if self.repeatable:
            return True
        return self.request_id_field is not None and bool(getattr(request, self.request_id_field, ""))


def access_level(options: descriptor_pb2.MethodOptions) -> int:
    """The `(taskapi.v1.access)` option; 0 (UNSPECIFIED) when absent."""
    level: int = options.Extensions[access_pb2.access]  # type: ignore[index]  # types-protobuf lacks extension typing
    return level


def policy_of(method: MethodDescriptor) -> RpcPolicy:
    options = method.GetOptions()
    request_fields = method.input_type.fields_by_name
    return RpcPolicy(
        path=f"/{method.containing_service.full_name}/{method.name}",
        service=method.containing_service.full_name,
        name=method.name,
        access=access_level(options),
        idempotency=options.idempotency_level,
        request_id_field=REQUEST_ID_FIELD if REQUEST_ID_FIELD in request_fields else None,
    )


def policies_of(files: Iterable[FileDescriptor]) -> dict[str, RpcPolicy]:
    """Every RPC of the services in `files`, keyed by gRPC method path, in proto order."""
    return {
        policy.path: policy
        for file in files
        for service in file.services_by_name.values()
        for policy in map(policy_of, service.methods)
    }


@cache
def rpc_policies() -> Mapping[str, RpcPolicy]:
    """The policies of every Task API RPC (computed once)."""
    return policies_of(FILES)
