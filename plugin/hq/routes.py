"""Head office's pages and their API (each checks the principal before it reads a store's data)."""

from __future__ import annotations

from aiohttp import web

from plugin.hq.feedback_pages import post_feedback, precision_page
from plugin.hq.pages import (
    alarms_page,
    api_store_incidents,
    api_stores,
    chain_page,
    conversion_page,
    incident_view,
    snapshot,
    store_view,
)
from plugin.hq.roi_pages import roi_page, roi_pdf


def add_page_routes(app: web.Application) -> None:
    """Register the pages."""
    app.router.add_get("/", chain_page)
    app.router.add_get("/stores/{store}", store_view)
    app.router.add_get("/stores/{store}/incidents/{id}", incident_view)
    app.router.add_get("/stores/{store}/incidents/{id}/snapshot.jpg", snapshot)
    app.router.add_post("/stores/{store}/incidents/{id}/feedback", post_feedback)
    app.router.add_get("/precision", precision_page)
    app.router.add_get("/roi", roi_page)
    app.router.add_get("/roi.pdf", roi_pdf)
    app.router.add_get("/conversion", conversion_page)
    app.router.add_get("/alarms", alarms_page)
    app.router.add_get("/api/stores", api_stores)
    app.router.add_get("/api/stores/{store}/incidents", api_store_incidents)
