"""Whether the tests can use this machine's Docker engine and the project's images.

A test that needs them skips only when the engine or an image is not there at all (no SDK, nothing
listening on the engine's socket, an image never built), saying to run `scripts/docker-prepare`.
An engine that is there but misbehaves (a ping that times out or errors, an image lookup that fails
for another reason) is a failure: skipping would hide a broken machine.
"""

from __future__ import annotations

import functools
import os
import socket
from urllib.parse import urlparse

import pytest

HOW_TO = "Run `scripts/docker-prepare` as root (installs docker.io, starts dockerd, builds the images offline)"


def _engine_unreachable() -> str | None:
    """Why nothing listens where the SDK will look for the engine, or None if something does."""
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    parsed = urlparse(host)
    try:
        if parsed.scheme in ("unix", "http+unix"):
            with socket.socket(socket.AF_UNIX) as s:
                s.settimeout(5)
                s.connect(parsed.path)
        else:
            socket.create_connection((parsed.hostname or "127.0.0.1", parsed.port or 2375), timeout=5).close()
    except OSError as exc:  # no socket file, refused, unreachable
        return f"no Docker engine at {host} ({exc.__class__.__name__}: {exc})"
    return None


@functools.lru_cache(maxsize=None)
def _not_ready(images: tuple[str, ...]) -> str | None:
    try:
        import docker
        from docker.errors import ImageNotFound
    except ImportError:
        return "the docker SDK is not installed (pip install docker)"
    why = _engine_unreachable()
    if why is not None:
        return why
    # Reachable: from here on every error propagates (a generous timeout: the machine is shared).
    client = docker.from_env(timeout=60)
    try:
        client.ping()
        missing = []
        for image in images:
            try:
                client.images.get(image)
            except ImageNotFound:
                missing.append(image)
    finally:
        client.close()
    return f"images missing: {', '.join(missing)}" if missing else None


def require_docker(*images: str) -> None:
    """Skip the calling test (saying how to fix it) if the engine or an image is absent; raise if
    the engine is there but fails."""
    why = _not_ready(tuple(images))
    if why is not None:
        pytest.skip(f"{why}. {HOW_TO}")
