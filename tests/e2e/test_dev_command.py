"""`taskapi dev`: refuses clearly, before starting anything, when a port it needs is taken;
starts again at once on the ports it just left; its console shows one readable line per request."""

from __future__ import annotations

import http.client
import re
import socket
import time
from pathlib import Path

import pytest
import redis

from taskapi.server import affinity, dev
from taskapi.server.dev import free_port
from tests.support.dev_process import running_dev
from tests.support.edge import RestClient
from tests.support.threads import children, thread_cpus

TCP_STATES_HOLDING_A_PORT = {"05": "FIN_WAIT2", "06": "TIME_WAIT"}  # /proc/net/tcp `st` column


def test_port_in_use_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    cpus = affinity.allowed()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        status = dev.main(["--rest-port", str(port), "--grpc-port", "0", "--admin-port", "0", "--metrics-port", "0"])
    assert status == 1
    error = capsys.readouterr().err
    assert f"port {port}" in error and "--rest-port" in error
    assert affinity.allowed() == cpus  # the stack pins its process (server/affinity.py) and undoes it on the way out


def test_split_refuses_replicas(capsys: pytest.CaptureFixture[str]) -> None:
    """Each side's embedded store lives in one process: a second account process would hold
    other accounts, so --split runs one process per side and says so."""
    assert dev.main(["--split", "--replicas", "3", "--rest-port", "0", "--grpc-port", "0", "--admin-port", "0"]) == 1
    assert "--replicas does not apply with --split" in capsys.readouterr().err


def test_a_live_listener_is_refused_even_with_so_reuseaddr() -> None:
    # Envoy's and Python's servers listen with SO_REUSEADDR: the check must still see them.
    with socket.socket() as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(dev.DevError, match=f"port {port} on 127.0.0.1 is in use: pass --admin-port"):
            dev.claim_port("127.0.0.1", port, "--admin-port")


def test_a_port_left_in_time_wait_can_be_claimed() -> None:
    port = _port_in_time_wait()
    assert dev.claim_port("127.0.0.1", port, "--rest-port") == port


def test_a_port_held_for_envoy_is_never_handed_to_a_server_binding_port_0() -> None:
    """The dev stack chooses Envoy's ports before its replicas and watch servers bind port 0;
    a port chosen and released was once handed straight to a watch server, and Envoy failed
    to start. Held, it never is: not to a gRPC-style bind (SO_REUSEADDR and SO_REUSEPORT)."""
    held = [dev.hold_port("127.0.0.1", 0, "--grpc-port") for _ in range(500)]
    try:
        held_ports = {sock.getsockname()[1] for sock in held}
        for _ in range(2000):
            with socket.socket() as server:
                server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                server.bind(("127.0.0.1", 0))
                server.listen()
                assert server.getsockname()[1] not in held_ports
    finally:
        for sock in held:
            sock.close()


def test_local_redis_moves_to_another_port_when_its_pick_is_taken_meanwhile_and_keeps_it_after(
    tmp_path: Path,
) -> None:
    """LocalRedis picks a free port and redis-server binds it a moment later; another process
    can take it in between. Then it starts on another port, once, before anyone knew the first;
    a restart (the tests stop and start it) stays on the port its clients have."""
    local = dev.LocalRedis(tmp_path / "redis")
    picked = local.port
    with socket.socket() as thief:
        thief.bind(("127.0.0.1", picked))
        thief.listen()
        local.start()
        try:
            assert local.port != picked and local.url == f"redis://127.0.0.1:{local.port}/0"
            assert _pings(local.url)
            local.stop()
            local.start()
            assert _pings(local.url)
            served = local.port
        finally:
            local.stop()
        with socket.socket() as second_thief:
            second_thief.bind(("127.0.0.1", served))
            second_thief.listen()
            with pytest.raises(dev.DevError, match=f"redis-server on port {served} exited"):
                local.start()
    assert local.port == served


def _pings(url: str) -> bool:
    client = redis.Redis.from_url(url, socket_timeout=5)
    try:
        return bool(client.ping())
    finally:
        client.close()


