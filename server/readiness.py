"""Telling a supervisor that `taskapi serve` is serving: systemd's notify protocol (sd_notify(3)).

When NOTIFY_SOCKET names a Unix datagram socket (systemd sets it for a `Type=notify` unit;
`taskapi dev --split` sets it for its children), the server sends one datagram once every
listener is bound:

    READY=1
    STATUS=serving gRPC on 127.0.0.1:50051 (tasks)
    X_TASKAPI_GRPC_PORT=50051
    X_TASKAPI_WATCH_PORT=50052
    X_TASKAPI_METRICS_PORT=9464

and STOPPING=1 when it starts draining. The X_ variables (systemd ignores them) carry the
ports actually bound, so a supervisor can start a server on port 0 and learn its ports
afterwards: no port is chosen for a child and released for it to bind, a window in which
any other process binding port 0 could be handed it.
"""

from __future__ import annotations

import logging
import os
import select
import socket
import time
from collections.abc import Callable, Mapping
from pathlib import Path

log = logging.getLogger(__name__)

ENVIRONMENT = "NOTIFY_SOCKET"
GRPC_PORT = "X_TASKAPI_GRPC_PORT"
WATCH_PORT = "X_TASKAPI_WATCH_PORT"
METRICS_PORT = "X_TASKAPI_METRICS_PORT"
# One datagram; systemd reads up to its page-sized buffer, and ours is a few lines.
MAX_DATAGRAM = 4096


def notify(fields: Mapping[str, str], environ: Mapping[str, str] = os.environ) -> bool:
    """Send `fields` (KEY=value lines) to NOTIFY_SOCKET; False when it is unset. A socket that
    cannot be reached is logged, not raised: the server serves whether or not anyone listens."""
    target = environ.get(ENVIRONMENT, "")
    if not target.startswith(("/", "@")):  # unset, or an address family we do not speak (vsock:)
        return False
    address = "\0" + target[1:] if target.startswith("@") else target  # "@": the abstract namespace
    payload = "".join(f"{key}={value}\n" for key, value in fields.items()).encode()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.sendto(payload, address)
    except OSError as exc:
        log.warning("could not notify %s: %s", ENVIRONMENT, exc.strerror or exc)
        return False
    return True


def parse(datagram: bytes) -> dict[str, str]:
    """The KEY=value lines of a notification (lines without "=" are ignored, as systemd does)."""
    lines = datagram.decode("utf-8", "replace").splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line)


class ReadinessSocket:
    """A NOTIFY_SOCKET for one child: bound at `path` (in a private directory: anyone who can
    write to it can speak for the child), closed on exit."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            self._sock.bind(str(path))
        except OSError:
            self._sock.close()
            raise

    def wait_for(self, check: Callable[[], None], timeout: float, *, key: str = "READY") -> dict[str, str]:
        """The fields of the first notification with `key`=1 (READY, or STOPPING). `check` runs
        between waits and raises when the child is gone; TimeoutError after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            check()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no {key}=1 notification within {timeout:g}s")
            readable, _, _ = select.select([self._sock], [], [], min(remaining, 0.2))
            if readable:
                fields = parse(self._sock.recv(MAX_DATAGRAM))
                if fields.get(key) == "1":
                    return fields

    def close(self) -> None:
        self._sock.close()
        self.path.unlink(missing_ok=True)

    def __enter__(self) -> ReadinessSocket:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
