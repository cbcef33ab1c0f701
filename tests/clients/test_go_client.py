"""The Go client (clients/go, Debian's protoc-gen-go and protoc-gen-go-grpc) against a live server.

Built offline GOPATH-style: a temporary GOPATH whose src/ links the protos'
go_package root (github.com/taskapi/taskapi/gen/go) to clients/go, with Debian's
Go packages in /usr/share/gocode after it.
"""

import os
from pathlib import Path

from tests.clients.conftest import CLIENTS, run_checked

IMPORT_ROOT = "github.com/taskapi/taskapi/gen/go"


def test_go_client_calls_the_live_server(grpc_target: str, tmp_path: Path) -> None:
    link = tmp_path / "src" / IMPORT_ROOT
    link.parent.mkdir(parents=True)
    link.symlink_to(CLIENTS / "go", target_is_directory=True)
    env = {
        "TASKAPI_GRPC_TARGET": grpc_target,
        "GO111MODULE": "off",
        "GOPATH": f"{tmp_path}:/usr/share/gocode",
        "GOPROXY": "off",
        "GOFLAGS": "",
        # The build cache survives between runs (Debian's grpc takes a while to compile).
        "GOCACHE": os.environ.get("GOCACHE") or str(tmp_path.home() / ".cache" / "go-build"),
    }
    output = run_checked(["go", "test", "-count=1", "-v", f"{IMPORT_ROOT}/livetest"], env)
    assert "--- PASS: TestRegisterCreateList" in output, output
