"""The emails the service sends, built with the standard library's `email` package.

Each has a plain-text and an HTML part, and holds no personal data beyond the recipient's
name and address (no ids, no tokens, nothing else of the account). The Message-ID comes
from the delivery key, so a copy that the crash window sends twice carries the same id
(mail clients and many servers fold such copies into one).
"""

from __future__ import annotations

import html
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, formataddr, parseaddr

from taskapi.server.domain.events import Event

PRODUCT = "Task API"


def welcome(event: Event, *, sender: str, job_type: str) -> EmailMessage:
    name = event.payload["name"]
    text = (
        f"Hello {name},\n\n"
        f"welcome to {PRODUCT}. Your account for {event.payload['email']} is ready: sign in with\n"
        "this address and the password you chose.\n\n"
        "If you did not create this account, you can ignore this message.\n\n"
        f"{PRODUCT}\n"
    )
    body = (
        f"<p>Hello {html.escape(name)},</p>"
        f"<p>welcome to {PRODUCT}. Your account for <strong>{html.escape(event.payload['email'])}</strong> "
        "is ready: sign in with this address and the password you chose.</p>"
        "<p>If you did not create this account, you can ignore this message.</p>"
    )
    return _message(event, sender, job_type, f"Welcome to {PRODUCT}", text, body)


def password_changed(event: Event, *, sender: str, job_type: str) -> EmailMessage:
    name, when = event.payload["name"], event.occur_time.strftime("%Y-%m-%d %H:%M UTC")
    text = (
        f"Hello {name},\n\n"
        f"the password of your {PRODUCT} account ({event.payload['email']}) was changed on {when},\n"
        "and your other sessions were signed out.\n\n"
        "If this was not you, sign in and change your password now, or ask your administrator for help.\n\n"
        f"{PRODUCT}\n"
    )
    body = (
        f"<p>Hello {html.escape(name)},</p>"
        f"<p>the password of your {PRODUCT} account (<strong>{html.escape(event.payload['email'])}</strong>) "
        f"was changed on {when}, and your other sessions were signed out.</p>"
        "<p>If this was not you, sign in and change your password now, or ask your administrator for help.</p>"
    )
    return _message(event, sender, job_type, f"Your {PRODUCT} password was changed", text, body)


def _message(event: Event, sender: str, job_type: str, subject: str, text: str, body: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender
    # A header takes no line breaks (they would start new headers): control characters become spaces.
    message["To"] = formataddr((_one_line(event.payload["name"]), event.payload["email"]))
    message["Subject"] = subject
    message["Date"] = format_datetime(datetime.now(UTC))
    domain = parseaddr(sender)[1].rpartition("@")[2] or "localhost"
    message["Message-ID"] = f"<{event.id}.{job_type}@{domain}>"
    message.set_content(text)
    message.add_alternative(
        f'<!DOCTYPE html><html><body style="font-family: sans-serif">{body}</body></html>\n', subtype="html"
    )
    return message


def _one_line(text: str) -> str:
    return "".join(" " if ord(char) < 32 or ord(char) == 127 else char for char in text)
