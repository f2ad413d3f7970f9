"""A tiny stand-in replica for orchestrator tests: `python echo_app.py --port P`.

GET /api/v1/_health -> 200 (500 after a crash); POST /api/v1/_crash -> every later request 500;
GET /api/v1/_count; POST /api/v1/_stop_listening -> stops accepting connections and closes the
open ones, the process staying alive (what a replica refusing connections looks like);
anything else -> {"pid": ..., "port": ...}, after `?sleep=S` seconds. Starts in a fraction of a second.
With ECHO_EXIT_ON_SIGTERM=1 it exits the moment SIGTERM arrives, requests in flight or not (so a
test can tell whether the orchestrator drained it first); otherwise uvicorn shuts down gracefully.
With ECHO_START_DELAY=S it waits S seconds before it listens (a replica slow to boot).
"""

import argparse
import asyncio
import os
import signal

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

state = {"crashed": False, "count": 0, "port": 0, "server": None}


def stop_listening() -> None:
    server = state["server"]
    for listener in server.servers:
        listener.close()
    for conn in list(server.server_state.connections):
        conn.transport.abort()


async def anything(request: Request) -> JSONResponse:
    path = request.url.path
    if path == "/api/v1/_crash" and request.method == "POST":
        state["crashed"] = True
        return JSONResponse({}, status_code=200)
    if path == "/api/v1/_stop_listening" and request.method == "POST":
        asyncio.get_running_loop().call_later(0.05, stop_listening)  # after this answer is out
        return JSONResponse({})
    if state["crashed"]:
        return JSONResponse({"error": "crashed"}, status_code=500)
    if path == "/api/v1/_health":
        return JSONResponse({})
    if path == "/api/v1/_count":
        return JSONResponse([state["count"]])
    state["count"] += 1
    if "sleep" in request.query_params:
        await asyncio.sleep(float(request.query_params["sleep"]))
    return JSONResponse({"pid": os.getpid(), "port": state["port"], "path": path})


async def serve(server: uvicorn.Server) -> None:
    await asyncio.sleep(float(os.environ.get("ECHO_START_DELAY", "0")))
    task = asyncio.create_task(server.serve())
    if os.environ.get("ECHO_EXIT_ON_SIGTERM") == "1":
        while not server.started and not task.done():
            await asyncio.sleep(0.01)
        signal.signal(signal.SIGTERM, lambda *_: os._exit(0))  # after uvicorn set its own handler
    await task


app = Starlette(routes=[Route("/{path:path}", anything, methods=["GET", "POST", "PUT", "DELETE", "HEAD"])])

if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    args, _ = p.parse_known_args()
    state["port"] = args.port
    state["server"] = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=args.port, log_level="warning",
                                                    lifespan="off", loop="asyncio"))
    asyncio.run(serve(state["server"]))
