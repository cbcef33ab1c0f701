"""A Server-Sent Events client through real Envoy that stops reading (a raw socket with a
small receive buffer): back-pressure reaches the replica through the taskapi_watch cluster's
small HTTP/2 windows, the replica drops the stream after WATCH_WRITE_TIMEOUT_SECONDS, Envoy's
memory stays bounded, and the last SSE `data:` token it did get resumes the rest."""

from __future__ import annotations

import json
import socket
from pathlib import Path

from taskapi.server.edge import Envoy
from tests.conftest import make_settings, private_database
from tests.e2e.conftest import register, running_stack
from tests.integration.test_watch_slow import WRITE_TIMEOUT, publish, wait_for

PUBLISHED = 300  # ≈ 18 MB of changes


def envoy_allocated(envoy: Envoy) -> int:
    return int(json.loads(envoy.admin_get("/memory"))["allocated"])


def sse_events(raw: bytes) -> list[dict[str, object]]:
    """The `data:` payloads of a chunked HTTP/1.1 SSE response, as far as it got."""
    _, _, body = raw.partition(b"\r\n\r\n")
    text = bytearray()
    while body:
        size_line, _, rest = body.partition(b"\r\n")
        size = int(size_line, 16) if size_line.strip() else 0
        if not size or len(rest) < size:
            text += rest[:size] if size else b""
            break
        text += rest[:size]
        body = rest[size + 2 :]
    return [json.loads(line[len(b"data: ") :]) for line in bytes(text).split(b"\n") if line.startswith(b"data: {")]


def test_a_stalled_sse_client_is_dropped_within_the_bound(redis_url: str, tmp_path: Path) -> None:
    settings = make_settings(
        private_database(redis_url),
        watch_write_timeout_seconds=WRITE_TIMEOUT,
        watch_heartbeat_seconds=0.5,
        changes_retention=100_000,
    )
    with running_stack(settings, tmp_path) as stack:
        assert stack.app is not None
        account = register(stack.client)
        user_id = str(account.user["id"])

        def watchers() -> int:
            return sum(r.watch.servicer.watchers for r in stack.replicas if r.watch is not None)

        stalled = socket.socket()
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connecting: a small window
        stalled.connect((stack.client.host, stack.client.port))
        request = f"GET /api/v1/tasks:watch HTTP/1.1\r\nHost: taskapi\r\nAuthorization: Bearer {account.token}\r\n\r\n"
        stalled.sendall(request.encode())
        head = stalled.recv(4096)  # the status line and the first heartbeat, then no more reading
        assert head.startswith(b"HTTP/1.1 200"), head
        wait_for(lambda: watchers() == 1, 5)
        before = envoy_allocated(stack.envoy)
        ids = publish(stack.app, user_id, PUBLISHED)
        took = wait_for(lambda: watchers() == 0, WRITE_TIMEOUT + 10)
        grown = envoy_allocated(stack.envoy) - before
        # What piled up in Envoy is its buffers' worth (a connection's, a stream window), not the feed.
        assert grown < 8 << 20, f"Envoy grew {grown} bytes"
        # Now read what did reach the client, until the stream ends.
        stalled.settimeout(10)
        raw = head
        try:
            while chunk := stalled.recv(1 << 16):
                raw += chunk
        except TimeoutError:
            pass
        stalled.close()
        events = sse_events(raw)
        delivered = [e["task"]["id"] for e in events if e.get("kind") == "CREATED"]  # type: ignore[index]
        assert len(delivered) < PUBLISHED / 2, "the stalled client was not stalled"
        assert delivered == ids[: len(delivered)]
        last = str([e for e in events if e.get("resumeToken")][-1]["resumeToken"])
        # The token it last received resumes exactly what it missed (the polling endpoint, paged).
        rest: list[str] = []
        token = last
        while len(rest) < len(ids) - len(delivered):
            page = stack.client.get("tasks:changes", token=account.token, query={"sinceToken": token, "pageSize": "10"})
            assert page.status == 200, page.body
            body = json.loads(page.body)
            assert body["changes"], "the missed changes were not all there"
            rest += [c["task"]["id"] for c in body["changes"]]
            token = body["nextToken"]
        assert delivered + rest == ids
        print(f"stalled SSE client dropped {took:.1f}s after the last write; Envoy grew {grown >> 10} KiB")
