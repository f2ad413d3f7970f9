"""SelfieLessActs web front end: a single-page app served under ``/ui/``.

The page (``static/``) is plain HTML, CSS and JavaScript with no build step; it talks to the
users and acts services through the gateway with same-origin ``/api/v1/...`` URLs. This package
only serves those files plus ``GET /ui/_health`` for the orchestrator's probes: ``app.py`` is the
ASGI app, ``__main__.py`` runs one replica.
"""

from .app import create_app

__all__ = ["create_app"]
