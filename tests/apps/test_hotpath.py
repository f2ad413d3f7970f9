"""The hot GET routes that ServiceApp answers itself (common/hotpath.py): which paths they take,
and that the answers on that path are the service's (status, body, count, errors, HEAD)."""

from __future__ import annotations

import httpx

from selfieless.apps.common.hotpath import HotRoutes


async def _endpoint(**_):
    return None


async def _with_request(name: str, request):
    return None


def test_exact_and_parameter_paths_match_only_themselves():
    hot = HotRoutes()
    hot.add("/api/v1/categories", _endpoint)
    hot.add("/api/v1/categories/{name}/acts", _with_request)
    route, params = hot.match("/api/v1/categories")
    assert (route.endpoint, params, route.counted, route.wants_request) == (_endpoint, {}, True, False)
    route, params = hot.match("/api/v1/categories/Nature (wild)/acts")
    assert (route.endpoint, params, route.wants_request) == (_with_request, {"name": "Nature (wild)"}, True)
    for other in ("/api/v1/categories/", "/api/v1/categories/x/acts/size", "/api/v1/categories//acts",
                  "/api/v1/categories/a/b/acts", "/api/v1/categoriesX", "/api/v1/categories/x/acts/"):
        assert hot.match(other) is None, other


def test_routes_match_only_their_own_method_and_head_is_get():
    hot = HotRoutes()
    hot.add("/api/v1/acts/count", _endpoint)
    hot.add("/api/v1/acts/upvote", _with_request, "POST")
    hot.add("/api/v1/categories/{name}/acts", _endpoint)
    hot.add("/api/v1/categories/{name}/upload", _with_request, "POST")
    assert hot.match("/api/v1/acts/count", "HEAD")[0].endpoint is _endpoint
    assert hot.match("/api/v1/acts/upvote", "POST")[0].endpoint is _with_request
    assert hot.match("/api/v1/categories/x/upload", "POST")[1] == {"name": "x"}
    for method, path in [("POST", "/api/v1/acts/count"), ("GET", "/api/v1/acts/upvote"),
                         ("DELETE", "/api/v1/acts/upvote"), ("HEAD", "/api/v1/acts/upvote"),
                         ("POST", "/api/v1/categories/x/acts"), ("GET", "/api/v1/categories/x/upload")]:
        assert hot.match(path, method) is None, (method, path)


def test_a_hot_write_is_counted_before_it_runs_and_its_errors_are_json(api):
    api.add_category("Nature")
    r = api.acts.post("/acts/upvote", json=[12345])
    assert (r.status_code, r.json()) == (400, {"error": "no such act: 12345"})
    r = api.acts.post("/acts", content=b"{not json")
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]
    r = api.acts.post("/acts", json={"actId": 1})
    assert r.status_code == 400 and api.act_count() == 0
    assert api.acts.get("/_count").json() == [5]  # the category, three refused writes, the count read


def test_operational_routes_are_not_counted():
    hot = HotRoutes()
    hot.add("/api/v1/_count", _endpoint)
    hot.add("/api/v1/acts/count", _endpoint)
    assert hot.match("/api/v1/_count")[0].counted is False
    assert hot.match("/api/v1/acts/count")[0].counted is True


def test_head_is_answered_like_get_without_a_body_and_counted(api):
    api.add_category("Nature")
    api.acts.delete("/_count")
    for path in ("/categories", "/categories/Nature/acts", "/acts/count", "/categories/Nature/acts/size"):
        get, head = api.acts.get(path), api.acts.head(path)
        assert head.status_code == get.status_code, path
        assert head.content == b"", path
        assert head.headers.get("content-type") == get.headers.get("content-type"), path
    assert api.acts.get("/_count").json() == [8]


def test_errors_on_the_hot_path_are_json_and_counted(api):
    api.add_category("Nature")
    api.acts.delete("/_count")
    r = api.acts.get("/categories/Nature/acts", params={"start": "1", "end": "x"})
    assert (r.status_code, r.json()) == (400, {"error": "query parameter 'end' must be an integer"})
    r = api.acts.get("/categories/Nature/acts", params={"start": "1", "end": "500"})
    assert r.status_code == 413 and "more than 100" in r.json()["error"]
    assert api.acts.get("/categories/Nowhere/acts").status_code == 204
    assert api.acts.get("/_count").json() == [3]


def test_other_methods_on_hot_paths_keep_their_answers(api):
    r = api.acts.put("/categories", json=["x"])
    assert r.status_code == 405
    assert r.headers["allow"] == "GET, HEAD, POST"
    assert "method not allowed" in r.json()["error"]
    r = api.acts.post("/acts/count")
    assert r.status_code == 405


def test_hot_routes_stay_in_the_openapi_document(api):
    paths = httpx.get(api.stack.acts.url + "/openapi.json").json()["paths"]
    assert "get" in paths["/api/v1/categories"]
    assert paths["/api/v1/categories/{name}/acts"]["get"]["parameters"][0]["name"] == "name"
    assert "get" in httpx.get(api.stack.users.url + "/openapi.json").json()["paths"]["/api/v1/users"]
