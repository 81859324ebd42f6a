"""The incidents and outbox JSON API (who may call what: plugin/web/routes.py)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from plugin.web.keys import DATABASE, OUTBOX


def public(doc: dict[str, Any]) -> dict[str, Any]:
    """The JSON incident with a URL for its snapshot next to the file path."""
    out = dict(doc)
    out["snapshot_url"] = f"/snapshots/{doc['id']}.jpg" if doc.get("snapshot") else None
    return out


async def api_incidents(request: web.Request) -> web.Response:
    """Stored incidents, newest first (?camera=, ?limit=)."""
    db = request.app[DATABASE]
    try:
        limit = max(1, min(int(request.query.get("limit", "200")), 5000))
    except ValueError:
        raise web.HTTPBadRequest(text="limit must be an integer") from None
    rows = await db.call(db.sync.incidents, limit, request.query.get("camera"))
    return web.json_response([public(r) for r in rows])


async def api_incident(request: web.Request) -> web.Response:
    """One incident."""
    db = request.app[DATABASE]
    row = await db.call(db.sync.incident, request.match_info["id"])
    if row is None:
        raise web.HTTPNotFound(text="no such incident")
    return web.json_response(public(row))


async def api_outbox(request: web.Request) -> web.Response:
    """Deliveries, optionally by state (?state=pending|delivered|dead)."""
    db = request.app[DATABASE]
    state = request.query.get("state")
    if state not in (None, "pending", "delivered", "dead"):
        raise web.HTTPBadRequest(text="state must be pending, delivered or dead")
    return web.json_response(await db.call(db.sync.deliveries, state))


async def api_outbox_retry(request: web.Request) -> web.Response:
    """Requeue dead letters: body {"sink": ..., "delivery_key": ...}, both optional (all when empty)."""
    db = request.app[DATABASE]
    try:
        body = await request.json() if request.can_read_body else {}
    except ValueError:
        raise web.HTTPBadRequest(text="body must be JSON") from None
    if not isinstance(body, dict) or set(body) - {"sink", "delivery_key"}:
        raise web.HTTPBadRequest(text='body may only have "sink" and "delivery_key"')
    n = await db.call(db.sync.retry_dead, body.get("sink"), body.get("delivery_key"))
    request.app[OUTBOX].notify()
    return web.json_response({"requeued": n})
