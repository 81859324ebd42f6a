"""Every route of the bridge's own HTTP side, each with the permission it needs (the business intake routes are
adapters: the app adds them, with `INGEST`)."""

from __future__ import annotations

import asyncio

from aiohttp import web

from plugin.web.api import api_incident, api_incident_feedback, api_incidents, api_outbox, api_outbox_retry
from plugin.web.auth.handlers import setup_auth
from plugin.web.auth.middleware import add_route
from plugin.web.auth.roles import (
    CONFIG_WRITE,
    FEEDBACK_WRITE,
    INCIDENTS_READ,
    OUTBOX_READ,
    OUTBOX_WRITE,
    PUBLIC,
    STATUS_READ,
)
from plugin.web.console import page, snapshot
from plugin.web.status import healthz, metrics, readyz
from plugin.web.zones import SAVE_LOCK, SCRIPT, api_geometry, api_save, editor_page, editor_script, picture


def setup_routes(app: web.Application) -> None:
    """Sign-in, the security rules, and every route with its permission."""
    setup_auth(app)
    add_route(app, "GET", "/", page, INCIDENTS_READ, page=True)
    add_route(app, "GET", "/snapshots/{id}.jpg", snapshot, INCIDENTS_READ)
    add_route(app, "GET", "/healthz", healthz, PUBLIC)
    add_route(app, "GET", "/readyz", readyz, PUBLIC)  # anonymous: ready or not; STATUS_READ: the details
    add_route(app, "GET", "/metrics", metrics, STATUS_READ)
    add_route(app, "GET", "/api/incidents", api_incidents, INCIDENTS_READ)
    add_route(app, "GET", "/api/incidents/{id}", api_incident, INCIDENTS_READ)
    add_route(app, "GET", "/api/incidents/{id}/feedback", api_incident_feedback, INCIDENTS_READ)
    add_route(app, "POST", "/api/incidents/{id}/feedback", api_incident_feedback, FEEDBACK_WRITE)
    add_route(app, "GET", "/api/outbox", api_outbox, OUTBOX_READ)
    add_route(app, "POST", "/api/outbox/retry", api_outbox_retry, OUTBOX_WRITE)
    # the zone editor (admins): zones and lines drawn on each camera's picture, saved into the config file
    app[SAVE_LOCK] = asyncio.Lock()
    add_route(app, "GET", "/cameras/{camera}/zones", editor_page, CONFIG_WRITE, page=True)
    add_route(app, "GET", "/cameras/{camera}/picture.jpg", picture, CONFIG_WRITE)
    add_route(app, "GET", f"/static/{SCRIPT}", editor_script, CONFIG_WRITE)
    add_route(app, "GET", "/api/cameras/{camera}/zones", api_geometry, CONFIG_WRITE)
    add_route(app, "POST", "/api/cameras/{camera}/zones", api_save, CONFIG_WRITE)
