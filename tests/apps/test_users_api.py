"""The users service's contract (api.md, "Users service"), over HTTP, on every database backend."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from conftest import sha1
from selfieless.apps.users.passwords import verify_digest
from selfieless.apps.users.schema import users


def test_no_users_is_204_with_no_body(api):
    r = api.users.get("/users")
    assert r.status_code == 204
    assert r.content == b""


def test_add_list_and_remove_users(api):
    r = api.users.post("/users", json={"username": "alice", "password": sha1("a")})
    assert (r.status_code, r.json()) == (201, {})
    api.add_user("bob")
    assert api.users.get("/users").json() == ["alice", "bob"]
    r = api.users.delete("/users/alice")
    assert (r.status_code, r.json()) == (200, {})
    assert api.users.get("/users").json() == ["bob"]


def test_names_are_case_sensitive(api):
    api.add_user("Alice")
    api.add_user("alice")
    assert sorted(api.users.get("/users").json()) == ["Alice", "alice"]
    r = api.users.delete("/users/ALICE")
    assert r.status_code == 400 and "no such user" in r.json()["error"]
    assert api.users.delete("/users/alice").status_code == 200
    assert api.users.get("/users").json() == ["Alice"]


def test_taken_username_is_400(api):
    api.add_user("alice")
    r = api.users.post("/users", json={"username": "alice", "password": sha1("other")})
    assert r.status_code == 400
    assert "taken" in r.json()["error"]
    assert api.table_rows()["users"] == 1


def test_remove_unknown_user_is_400(api):
    api.add_user("alice")
    r = api.users.delete("/users/nobody")
    assert r.status_code == 400
    assert "no such user" in r.json()["error"]
    assert api.users.get("/users").json() == ["alice"]


def test_password_accepts_upper_and_lower_hex(api):
    assert api.users.post("/users", json={"username": "u1", "password": "A" * 40}).status_code == 201
    mixed = "0123456789abcdefABCDEF0123456789abcdefAB"
    assert api.users.post("/users", json={"username": "u2", "password": mixed}).status_code == 201
    assert api.users.get("/users").json() == ["u1", "u2"]
    # Stored as the digest it is, whatever the case of its hex digits.
    with api.stack.db.read() as conn:
        stored = dict(conn.execute(select(users.c.name, users.c.password_hash)).all())
    assert verify_digest("a" * 40, stored["u1"]) and verify_digest(mixed.lower(), stored["u2"])


BAD_BODIES = [
    ({"username": "x", "password": "a" * 39}, "password"),
    ({"username": "x", "password": "a" * 41}, "password"),
    ({"username": "x", "password": "g" * 40}, "password"),
    ({"username": "x", "password": "a" * 40 + "\n"}, "password"),
    ({"username": "x", "password": "٠" * 40}, "password"),  # Arabic-Indic digits are not ASCII hex
    ({"username": "x", "password": 12345}, "password"),
    ({"username": "", "password": "a" * 40}, "username"),
    ({"username": "   ", "password": "a" * 40}, "username"),
    ({"username": "a/b", "password": "a" * 40}, "username"),
    ({"username": 5, "password": "a" * 40}, "username"),
    ({"username": None, "password": "a" * 40}, "username"),
    ({"password": "a" * 40}, "username"),
    ({"username": "x"}, "password"),
    ({"username": "x", "password": "a" * 40, "admin": True}, "admin"),
    (["x", "a" * 40], "object"),
    ("x", "object"),
    (None, "object"),
]


@pytest.mark.parametrize("body,mentioned", BAD_BODIES)
def test_bad_sign_up_is_400_and_writes_nothing(api, body, mentioned):
    r = api.users.post("/users", content=json.dumps(body).encode())
    assert r.status_code == 400, r.text
    assert mentioned in r.json()["error"]
    assert api.table_rows()["users"] == 0


@pytest.mark.parametrize("raw", [b"", b"{", b"not json", b"\xff\xfe", b'{"username": "x", "password": NaN'])
def test_unparseable_body_is_400(api, raw):
    r = api.users.post("/users", content=raw)
    assert r.status_code == 400
    assert r.json()["error"]
    assert api.table_rows()["users"] == 0


def test_body_without_content_type_is_parsed_as_json(api):
    r = api.users.post("/users", content=f'{{"username": "nohdr", "password": "{sha1("x")}"}}'.encode())
    assert r.status_code == 201
    r = api.users.post("/users", content=f'{{"username": "plain", "password": "{sha1("x")}"}}'.encode(),
                       headers={"Content-Type": "text/plain"})
    assert r.status_code == 201
    assert api.users.get("/users").json() == ["nohdr", "plain"]


def test_password_is_stored_as_salted_slow_hash(api):
    digest = sha1("secret")
    api.users.post("/users", json={"username": "alice", "password": digest})
    api.users.post("/users", json={"username": "bob", "password": digest})
    with api.stack.db.read() as conn:
        stored = list(conn.execute(select(users.c.password_hash).order_by(users.c.id)).scalars())
    assert all(digest not in s and digest.upper() not in s for s in stored)
    assert stored[0] != stored[1]  # salted
    assert all(s.startswith("scrypt$") for s in stored)
    assert verify_digest(digest, stored[0]) and not verify_digest(sha1("other"), stored[0])


def test_list_never_shows_passwords(api):
    digest = sha1("pw")
    api.users.post("/users", json={"username": "alice", "password": digest})
    assert digest not in api.users.get("/users").text


def test_sql_shaped_username_is_stored_literally(api):
    name = "x'; DROP TABLE users;--"
    api.add_user(name)
    api.add_user('bob" OR 1=1 --')
    assert api.users.get("/users").json() == [name, 'bob" OR 1=1 --']
    assert api.users.delete(f"/users/{name}").status_code == 200
    assert api.users.get("/users").json() == ['bob" OR 1=1 --']


def test_unicode_and_long_names(api):
    long_name = "n" * 1024  # the longest allowed (MAX_NAME_LENGTH)
    api.add_user("Zoë 🌱")
    api.add_user(long_name)
    assert api.users.get("/users").json() == ["Zoë 🌱", long_name]


def test_unknown_path_404_and_wrong_method_405(api):
    r = api.users.get("/nothing")
    assert r.status_code == 404 and r.json()["error"]
    r = api.users.put("/users")
    assert r.status_code == 405 and r.json()["error"]
    assert set(r.headers["allow"].replace(" ", "").split(",")) >= {"GET", "POST"}
    r = api.users.get("/users/alice")
    assert r.status_code == 405 and r.headers["allow"] == "DELETE"
