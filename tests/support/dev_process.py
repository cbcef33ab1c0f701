"""Test helpers for `taskapi dev` run as a user runs it: a child process, its console read.

with running_dev(["--rest-port", "0"], tmp_path) as dev:
    rest = dev.wait_for(r"REST\\s+(http://\\S+/api/v1/)")
    ...
    assert dev.stop() == 0
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO

STARTUP_SECONDS = 90
TASKAPI = Path(sys.executable).with_name("taskapi")


class Output:
    """Collects a child's output lines on a thread, so its pipe never fills up."""

    def __init__(self, stream: IO[str]) -> None:
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: IO[str]) -> None:
        # Closed here, by its reader, at EOF: closing it from another thread would block
        # while this one waits in a read.
        with stream:
            for line in stream:
                self.lines.append(line.rstrip("\n"))

    def find(self, pattern: str) -> re.Match[str] | None:
        for line in list(self.lines):
            if match := re.search(pattern, line):
                return match
        return None

    def text(self) -> str:
        return "\n".join(self.lines)

    def join(self) -> None:
        self._thread.join(timeout=10)


class DevProcess:
    """A running `taskapi dev`: its process and its console (stdout and stderr, merged)."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.process = process
        assert process.stdout is not None
        self.output = Output(process.stdout)

    def wait_for(self, pattern: str, timeout: float = STARTUP_SECONDS) -> str:
        """The first group of the first console line matching `pattern`, waiting for it."""
        deadline = time.monotonic() + timeout
        while (match := self.output.find(pattern)) is None:
            assert self.process.poll() is None, f"taskapi dev exited with {self.process.returncode}:\n{self.text()}"
            assert time.monotonic() < deadline, f"no line matching {pattern!r}:\n{self.text()}"
            time.sleep(0.1)
        return match.group(1)

    def stop(self, timeout: float = 60.0) -> int:
        """Ctrl-C, then its exit status once it has stopped everything it started."""
        self.process.send_signal(signal.SIGINT)
        status = self.process.wait(timeout=timeout)
        self.output.join()
        return status

    def text(self) -> str:
        return self.output.text()


@contextmanager
def running_dev(args: Sequence[str], cwd: Path, env: Mapping[str, str] | None = None) -> Iterator[DevProcess]:
    """`taskapi dev ARGS` with its own Redis and cheap bcrypt; stopped on exit if still running."""
    environment = dict(os.environ, BCRYPT_ROUNDS="4") | dict(env or {})
    environment.pop("REDIS_URL", None)  # the dev command starts its own redis-server
    process = subprocess.Popen(
        [str(TASKAPI), "dev", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=environment,
        cwd=cwd,
    )
    dev = DevProcess(process)
    try:
        yield dev
    finally:
        if process.poll() is None:
            # Ctrl-C first: it stops Envoy and Redis (their own sessions), which a kill of
            # `taskapi dev` would orphan, still holding our pipe open.
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        dev.output.join()
