"""A tiny stand-in replica for orchestrator tests: `python echo_app.py --port P`.

GET /api/v1/_health -> 200 (500 after a crash); POST /api/v1/_crash -> every later request 500;
GET /api/v1/_count; anything else -> {"pid": ..., "port": ...}. Starts in a fraction of a second.
"""

import argparse
import os

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

state = {"crashed": False, "count": 0, "port": 0}


async def anything(request: Request) -> JSONResponse:
    path = request.url.path
    if path == "/api/v1/_crash" and request.method == "POST":
        state["crashed"] = True
        return JSONResponse({}, status_code=200)
    if state["crashed"]:
        return JSONResponse({"error": "crashed"}, status_code=500)
    if path == "/api/v1/_health":
        return JSONResponse({})
    if path == "/api/v1/_count":
        return JSONResponse([state["count"]])
    state["count"] += 1
    return JSONResponse({"pid": os.getpid(), "port": state["port"], "path": path})


app = Starlette(routes=[Route("/{path:path}", anything, methods=["GET", "POST", "PUT", "DELETE", "HEAD"])])

if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    args, _ = p.parse_known_args()
    state["port"] = args.port
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", lifespan="off", loop="asyncio")
