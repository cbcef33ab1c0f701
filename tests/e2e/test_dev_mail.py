"""`taskapi dev` without SMTP_URL: a worker and a local SMTP sink run in the stack, so a
user registered through REST sees the welcome email arrive, on the console (one line) and
as an .eml file in the folder the banner names."""

from __future__ import annotations

import email
import email.policy
import re
from pathlib import Path

from tests.conftest import unique_email
from tests.support.dev_process import running_dev
from tests.support.edge import RestClient

FREE_PORTS = ["--rest-port", "0", "--grpc-port", "0", "--admin-port", "0", "--metrics-port", "0", "--web-port", "0"]


def test_dev_shows_the_welcome_email_of_a_user_registered_through_rest(tmp_path: Path) -> None:
    with running_dev(FREE_PORTS, tmp_path, env={"SMTP_URL": ""}) as stack:
        rest = stack.wait_for(r"REST\s+(http://\S+/api/v1/)")
        folder = Path(stack.wait_for(r"mail\s+smtp://127\.0\.0\.1:\d+\s+\(a local sink: .*saved in (\S+)\)"))
        address = unique_email("newcomer")
        response = RestClient(rest).post(
            "auth/register", {"email": address, "password": "correct horse battery", "name": "New Comer"}
        )
        assert response.status == 200, response

        line = stack.wait_for(rf"(mail to New Comer <{re.escape(address)}>.*)", timeout=10)
        assert re.search(r'"Welcome to Task API" \(saved (\S+\.eml)\)$', line), line
        [saved] = folder.glob("*.eml")
        message = email.message_from_bytes(saved.read_bytes(), policy=email.policy.default)
        assert message["To"] == f"New Comer <{address}>" and message["Subject"] == "Welcome to Task API"
        assert str(saved) in line
        assert stack.stop() == 0, stack.text()
    assert "Traceback" not in stack.text(), stack.text()
