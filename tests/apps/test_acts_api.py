"""Acts (api.md): upload rules, upvote, delete, count."""

from __future__ import annotations

import base64
import json
import os
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from conftest import act_body, next_act_id


@pytest.fixture
def ready(api):
    """A user and a category to upload into."""
    api.add_user("alice")
    api.add_category("Nature")
    return api


def test_count(api):
    assert api.acts.get("/acts/count").json() == [0]
    api.add_user()
    api.add_category()
    api.add_category("Roads")
    api.upload("alice", "Nature")
    api.upload("alice", "Roads")
    r = api.acts.get("/acts/count")
    assert (r.status_code, r.json()) == (200, [2])


def test_upload_returns_201_empty_object(ready):
    r = ready.acts.post("/acts", json=act_body("alice", "Nature"))
    assert (r.status_code, r.json()) == (201, {})


def test_upload_without_content_type(ready):
    first, second = act_body("alice", "Nature"), act_body("alice", "Nature", caption="second")
    r = ready.acts.post("/acts", content=json.dumps(first).encode())
    assert (r.status_code, r.json()) == (201, {}), r.text
    r = ready.acts.post("/acts", content=json.dumps(second).encode(),
                        headers={"Content-Type": "application/json;charset=utf-8"})
    assert (r.status_code, r.json()) == (201, {}), r.text
    stored = {a["actId"]: a for a in ready.acts.get("/categories/Nature/acts").json()}
    assert set(stored) == {first["actId"], second["actId"]}
    assert stored[second["actId"]]["caption"] == "second" and stored[first["actId"]]["username"] == "alice"


def test_largest_act_id_accepted(ready):
    ready.upload("alice", "Nature", actId=2**63 - 1)
    ready.upload("alice", "Nature", actId=0)
    ids = {a["actId"] for a in ready.acts.get("/categories/Nature/acts").json()}
    assert ids == {2**63 - 1, 0}
    assert ready.acts.post("/acts/upvote", json=[2**63 - 1]).status_code == 200
    votes = {a["actId"]: a["upvotes"] for a in ready.acts.get("/categories/Nature/acts").json()}
    assert votes == {2**63 - 1: 1, 0: 0}
    assert ready.acts.delete(f"/acts/{2**63 - 1}").status_code == 200
    assert [a["actId"] for a in ready.acts.get("/categories/Nature/acts").json()] == [0]


BAD_UPLOADS = [
    ("missing key", lambda b: b.pop("caption"), "caption"),
    ("extra key", lambda b: b.update(extra=1), "extra"),
    ("upvotes zero", lambda b: b.update(upvotes=0), "upvotes"),
    ("upvotes", lambda b: b.update(upvotes=5), "upvotes"),
    ("actId string", lambda b: b.update(actId="123"), "actId"),
    ("actId float", lambda b: b.update(actId=7.0), "actId"),
    ("actId fraction", lambda b: b.update(actId=7.5), "actId"),
    ("actId negative", lambda b: b.update(actId=-1), "actId"),
    ("actId too big", lambda b: b.update(actId=2**63), "actId"),
    ("actId bool", lambda b: b.update(actId=True), "actId"),
    ("actId null", lambda b: b.update(actId=None), "actId"),
    ("username number", lambda b: b.update(username=5), "username"),
    ("caption number", lambda b: b.update(caption=5), "caption"),
    ("caption null", lambda b: b.update(caption=None), "caption"),
    ("category number", lambda b: b.update(categoryName=1), "categoryName"),
    ("timestamp number", lambda b: b.update(timestamp=20190409), "timestamp"),
    ("image empty", lambda b: b.update(imgB64=""), "imgB64"),
    ("image data url", lambda b: b.update(imgB64="data:image/png;base64,aGVsbG8="), "imgB64"),
    ("image bad char", lambda b: b.update(imgB64="aGVs*bG8="), "imgB64"),
    ("image three pads", lambda b: b.update(imgB64="aGVsbG8==="), "imgB64"),
    ("image pad inside", lambda b: b.update(imgB64="aG=VsbG8"), "imgB64"),
    ("image only pads", lambda b: b.update(imgB64="=="), "imgB64"),
    ("image whitespace only", lambda b: b.update(imgB64=" \n "), "imgB64"),
    ("image url-safe alphabet", lambda b: b.update(imgB64="aGVs-bG8_"), "imgB64"),
    ("image number", lambda b: b.update(imgB64=5), "imgB64"),
]


