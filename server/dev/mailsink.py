"""The local SMTP sink of `taskapi dev` (when SMTP_URL is unset): a real SMTP server
(aiosmtpd) on a free loopback port that delivers nowhere. Each message is shown on the
console in one line and kept as an .eml file, so a developer sees what a user would get.

    12:01:03.120 mail to Ada <ada@example.com>: "Welcome to Task API" (saved /tmp/taskapi-dev-x/mail/0001.eml)
"""

from __future__ import annotations

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


@contextmanager
def mail_sink(folder: Path, port: int, out: TextIO) -> Iterator[int]:
    """Run the sink on 127.0.0.1:`port` (a free one: aiosmtpd checks it by connecting to
    itself), keeping messages in `folder`; yields the port."""
    folder.mkdir(parents=True, exist_ok=True)
    # aiosmtpd logs every connection at INFO: the message line above says what matters.
    logging.getLogger("mail.log").setLevel(logging.WARNING)
    controller = Controller(_Keep(folder, out), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield port
    finally:
        controller.stop()
