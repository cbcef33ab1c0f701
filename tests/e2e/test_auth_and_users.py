"""AuthService and UserService over REST, through Envoy: every row of API.md."""

from __future__ import annotations

from tests.conftest import unique_email
from tests.e2e.conftest import (
    PASSWORD,
    Account,
    Stack,
    assert_error,
    login,
    register,
    resource,
    session_of,
    violated_fields,
)
from tests.support.edge import RestClient

INVALID_ARGUMENT, NOT_FOUND, ALREADY_EXISTS, PERMISSION_DENIED, UNAUTHENTICATED = 3, 5, 6, 7, 16
SECRET_KEYS = {"password", "passwordHash", "password_hash", "hash"}


def test_register_returns_a_session(client: RestClient) -> None:
    email = unique_email()
    response = client.post("auth/register", {"email": email, "password": PASSWORD, "name": "Ada"})
    session = session_of(response)
    assert session["tokenType"] == "Bearer"
    assert session["expiresIn"] == 900
    assert session["accessToken"].count(".") == 2  # a JWT
    assert session["refreshToken"]
    user = session["user"]
    assert user["email"].lower() == email.lower()
    assert user["name"] == "Ada"
    assert user["role"] == "USER"
    assert not SECRET_KEYS & set(user)
    assert PASSWORD not in response.text


def test_register_email_taken_case_insensitively(client: RestClient, account: Account) -> None:
    response = client.post("auth/register", {"email": account.email.upper(), "password": PASSWORD, "name": "Twin"})
    assert_error(response, 409, ALREADY_EXISTS)


def test_register_bad_fields_name_each_field(client: RestClient) -> None:
    response = client.post("auth/register", {"email": "not-an-email", "password": "short", "name": ""})
    body = assert_error(response, 400, INVALID_ARGUMENT)
    assert {"email", "password", "name"} <= violated_fields(body)


def test_register_password_longer_than_72_bytes_is_rejected(client: RestClient) -> None:
    response = client.post("auth/register", {"email": unique_email(), "password": "é" * 37, "name": "Long"})
    body = assert_error(response, 400, INVALID_ARGUMENT)
    assert "password" in violated_fields(body)


def test_login(client: RestClient, account: Account) -> None:
    session = login(client, account.email.upper()).session
    assert session["user"]["id"] == account.user["id"]


def test_login_failures_are_indistinguishable(client: RestClient, account: Account) -> None:
    wrong_password = client.post("auth/login", {"email": account.email, "password": "wrong password"})
    unknown_email = client.post("auth/login", {"email": unique_email("nobody"), "password": "wrong password"})
    first = assert_error(wrong_password, 401, UNAUTHENTICATED)
    second = assert_error(unknown_email, 401, UNAUTHENTICATED)
    assert first["message"] == second["message"]


def test_refresh_rotates_and_a_second_tab_gets_the_same_pair(client: RestClient, account: Account) -> None:
    rotated = session_of(client.post("auth/refresh", {"refreshToken": account.refresh_token}))
    assert rotated["refreshToken"] != account.refresh_token
    assert client.get("users/me", token=rotated["accessToken"]).status == 200

    # Within the grace window (10 s) the rotated token returns the same pair; reuse after it
    # revokes the family (tests/integration/test_refresh_grace.py, with a 1 s window).
    again = session_of(client.post("auth/refresh", {"refreshToken": account.refresh_token}))
    assert (again["accessToken"], again["refreshToken"]) == (rotated["accessToken"], rotated["refreshToken"])
    assert session_of(client.post("auth/refresh", {"refreshToken": rotated["refreshToken"]}))


def test_logout_revokes_refresh_and_access_tokens(client: RestClient, account: Account) -> None:
    response = client.post("auth/logout", {"refreshToken": account.refresh_token})
    assert response.status == 200, response
    assert response.json() == {}
    assert_error(client.post("auth/refresh", {"refreshToken": account.refresh_token}), 401, UNAUTHENTICATED)
    assert_error(client.get("users/me", token=account.token), 401, UNAUTHENTICATED)


