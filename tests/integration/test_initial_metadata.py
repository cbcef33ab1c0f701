"""Response headers deferred to the response's own batch reach the client, on success and error.

A real grpcio sync server on a free port and a real channel: the handlers defer their headers
(interceptors/initial_metadata.py) and the client reads them as the call's initial metadata.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest

from taskapi.interceptors import initial_metadata

HEADERS = (("ratelimit", '"ip";r=9;t=1'), ("x-request-id", "abc123"))


def _ok(request: bytes, context: grpc.ServicerContext) -> bytes:
    initial_metadata.defer(context, HEADERS)
    return b"pong"


def _fails(request: bytes, context: grpc.ServicerContext) -> bytes:
    initial_metadata.defer(context, HEADERS)
    context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "slow down")


def _counts(request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
    initial_metadata.defer(context, HEADERS)
    yield b"one"
    yield b"two"


def _twice(request: bytes, context: grpc.ServicerContext) -> bytes:
    """Deferred, then sent the public way: the explicit send wins, as grpcio's own rule has it."""
    initial_metadata.defer(context, HEADERS)
    context.send_initial_metadata((("x-explicit", "1"),))
    return b"pong"


@pytest.fixture(scope="module")
def channel() -> Iterator[grpc.Channel]:
    handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {
        "Ok": grpc.unary_unary_rpc_method_handler(_ok),
        "Fails": grpc.unary_unary_rpc_method_handler(_fails),
        "Counts": grpc.unary_stream_rpc_method_handler(_counts),
        "Twice": grpc.unary_unary_rpc_method_handler(_twice),
    }
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("test.Meta", handlers),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield channel
    finally:
        server.stop(0)


def _method(channel: grpc.Channel, name: str, *, streaming: bool = False) -> Any:
    """The raw-bytes callable (no serializers: the handlers take and return bytes)."""
    return (channel.unary_stream if streaming else channel.unary_unary)(f"/test.Meta/{name}")


def _headers(metadata: Any) -> dict[str, str]:
    return {key: value for key, value in metadata}


def test_grpcio_takes_the_hook() -> None:
    # Fails when a grpcio upgrade moves the function: the headers would still arrive (defer falls
    # back to send_initial_metadata), at the cost of a batch a call (bench/README.md).
    assert initial_metadata.active()


def test_deferred_headers_arrive_with_a_response(channel: grpc.Channel) -> None:
    response, call = _method(channel, "Ok").with_call(b"ping", timeout=5)
    assert response == b"pong"
    assert _headers(call.initial_metadata()).items() >= dict(HEADERS).items()


def test_deferred_headers_arrive_with_an_error(channel: grpc.Channel) -> None:
    with pytest.raises(grpc.RpcError) as raised:
        _method(channel, "Fails")(b"ping", timeout=5)
    error: Any = raised.value
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert _headers(error.initial_metadata()).items() >= dict(HEADERS).items()


def test_deferred_headers_arrive_before_a_stream(channel: grpc.Channel) -> None:
    call: Any = _method(channel, "Counts", streaming=True)(b"ping", timeout=5)
    assert _headers(call.initial_metadata()).items() >= dict(HEADERS).items()
    assert list(call) == [b"one", b"two"]


def test_an_explicit_send_after_a_deferral_wins(channel: grpc.Channel) -> None:
    _, call = _method(channel, "Twice").with_call(b"ping", timeout=5)
    headers = _headers(call.initial_metadata())
    assert headers.get("x-explicit") == "1" and "ratelimit" not in headers
