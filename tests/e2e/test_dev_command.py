"""`taskapi dev` refuses clearly, before starting anything, when a port it needs is taken."""

from __future__ import annotations

import socket

import pytest

from taskapi.server import dev


def test_port_in_use_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        status = dev.main(["--rest-port", str(port), "--grpc-port", "0", "--admin-port", "0", "--metrics-port", "0"])
    assert status == 1
    error = capsys.readouterr().err
    assert f"port {port}" in error and "--rest-port" in error


def test_bad_flags_exit_with_usage(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        dev.main(["--replicas", "0"])
    assert exit_info.value.code == 2
    assert "--replicas" in capsys.readouterr().err
