"""JSON responses rendered by orjson: the services' answers, compact UTF-8 like Starlette's own.

Routes return these directly, so FastAPI hands the bytes on instead of walking the value through
its generic encoder first (which cost more than the query behind a 20-act listing).
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import JSONResponse, Response


class OrjsonResponse(JSONResponse):
    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def json_response(content: Any, status: int = 200) -> Response:
    return OrjsonResponse(content, status_code=status)


EMPTY_OBJECT = b"{}"


def empty_object(status: int = 200) -> Response:
    """`{}`, the body of most successful writes (api.md)."""
    return Response(EMPTY_OBJECT, status_code=status, media_type="application/json")
