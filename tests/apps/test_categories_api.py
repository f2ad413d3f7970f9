"""Categories (api.md, acts service): listing with counts, adding, removing with their acts."""

from __future__ import annotations

import json

import pytest

from conftest import sha1


def test_no_categories_is_204(api):
    r = api.acts.get("/categories")
    assert r.status_code == 204 and r.content == b""


def test_add_and_list_with_zero_counts(api):
    r = api.acts.post("/categories", json=["Nature"])
    assert (r.status_code, r.json()) == (201, {})
    api.add_category("Roads")
    user = api.add_user()
    api.upload(user, "Nature")
    api.upload(user, "Nature")
    assert api.acts.get("/categories").json() == {"Nature": 2, "Roads": 0}


def test_existing_category_is_400(api):
    api.add_category("Nature")
    r = api.acts.post("/categories", json=["Nature"])
    assert r.status_code == 400 and "already exists" in r.json()["error"]
    assert api.table_rows()["categories"] == 1


def test_categories_are_case_sensitive(api):
    api.add_category("Nature")
    api.add_category("nature")
    assert api.acts.get("/categories").json() == {"Nature": 0, "nature": 0}


@pytest.mark.parametrize("body", [{}, [], [""], [5], ["a", "b"], "Nature", None, [None], [["a"]],
                                  {"name": "Nature"}, ["   "], ["a/b"], [True]])
def test_bad_category_bodies_are_400(api, body):
    r = api.acts.post("/categories", content=json.dumps(body).encode())
    assert r.status_code == 400, r.text
    assert r.json()["error"]
    assert api.table_rows()["categories"] == 0


def test_delete_category_removes_its_acts(api):
    user = api.add_user()
    api.add_category("Nature")
    api.add_category("Roads")
    for _ in range(3):
        api.upload(user, "Nature")
    kept = api.upload(user, "Roads")
    r = api.acts.delete("/categories/Nature")
    assert (r.status_code, r.json()) == (200, {})
    assert api.acts.get("/categories").json() == {"Roads": 1}
    assert api.act_count() == 1
    assert api.table_rows()["acts"] == 1
    assert api.acts.get("/categories/Roads/acts").json()[0]["actId"] == kept["actId"]


def test_delete_unknown_category_is_400(api):
    api.add_category("Nature")
    r = api.acts.delete("/categories/Nowhere")
    assert r.status_code == 400 and "no such category" in r.json()["error"]
    assert api.acts.get("/categories").json() == {"Nature": 0}


def test_size(api):
    r = api.acts.get("/categories/Nature/acts/size")
    assert r.status_code == 204 and r.content == b""
    api.add_category("Nature")
    assert api.acts.get("/categories/Nature/acts/size").json() == [0]
    user = api.add_user()
    api.upload(user, "Nature")
    api.upload(user, "Nature")
    r = api.acts.get("/categories/Nature/acts/size")
    assert (r.status_code, r.json()) == (200, [2])


def test_sql_shaped_category_name_is_literal(api):
    name = "x'; DROP TABLE acts;--"
    api.add_category(name)
    user = api.add_user()
    act = api.upload(user, name)
    assert api.acts.get("/categories").json() == {name: 1}
    assert api.acts.get(f"/categories/{name}/acts").json()[0]["actId"] == act["actId"]
    assert api.acts.delete(f"/categories/{name}").status_code == 200
    assert api.acts.get("/categories").status_code == 204


def test_names_with_spaces_and_unicode_in_paths(api):
    api.add_category("Green Roads ✓")
    user = api.add_user()
    api.upload(user, "Green Roads ✓")
    assert api.acts.get("/categories/Green Roads ✓/acts/size").json() == [1]


def test_names_longer_than_fit_in_a_url_are_400_and_write_nothing(api):
    """A name must be readable and deletable through the gateway once created: 1024 characters of
    up to 4 UTF-8 bytes, percent-encoded, fit in its 64 KiB request line; 1025 are refused."""
    before = api.table_rows()
    for too_long in ("c" * 1025, "é" * 70_000):
        r = api.acts.post("/categories", json=[too_long])
        assert r.status_code == 400 and "at most 1024 characters" in r.json()["error"]
        r = api.users.post("/users", json={"username": too_long, "password": sha1("x")})
        assert r.status_code == 400 and "at most 1024 characters" in r.json()["error"]
    assert api.table_rows() == before
    longest = "😀" * 1024
    api.add_category(longest)
    assert api.acts.get(f"/categories/{longest}/acts/size").json() == [0]
    assert api.acts.delete(f"/categories/{longest}").status_code == 200
