"""Creates the per-call state: method, client IP, request id."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterable
from typing import Any
from urllib.parse import unquote

import grpc
from grpc_interceptor import ServerInterceptor

from taskapi.interceptors.context import CallState, Continuation, bind_call, unbind_call

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def peer_ip(peer: str) -> str:
    """`ipv4:1.2.3.4:5678` / `ipv6:%5B::1%5D:5678` -> the address; anything else as is.

    grpcio percent-encodes the brackets of IPv6 peers, so decode before splitting.
    """
    kind, _, rest = unquote(peer).partition(":")
    if kind == "ipv4":
        return rest.rsplit(":", 1)[0]
    if kind == "ipv6":
        return rest.rsplit(":", 1)[0].strip("[]")
    return peer or "unknown"


class CallStateInterceptor(ServerInterceptor):
    """Binds a CallState for the call and, on success, sends its response metadata.

    The client IP is the peer address, unless the peer is a trusted proxy (Envoy):
    then it is the last `x-forwarded-for` entry, the one that proxy appended itself.
    Entries further left were written by the client and are not trusted.
    """

    _MAX_PEERS = 1024  # bound on the trust cache; peers are a few proxies, or clients when direct

    def __init__(self, trusted_proxies: Iterable[Network]) -> None:
        self._trusted = tuple(trusted_proxies)
        # peer address -> trusted? Behind Envoy every call asks about the same few
        # addresses; parsing one and testing it against each network costs microseconds.
        self._peer_trusted: dict[str, bool] = {}

    def intercept(self, method: Continuation, request: Any, context: grpc.ServicerContext, method_name: str) -> Any:
        # Text metadata only: a `-bin` value is bytes, and these two are never binary.
        metadata = {key: value for key, value in context.invocation_metadata() if isinstance(value, str)}
        # 128 random bits as 32 hex digits, as uuid4().hex but a quarter of its cost.
        request_id = metadata.get("x-request-id") or os.urandom(16).hex()
        state = CallState(
            method=method_name,
            client_ip=self._client_ip(context.peer(), metadata.get("x-forwarded-for", "")),
            request_id=request_id[:128],
            traceparent=metadata.get("traceparent"),
        )
        state.response_metadata.append(("x-request-id", state.request_id))
        token = bind_call(state)
        try:
            response = method(request, context)
            state.send_response_metadata(context)
            return response
        finally:
            unbind_call(token)

    def _client_ip(self, peer: str, forwarded_for: str) -> str:
        address = peer_ip(peer)
        if forwarded_for and self._is_trusted(address):
            last = forwarded_for.split(",")[-1].strip()
            if last:
                return last
        return address

    def _is_trusted(self, address: str) -> bool:
        trusted = self._peer_trusted.get(address)
        if trusted is None:
            trusted = self._check_trusted(address)
            if len(self._peer_trusted) >= self._MAX_PEERS:
                self._peer_trusted.clear()  # many direct clients: start over rather than grow
            self._peer_trusted[address] = trusted
        return trusted

    def _check_trusted(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self._trusted)
