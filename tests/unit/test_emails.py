"""The emails: a plain-text and an HTML part, the recipient's name and address and nothing
else of the account, headers no name can break, a Message-ID stable per delivery."""

from __future__ import annotations

from datetime import datetime
from email.utils import getaddresses

from taskapi.server.domain.events import PASSWORD_CHANGED, USER_REGISTERED, Event
from taskapi.server.jobs import emails

SENDER = "Task API <no-reply@tasks.example.com>"


def event(event_type: str, name: str = "Ada", email: str = "ada@example.com") -> Event:
    return Event(
        id="5f0b6a433c0e4c1e9a570f6c2b1f8d11",
        type=event_type,
        subject="6b0ad69f3e182fdd97bd66ce",
        occur_time=datetime(2026, 12, 1, 10, 30),
        payload={"email": email, "name": name},
    )


def test_welcome_has_a_text_and_an_html_part_and_only_the_name_and_address() -> None:
    message = emails.welcome(event(USER_REGISTERED), sender=SENDER, job_type="welcome_email")
    assert message["From"] == SENDER and getaddresses([message["To"]]) == [("Ada", "ada@example.com")]
    assert message["Subject"] == "Welcome to Task API"
    assert message["Message-ID"] == "<5f0b6a433c0e4c1e9a570f6c2b1f8d11.welcome_email@tasks.example.com>"
    assert message.get_content_type() == "multipart/alternative"
    plain, html = message.get_body(("plain",)), message.get_body(("html",))
    assert plain is not None and html is not None
    assert "Hello Ada," in plain.get_content() and "ada@example.com" in plain.get_content()
    assert "<p>Hello Ada,</p>" in html.get_content()
    assert "6b0ad69f3e182fdd97bd66ce" not in message.as_string()  # not even the account id


def test_password_changed_says_when() -> None:
    message = emails.password_changed(event(PASSWORD_CHANGED), sender=SENDER, job_type="password_changed_email")
    assert message["Subject"] == "Your Task API password was changed"
    plain = message.get_body(("plain",))
    assert plain is not None and "was changed on 2026-12-01 10:30 UTC" in plain.get_content()
    assert message.get_body(("html",)) is not None


def test_a_name_cannot_inject_markup_or_headers() -> None:
    hostile = event(USER_REGISTERED, name='<script>x</script>\r\nBcc: everyone@example.com "Q"')
    message = emails.welcome(hostile, sender=SENDER, job_type="welcome_email")
    html = message.get_body(("html",))
    assert html is not None and "<script>" not in html.get_content() and "&lt;script&gt;" in html.get_content()
    assert message["Bcc"] is None
    [(name, address)] = getaddresses([message["To"]])
    assert address == "ada@example.com" and "\n" not in name and "\r" not in name