@pytest.mark.parametrize("name,change,mentioned", BAD_UPLOADS, ids=[b[0] for b in BAD_UPLOADS])
def test_bad_upload_is_400_and_writes_nothing(ready, name, change, mentioned):
    body = act_body("alice", "Nature")
    change(body)
    r = ready.acts.post("/acts", json=body)
    assert r.status_code == 400, r.text
    assert mentioned in r.json()["error"]
    assert ready.table_rows()["acts"] == 0


@pytest.mark.parametrize("body", [[], "x", None, 5, [{"actId": 1}]])
def test_upload_body_not_an_object_is_400(ready, body):
    r = ready.acts.post("/acts", content=json.dumps(body).encode())
    assert r.status_code == 400 and r.json()["error"]
    assert ready.table_rows()["acts"] == 0


@pytest.mark.parametrize("timestamp", [
    "31-02-2019:00-00-00",   # no 31 February
    "29-02-2019:00-00-00",   # not a leap year
    "5-4-2019:30-15-10",     # not fixed width
    "12-03-2018:22-60-60",   # minute and second 60
    "12-03-2018:00-00-24",   # hour 24
    "12-13-2018:00-00-00",   # month 13
    "00-01-2018:00-00-00",   # day 0
    "12-03-18:00-00-00",     # two-digit year
    "2018-03-12:00-00-00",
    "12-03-2018 00-00-00",
    "12-03-2018:00:00:00",
    "12-03-2018:00-00-00 ",
    "12-03-2018:00-00-00\n",
    "١٢-03-2018:00-00-00",   # non-ASCII digits
    "",
])
def test_malformed_timestamps_are_400(ready, timestamp):
    r = ready.acts.post("/acts", json=act_body("alice", "Nature", timestamp=timestamp))
    assert r.status_code == 400
    assert "timestamp" in r.json()["error"]
    assert ready.table_rows()["acts"] == 0


def test_valid_edge_timestamps(ready):
    stamps = ("29-02-2020:59-59-23", "01-01-0001:00-00-00", "31-12-9999:59-59-23")
    for ts in stamps:
        ready.upload("alice", "Nature", timestamp=ts)
    # Stored and returned exactly as sent (newest first).
    assert [a["timestamp"] for a in ready.acts.get("/categories/Nature/acts").json()] == \
        ["31-12-9999:59-59-23", "29-02-2020:59-59-23", "01-01-0001:00-00-00"]


def test_duplicate_act_id_in_any_category_is_400(ready):
    ready.add_category("Roads")
    body = ready.upload("alice", "Nature")
    r = ready.acts.post("/acts", json=act_body("alice", "Roads", actId=body["actId"]))
    assert r.status_code == 400 and "already exists" in r.json()["error"]
    assert ready.act_count() == 1


def test_unknown_user_is_400(ready):
    r = ready.acts.post("/acts", json=act_body("mallory", "Nature"))
    assert r.status_code == 400 and "no such user" in r.json()["error"]
    r = ready.acts.post("/acts", json=act_body("ALICE", "Nature"))
    assert r.status_code == 400
    assert ready.table_rows()["acts"] == 0


def test_unknown_category_is_400(ready):
    r = ready.acts.post("/acts", json=act_body("alice", "Roads"))
    assert r.status_code == 400 and "no such category" in r.json()["error"]
    assert ready.table_rows()["acts"] == 0 and ready.table_rows()["categories"] == 1


def test_empty_caption_allowed(ready):
    ready.upload("alice", "Nature", caption="")
    assert ready.acts.get("/categories/Nature/acts").json()[0]["caption"] == ""


