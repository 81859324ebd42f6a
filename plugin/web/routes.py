"""Every route of the bridge's own HTTP side (the business intake routes are adapters: the app adds them)."""

from __future__ import annotations

from aiohttp import web

from plugin.web.api import (
    api_auth,
    api_incident,
    api_incident_feedback,
    api_incidents,
    api_outbox,
    api_outbox_retry,
)
from plugin.web.console import page, snapshot
from plugin.web.status import healthz, metrics, readyz


def setup_routes(app: web.Application) -> None:
    """Register every route and the API's token check."""
    app.middlewares.append(api_auth)
    app.router.add_get("/", page)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/api/incidents", api_incidents)
    app.router.add_get("/api/incidents/{id}", api_incident)
    app.router.add_get("/api/incidents/{id}/feedback", api_incident_feedback)
    app.router.add_post("/api/incidents/{id}/feedback", api_incident_feedback)
    app.router.add_get("/api/outbox", api_outbox)
    app.router.add_post("/api/outbox/retry", api_outbox_retry)
    app.router.add_get("/snapshots/{id}.jpg", snapshot)