def test_bad_flags_exit_with_usage(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        dev.main(["--replicas", "0"])
    assert exit_info.value.code == 2
    assert "--replicas" in capsys.readouterr().err


def test_dev_starts_again_at_once_on_the_same_ports(tmp_path: Path) -> None:
    ports = {flag: free_port() for flag in ("--rest-port", "--grpc-port", "--admin-port", "--web-port")}
    args = [part for flag, port in ports.items() for part in (flag, str(port))] + ["--metrics-port", "0"]
    rest_port = ports["--rest-port"]
    with running_dev(args, tmp_path) as first:
        rest = first.wait_for(r"REST\s+(http://\S+/api/v1/)")
        # A browser's keep-alive connection, open when the stack stops: Envoy closes it,
        # so the REST port's side of it lingers in TIME_WAIT (the admin port's polls do too).
        browser = http.client.HTTPConnection("127.0.0.1", rest_port, timeout=10)
        browser.request("GET", "/api/v1/tasks")
        reply = browser.getresponse()
        assert reply.status == 401 and reply.read()
        assert first.stop() == 0, first.text()
        browser.close()
    lingering = _lingering_states()
    assert lingering.get(rest_port) or lingering.get(ports["--admin-port"]), "no port left in TIME_WAIT to test with"

    with running_dev(args, tmp_path) as second:
        assert second.wait_for(r"REST\s+(http://\S+/api/v1/)") == rest
        response = RestClient(rest).post("auth/login", {"email": "nobody@example.com", "password": "x" * 12})
        assert response.status == 401, response
        assert second.stop() == 0, second.text()
    assert "in use" not in second.text() and "Traceback" not in second.text(), second.text()


def test_dev_console_shows_one_readable_line_per_request_and_no_health_checks(tmp_path: Path) -> None:
    free = ["--rest-port", "0", "--grpc-port", "0", "--admin-port", "0", "--metrics-port", "0", "--web-port", "0"]
    with running_dev(free, tmp_path) as stack:
        rest = stack.wait_for(r"REST\s+(http://\S+/api/v1/)")
        time.sleep(5)  # Envoy health-checks each of the two replicas every 2 s
        response = RestClient(rest).post("auth/login", {"email": "nobody@example.com", "password": "x" * 12})
        assert response.status == 401, response
        request_id = response.headers["x-request-id"]
        access_log = _read_access_log(stack.output.find(r"access\s+(/\S+)"), request_id)
        assert stack.stop() == 0, stack.text()
    console = stack.text()
    assert "grpc.health" not in console and "Health/Check" not in console, console
    lines = [line for line in stack.output.lines if request_id in line]
    assert len(lines) == 1, console  # the server's line; Envoy's access log goes to a file
    assert re.fullmatch(
        rf"\d\d:\d\d:\d\d\.\d{{3}} /taskapi\.v1\.AuthService/Login UNAUTHENTICATED \d+\.\dms "
        rf"user=- req={re.escape(request_id)} ip=\S+",  # the client address Envoy saw
        lines[0],
    ), lines[0]
    assert not [line for line in stack.output.lines if line.startswith("{")], console  # no JSON on the console
    assert request_id in access_log, console  # the REST view (path, HTTP status) is in the file the banner names


@pytest.mark.skipif(not affinity.supported() or len(affinity.allowed()) < 2, reason="needs Linux and two CPUs")
def test_dev_runs_its_replicas_on_one_cpu_and_envoy_and_redis_on_the_others(tmp_path: Path) -> None:
    cpus = sorted(affinity.allowed())
    serving, rest = frozenset(cpus[-1:]), frozenset(cpus[:-1])
    free = ["--rest-port", "0", "--grpc-port", "0", "--admin-port", "0", "--metrics-port", "0", "--web-port", "0"]
    with running_dev(free, tmp_path) as stack:
        stack.wait_for(r"REST\s+(http://\S+/api/v1/)")
        mine = thread_cpus(stack.process.pid)
        started = {name: thread_cpus(pid) for pid, name in children(stack.process.pid).items()}
        banner = stack.wait_for(r"cpus\s+(.+)")
        assert stack.stop() == 0, stack.text()
    assert len(mine) > 4 and set(mine.values()) == {serving}, mine  # gRPC's, the worker's, the sink's threads too
    assert {"envoy", "redis-server"} <= started.keys(), started
    for name, threads in started.items():
        assert set(threads.values()) == {rest}, (name, threads)
    text, every = affinity.text, serving | rest
    expected = (
        f"replicas on CPU {text(serving)}, Envoy and Redis on {text(rest)}, password hashing on any of {text(every)}"
    )
    assert banner == expected, banner


def test_split_refuses_cpus(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TASKAPI_CPUS", affinity.text(affinity.allowed()))
    assert dev.main(["--split", "--rest-port", "0", "--grpc-port", "0", "--admin-port", "0"]) == 1
    assert "TASKAPI_CPUS does not apply with --split" in capsys.readouterr().err


def _read_access_log(banner_line: re.Match[str] | None, request_id: str) -> str:
    """The access log file the banner names, once it holds `request_id` (Envoy flushes it every second)."""
    if banner_line is None:
        return ""
    path = Path(banner_line.group(1))
    deadline = time.monotonic() + 10
    while request_id not in (text := path.read_text()) and time.monotonic() < deadline:
        time.sleep(0.2)
    return text


def _port_in_time_wait() -> int:
    """A loopback port whose only socket is a closed connection's, kept in TIME_WAIT.

    The listener's side closes first, as Envoy does when it stops, so it is that side
    (the port's) that waits. The listener has SO_REUSEADDR, as Envoy's have: Linux lets
    a new bind share a port with a TIME_WAIT socket only when both sockets set it. A
    bind without it fails on such a port.
    """
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port: int = listener.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port)) as client:
            accepted, _ = listener.accept()
            accepted.close()
            assert client.recv(1) == b""  # the FIN arrived
    with socket.socket() as naive, pytest.raises(OSError, match="Address already in use"):
        naive.bind(("127.0.0.1", port))  # what the port check used to do
    return port


def _lingering_states() -> dict[int, str]:
    """Local port -> TCP state, for IPv4 sockets in FIN_WAIT2 or TIME_WAIT."""
    states: dict[int, str] = {}
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        if state in TCP_STATES_HOLDING_A_PORT:
            states[int(local.rsplit(":", 1)[1], 16)] = TCP_STATES_HOLDING_A_PORT[state]
    return states
