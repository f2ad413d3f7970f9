"""Routes of the users service (api.md, "Users service")."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, TypeAdapter
from sqlalchemy import bindparam, delete, insert, select
from starlette.concurrency import run_in_threadpool

from ..common.body import check_name, read_json, validate
from ..common.db import name_key
from ..common.dberrors import Duplicate
from ..common.errors import ApiError
from ..common.openapi import json_body
from ..common.responses import empty_object, json_response
from ..common.service import ServiceContext
from .passwords import hash_digest, is_sha1_hex
from .schema import users


class NewUser(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    username: str
    password: str


NEW_USER = TypeAdapter(NewUser)

# Built once and compiled once (see acts/store.py): the list runs for every upload's username check.
_USER_ID = select(users.c.id).where(users.c.name_key == bindparam("key"))
_NAMES = select(users.c.name).order_by(users.c.id)
_ADD_USER = insert(users).values(name=bindparam("name"), name_key=bindparam("key"), password_hash=bindparam("hash"))
_REMOVE_USER = delete(users).where(users.c.name_key == bindparam("key"))


def make_router(ctx: ServiceContext) -> APIRouter:
    router = APIRouter(prefix="/api/v1", tags=["users"])
    db = ctx.db
    max_body = ctx.settings.max_body_bytes

    async def insert_user(name: str, password_hash: str) -> None:
        try:
            await db.change(_ADD_USER, {"name": name, "key": name_key(name), "hash": password_hash})
        except Duplicate:
            raise ApiError(400, f"username {name!r} is already taken") from None

    async def user_exists(name: str) -> bool:
        return await db.fetch_value(_USER_ID, {"key": name_key(name)}) is not None

    @router.post("/users", status_code=201, summary="Add a user",
                 openapi_extra=json_body(NEW_USER, {"username": "alice", "password": "a" * 40}),
                 responses={400: {"description": "bad body, bad password, or name taken"}})
    async def add_user(request: Request):
        body = await read_json(request, max_body)
        if not isinstance(body, dict):
            raise ApiError(400, "body must be a JSON object with keys username and password")
        user = validate(NEW_USER, body)
        check_name(user.username, "username")
        if not is_sha1_hex(user.password):
            raise ApiError(400, "password must be 40 hex characters (SHA-1)")
        # Checked before hashing so a taken name costs no scrypt work; the unique key still
        # settles a race between two sign-ups.
        if await user_exists(user.username):
            raise ApiError(400, f"username {user.username!r} is already taken")
        password_hash = await run_in_threadpool(hash_digest, user.password)
        await insert_user(user.username, password_hash)
        return empty_object(201)

    async def remove_user(name: str) -> None:
        if await db.change(_REMOVE_USER, {"key": name_key(name)}) == 0:
            raise ApiError(400, f"no such user: {name!r}")

    @router.delete("/users/{username}", summary="Remove a user (their acts stay)",
                   responses={400: {"description": "no such user"}})
    async def delete_user(username: str):
        await remove_user(username)
        return empty_object()

    async def list_names() -> list[str]:
        return [row[0] for row in await db.fetch(_NAMES)]

    @ctx.hot.get(router, "/users", summary="All usernames (204 when there are none)",
                 responses={204: {"description": "no users"}})
    async def list_users():
        names = await list_names()
        if not names:
            return Response(status_code=204)
        return json_response(names)

    return router
