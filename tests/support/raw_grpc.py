"""A raw gRPC-over-HTTP/2 client for tests that must send what grpcio refuses to send.

grpcio validates outgoing metadata (lowercase keys of [0-9a-z-_.], printable values, its
own grpc-timeout), so it cannot play a hostile or broken client. This one frames one
unary call by hand with the `h2` protocol library and sends the header names and value
bytes exactly as given:

    reply = raw_grpc_call(("127.0.0.1", port), "/taskapi.v1.AuthService/Login", request,
                          headers=[(b"grpc-timeout", b"garbage")])
    assert reply.code == grpc.StatusCode.UNAUTHENTICATED, reply
"""

from __future__ import annotations

import socket
from collections.abc import Sequence
from dataclasses import dataclass, field

import grpc
import h2.config
import h2.connection
import h2.events
from google.protobuf.message import Message

_CODES = {code.value[0]: code for code in grpc.StatusCode}


@dataclass
class RawReply:
    headers: dict[str, str] = field(default_factory=dict)
    trailers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    reset: str | None = None  # the HTTP/2 error when the stream or connection was reset instead

    @property
    def code(self) -> grpc.StatusCode | None:
        """The gRPC status: from the trailers, or from the headers of a trailers-only reply."""
        status = self.trailers.get("grpc-status", self.headers.get("grpc-status"))
        return None if status is None else _CODES.get(int(status))

    @property
    def message(self) -> str:
        return self.trailers.get("grpc-message", self.headers.get("grpc-message", ""))


def raw_grpc_call(
    address: tuple[str, int],
    path: str,
    request: Message | bytes,
    *,
    headers: Sequence[tuple[bytes, bytes]] = (),
    timeout: float = 10.0,
) -> RawReply:
    """One unary call on a fresh HTTP/2 connection; `headers` replace defaults of the same name."""
    host, port = address
    config = h2.config.H2Configuration(
        client_side=True, validate_outbound_headers=False, normalize_outbound_headers=False
    )
    connection = h2.connection.H2Connection(config)
    payload = request if isinstance(request, bytes) else request.SerializeToString()
    given = {name for name, _ in headers}
    defaults = [
        (b":method", b"POST"),
        (b":scheme", b"http"),
        (b":path", path.encode()),
        (b":authority", f"{host}:{port}".encode()),
        (b"content-type", b"application/grpc"),
        (b"te", b"trailers"),
    ]
    with socket.create_connection(address, timeout=timeout) as sock:
        connection.initiate_connection()
        stream = connection.get_next_available_stream_id()
        connection.send_headers(stream, [h for h in defaults if h[0] not in given] + list(headers))
        connection.send_data(stream, b"\x00" + len(payload).to_bytes(4, "big") + payload, end_stream=True)
        sock.sendall(connection.data_to_send())
        return _read_reply(sock, connection, stream)


def _read_reply(sock: socket.socket, connection: h2.connection.H2Connection, stream: int) -> RawReply:
    reply = RawReply()
    while True:
        data = sock.recv(65536)
        if not data:
            reply.reset = "connection closed"
            return reply
        for event in connection.receive_data(data):
            if getattr(event, "stream_id", stream) != stream:
                continue
            if isinstance(event, h2.events.ResponseReceived):
                reply.headers = _decode(event.headers)
            elif isinstance(event, h2.events.TrailersReceived):
                reply.trailers = _decode(event.headers)
            elif isinstance(event, h2.events.DataReceived):
                reply.body += event.data
                connection.acknowledge_received_data(event.flow_controlled_length, stream)
            elif isinstance(event, h2.events.StreamReset):
                reply.reset = str(event.error_code)
                return reply
            elif isinstance(event, h2.events.ConnectionTerminated):
                reply.reset = f"GOAWAY {event.error_code}"
                return reply
            elif isinstance(event, h2.events.StreamEnded):
                return reply
        sock.sendall(connection.data_to_send())


def _decode(headers: Sequence[tuple[bytes | str, bytes | str]]) -> dict[str, str]:
    def text(value: bytes | str) -> str:
        return value.decode("latin-1") if isinstance(value, bytes) else value

    return {text(name): text(value) for name, value in headers}
