"""The admin API's GET /api/logs: the replicas' log files of a service (the process driver keeps
them), their last lines or what came after an offset the caller already has."""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .context import AdminContext, error

MAX_LOG_BYTES = 1 << 20  # one /api/logs answer carries at most this much per file


def read_tail(path: Path, lines: int) -> tuple[str, int]:
    with open(path, "rb") as fh:
        fh.seek(0, 2)
        end = fh.tell()
        start = max(0, end - MAX_LOG_BYTES)
        fh.seek(start)
        data = fh.read(end - start)
    # The last `lines` lines as they are (an unfinished last one stays unfinished: the rest of it
    # comes with the next read); `lines` 0 is none at all (text[-0:] would be every line).
    text = data.decode(errors="replace").splitlines(keepends=True)[-lines:] if lines > 0 else []
    return "".join(text), end


def read_from(path: Path, offset: int) -> tuple[str, int]:
    with open(path, "rb") as fh:
        fh.seek(0, 2)
        end = fh.tell()
        if offset > end:  # truncated or replaced: start over
            offset = 0
        fh.seek(offset)
        data = fh.read(min(end - offset, MAX_LOG_BYTES))
    return data.decode(errors="replace"), offset + len(data)


def _log_query(q) -> tuple[int | None, int, dict[int, int]]:
    """port, tail and the offsets per port of a /api/logs query; ValueError if one is malformed."""
    port = int(q["port"]) if q.get("port") else None
    tail = int(q.get("tail", "100"))
    offsets = {}
    for part in filter(None, q.get("offsets", "").split(",")):
        p, _, o = part.partition(":")
        offsets[int(p)] = int(o)
    return port, tail, offsets


async def logs(ctx: AdminContext, request: Request) -> Response:
    q, driver = request.query_params, ctx.orchestrator.driver
    service = q.get("service")
    if service not in ctx.orchestrator.services:
        return ctx.unknown_service(service)
    try:
        port, tail, offsets = _log_query(q)
    except ValueError:
        return error(400, "port and tail must be integers, offsets like 8000:1234,8001:0")
    files = driver.log_files(service)
    if not files and driver.name != "process":
        return error(501, f"logs are only kept for the process driver (this stack runs "
                          f"{getattr(driver, 'name', '?')}); use `docker logs` for containers")
    if port is not None:
        if port not in files:
            return error(404, f"no log for {service} on port {port}; have: {sorted(files) or 'none'}")
        files = {port: files[port]}
    out = []
    for p, path in sorted(files.items()):
        try:
            text, end = read_from(path, offsets[p]) if p in offsets else read_tail(path, max(0, tail))
        except OSError:
            continue
        out.append({"port": p, "path": str(path), "text": text, "offset": end})
    return JSONResponse({"service": service, "files": out})