def test_missing_and_forged_tokens(client: RestClient, account: Account) -> None:
    assert_error(client.get("users/me"), 401, UNAUTHENTICATED)
    header, payload, _ = account.token.split(".")
    assert_error(client.get("users/me", token=f"{header}.{payload}.forged"), 401, UNAUTHENTICATED)
    assert_error(client.get("users/me", token="not-a-jwt"), 401, UNAUTHENTICATED)


def test_get_current_user(client: RestClient, account: Account) -> None:
    user = resource(client.get("users/me", token=account.token))
    assert user["id"] == account.user["id"]
    assert user["disabled"] is False
    assert not SECRET_KEYS & set(user)


def test_update_current_user_name(client: RestClient, account: Account) -> None:
    response = client.patch("users/me", {"name": "Renamed"}, token=account.token, query={"updateMask": "name"})
    assert resource(response)["name"] == "Renamed"
    assert resource(client.get("users/me", token=account.token))["name"] == "Renamed"


def test_role_is_not_self_editable(client: RestClient, account: Account) -> None:
    response = client.patch("users/me", {"role": "ADMIN"}, token=account.token, query={"updateMask": "role"})
    assert response.status in (400, 403), response
    assert resource(client.get("users/me", token=account.token))["role"] == "USER"


def test_change_password_revokes_other_sessions(client: RestClient, account: Account) -> None:
    other_device = login(client, account.email)
    new_password = "a brand new passphrase"
    response = client.post(
        "users/me:changePassword",
        {"currentPassword": account.password, "newPassword": new_password},
        token=account.token,
    )
    assert response.status == 200, response
    assert_error(client.post("auth/refresh", {"refreshToken": other_device.refresh_token}), 401, UNAUTHENTICATED)
    assert_error(client.post("auth/login", {"email": account.email, "password": PASSWORD}), 401, UNAUTHENTICATED)
    assert login(client, account.email, new_password).user["id"] == account.user["id"]


def test_change_password_needs_the_current_one(client: RestClient, account: Account) -> None:
    response = client.post(
        "users/me:changePassword",
        {"currentPassword": "not my password", "newPassword": "a brand new passphrase"},
        token=account.token,
    )
    assert 400 <= response.status < 500, response
    assert login(client, account.email).user["id"] == account.user["id"]


def test_admin_only_rpcs_are_forbidden_to_users(client: RestClient, account: Account, other_account: Account) -> None:
    assert_error(client.get("users", token=account.token), 403, PERMISSION_DENIED)
    other = other_account.user["id"]
    assert_error(
        client.patch(f"users/{other}", {"role": "ADMIN"}, token=account.token, query={"updateMask": "role"}),
        403,
        PERMISSION_DENIED,
    )
    # Another user's record: not readable and not deletable by a non-admin.
    assert client.get(f"users/{other}", token=account.token).status in (403, 404)
    assert client.delete(f"users/{other}", token=account.token).status in (403, 404)
    assert resource(client.get("users/me", token=other_account.token))["id"] == other


def test_get_user_self(client: RestClient, account: Account) -> None:
    assert resource(client.get(f"users/{account.user['id']}", token=account.token))["id"] == account.user["id"]


def test_admin_lists_gets_and_updates_users(client: RestClient, admin: Account, account: Account) -> None:
    listed = client.get("users", token=admin.token, query={"pageSize": 2})
    assert listed.status == 200, listed
    page = listed.json()
    assert len(page["users"]) <= 2
    assert page["totalSize"] >= 2
    if page["totalSize"] > 2:
        assert page["nextPageToken"]
        second = client.get("users", token=admin.token, query={"pageSize": 2, "pageToken": page["nextPageToken"]})
        assert second.status == 200, second
        assert {u["id"] for u in second.json()["users"]}.isdisjoint({u["id"] for u in page["users"]})

    admins = client.get(
        "users", token=admin.token, query={"role": "ADMIN", "q": admin.user["email"], "pageSize": 100}
    ).json()["users"]
    assert all(user["role"] == "ADMIN" for user in admins)
    assert admin.user["id"] in {user["id"] for user in admins}

    user_id = account.user["id"]
    assert resource(client.get(f"users/{user_id}", token=admin.token))["email"] == account.user["email"]

    renamed = client.patch(
        f"users/{user_id}", {"name": "Set By Admin"}, token=admin.token, query={"updateMask": "name"}
    )
    assert resource(renamed)["name"] == "Set By Admin"


