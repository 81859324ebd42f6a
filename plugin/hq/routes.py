"""Head office's pages and their API, each with the permission it needs (each also checks the person's stores
before it reads a store's data)."""

from __future__ import annotations

from aiohttp import web

from plugin.hq.access import HQ_READ
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
from plugin.web.auth.middleware import add_route
from plugin.web.auth.roles import FEEDBACK_WRITE


def add_page_routes(app: web.Application) -> None:
    """Register the pages and their API."""
    for path, handler in (
        ("/", chain_page),
        ("/stores/{store}", store_view),
        ("/stores/{store}/incidents/{id}", incident_view),
        ("/conversion", conversion_page),
        ("/alarms", alarms_page),
        ("/precision", precision_page),
        ("/roi", roi_page),
    ):
        add_route(app, "GET", path, handler, HQ_READ, page=True)
    add_route(app, "GET", "/stores/{store}/incidents/{id}/snapshot.jpg", snapshot, HQ_READ)
    add_route(app, "POST", "/stores/{store}/incidents/{id}/feedback", post_feedback, FEEDBACK_WRITE)
    add_route(app, "GET", "/roi.pdf", roi_pdf, HQ_READ)
    add_route(app, "GET", "/api/stores", api_stores, HQ_READ)
    add_route(app, "GET", "/api/stores/{store}/incidents", api_store_incidents, HQ_READ)
