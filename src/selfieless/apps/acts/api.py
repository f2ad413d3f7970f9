"""Routes of the acts service (api.md, "Acts service")."""

from __future__ import annotations

import re
from typing import Annotated, Union

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, TypeAdapter, field_validator
from starlette.convertors import StringConvertor, register_url_convertor

from ..common.body import check_name, parse_uint, read_json, validate
from ..common.errors import ApiError
from ..common.openapi import json_body
from ..common.responses import empty_object, json_response
from ..common.service import ServiceContext
from .rules import MAX_ACT_ID, is_base64_text, timestamp_sort_key
from .store import ActsStore, NewAct
from .users_client import UsersClient

PAGE_LIMIT = 100  # most acts one listing may return (api.md: 413 at 100 or more)
_INTEGER = re.compile(r"-?[0-9]+")

CategoryBody = TypeAdapter(Annotated[list[Annotated[str, StringConstraints(min_length=1)]],
                                     Field(min_length=1, max_length=1)])
UpvoteBody = TypeAdapter(Annotated[list[Union[Annotated[int, Field(ge=0)],
                                              Annotated[str, StringConstraints(pattern=r"^[0-9]+$")]]],
                                   Field(min_length=1, max_length=1)])


class Upload(BaseModel):
    """POST /api/v1/acts: exactly these keys (an `upvotes` key, even 0, is refused)."""

    model_config = ConfigDict(extra="forbid", strict=True)
    actId: Annotated[int, Field(ge=0, le=MAX_ACT_ID)]
    username: str
    timestamp: str
    caption: str
    categoryName: str
    imgB64: str

    @field_validator("timestamp")
    @classmethod
    def _timestamp(cls, value: str) -> str:
        if timestamp_sort_key(value) is None:
            raise ValueError("must be DD-MM-YYYY:SS-MM-HH naming a real date and time "
                             "(two digits each, four for the year, hours 00-23)")
        return value

    @field_validator("imgB64")
    @classmethod
    def _image(cls, value: str) -> str:
        if not is_base64_text(value):
            raise ValueError("must be non-empty base64 text (A-Z a-z 0-9 + /, at most two '=' at the end; "
                             "no data: prefix)")
        return value


UploadBody = TypeAdapter(Upload)
_EXAMPLE_UPLOAD = {"actId": 1554800000000, "username": "alice", "timestamp": "09-04-2019:00-30-14",
                   "caption": "Helped an old man cross the road", "categoryName": "Nature", "imgB64": "aGVsbG8="}


def _query_int(request: Request, name: str) -> int:
    text = request.query_params.get(name)
    if text is None:
        raise ApiError(400, f"query parameter {name!r} is missing")
    if not _INTEGER.fullmatch(text) or len(text) > 4000:
        raise ApiError(400, f"query parameter {name!r} must be an integer")
    return int(text)


class _ActIdConvertor(StringConvertor):
    """Any path segment except the fixed routes' names: `/acts/count` and `/acts/upvote` own their
    paths, so `DELETE /acts/count` is a 405 of that route rather than "no such act"."""

    regex = r"(?!(?:count|upvote)(?:/|$))[^/]+"


register_url_convertor("act_id", _ActIdConvertor())


def make_router(ctx: ServiceContext) -> APIRouter:
    router = APIRouter(prefix="/api/v1", tags=["acts"])
    store = ActsStore(ctx.db)
    users = UsersClient(ctx.settings.users_url, ctx.settings.origin, ctx.settings.users_timeout)
    ctx.closers.append(users.close)
    _category_routes(router, ctx, store)
    _listing_routes(router, ctx, store)
    _act_routes(router, ctx, store)
    _upload_route(router, ctx, store, users)
    return router


def _category_routes(router: APIRouter, ctx: ServiceContext, store: ActsStore) -> None:
    max_body = ctx.settings.max_body_bytes

    @ctx.hot.get(router, "/categories", summary="Every category with its number of acts (204 when none)",
                 responses={204: {"description": "no categories"}})
    async def list_categories():
        counts = await store.category_counts()
        return json_response(counts) if counts else Response(status_code=204)

    @router.post("/categories", status_code=201, summary="Add a category",
                 openapi_extra=json_body(CategoryBody, ["Nature"]),
                 responses={400: {"description": "exists already, or a body other than [\"name\"]"}})
    async def add_category(request: Request):
        body = await read_json(request, max_body)
        (name,) = validate(CategoryBody, body)
        check_name(name, "category name")
        await store.add_category(name)
        return empty_object(201)

    @router.delete("/categories/{name}", summary="Remove a category and all its acts",
                   responses={400: {"description": "no such category"}})
    async def delete_category(name: str):
        await ctx.db.writing(store.delete_category, name)
        return empty_object()


