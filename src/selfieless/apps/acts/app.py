"""The acts service's application object."""

from __future__ import annotations

from fastapi import FastAPI

from ..common.service import build_app
from ..common.settings import ServiceSettings
from .api import make_router
from .schema import metadata


def create_app(settings: ServiceSettings) -> FastAPI:
    return build_app("acts", settings, metadata, make_router,
                     "Categories, acts (photos of good deeds) and upvotes of SelfieLessActs.")
