"""The admin API's two pure ASGI middlewares: bearer-token auth and security headers on every answer."""

from __future__ import annotations

import hmac

from starlette.types import ASGIApp, Receive, Scope, Send

from .context import error


class BearerAuth:
    """Pure ASGI middleware: 401 JSON unless the bearer token matches (when one is configured)."""

    PUBLIC = ("/", "/index.html", "/favicon.ico")

    def __init__(self, app: ASGIApp, token: str | None):
        self.app = app
        self.token = token.encode() if token else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.token is None or scope["type"] != "http" or self._public(scope["path"]):
            await self.app(scope, receive, send)
            return
        given = b""
        for k, v in scope.get("headers", []):
            if k == b"authorization":
                given = v
                break
        scheme, _, cred = given.partition(b" ")
        if scheme.lower() != b"bearer" or not hmac.compare_digest(cred.strip(), self.token):
            resp = error(401, "missing or wrong bearer token: send 'Authorization: Bearer <token>'")
            resp.headers["WWW-Authenticate"] = 'Bearer realm="selfieless"'
            await resp(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _public(self, path: str) -> bool:
        return path in self.PUBLIC or path.startswith("/static/")


class SecurityHeaders:
    """Pure ASGI middleware: every admin response forbids framing, sniffing and foreign content.

    The dashboard is same-origin static files with no inline script or style, so a strict policy
    costs nothing and stops a page elsewhere from framing the scale buttons (clickjacking) or a
    reflected value from running as script.
    """

    HEADERS = [
        (b"content-security-policy",
         b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
         b"connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"),
        (b"x-frame-options", b"DENY"),
        (b"x-content-type-options", b"nosniff"),
        (b"referrer-policy", b"no-referrer"),
    ]

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *self.HEADERS]}
            await send(message)

        await self.app(scope, receive, send_with_headers)
