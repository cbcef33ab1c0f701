"""A real SMTP server for tests (aiosmtpd, on a free loopback port) that records what it
accepts, and can hold a transaction open: with the gate closed, a client's RCPT waits (the
SMTP transaction is in progress, nothing is accepted yet) until the test opens it.

    with running_sink() as sink:
        ...
        [message] = sink.wait_for(1, to="ada@example.com")
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from email.message import EmailMessage
from email.utils import getaddresses
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from taskapi.server.dev import free_port


class _Recorder:
    def __init__(self, sink: SmtpSink) -> None:
        self._sink = sink

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: Any) -> str:
        sink = self._sink
        sink.transactions += 1
        if sink.refuse > 0:  # busy: a transient refusal, as a server under load or greylisting answers
            sink.refuse -= 1
            return "451 4.3.2 try again later"
        sink.holding.set()
        while not sink.gate.is_set():  # a transaction held open: the message is not accepted yet
            await asyncio.sleep(0.01)
        sink.holding.clear()
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        with self._sink.lock:
            self._sink.messages.append(message)
        return "250 Message accepted for delivery"


class SmtpSink:
    def __init__(self, port: int = 0, *, credentials: tuple[str, str] | None = None, refuse: int = 0) -> None:
        self.port = port or free_port()
        self.credentials = credentials  # required of every client when set (AUTH PLAIN or LOGIN)
        self.refuse = refuse  # the first `refuse` recipients get a 451
        self.messages: list[EmailMessage] = []
        self.lock = threading.Lock()
        self.gate = threading.Event()  # open: transactions go through
        self.gate.set()
        self.holding = threading.Event()  # set while a transaction waits at the closed gate
        self.transactions = 0
        self.logins = 0  # successful AUTHs
        self._controller: Controller | None = None

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"

    def start(self) -> SmtpSink:
        auth: dict[str, Any] = {}
        if self.credentials is not None:
            # AUTH without TLS (loopback only). Not required: aiosmtpd warns when it must be
            # without TLS; `logins` shows the client did sign in.
            auth = {"auth_require_tls": False, "authenticator": self._authenticate}
        self._controller = Controller(_Recorder(self), hostname="127.0.0.1", port=self.port, **auth)
        self._controller.start()
        return self

    def _authenticate(self, server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
        expected = self.credentials
        ok = isinstance(data, LoginPassword) and expected is not None
        ok = ok and (data.login.decode(), data.password.decode()) == expected
        self.logins += ok
        return AuthResult(success=ok)

    def stop(self) -> None:
        self.gate.set()
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def to(self, address: str) -> list[EmailMessage]:
        with self.lock:
            return [m for m in self.messages if address.lower() in {a.lower() for _, a in getaddresses([m["To"]])}]

    def wait_for(self, count: int, *, to: str, timeout: float = 20.0) -> list[EmailMessage]:
        """The messages to `to`, once there are `count` of them (fails on more, or on timeout)."""
        deadline = time.monotonic() + timeout
        while len(found := self.to(to)) < count:
            assert time.monotonic() < deadline, f"{len(found)} of {count} messages to {to} within {timeout}s"
            time.sleep(0.05)
        assert len(found) == count, [m["Subject"] for m in found]
        return found

    def wait_holding(self, timeout: float = 20.0) -> None:
        assert self.holding.wait(timeout), "no SMTP transaction reached the closed gate"


@contextmanager
def running_sink(port: int = 0, **options: Any) -> Iterator[SmtpSink]:
    sink = SmtpSink(port, **options).start()
    try:
        yield sink
    finally:
        sink.stop()


class DroppingServer:
    """A port where the SMTP server is down hard: every connection is accepted and closed at
    once, before any greeting. Records when each attempt came (to see the backoff)."""

    def __init__(self, port: int = 0) -> None:
        self.port = port or free_port()
        self.attempts: list[float] = []
        self._socket = socket.socket()
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind(("127.0.0.1", self.port))
        self._socket.listen(16)
        self._socket.settimeout(0.1)
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stopping.is_set():
            try:
                connection, _ = self._socket.accept()
            except TimeoutError:
                continue
            self.attempts.append(time.monotonic())
            connection.close()

    def close(self) -> None:
        self._stopping.set()
        self._thread.join(timeout=5)
        self._socket.close()