def test_admin_disables_a_user(client: RestClient, admin: Account, account: Account) -> None:
    user_id = account.user["id"]
    response = client.patch(f"users/{user_id}", {"disabled": True}, token=admin.token, query={"updateMask": "disabled"})
    assert resource(response)["disabled"] is True
    assert client.post("auth/login", {"email": account.email, "password": PASSWORD}).status in (401, 403)


def test_admin_deletes_a_user(client: RestClient, admin: Account, account: Account) -> None:
    user_id = account.user["id"]
    assert client.delete(f"users/{user_id}", token=admin.token).status == 200
    assert_error(client.get(f"users/{user_id}", token=admin.token), 404, NOT_FOUND)
    assert_error(client.get("users/me", token=account.token), 401, UNAUTHENTICATED)


def test_delete_self_removes_tasks_and_sessions(client: RestClient, stack: Stack) -> None:
    account = register(client)
    created = client.post("tasks", {"title": "doomed"}, token=account.token)
    assert created.status == 200, created
    response = client.delete(f"users/{account.user['id']}", token=account.token)
    assert response.status == 200, response
    assert response.json() == {}
    assert_error(client.get("users/me", token=account.token), 401, UNAUTHENTICATED)
    assert_error(client.post("auth/refresh", {"refreshToken": account.refresh_token}), 401, UNAUTHENTICATED)
    # The email is free again, and the new account starts with no tasks.
    again = register(client, email=account.email)
    assert client.get("tasks", token=again.token).json()["tasks"] == []


def test_a_user_id_that_is_not_utf8_is_400(client: RestClient, account: Account) -> None:
    error = assert_error(client.get("users/%ff", token=account.token), 400, INVALID_ARGUMENT)
    assert violated_fields(error) == {"id"}


def test_admin_update_mask_resets_absent_fields(client: RestClient, admin: Account, account: Account) -> None:
    """AIP-134 over REST: a field in updateMask but not in the body is reset to its default."""
    path = f"users/{account.user['id']}"
    resource(client.patch(path, {"role": "ADMIN", "disabled": True}, token=admin.token))
    assert resource(client.patch(path, {}, token=admin.token, query={"updateMask": "disabled"}))["disabled"] is False
    assert resource(client.patch(path, {}, token=admin.token, query={"updateMask": "role"}))["role"] == "USER"
    resource(client.patch(path, {"role": "ADMIN", "disabled": True}, token=admin.token))
    replaced = resource(client.patch(path, {"name": "Whole"}, token=admin.token, query={"updateMask": "*"}))
    assert (replaced["name"], replaced["role"], replaced["disabled"]) == ("Whole", "USER", False)
    refused = client.patch(path, {"role": "ADMIN"}, token=admin.token, query={"updateMask": "*"})
    assert violated_fields(assert_error(refused, 400, INVALID_ARGUMENT)) == {"user.name"}


def test_self_update_mask_star_needs_the_name(client: RestClient, account: Account) -> None:
    refused = client.patch("users/me", {}, token=account.token, query={"updateMask": "*"})
    assert violated_fields(assert_error(refused, 400, INVALID_ARGUMENT)) == {"user.name"}
    assert (
        resource(client.patch("users/me", {"name": "Me"}, token=account.token, query={"updateMask": "*"}))["name"]
        == "Me"
    )