def test_line_wrapped_base64_is_accepted_and_returned_exactly(ready):
    encoded = base64.b64encode(os.urandom(300)).decode()
    wrapped = "\n".join(encoded[i:i + 76] for i in range(0, len(encoded), 76)) + "\n"
    ready.upload("alice", "Nature", imgB64=wrapped)
    assert ready.acts.get("/categories/Nature/acts").json()[0]["imgB64"] == wrapped


def test_base64_length_need_not_be_multiple_of_four(ready):
    ready.upload("alice", "Nature", imgB64="aGVsbG8")
    ready.upload("alice", "Nature", imgB64="a")
    assert sorted(a["imgB64"] for a in ready.acts.get("/categories/Nature/acts").json()) == ["a", "aGVsbG8"]


def test_large_image_and_long_caption(ready):
    image = base64.b64encode(os.urandom(200 * 1024)).decode()
    caption = "kind " * 1000
    body = ready.upload("alice", "Nature", imgB64=image, caption=caption)
    (act,) = ready.acts.get("/categories/Nature/acts").json()
    assert act["imgB64"] == image and act["caption"] == caption and act["actId"] == body["actId"]


def test_acts_stay_when_their_user_is_removed(ready):
    ready.upload("alice", "Nature")
    assert ready.users.delete("/users/alice").status_code == 200
    (act,) = ready.acts.get("/categories/Nature/acts").json()
    assert act["username"] == "alice"


def _concurrent_uploads(ready, bodies: list[dict]) -> list[int]:
    with httpx.Client(base_url=ready.stack.acts.url + "/api/v1", timeout=60,
                      limits=httpx.Limits(max_connections=len(bodies))) as client:
        with ThreadPoolExecutor(max_workers=len(bodies)) as pool:
            return list(pool.map(lambda body: client.post("/acts", json=body).status_code, bodies))


def test_a_deleted_user_never_posts_among_concurrent_uploads(ready):
    """Uploads on their way at once share their username checks and their inserts; one that
    arrives after a user's deletion was answered is still refused, and writes nothing."""
    ready.add_user("bob")
    assert ready.acts.delete("/_count").status_code == 200
    before = [act_body("alice" if i % 2 else "bob", "Nature") for i in range(20)]
    assert _concurrent_uploads(ready, before) == [201] * 20
    assert ready.users.delete("/users/bob").status_code == 200
    after = [act_body("alice" if i % 2 else "bob", "Nature") for i in range(20)]
    assert _concurrent_uploads(ready, after) == [201 if i % 2 else 400 for i in range(20)]
    assert ready.acts.get("/_count").json() == [40]
    listed = ready.acts.get("/categories/Nature/acts").json()
    assert sorted(a["actId"] for a in listed if a["username"] == "bob") == \
        sorted(b["actId"] for b in before if b["username"] == "bob")


def test_users_service_down_is_503_and_writes_nothing(ready, tmp_path):
    from support.processes import ServiceProcess, free_port
    orphan = ServiceProcess("acts", ready.stack.database_url, tmp_path,
                            users_url=f"http://127.0.0.1:{free_port()}").wait_healthy()
    try:
        r = httpx.post(orphan.url + "/api/v1/acts", json=act_body("alice", "Nature"), timeout=30)
        assert r.status_code == 503 and "users service" in r.json()["error"]
        # A bad upload is still a 400: local rules are checked before the users service is asked.
        r = httpx.post(orphan.url + "/api/v1/acts", json=act_body("alice", "Nowhere"), timeout=30)
        assert r.status_code == 400 and "no such category" in r.json()["error"]
    finally:
        orphan.stop()
    assert ready.table_rows()["acts"] == 0


def test_upvote(ready):
    body = ready.upload("alice", "Nature")
    r = ready.acts.post("/acts/upvote", json=[body["actId"]])
    assert (r.status_code, r.json()) == (200, {})
    assert ready.acts.post("/acts/upvote", json=[str(body["actId"])]).status_code == 200
    assert ready.acts.get("/categories/Nature/acts").json()[0]["upvotes"] == 2


@pytest.mark.parametrize("payload", [[], [1, 2], {}, {"actId": 1}, [True], [1.0], ["1.0"], ["-1"], [-1],
                                     ["abc"], [None], [[1]], "1", 1, [" 1"], ["١"]])
