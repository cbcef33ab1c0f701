"""The local SMTP sink of `taskapi dev` (when SMTP_URL is unset): a real SMTP server
(aiosmtpd) on a loopback port of the kernel's choosing that delivers nowhere. Each message
is shown on the console in one line and kept as an .eml file, so a developer sees what a
user would get.

    12:01:03.120 mail to Ada <ada@example.com>: "Welcome to Task API" (saved /tmp/taskapi-dev-x/mail/0001.eml)
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import itertools
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

from aiosmtpd.controller import Controller


class _Keep:
    def __init__(self, folder: Path, out: TextIO) -> None:
        self._folder = folder
        self._out = out
        self._numbers = itertools.count(1)
        self._lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self._lock:
            path = self._folder / f"{next(self._numbers):04d}.eml"
        path.write_bytes(envelope.content)
        to, subject = _summary(envelope.content)
        now = time.time()
        stamp = time.strftime("%H:%M:%S", time.localtime(now)) + f".{int(now % 1 * 1000):03d}"
        print(f'{stamp} mail to {to}: "{subject}" (saved {path})', file=self._out, flush=True)
        return "250 Message accepted for delivery"


def _summary(content: bytes) -> tuple[str, str]:
    """The To and Subject of a message, fit for one console line: anyone who can reach the
    port can send anything, so a header that does not parse is shown as such, control
    characters (terminal escapes, line breaks) become spaces, and long values are cut."""
    try:
        message = email.message_from_bytes(content, policy=email.policy.default)
        to, subject = str(message["To"] or ""), str(message["Subject"] or "")
    except Exception:  # the email package raises many kinds on malformed headers
        return "(unreadable)", "(unreadable)"
    return _printable(to), _printable(subject)


def _printable(text: str, limit: int = 200) -> str:
    shown = "".join(" " if not char.isprintable() else char for char in text)
    return shown if len(shown) <= limit else shown[: limit - 1] + "…"


class _BoundController(Controller):
    """aiosmtpd's Controller on port 0. Once bound, start() connects to `self.port` to check
    the server answers; this sets it to the port the kernel gave first, so no port is picked
    free beforehand and released for anything else to take before the sink binds it."""

    def _trigger_server(self) -> None:
        # Bound before start() gets here (its ready event); loop.create_server's asyncio.Server.
        assert isinstance(self.server, asyncio.Server)
        self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()  # type: ignore[no-untyped-call]  # aiosmtpd leaves it unannotated


@contextmanager
def mail_sink(folder: Path, out: TextIO, port: int = 0) -> Iterator[int]:
    """Run the sink on 127.0.0.1:`port` (0: one the kernel picks), keeping messages in
    `folder`; yields the port it listens on."""
    folder.mkdir(parents=True, exist_ok=True)
    # aiosmtpd logs every connection at INFO: the message line above says what matters.
    logging.getLogger("mail.log").setLevel(logging.WARNING)
    controller = _BoundController(_Keep(folder, out), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield int(controller.port)
    finally:
        controller.stop()
