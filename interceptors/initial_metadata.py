"""A call's response headers (initial metadata) sent with its response, not in a batch of their own.

`context.send_initial_metadata(...)` on grpcio's sync server starts a batch of its own: one more
trip through grpc's core, one more completion for the poller thread and one more hand-off of the
GIL, about 55 µs of server CPU a call (bench/README.md, "The RateLimit headers in the last
batch"). When a handler has sent none, grpcio puts an initial-metadata operation into the batch
that carries the response and the status (or the abort) anyway, with no metadata in it. `defer`
keeps the call's headers on grpcio's per-call state and one hook on grpcio's private
`_server._get_initial_metadata` fills that operation with them: the same headers, in the batch
grpcio sends regardless.

grpcio is pinned (pyproject.toml); `active()` says whether the hook is in place, and a test
fails when it is not, so an upgrade that moves the function is noticed rather than silently
slower. Where the hook cannot apply (another grpcio, or a context that is not the sync server's),
`defer` sends the headers the public way.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

_grpc_server: Any = importlib.import_module("grpc._server")  # private: see the module docstring
_DEFERRED = "taskapi_deferred_initial_metadata"  # the attribute on grpcio's per-call _RPCState


def _with_deferred(original: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    def initial_metadata(state: Any, metadata: Any) -> Any:
        """grpcio's `_get_initial_metadata`, with the call's deferred headers when none were given."""
        return original(state, getattr(state, _DEFERRED, None) if metadata is None else metadata)

    return initial_metadata


_original = getattr(_grpc_server, "_get_initial_metadata", None)
_initial_metadata = _with_deferred(_original) if _original is not None else None
if _initial_metadata is not None:
    _grpc_server._get_initial_metadata = _initial_metadata


def active() -> bool:
    """True when grpcio sends deferred headers with the response (the hook is in place)."""
    return _initial_metadata is not None and getattr(_grpc_server, "_get_initial_metadata", None) is _initial_metadata


def defer(context: Any, metadata: tuple[tuple[str, str], ...]) -> None:
    """Send `metadata` as the call's initial metadata, with its response when grpcio allows it."""
    state = getattr(context, "_state", None)
    if active() and state is not None and getattr(state, "initial_metadata_allowed", False):
        setattr(state, _DEFERRED, metadata)
    else:
        context.send_initial_metadata(metadata)
