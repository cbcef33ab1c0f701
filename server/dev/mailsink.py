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
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        with self._lock:
            path = self._folder / f"{next(self._numbers):04d}.eml"
        path.write_bytes(envelope.content)
        now = time.time()
        stamp = time.strftime("%H:%M:%S", time.localtime(now)) + f".{int(now % 1 * 1000):03d}"
        print(f'{stamp} mail to {message["To"]}: "{message["Subject"]}" (saved {path})', file=self._out, flush=True)
        return "250 Message accepted for delivery"


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
