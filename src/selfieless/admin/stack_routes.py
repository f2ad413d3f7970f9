"""The admin API's stack-file routes: POST /api/apply (a new stack file onto the running one) and
GET /api/stack (the file the running `up` was started from)."""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .context import AdminContext, error


def _is_port(value: Any, low: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= 65535


def apply_options(data: dict[str, Any], up_overrides: dict[str, Any]) -> str | None:
    """What is wrong with an apply request's "port", "ports_from" and "driver" (None: nothing)."""
    port, driver = data.get("port"), data.get("driver")
    ports_from = data.get("ports_from", up_overrides.get("ports_from"))
    if port is not None and not _is_port(port, 0):
        return f'"port" must be a port number (0-65535), not {port!r}'
    if ports_from is not None and not _is_port(ports_from, 1):
        return f'"ports_from" must be a port number (1-65535), not {ports_from!r}'
    if driver is not None and not isinstance(driver, str):
        return f'"driver" must be a driver name, not {driver!r}'
    return None


async def apply(ctx: AdminContext, request: Request) -> Response:
    # Imported here: the admin app must not pull the orchestrator in for a bare status page.
    from selfieless.orchestrator.apply_exec import apply_stack
    from selfieless.orchestrator.apply_plan import with_up_overrides
    from selfieless.orchestrator.port_shift import shift_ports
    from selfieless.orchestrator.stack import StackError, parse_stack

    try:
        data = json.loads(await request.body() or b"null")
    except ValueError:
        return error(400, 'body must be JSON: {"stack": {...}, "dry_run": false}')
    if not isinstance(data, dict) or not isinstance(data.get("stack"), dict):
        return error(400, 'body must be a JSON object with "stack": the stack file as a mapping')
    wrong = apply_options(data, ctx.up_overrides)
    if wrong is not None:
        return error(400, wrong)
    ports_from = data.get("ports_from", ctx.up_overrides.get("ports_from"))
    try:
        given = with_up_overrides(data["stack"], ctx.up_overrides, data.get("port"), data.get("driver"))
        new = shift_ports(parse_stack(given, "request body"), ports_from)
    except StackError as e:
        return error(400, str(e).splitlines()[0], e.problems)
    result = await apply_stack(ctx.orchestrator, new, dry_run=bool(data.get("dry_run")))
    if not result.ok:
        return JSONResponse({"error": result.reason, **result.to_dict()}, status_code=409)
    return JSONResponse(result.to_dict())


async def stack(ctx: AdminContext, request: Request) -> Response:
    """The file the running `up` was started from and what its command line changed, so that
    `apply` (and a second `up`) without a file re-apply that file, not the bundled one."""
    given = ctx.up_overrides
    return JSONResponse({"file": given.get("stack_file"), "port": given.get("port"),
                         "driver": given.get("driver"), "ports_from": given.get("ports_from")})
