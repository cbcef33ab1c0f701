"""Opaque, tamper-evident page tokens bound to the query they came from.

A token is base64url(JSON payload) + "." + base64url(HMAC-SHA256). The payload
holds the keyset position (the sort values and id of the last item served) and
a digest of the query; a token replayed against other filters or order, edited,
or forged is rejected as INVALID_ARGUMENT.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import datetime
from typing import Any

from taskapi.server.domain.errors import InvalidArgument


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def query_digest(*parts: Any) -> str:
    canonical = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:24]


class PageTokens:
    def __init__(self, secret: str) -> None:
        # A key of its own, derived from the server secret: page tokens can never pass for JWTs.
        self._key = hmac.new(secret.encode(), b"taskapi page tokens v1", hashlib.sha256).digest()

    def encode(self, position: list[Any], digest: str) -> str:
        payload = json.dumps({"p": [_to_json(v) for v in position], "q": digest}, separators=(",", ":")).encode()
        return f"{_b64(payload)}.{_b64(self._sign(payload))}"

    def decode(self, token: str, digest: str, field: str = "page_token") -> list[Any]:
        """The keyset position; INVALID_ARGUMENT if the token is not one of ours for this query."""
        try:
            body, signature = token.split(".")
            payload = _unb64(body)
            valid = hmac.compare_digest(_unb64(signature), self._sign(payload))
            data = json.loads(payload) if valid else None
        except (ValueError, TypeError):
            data = None
        if not data or data.get("q") != digest:
            raise InvalidArgument.field(
                field, "is not a page token of this query (filters and order must stay the same)"
            )
        return [_from_json(v) for v in data["p"]]

    def _sign(self, payload: bytes) -> bytes:
        return hmac.new(self._key, payload, hashlib.sha256).digest()


def _to_json(value: Any) -> Any:
    if isinstance(value, datetime):
        return {"t": value.isoformat()}
    return value


def _from_json(value: Any) -> Any:
    if isinstance(value, dict):
        if "t" in value:
            return datetime.fromisoformat(value["t"])
        if "o" in value:  # an id, as tokens of releases before ids were plain strings wrote it
            return str(value["o"])
    return value