def test_bad_upvote_bodies_are_400(ready, payload):
    body = ready.upload("alice", "Nature", actId=1)
    r = ready.acts.post("/acts/upvote", content=json.dumps(payload).encode())
    assert r.status_code == 400, r.text
    assert r.json()["error"]
    assert ready.acts.get("/categories/Nature/acts").json()[0]["upvotes"] == 0
    assert body


@pytest.mark.parametrize("act_id", [424242, 2**63, 2**70, "99999999999999999999999999"])
def test_upvote_unknown_act_is_400(ready, act_id):
    body = ready.upload("alice", "Nature")
    r = ready.acts.post("/acts/upvote", json=[act_id])
    assert r.status_code == 400 and "no such act" in r.json()["error"]
    assert [(a["actId"], a["upvotes"]) for a in ready.acts.get("/categories/Nature/acts").json()] == \
        [(body["actId"], 0)]


def test_fifty_concurrent_upvotes_all_count(ready):
    body = ready.upload("alice", "Nature")
    with httpx.Client(base_url=ready.stack.acts.url + "/api/v1", timeout=60,
                      limits=httpx.Limits(max_connections=50)) as client:
        with ThreadPoolExecutor(max_workers=50) as pool:
            codes = list(pool.map(lambda _: client.post("/acts/upvote", json=[body["actId"]]).status_code,
                                  range(50)))
    assert codes == [200] * 50
    assert ready.acts.get("/categories/Nature/acts").json()[0]["upvotes"] == 50


def test_delete_act(ready):
    body = ready.upload("alice", "Nature")
    r = ready.acts.delete(f"/acts/{body['actId']}")
    assert (r.status_code, r.json()) == (200, {})
    assert ready.act_count() == 0 and ready.table_rows()["acts"] == 0
    r = ready.acts.delete(f"/acts/{body['actId']}")
    assert r.status_code == 400 and "no such act" in r.json()["error"]


@pytest.mark.parametrize("act_id", ["abc", "-1", "1.5", "١٢", "99999999999999999999999", "%20"])
def test_delete_bad_act_id_is_400(ready, act_id):
    kept = ready.upload("alice", "Nature", actId=1)
    r = ready.acts.delete(f"/acts/{act_id}")
    assert r.status_code == 400 and r.json()["error"]
    assert [a["actId"] for a in ready.acts.get("/categories/Nature/acts").json()] == [kept["actId"]]


def test_fixed_act_routes_own_their_paths(ready):
    r = ready.acts.delete("/acts/count")
    assert r.status_code == 405 and "GET" in r.headers["allow"]
    r = ready.acts.delete("/acts/upvote")
    assert r.status_code == 405 and r.headers["allow"] == "POST"
    r = ready.acts.get("/acts/upvote")
    assert r.status_code == 405 and r.json()["error"]


def test_wrong_method_is_405_with_allow(ready):
    r = ready.acts.put("/categories")
    assert r.status_code == 405
    assert {m.strip() for m in r.headers["allow"].split(",")} >= {"GET", "POST"}
    r = ready.acts.post("/categories/Nature")
    assert r.status_code == 405 and r.headers["allow"] == "DELETE"
    r = ready.acts.get("/acts")
    assert r.status_code == 405 and r.headers["allow"] == "POST" and r.json()["error"]


@pytest.mark.parametrize("path", ["/nothing", "/categories/Nature/acts/size/x", "/acts/1/extra", "/categories/"])
def test_unknown_paths_are_404(ready, path):
    r = ready.acts.get(path)
    assert r.status_code == 404 and r.json()["error"]


def test_oversized_body_is_413_and_writes_nothing(ready):
    body = act_body("alice", "Nature", imgB64="A" * (16 * 1024 * 1024))
    r = ready.acts.post("/acts", json=body)
    assert r.status_code == 413 and r.json()["error"]
    assert ready.table_rows()["acts"] == 0


def test_upload_ids_are_unique_across_fixtures():
    assert next_act_id() != next_act_id()
