"""Sending email over SMTP (SMTP_URL), with errors that say what happened and nothing else.

An SMTP server's reply text can quote the recipient's address, and smtplib's exceptions
carry the addresses they were about: neither reaches a log line, a job's stored
traceback or an error here. Only the reply code and the kind of failure do. The password
is sent in AUTH and never logged (smtplib logs nothing at debug level 0, its default).
"""

from __future__ import annotations

import smtplib
import ssl
from email.message import EmailMessage

from taskapi.server.config import SmtpSettings


class DeliveryFailed(Exception):
    """The message was not accepted this time (server down, busy, a 4xx): retry later."""


class Undeliverable(DeliveryFailed):
    """The server refused the recipient or the message for good (a 5xx): retrying cannot help."""


class Mailer:
    def __init__(self, smtp: SmtpSettings, *, timeout: float) -> None:
        self._smtp = smtp
        self._timeout = timeout

    def send(self, message: EmailMessage) -> None:
        """Hand `message` to the SMTP server; returns once it accepted it (its reply to DATA)."""
        try:
            self._send(message)
        except smtplib.SMTPRecipientsRefused as exc:
            codes = sorted({code for code, _ in exc.recipients.values()})
            kind = Undeliverable if codes and all(500 <= code < 600 for code in codes) else DeliveryFailed
            raise kind(f"the SMTP server refused the recipient ({', '.join(map(str, codes))})") from None
        except smtplib.SMTPDataError as exc:
            kind = Undeliverable if 500 <= exc.smtp_code < 600 else DeliveryFailed
            raise kind(f"the SMTP server refused the message ({exc.smtp_code})") from None
        except smtplib.SMTPResponseException as exc:  # sender refused, authentication, HELO, ...
            raise DeliveryFailed(f"SMTP {type(exc).__name__} ({exc.smtp_code})") from None
        except (smtplib.SMTPException, OSError) as exc:  # refused, reset, timed out, TLS, ...
            raise DeliveryFailed(f"the SMTP server is unreachable ({type(exc).__name__})") from None

    def _send(self, message: EmailMessage) -> None:
        smtp = self._smtp
        client: smtplib.SMTP
        if smtp.security == "tls":
            client = smtplib.SMTP_SSL(smtp.host, smtp.port, timeout=self._timeout, context=ssl.create_default_context())
        else:
            client = smtplib.SMTP(smtp.host, smtp.port, timeout=self._timeout)
        with client:
            if smtp.security == "starttls":
                client.starttls(context=ssl.create_default_context())
            if smtp.username:
                client.login(smtp.username, smtp.password)
            client.send_message(message)
