"""The admin surface of a running stack: JSON API, Prometheus metrics and a live dashboard.

`AdminServer(orchestrator, gateway, host=..., port=..., token=...)` serves them with uvicorn on the
orchestrator's own event loop; `create_app` is the bare ASGI app. Modules:
    server          AdminServer: binding, serving, the once-a-second history sampler; loopback or a token
    api             create_app: the list of routes, the dashboard and the error pages
    context         AdminContext (what every route is given), the JSON error answer, bind
    middleware      bearer-token auth and security headers on every answer
    status_routes   status, events (a long poll), requests/s history, /metrics
    action_routes   scale, rollout (status, history, undo, restart), shutdown
    stack_routes    apply a stack file to the running stack, and the file it was started from
    log_routes      the replicas' log files of a service
    metrics         the Prometheus collector, read at scrape time from the gateway and the orchestrator
    history         requests/s per service over the last minutes, for a fresh dashboard
The dashboard itself is static files in ``static/``.
"""

from .api import create_app
from .server import DEFAULT_HOST, DEFAULT_PORT, AdminConfigError, AdminServer, check_exposure, is_loopback

__all__ = ["AdminServer", "AdminConfigError", "create_app", "check_exposure", "is_loopback",
           "DEFAULT_HOST", "DEFAULT_PORT"]
