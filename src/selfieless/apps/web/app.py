"""The web service's ASGI app: the static single-page app under ``/ui/`` and a health route.

Kept deliberately tiny (Starlette's StaticFiles), so it starts fast and has no state: any number
of replicas can sit behind the gateway's ``/ui`` route.
"""

from __future__ import annotations

from pathlib import Path

from starlette.applications import Starlette
from starlette.responses import JSONResponse, RedirectResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

STATIC_DIR = Path(__file__).parent / "static"

# Captions and usernames are other people's text: the page only ever inserts them as text, and
# this policy is the second line of defence (no inline or foreign scripts; images may be data: URLs
# because that is how acts are shown).
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)

_EXTRA_HEADERS = [
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    # Revalidate every time (cheap: StaticFiles answers 304 on a matching ETag), so a new release
    # of app.js is picked up at once instead of after a browser's heuristic cache expiry.
    (b"cache-control", b"no-cache"),
]


class _SecurityHeaders:
    """ASGI wrapper adding the headers above to every HTTP response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = list(message.get("headers", [])) + _EXTRA_HEADERS
            await send(message)

        await self.app(scope, receive, send_with_headers)


async def health(request) -> JSONResponse:
    """The files are in the package, so being able to answer is being healthy."""
    return JSONResponse({})


async def to_slash(request) -> RedirectResponse:
    # A relative Location: behind the gateway the Host this process sees may not be the public one.
    return RedirectResponse("/ui/", status_code=308)


def create_app() -> ASGIApp:
    app = Starlette(routes=[
        Route("/ui/_health", health, methods=["GET", "HEAD"]),
        Route("/ui", to_slash),
        Mount("/ui", app=StaticFiles(directory=STATIC_DIR, html=True), name="ui"),
    ])
    return _SecurityHeaders(app)
