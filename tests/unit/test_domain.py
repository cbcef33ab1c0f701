"""Domain pieces without gRPC: settings, page tokens, ordering, passwords, updates; and the store's keyset filter."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import bcrypt
import pytest
from bson import ObjectId

from taskapi.interceptors.call_state import peer_ip
from taskapi.server.config import ConfigError, Settings
from taskapi.server.domain.errors import InvalidArgument, Unavailable
from taskapi.server.domain.page_tokens import PageTokens, query_digest
from taskapi.server.domain.passwords import PasswordHasher
from taskapi.server.domain.ports import ASCENDING, DESCENDING
from taskapi.server.domain.tasks import TASK_UPDATES, parse_order_by
from taskapi.server.domain.updates import UpdateRule
from taskapi.server.domain.users import ADMIN_EDITABLE, SELF_EDITABLE, USER_UPDATES
from taskapi.server.store.tasks import _keyset_after


def test_settings_defaults_follow_the_contract() -> None:
    settings = Settings.from_env({"JWT_SECRET": "x" * 32})
    assert settings.rate_limit_ip.policy == "100;w=900"
    assert (settings.bcrypt_rounds, settings.access_token_ttl_seconds, settings.cache_ttl_seconds) == (12, 900, 300)
    assert settings.refresh_token_ttl_seconds == 7 * 24 * 3600 and settings.max_message_bytes == 1 << 20
    assert not settings.ephemeral_secret and "x" * 32 not in repr(settings)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"JWT_SECRET": "short"}, "at least 32"),
        ({"RATE_LIMIT_IP": "ten"}, "RATE_LIMIT_IP"),
        ({"TASKAPI_GRPC_PORT": "-1"}, "TASKAPI_GRPC_PORT"),
        ({"MONGODB_READ_PREFERENCE": "fastest"}, "MONGODB_READ_PREFERENCE"),
        ({"TRUSTED_PROXIES": "not-a-network"}, "TRUSTED_PROXIES"),
        ({"BCRYPT_ROUNDS": "32"}, "BCRYPT_ROUNDS must be an integer from 4 to 31, got '32'"),
        ({"RATE_LIMIT_USER": "10/5/1"}, "RATE_LIMIT_USER must be REQUESTS/SECONDS"),
        ({"TASKAPI_DRAIN_SECONDS": "nan"}, "TASKAPI_DRAIN_SECONDS must be a number"),
    ],
)
def test_bad_settings_fail_fast_with_the_variable_named(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as error:  # a ValueError too, for older callers
        Settings.from_env(env)
    assert isinstance(error.value, ValueError)


def test_missing_secret_is_ephemeral_and_loud(caplog: pytest.LogCaptureFixture) -> None:
    settings = Settings.from_env({})
    assert settings.ephemeral_secret and len(settings.jwt_secret) >= 32
    settings.warn_about_defaults()
    assert "JWT_SECRET is not set" in caplog.text and "MONGODB_URI is not set" in caplog.text


def test_page_tokens_round_trip_and_reject_tampering() -> None:
    tokens = PageTokens("s" * 40)
    position = [datetime(2030, 1, 2, 3, 4, 5, 6000), None, 3, str(ObjectId())]
    digest = query_digest("tasks", {"status": 1})
    token = tokens.encode(position, digest)
    assert tokens.decode(token, digest) == position
    body, signature = token.split(".")
    for bad in (f"{body}x.{signature}", f"{body}.{signature[:-2]}aa", "nodot", token + ".extra"):
        with pytest.raises(InvalidArgument):
            tokens.decode(bad, digest)
    with pytest.raises(InvalidArgument):
        tokens.decode(token, query_digest("tasks", {"status": 2}))
    with pytest.raises(InvalidArgument):
        PageTokens("another secret entirely!!!!!").decode(token, digest)


def test_order_by_parsing() -> None:
    assert parse_order_by("") == [("create_time", DESCENDING), ("id", DESCENDING)]
    assert parse_order_by(" priority desc , dueTime ") == [
        ("priority", DESCENDING),
        ("due_time", ASCENDING),
        ("id", ASCENDING),
    ]
    # A key named again is ignored (the proto's order_by pattern, which the server checks first,
    # allows repeats): the first one orders.
    assert parse_order_by("title desc, dueTime, title") == [
        ("title", DESCENDING),
        ("due_time", ASCENDING),
        ("id", ASCENDING),
    ]
    for bad in ("owner", "title sideways", "priority desc asc"):
        with pytest.raises(InvalidArgument):
            parse_order_by(bad)


def test_keyset_treats_null_as_lowest() -> None:
    sort = parse_order_by("dueTime")
    oid = ObjectId()
    # The store's keyset filter (ids are strings above the store, ObjectIds in MongoDB).
    assert _keyset_after(sort, [None, str(oid)]) == {
        "$or": [{"due_time": {"$ne": None}}, {"$and": [{"due_time": None}, {"_id": {"$gt": oid}}]}]
    }
    descending = parse_order_by("dueTime desc")
    moment = datetime(2030, 1, 1)
    assert _keyset_after(descending, [moment, str(oid)])["$or"][0] == {
        "$or": [{"due_time": {"$lt": moment}}, {"due_time": None}]
    }


def test_passwords_hash_verify_and_refuse_overlong(monkeypatch: pytest.MonkeyPatch) -> None:
    hasher = PasswordHasher(rounds=4, concurrency=1)
    stored = hasher.hash("correct horse")
    assert hasher.verify("correct horse", stored) and not hasher.verify("wrong horse", stored)
    checked: list[bytes] = []
    real_checkpw = bcrypt.checkpw

    def counted_checkpw(secret: bytes, hashed: bytes) -> bool:
        checked.append(hashed)
        return real_checkpw(secret, hashed)

    monkeypatch.setattr(bcrypt, "checkpw", counted_checkpw)
    # An unknown user or an overlong password still costs one full check at the same cost, and fails.
    assert not hasher.verify("correct horse", None)
    assert not hasher.verify("x" * 73, stored)
    assert len(checked) == 2 and all(h[:7] == stored.encode()[:7] for h in checked)
    with pytest.raises(InvalidArgument):
        hasher.hash("x" * 73)


def test_password_hashing_sheds_load_instead_of_queueing_forever() -> None:
    hasher = PasswordHasher(rounds=4, concurrency=1, max_waiting=0)
    held = hasher._slot()
    held.__enter__()
    try:
        with pytest.raises(Unavailable):
            hasher.hash("another password")
    finally:
        held.__exit__(None, None, None)
    assert hasher.verify("x" * 10, hasher.hash("x" * 10))


@pytest.mark.parametrize(
    ("peer", "address"),
    [
        ("ipv4:127.0.0.1:5000", "127.0.0.1"),
        ("ipv6:%5B::1%5D:39864", "::1"),  # what grpcio 1.85 reports
        ("ipv6:[2001:db8::7]:443", "2001:db8::7"),
        ("unix:/tmp/socket", "unix:/tmp/socket"),
    ],
)
def test_peer_addresses_parse_for_both_families(peer: str, address: str) -> None:
    assert peer_ip(peer) == address


@dataclass
class _Resource:
    title: str = "t"
    tags: list[str] = field(default_factory=lambda: ["a"])
    role: str = "ADMIN"


RULE = UpdateRule(
    resource="thing",
    type_name="Thing",
    fields=("title", "tags", "role"),
    defaults={"tags": [], "role": "USER"},
    output_only=frozenset({"id"}),
)


def test_update_paths_follow_the_mask_or_the_body() -> None:
    editable = ("title", "tags")
    assert RULE.paths(None, {"title", "id"}, editable) == {"title"}  # no mask: what the body sets
    assert RULE.paths(["*"], set(), editable) == {"title", "tags"}  # every field this caller may edit
    assert RULE.paths(["title", "tags"], set(), editable) == {"title", "tags"}
    for mask, message in ((["id"], "output only"), (["nope"], "not a field of Thing"), (["role"], "cannot be changed")):
        with pytest.raises(InvalidArgument, match=message) as info:
            RULE.paths(mask, set(), editable)
        assert [v.field for v in info.value.violations] == ["update_mask"]


def test_update_changes_reset_absent_fields_and_skip_unchanged_ones() -> None:
    current = _Resource()
    everything = ("title", "tags", "role")
    assert RULE.changes({"tags", "role"}, {}, current, everything) == {"tags": [], "role": "USER"}
    assert RULE.changes({"title", "tags"}, {"title": "t", "tags": ["a"]}, current, everything) == {}
    with pytest.raises(InvalidArgument) as info:  # a required field has no default to reset to
        RULE.changes({"title"}, {}, current, everything)
    assert [v.field for v in info.value.violations] == ["thing.title"]
    # A field the caller may not edit is fine when sent unchanged, refused when changed.
    assert RULE.changes({"title", "role"}, {"title": "new", "role": "ADMIN"}, current, ("title",)) == {"title": "new"}
    with pytest.raises(InvalidArgument, match="role cannot be changed"):
        RULE.changes({"role"}, {"role": "USER"}, current, ("title",))
    first = RULE.changes({"tags"}, {}, _Resource(), everything)["tags"]
    first.append("x")
    assert RULE.changes({"tags"}, {}, _Resource(), everything)["tags"] == []  # defaults are never shared


def test_tasks_and_users_share_the_rule() -> None:
    assert TASK_UPDATES.paths(["dueTime", "due_time"], set(), TASK_UPDATES.fields) == {"due_time"}
    assert "title" not in TASK_UPDATES.defaults and "name" not in USER_UPDATES.defaults
    assert USER_UPDATES.paths(["*"], set(), SELF_EDITABLE) == {"name"}
    assert USER_UPDATES.paths(["*"], set(), ADMIN_EDITABLE) == {"name", "role", "disabled"}


def test_password_hasher_reports_its_queue_and_counts_refusals() -> None:
    from taskapi.server.domain.errors import Unavailable
    from taskapi.server.domain.passwords import PasswordHasher

    hasher = PasswordHasher(rounds=4, concurrency=1, max_waiting=0)
    assert hasher.load() == (0, 0, 0)
    hashed = hasher.hash("correct horse battery")
    assert hasher.verify("correct horse battery", hashed) and hasher.load() == (0, 0, 0)
    with hasher._slot():  # one hash in progress: the queue (1 slot, no waiting room) is full
        assert hasher.load() == (1, 0, 0)
        with pytest.raises(Unavailable):
            hasher.verify("correct horse battery", hashed)
        assert hasher.load() == (1, 0, 1)
    assert hasher.load() == (0, 0, 1)
