"""Head office's pages and their API (each checks the principal before it reads a store's data)."""

from __future__ import annotations

from aiohttp import web


def add_page_routes(app: web.Application) -> None:
    """Register the pages."""
    return None
