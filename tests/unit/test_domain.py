"""Domain pieces without gRPC: settings, page tokens, ordering, keysets, passwords."""

from __future__ import annotations

from datetime import datetime

import bcrypt
import pymongo
import pytest
from bson import ObjectId

from interceptors.call_state import peer_ip
from interceptors.errors import InvalidArgument, Unavailable
from server.config import ConfigError, Settings
from server.page_tokens import PageTokens, query_digest
from server.passwords import PasswordHasher
from server.tasks import _keyset_after, parse_order_by


def test_settings_defaults_follow_the_contract():
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
def test_bad_settings_fail_fast_with_the_variable_named(env, message):
    with pytest.raises(ConfigError, match=message) as error:  # a ValueError too, for older callers
        Settings.from_env(env)
    assert isinstance(error.value, ValueError)


def test_missing_secret_is_ephemeral_and_loud(caplog):
    settings = Settings.from_env({})
    assert settings.ephemeral_secret and len(settings.jwt_secret) >= 32
    settings.warn_about_defaults()
    assert "JWT_SECRET is not set" in caplog.text and "MONGODB_URI is not set" in caplog.text


def test_page_tokens_round_trip_and_reject_tampering():
    tokens = PageTokens("s" * 40)
    position = [datetime(2030, 1, 2, 3, 4, 5, 6000), None, 3, ObjectId()]
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


def test_order_by_parsing():
    assert parse_order_by("") == [("create_time", pymongo.DESCENDING), ("_id", pymongo.DESCENDING)]
    assert parse_order_by(" priority desc , dueTime ") == [
        ("priority", pymongo.DESCENDING),
        ("due_time", pymongo.ASCENDING),
        ("_id", pymongo.ASCENDING),
    ]
    for bad in ("owner", "title sideways", "title, title", "priority desc asc"):
        with pytest.raises(InvalidArgument):
            parse_order_by(bad)


def test_keyset_treats_null_as_lowest():
    sort = parse_order_by("dueTime")
    oid = ObjectId()
    assert _keyset_after(sort, [None, oid]) == {
        "$or": [{"due_time": {"$ne": None}}, {"$and": [{"due_time": None}, {"_id": {"$gt": oid}}]}]
    }
    descending = parse_order_by("dueTime desc")
    moment = datetime(2030, 1, 1)
    assert _keyset_after(descending, [moment, oid])["$or"][0] == {
        "$or": [{"due_time": {"$lt": moment}}, {"due_time": None}]
    }


def test_passwords_hash_verify_and_refuse_overlong(monkeypatch):
    hasher = PasswordHasher(rounds=4, concurrency=1)
    stored = hasher.hash("correct horse")
    assert hasher.verify("correct horse", stored) and not hasher.verify("wrong horse", stored)
    checked = []
    real_checkpw = bcrypt.checkpw
    monkeypatch.setattr(
        bcrypt, "checkpw", lambda secret, hashed: checked.append(hashed) or real_checkpw(secret, hashed)
    )
    # An unknown user or an overlong password still costs one full check at the same cost, and fails.
    assert not hasher.verify("correct horse", None)
    assert not hasher.verify("x" * 73, stored)
    assert len(checked) == 2 and all(h[:7] == stored.encode()[:7] for h in checked)
    with pytest.raises(InvalidArgument):
        hasher.hash("x" * 73)


def test_password_hashing_sheds_load_instead_of_queueing_forever():
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
def test_peer_addresses_parse_for_both_families(peer, address):
    assert peer_ip(peer) == address
