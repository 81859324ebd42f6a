"""The incidents and outbox JSON API (who may call what: plugin/web/routes.py)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from plugin.types import FEEDBACK_REASONS, FEEDBACK_VERDICTS
from plugin.web.auth.middleware import principal_of
from plugin.web.keys import DATABASE, OUTBOX, RECORD_SINKS


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


async def api_incident_feedback(request: web.Request) -> web.Response:
    """A verdict on an incident: JSON {"verdict", "reason", "comment"}, or the incidents page's form; stored here with
    who (the signed-in user or token) and when, and sent on to head office through the outbox. GET lists the verdicts
    given here."""
    db = request.app[DATABASE]
    incident_id = request.match_info["id"]
    row = await db.call(db.sync.incident, incident_id)
    if row is None:
        raise web.HTTPNotFound(text="no such incident")
    if request.method == "GET":
        return web.json_response(await db.call(db.sync.feedback, incident_id))
    principal = principal_of(request)
    if principal is None:  # the route's permission lets no anonymous request through; this keeps it so
        raise web.HTTPUnauthorized(text="sign in first")
    from_console = request.content_type == "application/x-www-form-urlencoded"  # the incidents page's buttons
    if from_console:
        form = await request.post()
        body: Any = {k: str(v) for k, v in form.items() if k in ("verdict", "reason", "comment")}
    else:
        try:
            body = await request.json()
        except ValueError:
            raise web.HTTPBadRequest(text="body must be JSON") from None
    if not isinstance(body, dict) or set(body) - {"verdict", "reason", "comment"}:
        raise web.HTTPBadRequest(text='body may only have "verdict", "reason" and "comment"')
    if body.get("verdict") not in FEEDBACK_VERDICTS:
        raise web.HTTPBadRequest(text=f"verdict must be one of {', '.join(FEEDBACK_VERDICTS)}")
    if body.get("reason") not in FEEDBACK_REASONS:
        raise web.HTTPBadRequest(text=f"reason must be one of {', '.join(FEEDBACK_REASONS)}")
    comment = body.get("comment", "")
    if not isinstance(comment, str) or len(comment) > 2000:
        raise web.HTTPBadRequest(text="comment must be text of at most 2000 characters")
    doc = {
        "incident_id": incident_id, "verdict": body["verdict"], "reason": body["reason"], "comment": comment,
        "by_user": principal.name, "at": datetime.now(UTC).isoformat(), "rule_id": row["rule_id"],
        "type": row["type"], "camera": row["camera"], "incident_start": row["start"],
    }  # fmt: skip
    await db.call(db.sync.save_feedback, doc, request.app[RECORD_SINKS])
    request.app[OUTBOX].notify()
    if from_console:
        raise web.HTTPSeeOther(f"/#incident-{incident_id}")
    return web.json_response(doc, status=201)
