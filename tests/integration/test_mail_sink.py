"""The dev mail sink (a real aiosmtpd server) against what anyone on the machine may send it:
every message is kept byte for byte, and the console line stays one safe line."""

from __future__ import annotations

import io
import smtplib
from pathlib import Path

from taskapi.server.dev.mailsink import mail_sink

HOSTILE = [
    # A terminal escape (clear screen, set title) and a bell in the subject.
    b"To: dev@example.com\r\nSubject: \x1b[2J\x1b]0;pwned\x07hello\r\n\r\nbody\r\n",
    # Headers that do not parse: an unterminated encoded word, an address with no end.
    b"To: =?utf-8?q?broken\r\nSubject: =?x-unknown?b?////?=\r\n\r\nbody\r\n",
    b"To: <<<@@@\r\nSubject: " + b"s" * 900 + b"\r\n\r\nbody\r\n",
    # Not even headers, and bytes that are not UTF-8.
    b"\xff\xfe\x00garbage without any header\r\n",
]


def test_malformed_mail_is_kept_and_shown_as_one_safe_line(tmp_path: Path) -> None:
    out = io.StringIO()
    with mail_sink(tmp_path, out) as port, smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        for content in HOSTILE:
            client.sendmail("a@example.com", ["dev@example.com"], content)
        client.sendmail("a@example.com", ["dev@example.com"], b"To: Ada <ada@example.com>\r\nSubject: Hi\r\n\r\nok\r\n")
    lines = out.getvalue().splitlines()
    assert len(lines) == len(HOSTILE) + 1, lines  # one line per message, none split
    assert all(char.isprintable() for line in lines for char in line), lines
    assert all(len(line) < 500 for line in lines)
    assert lines[-1].endswith(f'mail to Ada <ada@example.com>: "Hi" (saved {tmp_path / "0005.eml"})')
    kept = sorted(tmp_path.glob("*.eml"))
    assert len(kept) == len(HOSTILE) + 1
    assert b"\x1b[2J" in kept[0].read_bytes()  # kept as sent: the file is the evidence


def test_each_sink_listens_on_the_port_the_kernel_gave_it(tmp_path: Path) -> None:
    """No port is picked free and released first: each sink binds port 0 and says where it is."""
    out = io.StringIO()
    with mail_sink(tmp_path / "a", out) as first, mail_sink(tmp_path / "b", out) as second:
        assert 0 not in (first, second) and first != second
        for port in (first, second):
            with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
                client.sendmail("a@example.com", ["dev@example.com"], b"Subject: to %d\r\n\r\nok\r\n" % port)
    assert [p.name for p in sorted((tmp_path / "a").glob("*.eml"))] == ["0001.eml"]
    assert [p.name for p in sorted((tmp_path / "b").glob("*.eml"))] == ["0001.eml"]
    assert f'"to {first}"' in out.getvalue() and f'"to {second}"' in out.getvalue()