def _listing_routes(router: APIRouter, ctx: ServiceContext, store: ActsStore) -> None:
    @ctx.hot.get(router, "/categories/{name}/acts", summary="Acts of a category newest first, all or ?start=&end=",
                 responses={204: {"description": "missing, empty or out of range"},
                            413: {"description": "too many acts for one answer"}})
    async def list_acts(name: str, request: Request):
        params = request.query_params
        if "start" in params or "end" in params:
            start, end = _query_int(request, "start"), _query_int(request, "end")
            if end - start + 1 > PAGE_LIMIT:
                raise ApiError(413, f"range {start}..{end} holds more than {PAGE_LIMIT} acts")
            found = await store.list_range(name, start, end)
        else:
            found = await store.list_acts(name, PAGE_LIMIT)
        return json_response(found) if found else Response(status_code=204)

    @ctx.hot.get(router, "/categories/{name}/acts/size", summary="Number of acts in a category, as [n]",
                 responses={204: {"description": "no such category"}})
    async def category_size(name: str):
        size = await store.category_size(name)
        return Response(status_code=204) if size is None else json_response([size])


def _act_routes(router: APIRouter, ctx: ServiceContext, store: ActsStore) -> None:
    max_body = ctx.settings.max_body_bytes

    @ctx.hot.get(router, "/acts/count", summary="Number of acts in all categories, as [n]")
    async def count_acts():
        return json_response([await store.count_acts()])

    @ctx.hot.post(router, "/acts/upvote", summary="Add one upvote to an act", openapi_extra=json_body(UpvoteBody, [1]),
                  responses={400: {"description": "no such act, or a body other than [actId]"}})
    async def upvote(request: Request):
        body = await read_json(request, max_body)
        (raw,) = validate(UpvoteBody, body)
        act_id = raw if isinstance(raw, int) else parse_uint(raw, "actId", maximum=2**4000)
        if act_id > MAX_ACT_ID:
            raise ApiError(400, f"no such act: {act_id}")
        await store.upvote(act_id)
        return empty_object()

    @router.delete("/acts/{actId:act_id}", summary="Remove an act",
                   responses={400: {"description": "no such act, or not a non-negative integer"}})
    async def delete_act(actId: str):
        await store.delete_act(parse_uint(actId, "actId"))
        return empty_object()


def _upload_route(router: APIRouter, ctx: ServiceContext, store: ActsStore, users: UsersClient) -> None:
    max_body = ctx.settings.max_body_bytes

    @ctx.hot.post(router, "/acts", status_code=201, summary="Upload an act",
                  openapi_extra=json_body(UploadBody, _EXAMPLE_UPLOAD),
                  responses={400: {"description": "a rule of the upload was broken"},
                             503: {"description": "the users service could not be reached"}})
    async def upload(request: Request):
        body = await read_json(request, max_body)
        if not isinstance(body, dict):
            raise ApiError(400, "body must be a JSON object with keys actId, username, timestamp, "
                                "caption, categoryName, imgB64")
        act = validate(UploadBody, body)
        # The user first, then one statement that inserts the act only if its category exists and
        # its actId is free (store.insert_act): one round trip to the database, not a check and an
        # insert. Nothing is written unless every check passed.
        try:
            known = await users.exists(act.username)
        except ApiError as exc:
            if exc.status == 503:  # the users service is down: a bad upload is still a 400
                await store.check_new_act(act.actId, act.categoryName)
            raise
        if not known:
            raise ApiError(400, f"no such user: {act.username!r}")
        await store.insert_act(NewAct(
            act_id=act.actId, username=act.username, timestamp=act.timestamp,
            ts_sort=timestamp_sort_key(act.timestamp), caption=act.caption,
            category=act.categoryName, img=act.imgB64))
        return empty_object(201)
