"""envoy/sse_event_ids.lua in a real Envoy, on byte streams the transcoder rarely produces:
events split across chunks, several events in one chunk, a task text that mimics the token
key, and responses that are not SSE. The upstream is a plain HTTP server writing exactly the
chunks each case names, with pauses so that Envoy reads them one by one; the same script on
the real watch route is tested through the whole stack in test_watch_sse.py."""

from __future__ import annotations

import http.client
import json
import socket
import socketserver
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from taskapi.server.dev import free_port
from taskapi.server.edge.config import SSE_EVENT_IDS
from taskapi.server.edge.process import envoy_binary

EVENT = 'data: {{"kind":"{kind}","resumeToken":"{token}"}}\n\n'
TRICKY = 'data: {"kind":"CREATED","task":{"title":"\\"resumeToken\\":\\"fake\\" \\n\\n"},"resumeToken":"t9.x-_"}\n\n'

# Per case: the chunks the upstream writes, and its content type.
CASES: dict[str, tuple[list[str], str]] = {
    "one event per chunk": (
        [EVENT.format(kind="KIND_UNSPECIFIED", token="t0"), EVENT.format(kind="CREATED", token="t1")],
        "text/event-stream",
    ),
    "several events per chunk": (
        [
            EVENT.format(kind="CREATED", token="t1")
            + EVENT.format(kind="UPDATED", token="t2")
            + EVENT.format(kind="DELETED", token="t3")
        ],
        "text/event-stream",
    ),
    "an event split across chunks": (
        [
            TRICKY[:40],
            TRICKY[40:-1],
            "\n" + EVENT.format(kind="KIND_UNSPECIFIED", token="t10")[:7],
            EVENT.format(kind="KIND_UNSPECIFIED", token="t10")[7:],
        ],
        "text/event-stream",
    ),
}


def _with_ids(body: str) -> str:
    """What the script should make of `body`: `id: <token>` before each event."""
    events = [event + "\n\n" for event in body.split("\n\n") if event]
    return "".join(f"id: {json.loads(event[len('data: ') :])['resumeToken']}\n{event}" for event in events)


class _Upstream(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


class _Handler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        request = self.rfile.readline().decode()
        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
            pass
        name = request.split()[1].rsplit("/", 1)[-1].replace("-", " ")
        chunks, content_type = CASES.get(name, (['{"resumeToken":"t0"}\n\n'], "application/json"))
        self.wfile.write(
            f"HTTP/1.1 200 OK\r\ncontent-type: {content_type}\r\ntransfer-encoding: chunked\r\n"
            "connection: close\r\n\r\n".encode()  # one request per connection: never a reused, closing one
        )
        for chunk in chunks:
            data = chunk.encode()
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()
            time.sleep(0.05)  # Envoy reads (and the script sees) each chunk apart
        self.wfile.write(b"0\r\n\r\n")


def _config(port: int, admin: int, upstream: int) -> str:
    script = json.dumps(SSE_EVENT_IDS.read_text(encoding="utf-8"))
    return f"""
admin: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {admin} }} }} }}
static_resources:
  listeners:
  - name: sse
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: sse
          route_config:
            virtual_hosts:
            - name: sse
              domains: ["*"]
              routes:
              - match: {{ prefix: /plain }}
                route: {{ cluster: upstream, timeout: 5s }}
              - match: {{ prefix: / }}
                route: {{ cluster: upstream, timeout: 5s }}
                typed_per_filter_config:
                  sse_event_ids:
                    "@type": type.googleapis.com/envoy.extensions.filters.http.lua.v3.LuaPerRoute
                    source_code: {{ inline_string: {script} }}
          http_filters:
          - name: sse_event_ids
            typed_config: {{ "@type": type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua }}
          - name: envoy.filters.http.router
            typed_config: {{ "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }}
  clusters:
  - name: upstream
    type: STATIC
    load_assignment:
      cluster_name: upstream
      endpoints:
      - lb_endpoints:
        - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {upstream} }} }} }}
"""


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """Envoy with the script on every route but /plain, in front of the scripted upstream."""
    workdir = tmp_path_factory.mktemp("sse-ids")
    upstream = _Upstream(("127.0.0.1", 0), _Handler)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    port, admin = free_port(), free_port()
    config = Path(workdir / "envoy.yaml")
    config.write_text(_config(port, admin, upstream.server_address[1]))
    log = (workdir / "envoy.log").open("wb")
    envoy = subprocess.Popen(  # noqa: S603
        [envoy_binary(), "-c", str(config), "--log-level", "warn", "--concurrency", "1", "--disable-hot-restart"],
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            assert envoy.poll() is None, (workdir / "envoy.log").read_text()
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "envoy did not listen"
                time.sleep(0.1)
        yield port
    finally:
        envoy.terminate()
        envoy.wait(10)
        log.close()
        upstream.shutdown()
        upstream.server_close()


def _get(port: int, path: str) -> tuple[str, str]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.getheader("content-type", ""), response.read().decode()
    finally:
        connection.close()


@pytest.mark.parametrize("case", CASES)
def test_each_event_gets_the_id_of_its_own_token(edge: int, case: str) -> None:
    chunks, _ = CASES[case]
    content_type, body = _get(edge, "/" + case.replace(" ", "-"))
    assert content_type == "text/event-stream"
    assert body == _with_ids("".join(chunks))


def test_a_body_that_is_not_sse_passes_untouched(edge: int) -> None:
    assert _get(edge, "/not-sse") == ("application/json", '{"resumeToken":"t0"}\n\n')


def test_routes_without_the_script_run_none(edge: int) -> None:
    chunks, _ = CASES["several events per chunk"]
    assert _get(edge, "/plain/several-events-per-chunk")[1] == "".join(chunks)
