"""Listing a category's acts: order by parsed timestamp, ties, the 100 limit and ranges."""

from __future__ import annotations

import pytest

ACT_KEYS = {"actId", "username", "timestamp", "caption", "upvotes", "imgB64"}


def test_missing_or_empty_category_is_204(api):
    assert api.acts.get("/categories/Nowhere/acts").status_code == 204
    api.add_category("Empty")
    r = api.acts.get("/categories/Empty/acts")
    assert r.status_code == 204 and r.content == b""


def test_acts_are_listed_with_exactly_the_documented_keys(api):
    user = api.add_user()
    api.add_category()
    body = api.upload(user, "Nature", caption="c", imgB64="aGk=")
    (act,) = api.acts.get("/categories/Nature/acts").json()
    assert set(act) == ACT_KEYS
    assert act == {"actId": body["actId"], "username": user, "timestamp": body["timestamp"],
                   "caption": "c", "upvotes": 0, "imgB64": "aGk="}


def test_newest_first_by_parsed_time_not_by_string(api):
    """The T42 case: as strings these sort the opposite way from time."""
    user = api.add_user()
    api.add_category()
    older = api.upload(user, "Nature", timestamp="31-12-2018:59-59-23")   # 2018-12-31 23:59:59
    newer = api.upload(user, "Nature", timestamp="01-01-2019:00-00-00")   # 2019-01-01 00:00:00
    mid = api.upload(user, "Nature", timestamp="15-06-2018:30-10-12")     # 2018-06-15 12:10:30
    seconds = api.upload(user, "Nature", timestamp="01-01-2019:01-00-00")  # one second after `newer`
    hours = api.upload(user, "Nature", timestamp="01-01-2019:00-00-01")    # one hour after `newer`
    ids = [a["actId"] for a in api.acts.get("/categories/Nature/acts").json()]
    assert ids == [hours["actId"], seconds["actId"], newer["actId"], older["actId"], mid["actId"]]


def test_equal_timestamps_newest_insert_first(api):
    user = api.add_user()
    api.add_category()
    first = api.upload(user, "Nature", actId=900)
    second = api.upload(user, "Nature", actId=100)
    third = api.upload(user, "Nature", actId=500)
    ids = [a["actId"] for a in api.acts.get("/categories/Nature/acts").json()]
    assert ids == [third["actId"], second["actId"], first["actId"]]


def _fill(api, n: int, category: str = "Big") -> list[int]:
    """n acts one minute apart; returns their ids newest first."""
    user = api.add_user()
    api.add_category(category)
    ids = []
    for i in range(n):
        day, minute = divmod(i, 60)
        body = api.upload(user, category, timestamp=f"{1 + day:02d}-01-2020:00-{minute:02d}-10")
        ids.append(body["actId"])
    return ids[::-1]


def test_99_acts_listed_in_full(api):
    ids = _fill(api, 99)
    r = api.acts.get("/categories/Big/acts")
    assert r.status_code == 200
    assert [a["actId"] for a in r.json()] == ids


def test_100_and_101_acts_are_413(api):
    _fill(api, 100)
    r = api.acts.get("/categories/Big/acts")
    assert r.status_code == 413 and "start" in r.json()["error"]
    api.upload(api.add_user("bob"), "Big")
    assert api.acts.get("/categories/Big/acts").status_code == 413


def test_ranges(api):
    ids = _fill(api, 120)
    get = lambda s, e: api.acts.get("/categories/Big/acts", params={"start": s, "end": e})  # noqa: E731
    assert [a["actId"] for a in get(1, 1).json()] == ids[:1]
    assert [a["actId"] for a in get(1, 100).json()] == ids[:100]
    assert [a["actId"] for a in get(21, 120).json()] == ids[20:]
    assert [a["actId"] for a in get(120, 120).json()] == ids[-1:]
    assert [a["actId"] for a in get(50, 60).json()] == ids[49:60]
    assert get(0, 5).status_code == 204
    assert get(-3, 5).status_code == 204
    assert get(115, 121).status_code == 204
    assert get(10, 9).status_code == 204
    assert get(1, 101).status_code == 413
    assert get(20, 120).status_code == 413


def test_range_size_is_checked_before_the_category(api):
    r = api.acts.get("/categories/Nowhere/acts", params={"start": 1, "end": 101})
    assert r.status_code == 413 and r.json()["error"]
    assert api.acts.get("/categories/Nowhere/acts", params={"start": 1, "end": 100}).status_code == 204


@pytest.mark.parametrize("query", [{"start": 1}, {"end": 3}, {"start": "a", "end": 3}, {"start": 1, "end": "2.0"},
                                   {"start": "", "end": 3}, {"start": "1e1", "end": 20}, {"start": "٣", "end": 3},
                                   {"start": "+1", "end": 3}])
def test_bad_range_is_400(api, query):
    api.add_category("Small")
    r = api.acts.get("/categories/Small/acts", params=query)
    assert r.status_code == 400 and r.json()["error"]


def test_range_of_missing_or_empty_category_is_204(api):
    api.add_category("Empty")
    assert api.acts.get("/categories/Empty/acts", params={"start": 1, "end": 1}).status_code == 204
    assert api.acts.get("/categories/Nowhere/acts", params={"start": 1, "end": 1}).status_code == 204
