"""The admin surface of a running stack: JSON API, Prometheus metrics and a live dashboard.

`AdminServer(orchestrator, gateway, host=..., port=..., token=...)` serves them with uvicorn on the
orchestrator's own event loop (see server.py); `create_app` is the bare ASGI app (api.py).
"""

from .api import create_app
from .server import DEFAULT_HOST, DEFAULT_PORT, AdminConfigError, AdminServer, check_exposure, is_loopback

__all__ = ["AdminServer", "AdminConfigError", "create_app", "check_exposure", "is_loopback",
           "DEFAULT_HOST", "DEFAULT_PORT"]
